#pragma once
// Host launchers of the fused CUDA quantizer kernels. Tensors are contiguous and on one CUDA
// device; launches go on the current stream of that device.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "wrpn/kernels/quant_math.h"

namespace wrpn::cuda {

/// out = fake_quant(x); mask (nullable) gets the packed straight-through mask.
void fake_quant_forward_kernel(const at::Tensor& x, const at::Tensor& out, uint8_t* mask,
                               kernels::QuantParams p);
/// out = +-a by the sign of x, a read on the device from `scale` (0-dim float64); no host sync.
void binary_quant_forward_kernel(const at::Tensor& x, const at::Tensor& out, uint8_t* mask,
                                 const at::Tensor& scale);
/// out = stochastic rounding of x onto the grid of p, uniforms from kernels::philox_uniforms
/// under `seed` (the same values as the CPU kernel).
void stochastic_quant_forward_kernel(const at::Tensor& x, const at::Tensor& out, uint8_t* mask,
                                     kernels::QuantParams p, uint64_t seed);
/// out = mask ? grad : 0.
void masked_grad_backward_kernel(const at::Tensor& grad, const uint8_t* mask,
                                 const at::Tensor& out);

}  // namespace wrpn::cuda
