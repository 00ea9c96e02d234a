// Picks the epilogue build of the CPU kernel table in use (wrpn::cpu::kernel_table()).

#include "wrpn/kernels/epilogue.h"
#include "wrpn/kernels/quantize_cpu.h"

namespace wrpn::cpu {
namespace DEFAULT {
void epilogue(const kernels::EpilogueArgs& p);
}
namespace AVX2 {
void epilogue(const kernels::EpilogueArgs& p);
}
namespace AVX512 {
void epilogue(const kernels::EpilogueArgs& p);
}
}  // namespace wrpn::cpu

namespace wrpn::kernels {

void epilogue_cpu(const EpilogueArgs& p) {
  if (p.rows == 0 || p.channels == 0) return;
  cpu::for_table_in_use(&cpu::DEFAULT::epilogue, &cpu::AVX2::epilogue, &cpu::AVX512::epilogue)(p);
}

}  // namespace wrpn::kernels
