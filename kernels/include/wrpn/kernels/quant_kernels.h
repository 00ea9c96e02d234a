#pragma once
// The kernel table a backend provides to the ops: one per CPU capability build
// (wrpn/kernels/quantize_cpu.h) and one for CUDA (wrpn/kernels/quantize_cuda.h).

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "wrpn/kernels/quant_math.h"

namespace wrpn::kernels {

/// x and out are contiguous tensors of the same floating dtype and size on the backend's device;
/// mask (nullable) receives the packed straight-through mask (kernels::mask_bytes(numel) bytes).
struct QuantKernels {
  /// The build: "DEFAULT", "AVX2", "AVX512" or "CUDA".
  const char* name;
  /// out = fake_quant(x), divided as p.division says.
  void (*fake_quant)(const at::Tensor& x, const at::Tensor& out, uint8_t* mask, QuantParams p);
  /// out = +-a by the sign of x, a = `scale` (0-dim float64 on x's device); mask [-1 <= x <= 1].
  void (*binary_quant)(const at::Tensor& x, const at::Tensor& out, uint8_t* mask,
                       const at::Tensor& scale);
  /// out = stochastic rounding of x onto the grid of p, the uniforms drawn by Philox under
  /// `seed` (kernels::philox_uniforms: the same values on every backend).
  void (*stochastic_quant)(const at::Tensor& x, const at::Tensor& out, uint8_t* mask, QuantParams p,
                           uint64_t seed);
  /// out = mask ? grad : 0 for contiguous grad/out of any floating dtype.
  void (*masked_grad)(const at::Tensor& grad, const uint8_t* mask, const at::Tensor& out);
};

}  // namespace wrpn::kernels
