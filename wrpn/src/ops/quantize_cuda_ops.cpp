// CUDA kernels of the wrpn:: ops (schemas in quantize_ops.cpp). Built only with CUDA.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "kernels/cuda/quantize_cuda.h"
#include "wrpn/src/ops/quantize_common.h"

namespace wrpn::ops {
namespace {

using at::Tensor;

constexpr Backend kCuda{&cuda::fake_quant_forward_kernel, &cuda::binary_quant_forward_kernel,
                        &cuda::stochastic_quant_forward_kernel,
                        &cuda::masked_grad_backward_kernel};
using OptGenerator = std::optional<at::Generator>;

Tensor quantize_weight_cuda(const Tensor& w, int64_t bits) {
  return std::get<0>(quant_forward(QuantKind::Weight, w, bits, false, kCuda));
}
Tensor quantize_activation_cuda(const Tensor& x, int64_t bits) {
  return std::get<0>(quant_forward(QuantKind::Activation, x, bits, false, kCuda));
}
std::tuple<Tensor, Tensor> quantize_weight_forward_cuda(const Tensor& w, int64_t bits) {
  return quant_forward(QuantKind::Weight, w, bits, true, kCuda);
}
std::tuple<Tensor, Tensor> quantize_activation_forward_cuda(const Tensor& x, int64_t bits) {
  return quant_forward(QuantKind::Activation, x, bits, true, kCuda);
}
Tensor masked_grad_cuda(const Tensor& grad, const Tensor& mask) {
  return masked_grad_forward(grad, mask, kCuda);
}
Tensor quantize_fixed_point_cuda(const Tensor& x, int64_t total_bits, int64_t frac_bits,
                                 bool stochastic, OptGenerator gen) {
  return std::get<0>(fixed_point_forward(x, total_bits, frac_bits, stochastic, gen, false, kCuda));
}
std::tuple<Tensor, Tensor> quantize_fixed_point_forward_cuda(const Tensor& x, int64_t total_bits,
                                                             int64_t frac_bits, bool stochastic,
                                                             OptGenerator gen) {
  return fixed_point_forward(x, total_bits, frac_bits, stochastic, gen, true, kCuda);
}

}  // namespace
}  // namespace wrpn::ops

TORCH_LIBRARY_IMPL(wrpn, CUDA, m) {
  m.impl("quantize_weight", &wrpn::ops::quantize_weight_cuda);
  m.impl("quantize_activation", &wrpn::ops::quantize_activation_cuda);
  m.impl("_quantize_weight_forward", &wrpn::ops::quantize_weight_forward_cuda);
  m.impl("_quantize_activation_forward", &wrpn::ops::quantize_activation_forward_cuda);
  m.impl("_masked_grad", &wrpn::ops::masked_grad_cuda);
  m.impl("quantize_fixed_point", &wrpn::ops::quantize_fixed_point_cuda);
  m.impl("_quantize_fixed_point_forward", &wrpn::ops::quantize_fixed_point_forward_cuda);
}
