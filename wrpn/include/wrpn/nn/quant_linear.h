#pragma once
/// A fully connected layer with WRPN-quantized weights, state-dict compatible with
/// torch::nn::Linear.

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

#include "wrpn/nn/init.h"
#include "wrpn/nn/quantizer.h"

namespace wrpn {
namespace nn {

/// Options for QuantLinear: torch::nn::LinearOptions' fields plus the bits.
struct QuantLinearOptions : LayerQuantizerShorthands<QuantLinearOptions> {
  QuantLinearOptions(int64_t in_features, int64_t out_features);

  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  /// A bias, kept fp32, as in torch::nn::Linear.
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
