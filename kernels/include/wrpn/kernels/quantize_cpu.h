#pragma once
// CPU kernel tables. kernels/cpu/quantize_cpu_kernel.cpp is compiled once per instruction set
// (DEFAULT, AVX2, AVX512), each build defining the table in its own namespace; kernel_table()
// picks the one that matches at::get_cpu_capability().

#include <cstring>
#include <string>

#include "wrpn/kernels/quant_kernels.h"

namespace wrpn::cpu {

namespace DEFAULT {
extern const kernels::QuantKernels kKernels;
}
namespace AVX2 {
extern const kernels::QuantKernels kKernels;
}
namespace AVX512 {
extern const kernels::QuantKernels kKernels;
}

/// The table in use: the best one the CPU supports (as at::get_cpu_capability() reports, which
/// honours ATEN_CPU_CAPABILITY), or the one forced with force_capability().
const kernels::QuantKernels& kernel_table();

/// Forces a table by name ("DEFAULT", "AVX2", "AVX512"), or back to automatic with "".
/// Throws if the name is unknown or the CPU lacks the instruction set.
void force_capability(const std::string& name);

/// Of one function's per-capability builds, the one matching kernel_table() (for kernels kept
/// outside the table, such as the epilogue and the recurrent cell's nonlinearities).
template <typename T>
T for_table_in_use(T default_build, T avx2_build, T avx512_build) {
  const char* name = kernel_table().name;
  if (std::strcmp(name, "AVX512") == 0) return avx512_build;
  if (std::strcmp(name, "AVX2") == 0) return avx2_build;
  return default_build;
}

}  // namespace wrpn::cpu
