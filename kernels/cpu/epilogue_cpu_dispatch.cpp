// Picks the epilogue build of the CPU kernel table in use (wrpn::cpu::kernel_table()).

#include <cstring>

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
  const char* name = cpu::kernel_table().name;
  if (std::strcmp(name, "AVX512") == 0) return cpu::AVX512::epilogue(p);
  if (std::strcmp(name, "AVX2") == 0) return cpu::AVX2::epilogue(p);
  cpu::DEFAULT::epilogue(p);
}

}  // namespace wrpn::kernels
