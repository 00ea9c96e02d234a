#pragma once
/// One visitor over the quantized layers of a module tree (QuantConv2d, QuantLinear, QuantReLU),
/// so that tools that treat every quantized layer alike (cost report, packed export, analysis,
/// optimizer groups, weight fitting) need no type switch of their own.

#include <torch/nn/module.h>

#include <functional>
#include <string>

#include "wrpn/nn/quant_conv.h"
#include "wrpn/nn/quant_linear.h"
#include "wrpn/nn/quant_relu.h"

namespace wrpn {
namespace nn {

enum class LayerKind { kConv2d, kLinear, kActivation };

/// A view of one quantized layer. Exactly one of conv / linear / act is set, as `kind` says.
struct QuantizedLayer {
  LayerKind kind = LayerKind::kConv2d;
  QuantConv2dImpl* conv = nullptr;
  QuantLinearImpl* linear = nullptr;
  QuantReLUImpl* act = nullptr;

  /// The module itself.
  torch::nn::Module& module() const { return *module_; }
  /// The layer's own quantizer: the weight quantizer of a conv or FC, the activation quantizer
  /// of a QuantReLU.
  const Quantizer& quantizer() const { return *quantizer_; }
  /// The quantizer of the activation a conv or FC reads (full precision for a QuantReLU).
  const Quantizer& input_quantizer() const { return *input_quantizer_; }
  /// kWeight for convs and FCs, kActivation for QuantReLU.
  LayerRole role() const {
    return kind == LayerKind::kActivation ? LayerRole::kActivation : LayerRole::kWeight;
  }
  bool has_weight() const { return kind != LayerKind::kActivation; }
  /// The fp32 shadow weight and bias, sharing the parameters' storage (undefined for
  /// QuantReLU; the bias undefined without one).
  const at::Tensor& weight() const { return weight_; }
  const at::Tensor& bias() const { return bias_; }
  /// The weight as forward() uses it (see QuantConv2dImpl::effective_weight()).
  at::Tensor effective_weight() const;
  /// "conv", "linear" or "act".
  const char* kind_name() const;

 private:
  friend bool as_quantized_layer(const torch::nn::Module& module, QuantizedLayer& out);
  torch::nn::Module* module_ = nullptr;
  const Quantizer* quantizer_ = nullptr;
  const Quantizer* input_quantizer_ = nullptr;
  at::Tensor weight_, bias_;
};

/// The quantized-layer view of `module`, or false when it is none of the three layer types.
bool as_quantized_layer(const torch::nn::Module& module, QuantizedLayer& out);

/// Calls `fn(name, layer)` for every quantized layer below `root` (root excluded), in
/// named_modules() order, names as named_modules() gives them.
void for_each_quantized_layer(
    const torch::nn::Module& root,
    const std::function<void(const std::string& name, const QuantizedLayer& layer)>& fn);

}  // namespace nn
}  // namespace wrpn
