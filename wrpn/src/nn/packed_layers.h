#pragma once
// Conv2d and linear that save their input as packed codes (see <wrpn/nn/saved_codes.h>).

#include <torch/nn/modules/batchnorm.h>
#include <torch/types.h>
#include <wrpn/nn/quantizer.h>

#include <cstdint>
#include <vector>

namespace wrpn::nn::detail {

/// A conv's geometry, as at::conv2d takes it.
struct ConvArgs {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;
};

/// Whether a forward of these tensors records a graph that would save the input.
bool records_graph(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

/// conv2d(x, w, b) whose autograd node saves x as codes of `input` (and w, the output of
/// `weight`, as its codes when it has them); undefined when x cannot be
/// packed (then the caller runs the plain conv). x is 4-D.
torch::Tensor conv2d_saving_codes(const torch::Tensor& x, const torch::Tensor& w,
                                  const torch::Tensor& b, const ConvArgs& conv,
                                  const Quantizer& input, const Quantizer& weight);

/// bn(conv2d(x, w)) in training mode whose node saves x as codes of `input` and not the conv
/// output: the backward recomputes it (one extra conv forward). Undefined when x cannot be
/// packed. The BatchNorm's running statistics are updated as its own forward does.
torch::Tensor conv_bn_saving_codes(const torch::Tensor& x, const torch::Tensor& w,
                                   const ConvArgs& conv, const Quantizer& input,
                                   const Quantizer& weight, torch::nn::BatchNorm2dImpl& bn);

/// relu(x) whose node saves a 1-bit mask of out > 0 rather than out.
torch::Tensor relu_saving_mask(const torch::Tensor& x);

/// linear(x, w, b), likewise.
torch::Tensor linear_saving_codes(const torch::Tensor& x, const torch::Tensor& w,
                                  const torch::Tensor& b, const Quantizer& input);

}  // namespace wrpn::nn::detail
