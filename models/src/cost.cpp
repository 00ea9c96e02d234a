// The compute-cost report: traces one forward pass and tabulates the conv/FC layers.

#include "wrpn/models/cost.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>

#include "model_spec_json.h"
#include "wrpn/models/registry.h"
#include "wrpn/nn/layers.h"
#include "wrpn/nn/observer.h"

namespace wrpn {
namespace models {
namespace {

int64_t product(const std::vector<int64_t>& v, size_t from = 0) {
  int64_t p = 1;
  for (size_t i = from; i < v.size(); ++i) p *= v[i];
  return p;
}

int64_t layer_storage_bits(int64_t weight_numel, int64_t weight_bits, int64_t bias_numel) {
  const int64_t scale_bits = weight_bits == kFullPrecisionBits ? 0 : 32;
  return weight_numel * weight_bits + scale_bits + bias_numel * 32;
}

/// Fills a LayerCost's static fields from a conv or FC; false for other modules.
bool describe_layer(const torch::nn::Module& m, LayerCost& row) {
  torch::NoGradGuard no_grad;
  nn::QuantizedLayer layer;
  if (!nn::as_quantized_layer(m, layer) || !layer.has_weight()) return false;
  row.kind = layer.kind == nn::LayerKind::kConv2d ? "conv" : "fc";
  const torch::Tensor weight = layer.weight(), bias = layer.bias();
  const torch::Tensor effective = layer.effective_weight();
  row.weight_bits = layer.quantizer().bits;
  row.act_bits = layer.input_quantizer().bits;
  const int64_t bias_numel = bias.defined() ? bias.numel() : 0;
  row.weight_shape = weight.sizes().vec();
  row.params = weight.numel() + bias_numel;
  row.storage_bits = layer_storage_bits(weight.numel(), row.weight_bits, bias_numel);
  // Of the weight forward() uses, so WRPN and fixed-point layers are counted alike.
  row.zero_fraction = effective.numel() == 0 ? 0.0
                                             : effective.eq(0).sum().item<double>() /
                                                   static_cast<double>(effective.numel());
  return true;
}

/// One conv/FC forward call of the traced pass: the layer and its output shape.
struct TracedCall {
  const torch::nn::Module* module;
  std::vector<int64_t> output_sizes;
};

/// MACs of one traced call: every output element takes one MAC per weight element of its
/// output channel (conv: in/groups * kh * kw; FC: in_features).
int64_t call_macs(const LayerCost& row, const TracedCall& call) {
  const int64_t batch = call.output_sizes.empty() ? 1 : call.output_sizes[0];
  const int64_t per_output = product(row.weight_shape, 1);
  return product(call.output_sizes) / std::max<int64_t>(batch, 1) * per_output;
}

struct Traced {
  std::vector<LayerCost> layers;
  CostTotals totals;
};

Traced trace_model(ClassifierImpl& model, int64_t height, int64_t width) {
  std::map<const torch::nn::Module*, std::string> names;
  for (const auto& item : model.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    names[item.value().get()] = item.key();
  }
  torch::Device device = torch::kCPU;
  for (const auto& p : model.parameters()) {
    device = p.device();
    break;
  }
  std::vector<TracedCall> calls;
  {
    torch::NoGradGuard no_grad;
    const bool was_training = model.is_training();
    model.eval();
    // Convs and FCs report a weight; activation quantizers do not.
    nn::ForwardObserver trace([&](const nn::LayerCall& c) {
      if (c.weight.defined()) calls.push_back({c.module, c.output.sizes().vec()});
    });
    try {
      model.forward(torch::zeros({1, model.spec().in_channels, height, width}, device));
    } catch (...) {
      model.train(was_training);
      throw;
    }
    model.train(was_training);
  }

  Traced t;
  std::map<const torch::nn::Module*, size_t> row_of;
  for (const auto& call : calls) {
    auto it = row_of.find(call.module);
    if (it == row_of.end()) {
      LayerCost row;
      auto name = names.find(call.module);
      row.name = name == names.end() ? "?" : name->second;
      if (!describe_layer(*call.module, row)) continue;
      it = row_of.emplace(call.module, t.layers.size()).first;
      t.layers.push_back(std::move(row));
    }
    LayerCost& row = t.layers[it->second];
    const int64_t macs = call_macs(row, call);
    row.macs += macs;
    row.bit_ops += macs * row.weight_bits * row.act_bits;
  }

  CostTotals& s = t.totals;
  for (const auto& p : model.parameters()) s.params += p.numel();
  double zero_weighted = 0.0;
  int64_t quantized_weights = 0;
  for (const auto& row : t.layers) {
    s.layer_params += row.params;
    s.macs += row.macs;
    s.bit_ops += row.bit_ops;
    s.storage_bits += row.storage_bits;
    if (row.weight_bits != kFullPrecisionBits) {
      const int64_t n = product(row.weight_shape);
      zero_weighted += row.zero_fraction * static_cast<double>(n);
      quantized_weights += n;
    }
  }
  s.storage_bits += (s.params - s.layer_params) * 32;
  s.zero_fraction =
      quantized_weights > 0 ? zero_weighted / static_cast<double>(quantized_weights) : 0.0;
  return t;
}

std::string grouped(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string si(double v) {
  const char* suffix[] = {"", "K", "M", "G", "T", "P"};
  int i = 0;
  while (std::abs(v) >= 1000.0 && i < 5) {
    v /= 1000.0;
    ++i;
  }
  return i == 0 ? fmt::format("{:.0f}", v) : fmt::format("{:.2f}{}", v, suffix[i]);
}

std::string mib(int64_t bits) { return fmt::format("{:.2f} MiB", bits / 8.0 / 1048576.0); }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s;
  for (auto d : shape) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

double ratio(int64_t a, int64_t b) { return b == 0 ? 0.0 : static_cast<double>(a) / b; }

nlohmann::json totals_json(const CostTotals& t) {
  return {{"params", t.params},
          {"layer_params", t.layer_params},
          {"macs", t.macs},
          {"bit_ops", t.bit_ops},
          {"storage_bits", t.storage_bits},
          {"storage_bytes", (t.storage_bits + 7) / 8},
          {"zero_fraction", t.zero_fraction}};
}

}  // namespace

CostReport cost_report(ClassifierImpl& model, int64_t height, int64_t width, bool with_baseline) {
  if (height <= 0 || width <= 0) {
    const int64_t size = model_info(model.spec().name).default_input_size;
    if (height <= 0) height = size;
    if (width <= 0) width = size;
  }
  CostReport r;
  r.spec = model.spec();
  r.input_height = height;
  r.input_width = width;
  Traced t = trace_model(model, height, width);
  r.layers = std::move(t.layers);
  r.totals = t.totals;
  if (with_baseline) {
    ModelSpec base = model.spec();
    base.precision = PrecisionConfig{};
    auto baseline = create_model(base);
    r.baseline = trace_model(*baseline, height, width).totals;
  }
  return r;
}

std::string CostReport::to_table() const {
  std::string out = fmt::format("{} {}, {} classes, input {}x{}x{}, init {}\n", spec.name,
                                spec.precision.short_name(), spec.num_classes, spec.in_channels,
                                input_height, input_width, nn::to_string(spec.init));
  out += fmt::format("{:<24} {:<16} {:>12} {:>15} {:>3} {:>3} {:>10} {:>12} {:>6}\n", "layer",
                     "weight shape", "params", "MACs", "W", "A", "bit-ops", "storage", "zeros");
  for (const auto& l : layers) {
    const std::string zeros = l.weight_bits == kFullPrecisionBits
                                  ? std::string("-")
                                  : fmt::format("{:.1f}%", 100.0 * l.zero_fraction);
    out += fmt::format("{:<24} {:<16} {:>12} {:>15} {:>3} {:>3} {:>10} {:>12} {:>6}\n", l.name,
                       shape_string(l.weight_shape), grouped(l.params), grouped(l.macs),
                       l.weight_bits, l.act_bits, si(static_cast<double>(l.bit_ops)),
                       fmt::format("{:.1f} KiB", l.storage_bits / 8.0 / 1024.0), zeros);
  }
  out += fmt::format("\n{:<16} {:>14} {:>14} {:>12} {:>14} {:>12}\n", "", "params", "MACs",
                     "bit-ops", "storage", "zeros");
  auto line = [&](const std::string& label, const CostTotals& t) {
    out += fmt::format("{:<16} {:>14} {:>14} {:>12} {:>14} {:>11.1f}%\n", label, grouped(t.params),
                       grouped(t.macs), si(static_cast<double>(t.bit_ops)), mib(t.storage_bits),
                       100.0 * t.zero_fraction);
  };
  line("this model", totals);
  if (baseline) {
    line("fp32 x1", *baseline);
    out += fmt::format("{:<16} {:>13.3f}x {:>13.3f}x {:>11.3f}x {:>13.3f}x\n", "ratio",
                       ratio(totals.params, baseline->params), ratio(totals.macs, baseline->macs),
                       ratio(totals.bit_ops, baseline->bit_ops),
                       ratio(totals.storage_bits, baseline->storage_bits));
  }
  return out;
}

std::string CostReport::to_json(int indent) const {
  nlohmann::json layers_json = nlohmann::json::array();
  for (const auto& l : layers) {
    layers_json.push_back({{"name", l.name},
                           {"kind", l.kind},
                           {"weight_shape", l.weight_shape},
                           {"params", l.params},
                           {"macs", l.macs},
                           {"weight_bits", l.weight_bits},
                           {"act_bits", l.act_bits},
                           {"bit_ops", l.bit_ops},
                           {"storage_bits", l.storage_bits},
                           {"zero_fraction", l.zero_fraction}});
  }
  nlohmann::json j = {{"model", detail::spec_to_json(spec)},
                      {"input", {spec.in_channels, input_height, input_width}},
                      {"layers", layers_json},
                      {"totals", totals_json(totals)}};
  if (baseline) {
    j["baseline"] = totals_json(*baseline);
    j["ratios"] = {{"params", ratio(totals.params, baseline->params)},
                   {"macs", ratio(totals.macs, baseline->macs)},
                   {"bit_ops", ratio(totals.bit_ops, baseline->bit_ops)},
                   {"storage", ratio(totals.storage_bits, baseline->storage_bits)}};
  }
  return j.dump(indent);
}

}  // namespace models
}  // namespace wrpn
