// The visitor over quantized layers: the one place that switches on the layer types.

#include "wrpn/nn/layers.h"

#include <c10/util/Exception.h>

namespace wrpn {
namespace nn {

at::Tensor QuantizedLayer::effective_weight() const {
  if (conv != nullptr) return conv->effective_weight();
  if (linear != nullptr) return linear->effective_weight();
  return {};
}

const char* QuantizedLayer::kind_name() const {
  static constexpr const char* kNames[] = {"conv", "linear", "act"};
  return kNames[static_cast<int>(kind)];
}

bool as_quantized_layer(const torch::nn::Module& module, QuantizedLayer& out) {
  static const Quantizer kFullPrecision = Quantizer::full_precision();
  // The module tree hands out non-const modules; the view mutates nothing by itself.
  auto& m = const_cast<torch::nn::Module&>(module);
  out = QuantizedLayer{};
  out.module_ = &m;
  if ((out.conv = m.as<QuantConv2dImpl>()) != nullptr) {
    out.kind = LayerKind::kConv2d;
    out.quantizer_ = &out.conv->options.weight_quantizer();
    out.input_quantizer_ = &out.conv->options.input_quantizer();
    out.weight_ = out.conv->weight;
    out.bias_ = out.conv->bias;
  } else if ((out.linear = m.as<QuantLinearImpl>()) != nullptr) {
    out.kind = LayerKind::kLinear;
    out.quantizer_ = &out.linear->options.weight_quantizer();
    out.input_quantizer_ = &out.linear->options.input_quantizer();
    out.weight_ = out.linear->weight;
    out.bias_ = out.linear->bias;
  } else if ((out.act = m.as<QuantReLUImpl>()) != nullptr) {
    out.kind = LayerKind::kActivation;
    out.quantizer_ = &out.act->options.quantizer();
    out.input_quantizer_ = &kFullPrecision;
  } else {
    return false;
  }
  return true;
}

void for_each_quantized_layer(
    const torch::nn::Module& root,
    const std::function<void(const std::string& name, const QuantizedLayer& layer)>& fn) {
  TORCH_CHECK(static_cast<bool>(fn), "for_each_quantized_layer: the callback is empty");
  QuantizedLayer layer;
  for (const auto& item : root.named_modules("", /*include_self=*/false)) {
    if (as_quantized_layer(*item.value(), layer)) fn(item.key(), layer);
  }
}

}  // namespace nn
}  // namespace wrpn
