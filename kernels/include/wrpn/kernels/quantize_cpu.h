#pragma once
// CPU kernel tables. kernels/cpu/quantize_cpu_kernel.cpp is compiled once per instruction set
// (DEFAULT, AVX2, AVX512), each build defining the table in its own namespace; kernel_table()
// picks the one that matches at::get_cpu_capability().

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

}  // namespace wrpn::cpu
