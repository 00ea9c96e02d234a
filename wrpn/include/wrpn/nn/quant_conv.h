#pragma once
/// A 2-D convolution with WRPN-quantized weights, state-dict compatible with torch::nn::Conv2d.

#include <torch/arg.h>
#include <torch/expanding_array.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

#include "wrpn/nn/init.h"
#include "wrpn/nn/quantizer.h"

namespace wrpn {
namespace nn {

/// Options for QuantConv2d: torch::nn::Conv2dOptions' fields (zero padding only) plus the bits.
struct QuantConv2dOptions : LayerQuantizerShorthands<QuantConv2dOptions> {
  QuantConv2dOptions(int64_t in_channels, int64_t out_channels,
                     torch::ExpandingArray<2> kernel_size);

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(torch::ExpandingArray<2>, kernel_size);
  TORCH_ARG(torch::ExpandingArray<2>, stride) = 1;
  TORCH_ARG(torch::ExpandingArray<2>, padding) = 0;
  TORCH_ARG(torch::ExpandingArray<2>, dilation) = 1;
  TORCH_ARG(int64_t, groups) = 1;
  /// A bias, kept fp32 (it adds to the accumulator), as in torch::nn::Conv2d.
  TORCH_ARG(bool, bias) = true;
  /// The weight quantizer: WRPN 4-bit by default (where WRPN finds wide models lossless),
  /// full precision, or fixed point. reset() resolves a default fixed-point split.
  TORCH_ARG(Quantizer, weight_quantizer) = Quantizer::wrpn(4);
  /// The quantizer of the activation this layer consumes (full precision: unquantized). The
  /// model that wires the layer sets it; forward() does not apply it. Read by the cost report
  /// and the packed export.
  TORCH_ARG(Quantizer, input_quantizer) = Quantizer::full_precision();
  /// How reset_parameters() draws the weight.
  TORCH_ARG(WeightInit, init) = WeightInit::kQuantAware;
  /// When input_quantizer() can pack (WRPN 1..16 bits, fixed point up to 16 bits), save the
  /// input for the backward as its packed k-bit codes rather than as a float tensor: the same
  /// gradients bit for bit, k/32 of the memory (see <wrpn/nn/saved_codes.h>). On by default.
  TORCH_ARG(bool, pack_saved_input) = true;
  /// With pack_saved_input, forward_bn() in training also leaves out the conv output that the
  /// BatchNorm would save, recomputing it in the backward from the codes (one more conv
  /// forward per step). Off by default.
  TORCH_ARG(bool, recompute_bn_input) = false;
};

/// Conv2d whose fp32 shadow weight is quantized by wrpn::quantize_weight on every forward
/// (straight-through gradient), so the optimiser updates fp32 values. Parameters "weight" and
/// "bias" have torch::nn::Conv2d's names and shapes: state dicts move freely between the two.
class QuantConv2dImpl : public torch::nn::Cloneable<QuantConv2dImpl> {
 public:
  QuantConv2dImpl(int64_t in_channels, int64_t out_channels, torch::ExpandingArray<2> kernel_size)
      : QuantConv2dImpl(QuantConv2dOptions(in_channels, out_channels, kernel_size)) {}
  explicit QuantConv2dImpl(QuantConv2dOptions options);

  /// Checks the options, registers the parameters and initialises them.
  void reset() override;
  /// Redraws the weight (per options.init()) and the bias (torch's default).
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// conv2d(x, Q(weight), bias); Q is the identity at 32 bits.
  torch::Tensor forward(const torch::Tensor& x);

  /// bn(forward(x)): the same values, and with options.recompute_bn_input() (training, an
  /// affine BatchNorm with running statistics and a momentum, no conv bias) one autograd node
  /// that saves only x's codes, the weight and the batch statistics.
  torch::Tensor forward_bn(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn);

  /// The weight as forward() uses it: quantized (WRPN or fixed point), or fp32 at 32 bits.
  torch::Tensor effective_weight() const;

  QuantConv2dOptions options;
  torch::Tensor weight;
  /// Undefined when options.bias() is false.
  torch::Tensor bias;
};

/// Holder of a QuantConv2dImpl (see the LibTorch module ownership docs).
TORCH_MODULE(QuantConv2d);

}  // namespace nn
}  // namespace wrpn
