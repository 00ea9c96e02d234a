#include "app/analyze.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>
#include <wrpn/data.h>
#include <wrpn/models/checkpoint.h>
#include <wrpn/train/trainer.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

namespace wrpn::app {
namespace {

/// The images at `idx` as one batch [B, C, H, W].
torch::Tensor images_at(data::AnyDataset& ds, const torch::Tensor& idx) {
  if (const data::TensorData* t = ds.tensors()) return t->batch(idx, 0).data;
  std::vector<torch::Tensor> xs;
  const auto* ip = idx.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i) xs.push_back(ds.get(static_cast<size_t>(ip[i])).data);
  return torch::stack(xs);
}

std::string pct(double share) { return fmt::format("{:.1f}", 100.0 * share); }

std::string num(double v) {
  if (v == 0.0) return "0";
  const double a = std::abs(v);
  return a >= 1e4 || a < 1e-3 ? fmt::format("{:.2e}", v) : fmt::format("{:.4g}", v);
}

std::string bits_text(int64_t bits) {
  return bits == kFullPrecisionBits ? "fp32" : std::to_string(bits);
}

}  // namespace

std::vector<double> parse_percentiles(const std::string& text) {
  std::vector<double> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    size_t used = 0;
    double p = 0.0;
    try {
      p = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    TORCH_CHECK_VALUE(used == item.size() && p >= 0.0 && p <= 100.0, "--percentiles: '", item,
                      "' is not a number in [0, 100]");
    out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

AnalyzeResult analyze_checkpoint(const AnalyzeRequest& rq) {
  TORCH_CHECK_VALUE(rq.batches >= 1, "--batches must be >= 1, got ", rq.batches);
  TORCH_CHECK_VALUE(rq.batch_size >= 1, "--batch-size must be >= 1, got ", rq.batch_size);
  rq.options.validate();
  AnalyzeResult r;
  models::CheckpointMeta meta;
  models::Classifier model = models::load_checkpoint(rq.checkpoint, &meta);
  const torch::Device device = train::resolve_device(rq.device);
  model->to(device);

  // wrpn_train records its options in the checkpoint: use the same data by default.
  std::string dataset = rq.dataset, root = rq.data_root;
  int64_t image_size = rq.image_size;
  const auto extra = nlohmann::json::parse(meta.info.extra_json, nullptr, false);
  if (!extra.is_discarded() && extra.contains("options")) {
    const auto& o = extra["options"];
    const bool same = rq.dataset.empty() || rq.dataset == o.value("dataset", "");
    if (rq.dataset.empty()) dataset = o.value("dataset", "digits");
    if (same && root.empty()) root = o.value("data_root", "");
    if (same && !rq.image_size_given) image_size = o.value("image_size", image_size);
  }
  if (dataset.empty()) dataset = "digits";

  data::DatasetOptions dopt;
  dopt.augment(false)
      .image_size(image_size)
      .resize_size(std::max<int64_t>(image_size, image_size * 8 / 7));
  auto ds = data::open_dataset(dataset, root, data::parse_split(rq.split), dopt);
  TORCH_CHECK_VALUE(ds.channels() == meta.spec.in_channels, rq.checkpoint, " takes ",
                    meta.spec.in_channels, "-channel images, but '", dataset, "' has ",
                    ds.channels());
  const auto size = static_cast<int64_t>(ds.size().value_or(0));
  TORCH_CHECK_VALUE(size >= 1, "the ", rq.split, " split of '", dataset, "' is empty");

  auto gen = at::detail::createCPUGenerator(rq.seed);
  const auto order = torch::randperm(size, gen, torch::kLong);
  const int64_t n = std::min(size, rq.batches * rq.batch_size);

  analysis::AnalysisOptions options = rq.options;
  options.range.seed = rq.seed;
  analysis::ModelAnalyzer analyzer(*model, options);
  for (int64_t b = 0; b < n; b += rq.batch_size) {
    const auto idx = order.slice(0, b, std::min(n, b + rq.batch_size)).contiguous();
    const auto x = images_at(ds, idx).to(device);
    analyzer.observe([&] { model->forward(x); });
  }
  r.analysis = analyzer.result();
  r.spec = meta.spec;
  r.dataset = dataset;
  r.split = rq.split;
  r.device = device.str();
  r.images = n;
  return r;
}

std::string format_analysis_table(const analysis::ModelAnalysis& a) {
  std::string out;
  out += fmt::format(
      "{:<18} {:<6} {:>6} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>6} {:>6} "
      "{:>6} | {:>6} {:>6}\n",
      "layer", "kind", "quant", "w min", "w max", "w 0%", "a min", "a max", "a 0%", "skip%", "by w",
      "by a", "w Q", "a Q");
  out += std::string(out.size() - 1, '-') + "\n";
  for (const auto& l : a.layers) {
    const auto& act = l.activation;
    const std::string aq = act.count ? l.activation_format.format.to_string() : "-";
    if (l.has_weight()) {
      out += fmt::format(
          "{:<18} {:<6} {:>6} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>6} {:>6} {:>6} | "
          "{:>6} {:>6}\n",
          l.name, l.kind, l.quantizer(), num(l.weight.min), num(l.weight.max),
          pct(l.effective_weight_zero_fraction), num(act.min), num(act.max),
          pct(act.zero_fraction()), pct(l.macs.skipped()), pct(l.macs.skipped_by_weights()),
          pct(l.macs.skipped_by_activations()), l.weight_format.format.to_string(), aq);
    } else {
      out += fmt::format(
          "{:<18} {:<6} {:>6} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>6} | {:>6} {:>6} {:>6} | "
          "{:>6} {:>6}\n",
          l.name, l.kind, l.quantizer(), "-", "-", "-", num(act.min), num(act.max),
          pct(act.zero_fraction()), "-", "-", "-", "-", aq);
    }
  }
  const auto t = a.total_macs();
  out += fmt::format(
      "\n{} batches, {} images. MACs: {} in all, {} with both operands nonzero: a zero-skipping "
      "engine skips {}% ({}% from zero weights alone, {}% from zero activations alone). "
      "Effective conv/FC weights: {}% zeros.\n",
      a.batches, a.samples, t.total, t.nonzero, pct(t.skipped()), pct(t.skipped_by_weights()),
      pct(t.skipped_by_activations()), pct(a.effective_weight_zero_fraction()));
  out += fmt::format(
      "w: fp32 shadow weight range, zeros of the weight as used (quantized). a: the input of a "
      "conv/linear, the output of an act. Q(m.f): {} bits, threshold {}.\n",
      a.options.total_bits, a.options.threshold);
  return out;
}

}  // namespace wrpn::app
