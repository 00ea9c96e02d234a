#pragma once
// CPU kernel table. kernels/cpu/quantize_cpu_kernel.cpp is compiled once per instruction set
// (DEFAULT, AVX2, AVX512); cpu_kernels() picks the build that matches at::get_cpu_capability().

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "kernels/common/quant_math.h"

namespace wrpn::cpu {

struct QuantKernels {
  /// Name of the instruction set this table was compiled for.
  const char* capability;
  /// out = fake_quant(x); mask (nullable) gets the packed straight-through mask.
  /// x and out are contiguous tensors of the same floating dtype and size.
  void (*fake_quant)(const at::Tensor& x, const at::Tensor& out, uint8_t* mask,
                     kernels::QuantParams p);
  /// out = +-a by sign of x; mask (nullable) gets [-1 <= x <= 1].
  void (*binary_quant)(const at::Tensor& x, const at::Tensor& out, uint8_t* mask, double a);
  /// out = stochastic rounding of x onto the grid of p (power-of-two scale), the uniforms drawn
  /// by Philox under `seed` (kernels::philox_uniforms); mask (nullable) as for fake_quant.
  void (*stochastic_quant)(const at::Tensor& x, const at::Tensor& out, uint8_t* mask,
                           kernels::QuantParams p, uint64_t seed);
  /// out = mask ? grad : 0 for contiguous grad/out of any dtype.
  void (*masked_grad)(const at::Tensor& grad, const uint8_t* mask, const at::Tensor& out);
};

const QuantKernels& kernels_DEFAULT();
const QuantKernels& kernels_AVX2();
const QuantKernels& kernels_AVX512();

/// The kernel table in use: the best one the CPU supports (as at::get_cpu_capability() reports,
/// which honours ATEN_CPU_CAPABILITY), or the one forced with force_capability().
const QuantKernels& cpu_kernels();

/// Forces a kernel table by name ("DEFAULT", "AVX2", "AVX512"), or back to automatic with "".
/// Throws if the name is unknown or the CPU lacks the instruction set.
void force_capability(const std::string& name);

}  // namespace wrpn::cpu
