#pragma once
/// A fully connected layer with WRPN-quantized weights, state-dict compatible with
/// torch::nn::Linear.

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

#include "wrpn/nn/init.h"
#include "wrpn/precision.h"

namespace wrpn {
namespace nn {

/// Options for QuantLinear: torch::nn::LinearOptions' fields plus the bits.
struct QuantLinearOptions {
  QuantLinearOptions(int64_t in_features, int64_t out_features);

  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  /// A bias, kept fp32, as in torch::nn::Linear.
  TORCH_ARG(bool, bias) = true;
  /// Weight bits: 1..16, or 32 for an fp32 layer.
  TORCH_ARG(int64_t, weight_bits) = 4;
  /// Bits of the activation this layer consumes (32: unquantized); set by the model, read by the
  /// cost report and packed export, not applied by forward().
  TORCH_ARG(int64_t, input_bits) = kFullPrecisionBits;
  /// How reset_parameters() draws the weight.
  TORCH_ARG(WeightInit, init) = WeightInit::kQuantAware;
  /// When enabled, the weight quantizer is ADaPTION fixed point (wrpn::quantize_fixed_point,
  /// stochastic rounding in training if asked) instead of WRPN's; its total_bits must equal
  /// weight_bits. frac_bits -1 takes the weight default (default_fixed_point()).
  TORCH_ARG(FixedPointFormat, fixed_point) = {};
};

/// Linear layer whose fp32 shadow weight is quantized on every forward (straight-through
/// gradient). Parameters "weight" [out, in] and "bias" [out] as in torch::nn::Linear.
class QuantLinearImpl : public torch::nn::Cloneable<QuantLinearImpl> {
 public:
  QuantLinearImpl(int64_t in_features, int64_t out_features)
      : QuantLinearImpl(QuantLinearOptions(in_features, out_features)) {}
  explicit QuantLinearImpl(QuantLinearOptions options);

  /// Checks the options, registers the parameters and initialises them.
  void reset() override;
  /// Redraws the weight (per options.init()) and the bias (torch's default).
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// linear(x, Q(weight), bias); Q is the identity at 32 bits.
  torch::Tensor forward(const torch::Tensor& x);

  /// The weight as forward() uses it: quantized (WRPN or fixed point), or fp32 at 32 bits.
  torch::Tensor effective_weight() const;

  QuantLinearOptions options;
  torch::Tensor weight;
  /// Undefined when options.bias() is false.
  torch::Tensor bias;
};

/// Holder of a QuantLinearImpl.
TORCH_MODULE(QuantLinear);

}  // namespace nn
}  // namespace wrpn
