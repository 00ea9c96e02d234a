// The visitor over quantized layers: the one place that switches on the layer types.

#include "wrpn/nn/layers.h"

#include <c10/util/Exception.h>

namespace wrpn {
namespace nn {

torch::nn::Module& QuantizedLayer::module() const {
  switch (kind) {
    case LayerKind::kConv2d:
      return *conv;
    case LayerKind::kLinear:
      return *linear;
    case LayerKind::kActivation:
      break;
  }
  return *act;
}

const Quantizer& QuantizedLayer::quantizer() const {
  switch (kind) {
    case LayerKind::kConv2d:
      return conv->options.weight_quantizer();
    case LayerKind::kLinear:
      return linear->options.weight_quantizer();
    case LayerKind::kActivation:
      break;
  }
  return act->options.quantizer();
}

const Quantizer& QuantizedLayer::input_quantizer() const {
  static const Quantizer kNone = Quantizer::full_precision();
  switch (kind) {
    case LayerKind::kConv2d:
      return conv->options.input_quantizer();
    case LayerKind::kLinear:
      return linear->options.input_quantizer();
    case LayerKind::kActivation:
      break;
  }
  return kNone;
}

at::Tensor QuantizedLayer::weight() const {
  switch (kind) {
    case LayerKind::kConv2d:
      return conv->weight;
    case LayerKind::kLinear:
      return linear->weight;
    case LayerKind::kActivation:
      break;
  }
  return {};
}

at::Tensor QuantizedLayer::bias() const {
  switch (kind) {
    case LayerKind::kConv2d:
      return conv->bias;
    case LayerKind::kLinear:
      return linear->bias;
    case LayerKind::kActivation:
      break;
  }
  return {};
}

at::Tensor QuantizedLayer::effective_weight() const {
  switch (kind) {
    case LayerKind::kConv2d:
      return conv->effective_weight();
    case LayerKind::kLinear:
      return linear->effective_weight();
    case LayerKind::kActivation:
      break;
  }
  return {};
}

const char* QuantizedLayer::kind_name() const {
  switch (kind) {
    case LayerKind::kConv2d:
      return "conv";
    case LayerKind::kLinear:
      return "linear";
    case LayerKind::kActivation:
      break;
  }
  return "act";
}

bool as_quantized_layer(const torch::nn::Module& module, QuantizedLayer& out) {
  // The module tree hands out non-const modules; the view mutates nothing by itself.
  auto& m = const_cast<torch::nn::Module&>(module);
  out = QuantizedLayer{};
  if ((out.conv = m.as<QuantConv2dImpl>()) != nullptr) {
    out.kind = LayerKind::kConv2d;
  } else if ((out.linear = m.as<QuantLinearImpl>()) != nullptr) {
    out.kind = LayerKind::kLinear;
  } else if ((out.act = m.as<QuantReLUImpl>()) != nullptr) {
    out.kind = LayerKind::kActivation;
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
