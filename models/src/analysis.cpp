#include "wrpn/analysis.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "wrpn/nn/layers.h"
#include "wrpn/nn/observer.h"

namespace wrpn {
namespace analysis {

namespace {

using nlohmann::json;

std::string dump(const json& j, int indent) { return j.dump(indent < 0 ? -1 : indent); }

/// "0.1", "50", "99.9": the shortest text of a percent.
std::string percent_key(double p) { return fmt::format("{}", p); }

void check_percentiles(const std::vector<double>& percentiles, const char* where) {
  for (double p : percentiles) {
    TORCH_CHECK_VALUE(p >= 0.0 && p <= 100.0, where, ": every percentile must be in [0, 100], got ",
                      p);
  }
}

void check_search_args(int64_t total_bits, double threshold) {
  TORCH_CHECK_VALUE(total_bits >= 2 && total_bits <= 16,
                    "wrpn::analysis::adaption_search: argument 'total_bits' must be in [2, 16] "
                    "(sign bit included), got ",
                    total_bits);
  TORCH_CHECK_VALUE(threshold >= 0.0 && threshold <= 1.0,
                    "wrpn::analysis::adaption_search: argument 'threshold' must be in [0, 1] (the "
                    "largest share of values allowed to saturate), got ",
                    threshold);
}

/// Linear interpolation between order statistics of an ascending CPU float64 tensor.
double percentile_of_sorted(const torch::Tensor& sorted, double p) {
  const int64_t n = sorted.numel();
  const double* s = sorted.const_data_ptr<double>();
  const double pos = p / 100.0 * static_cast<double>(n - 1);
  const auto lo = static_cast<int64_t>(std::floor(pos));
  const int64_t hi = std::min(lo + 1, n - 1);
  const double t = pos - static_cast<double>(lo);
  return t == 0.0 ? s[lo] : s[lo] + (s[hi] - s[lo]) * t;
}

json range_json(const RangeStats& r) {
  json pct = json::object();
  for (const auto& [p, v] : r.percentiles) pct[percent_key(p)] = v;
  json hist = json::object();
  for (const auto& [e, c] : r.log2_counts) hist[std::to_string(e)] = c;
  return {{"count", r.count},
          {"zeros", r.zeros},
          {"zero_fraction", r.zero_fraction()},
          {"nonfinite", r.nonfinite},
          {"min", r.min},
          {"max", r.max},
          {"abs_max", r.abs_max},
          {"mean", r.mean},
          {"std", r.std},
          {"percentiles", pct},
          {"percentiles_exact", r.percentiles_exact},
          {"sample_size", r.sample_size},
          {"log2_counts", hist}};
}

json choice_json(const FixedPointChoice& c) {
  return {{"format", c.format.to_string()},
          {"int_bits", c.format.int_bits()},
          {"frac_bits", c.format.frac_bits},
          {"magnitude_bits", c.magnitude_bits},
          {"saturated_fraction", c.saturated_fraction}};
}

json macs_json(const MacSparsity& m) {
  return {{"total", m.total},
          {"nonzero", m.nonzero},
          {"nonzero_weight", m.nonzero_weight},
          {"nonzero_activation", m.nonzero_activation},
          {"skipped", m.skipped()},
          {"skipped_by_weights", m.skipped_by_weights()},
          {"skipped_by_activations", m.skipped_by_activations()}};
}

json layer_json(const LayerReport& l) {
  json j = {{"name", l.name}, {"kind", l.kind}, {"bits", l.bits}, {"calls", l.calls}};
  j["quantizer"] = l.quantizer();
  if (l.has_weight()) {
    j["weight_numel"] = l.weight_numel;
    j["weight"] = range_json(l.weight);
    j["effective_weight_zero_fraction"] = l.effective_weight_zero_fraction;
    j["weight_format"] = choice_json(l.weight_format);
    j["macs"] = macs_json(l.macs);
  }
  j["activation_role"] = l.has_weight() ? "input" : "output";
  j["activation"] = range_json(l.activation);
  j["activation_format"] = choice_json(l.activation_format);
  return j;
}

double share_skipped(int64_t kept, int64_t total) {
  return total > 0 ? 1.0 - static_cast<double>(kept) / static_cast<double>(total) : 0.0;
}

/// Sum of a tensor of small nonnegative integers held as floats (conv outputs of 0/1 masks):
/// rounded per element first, so fast conv algorithms' last-bit errors do not count.
int64_t integer_sum(const torch::Tensor& t) {
  return t.round().to(torch::kLong).sum().item<int64_t>();
}

}  // namespace

std::vector<double> default_percentiles() { return {0.1, 1.0, 50.0, 99.0, 99.9}; }

// ---- RangeStats ----

double RangeStats::zero_fraction() const {
  return count > 0 ? static_cast<double>(zeros) / static_cast<double>(count) : 0.0;
}

double RangeStats::fraction_above_pow2(int64_t e) const {
  if (count == 0) return 0.0;
  int64_t above = 0;
  for (auto it = log2_counts.upper_bound(e); it != log2_counts.end(); ++it) above += it->second;
  return static_cast<double>(above) / static_cast<double>(count);
}

std::string RangeStats::to_json(int indent) const { return dump(range_json(*this), indent); }

// ---- RangeAccumulator ----

struct RangeAccumulator::State {
  RangeOptions options;
  at::Generator generator;
  int64_t count = 0, zeros = 0, nonfinite = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  double mean = 0.0, m2 = 0.0;  // Chan et al.'s parallel update
  std::map<int64_t, int64_t> log2_counts;
  torch::Tensor sample, keys;  // CPU float64; keys are the sample's random keys
};

RangeAccumulator::RangeAccumulator(RangeOptions options) : state_(std::make_unique<State>()) {
  check_percentiles(options.percentiles, "wrpn::analysis::RangeAccumulator");
  TORCH_CHECK_VALUE(options.sample_capacity >= 1,
                    "wrpn::analysis::RangeAccumulator: 'sample_capacity' must be >= 1, got ",
                    options.sample_capacity);
  state_->generator = at::detail::createCPUGenerator(options.seed);
  state_->options = std::move(options);
  state_->sample = torch::empty({0}, torch::kDouble);
  state_->keys = torch::empty({0}, torch::kDouble);
}

RangeAccumulator::~RangeAccumulator() = default;
RangeAccumulator::RangeAccumulator(RangeAccumulator&&) noexcept = default;
RangeAccumulator& RangeAccumulator::operator=(RangeAccumulator&&) noexcept = default;

int64_t RangeAccumulator::count() const { return state_->count; }

void RangeAccumulator::add(const torch::Tensor& x) {
  TORCH_CHECK_VALUE(x.defined(),
                    "wrpn::analysis::RangeAccumulator::add: argument 'x' is undefined");
  TORCH_CHECK_VALUE(at::isFloatingType(x.scalar_type()),
                    "wrpn::analysis::RangeAccumulator::add: argument 'x' must be a floating-point "
                    "tensor, got ",
                    x.scalar_type());
  if (x.numel() == 0) return;
  torch::NoGradGuard no_grad;
  State& s = *state_;
  auto v = x.detach().reshape({-1});
  if (v.scalar_type() != torch::kDouble) v = v.to(torch::kFloat);
  // min and max propagate NaN, so finite extremes mean every value is finite.
  auto mm = torch::aminmax(v);
  double lo = std::get<0>(mm).item<double>(), hi = std::get<1>(mm).item<double>();
  int64_t n = v.numel();
  if (!std::isfinite(lo) || !std::isfinite(hi)) {
    const auto finite = torch::isfinite(v);
    n = finite.sum().item<int64_t>();
    s.nonfinite += v.numel() - n;
    if (n == 0) return;
    v = v.masked_select(finite);
    mm = torch::aminmax(v);
    lo = std::get<0>(mm).item<double>();
    hi = std::get<1>(mm).item<double>();
  }
  s.min = std::min(s.min, lo);
  s.max = std::max(s.max, hi);

  const auto abs = v.abs();
  const auto nonzero = abs.ne(0);
  const int64_t nz = nonzero.sum().item<int64_t>();
  s.zeros += n - nz;

  const auto vm = torch::var_mean(v.to(torch::kDouble), /*dim=*/c10::nullopt,
                                  /*correction=*/0, /*keepdim=*/false);
  const double bmean = std::get<1>(vm).item<double>();
  const double bm2 = std::get<0>(vm).item<double>() * static_cast<double>(n);
  const double na = static_cast<double>(s.count), nb = static_cast<double>(n);
  const double delta = bmean - s.mean;
  s.mean += delta * nb / (na + nb);
  s.m2 += bm2 + delta * delta * na * nb / (na + nb);
  s.count += n;

  if (nz > 0) {
    // |x| = mantissa * 2^exponent with mantissa in [0.5, 1): the smallest e with |x| <= 2^e is
    // exponent - 1 for exact powers of two (mantissa 0.5), else exponent.
    const auto mags = nz < n ? abs.masked_select(nonzero) : abs;
    const auto fe = torch::frexp(mags);
    // Exponents of finite doubles lie in [-1073, 1024]: count them with an offset bincount.
    constexpr int64_t kOffset = 1100;
    const auto e = std::get<1>(fe).to(torch::kLong) - std::get<0>(fe).eq(0.5).to(torch::kLong);
    const auto counts = torch::bincount(e + kOffset).cpu();
    const auto* cp = counts.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < counts.numel(); ++i) {
      if (cp[i] != 0) s.log2_counts[i - kOffset] += cp[i];
    }
  }

  // Bottom-k sample by uniform random key: a uniform sample without replacement of everything
  // added, and all of it while it fits. Once full, only keys below the largest kept one enter.
  const int64_t cap = s.options.sample_capacity;
  auto keys = torch::rand({n}, s.generator, torch::kDouble);
  auto vals = v.cpu();
  if (s.sample.numel() >= cap) {
    const auto keep = keys.lt(s.keys.max());
    vals = vals.masked_select(keep);
    keys = keys.masked_select(keep);
    if (vals.numel() == 0) return;
  }
  auto all_vals = torch::cat({s.sample, vals.to(torch::kDouble)});
  auto all_keys = torch::cat({s.keys, keys});
  if (all_vals.numel() > cap) {
    const auto idx = std::get<1>(all_keys.topk(cap, 0, /*largest=*/false, /*sorted=*/false));
    all_vals = all_vals.index_select(0, idx);
    all_keys = all_keys.index_select(0, idx);
  }
  s.sample = all_vals;
  s.keys = all_keys;
}

RangeStats RangeAccumulator::stats() const {
  const State& s = *state_;
  RangeStats r;
  r.count = s.count;
  r.zeros = s.zeros;
  r.nonfinite = s.nonfinite;
  r.log2_counts = s.log2_counts;
  r.sample_size = s.sample.numel();
  r.percentiles_exact = s.sample.numel() == s.count;
  if (s.count == 0) return r;
  r.min = s.min;
  r.max = s.max;
  r.abs_max = std::max(std::abs(s.min), std::abs(s.max));
  r.mean = s.mean;
  r.std = std::sqrt(s.m2 / static_cast<double>(s.count));
  const auto sorted = std::get<0>(s.sample.sort()).contiguous();
  for (double p : s.options.percentiles) r.percentiles[p] = percentile_of_sorted(sorted, p);
  return r;
}

RangeStats range_stats(const torch::Tensor& x, const std::vector<double>& percentiles) {
  RangeOptions o;
  o.percentiles = percentiles;
  o.sample_capacity = std::max<int64_t>(1, x.defined() ? x.numel() : 1);
  RangeAccumulator acc(o);
  acc.add(x);
  return acc.stats();
}

// ---- range search ----

std::string FixedPointChoice::to_json(int indent) const { return dump(choice_json(*this), indent); }

FixedPointChoice adaption_search(const RangeStats& stats, int64_t total_bits, double threshold) {
  check_search_args(total_bits, threshold);
  TORCH_CHECK_VALUE(stats.count > 0,
                    "wrpn::analysis::adaption_search: no finite values to measure (count 0, ",
                    stats.nonfinite, " NaN or inf)");
  FixedPointChoice c;
  int64_t m = 0;
  if (!stats.log2_counts.empty()) {
    m = stats.log2_counts.rbegin()->first;  // smallest m with max|x| <= 2^m
    // Below e_min - 1 every nonzero value saturates: nothing changes any more.
    const int64_t floor = stats.log2_counts.begin()->first - 1;
    while (m > floor && stats.fraction_above_pow2(m - 1) < threshold) --m;
  }
  c.magnitude_bits = m;
  const int64_t int_bits = std::clamp<int64_t>(m + 1, 1, total_bits);
  c.format.total_bits = total_bits;
  c.format.frac_bits = total_bits - int_bits;
  c.saturated_fraction = stats.fraction_above_pow2(int_bits - 1);
  return c;
}

FixedPointChoice adaption_search(const torch::Tensor& x, int64_t total_bits, double threshold) {
  check_search_args(total_bits, threshold);
  return adaption_search(range_stats(x, {}), total_bits, threshold);
}

int64_t adaption_int_bits(const torch::Tensor& x, int64_t total_bits, double threshold) {
  return adaption_search(x, total_bits, threshold).format.int_bits();
}

// ---- sparsity ----

double zero_fraction(const torch::Tensor& x) {
  TORCH_CHECK_VALUE(x.defined(), "wrpn::analysis::zero_fraction: argument 'x' is undefined");
  if (x.numel() == 0) return 0.0;
  torch::NoGradGuard no_grad;
  return static_cast<double>(x.detach().eq(0).sum().item<int64_t>()) /
         static_cast<double>(x.numel());
}

double MacSparsity::skipped() const { return share_skipped(nonzero, total); }
double MacSparsity::skipped_by_weights() const { return share_skipped(nonzero_weight, total); }
double MacSparsity::skipped_by_activations() const {
  return share_skipped(nonzero_activation, total);
}

MacSparsity& MacSparsity::operator+=(const MacSparsity& o) {
  total += o.total;
  nonzero += o.nonzero;
  nonzero_weight += o.nonzero_weight;
  nonzero_activation += o.nonzero_activation;
  return *this;
}

std::string MacSparsity::to_json(int indent) const { return dump(macs_json(*this), indent); }

MacSparsity conv_mac_sparsity(const torch::Tensor& input, const torch::Tensor& weight,
                              torch::IntArrayRef stride, torch::IntArrayRef padding,
                              torch::IntArrayRef dilation, int64_t groups) {
  const char* fn = "wrpn::analysis::conv_mac_sparsity";
  TORCH_CHECK_VALUE(input.defined() && input.dim() == 4, fn,
                    ": argument 'input' must be a 4-D tensor [N, Cin, H, W]");
  TORCH_CHECK_VALUE(weight.defined() && weight.dim() == 4, fn,
                    ": argument 'weight' must be a 4-D tensor [Cout, Cin/groups, kh, kw]");
  TORCH_CHECK_VALUE(
      groups >= 1 && weight.size(0) % groups == 0 && input.size(1) == weight.size(1) * groups, fn,
      ": argument 'groups' = ", groups, " does not fit input channels ", input.size(1),
      " and weight ", weight.sizes());
  torch::NoGradGuard no_grad;
  const int64_t cout = weight.size(0), cin_g = weight.size(1);
  const int64_t kh = weight.size(2), kw = weight.size(3);
  // Counts per output element are at most cin_g*kh*kw: exact in float32 below 2^24.
  const auto dtype = cin_g * kh * kw < (int64_t{1} << 24) ? torch::kFloat : torch::kDouble;
  const auto xi = input.detach().ne(0).to(dtype);
  const auto wi = weight.detach().ne(0).to(dtype).to(input.device());
  const auto both = torch::conv2d(xi, wi, {}, stride, padding, dilation, groups);
  const auto ones = torch::ones({groups, cin_g, kh, kw}, xi.options());
  const auto acts = torch::conv2d(xi, ones, {}, stride, padding, dilation, groups);
  const int64_t positions = both.size(0) * both.size(2) * both.size(3);
  MacSparsity m;
  m.total = positions * cout * cin_g * kh * kw;
  m.nonzero = integer_sum(both);
  m.nonzero_weight = weight.detach().ne(0).sum().item<int64_t>() * positions;
  m.nonzero_activation = integer_sum(acts) * (cout / groups);
  return m;
}

MacSparsity linear_mac_sparsity(const torch::Tensor& input, const torch::Tensor& weight) {
  const char* fn = "wrpn::analysis::linear_mac_sparsity";
  TORCH_CHECK_VALUE(weight.defined() && weight.dim() == 2, fn,
                    ": argument 'weight' must be a 2-D tensor [out, in]");
  TORCH_CHECK_VALUE(input.defined() && input.dim() >= 1 && input.size(-1) == weight.size(1), fn,
                    ": argument 'input' must be [..., ", weight.size(1), "], got ", input.sizes());
  torch::NoGradGuard no_grad;
  const int64_t in = weight.size(1), out = weight.size(0);
  const auto x = input.detach().reshape({-1, in});
  const int64_t rows = x.size(0);
  // sum_{r,o,i} [x_ri != 0][w_oi != 0] = sum_i (nonzero x in column i) * (nonzero w in column i)
  const auto xcol = x.ne(0).sum(0).cpu();
  const auto wcol = weight.detach().ne(0).sum(0).cpu();
  MacSparsity m;
  m.total = rows * out * in;
  m.nonzero = (xcol * wcol).sum().item<int64_t>();
  m.nonzero_weight = wcol.sum().item<int64_t>() * rows;
  m.nonzero_activation = xcol.sum().item<int64_t>() * out;
  return m;
}

// ---- model-level analysis ----

void AnalysisOptions::validate() const {
  check_search_args(total_bits, threshold);
  check_percentiles(range.percentiles, "wrpn::analysis::AnalysisOptions");
  TORCH_CHECK_VALUE(range.sample_capacity >= 1,
                    "wrpn::analysis::AnalysisOptions: 'range.sample_capacity' must be >= 1, got ",
                    range.sample_capacity);
}

std::string LayerReport::to_json(int indent) const { return dump(layer_json(*this), indent); }

std::string LayerReport::quantizer() const {
  if (bits == kFullPrecisionBits) return "fp32";
  if (fixed_point.enabled()) return fixed_point.to_string();
  return "wrpn" + std::to_string(bits);
}

MacSparsity ModelAnalysis::total_macs() const {
  MacSparsity t;
  for (const auto& l : layers) t += l.macs;
  return t;
}

double ModelAnalysis::effective_weight_zero_fraction() const {
  double zeros = 0.0;
  int64_t n = 0;
  for (const auto& l : layers) {
    if (!l.has_weight()) continue;
    zeros += l.effective_weight_zero_fraction * static_cast<double>(l.weight_numel);
    n += l.weight_numel;
  }
  return n > 0 ? zeros / static_cast<double>(n) : 0.0;
}

PrecisionConfig ModelAnalysis::fixed_point_config(PrecisionConfig base) const {
  base.scheme = "fixed";
  base.weight_bits = options.total_bits;
  base.act_bits = options.total_bits;
  for (const auto& l : layers) {
    base.fixed_point[l.name] = l.has_weight() ? l.weight_format.format : l.activation_format.format;
    base.overrides.erase(l.name);  // a name may not be in both maps
  }
  base.validate();
  return base;
}

std::string ModelAnalysis::to_json(int indent) const {
  json o = {{"total_bits", options.total_bits},
            {"threshold", options.threshold},
            {"percentiles", options.range.percentiles},
            {"sample_capacity", options.range.sample_capacity},
            {"seed", options.range.seed}};
  json ls = json::array();
  int64_t weights = 0;
  for (const auto& l : layers) {
    ls.push_back(layer_json(l));
    weights += l.weight_numel;
  }
  json totals = {{"macs", macs_json(total_macs())},
                 {"weights", weights},
                 {"effective_weight_zero_fraction", effective_weight_zero_fraction()}};
  return dump({{"options", o},
               {"batches", batches},
               {"samples", samples},
               {"layers", ls},
               {"totals", totals}},
              indent);
}

namespace {

/// One observed layer while the analysis runs.
struct LayerState {
  LayerReport report;
  RangeAccumulator activation;
  explicit LayerState(const RangeOptions& o) : activation(o) {}
};

}  // namespace

struct ModelAnalyzer::State {
  torch::nn::Module* model = nullptr;
  AnalysisOptions options;
  std::unordered_map<const torch::nn::Module*, std::string> names;
  std::unordered_map<const torch::nn::Module*, size_t> index;
  std::vector<std::unique_ptr<LayerState>> layers;
  int64_t batches = 0, samples = 0;
  bool first_call_of_batch = false;

  LayerState& layer(const torch::nn::Module* module, const char* kind, int64_t bits,
                    const FixedPointFormat& format, LayerRole role) {
    auto it = index.find(module);
    if (it != index.end()) return *layers[it->second];
    auto l = std::make_unique<LayerState>(options.range);
    l->report.name = names.at(module);
    l->report.kind = kind;
    l->report.bits = bits;
    if (format.enabled() && bits != kFullPrecisionBits)
      l->report.fixed_point = format.resolved(role);
    index.emplace(module, layers.size());
    layers.push_back(std::move(l));
    return *layers.back();
  }

  /// First call of a conv/linear: the weights' statistics (they do not change while observing).
  void weight_stats(LayerState& l, const torch::Tensor& shadow, const torch::Tensor& effective) {
    if (l.report.calls > 0) return;
    l.report.weight_numel = shadow.numel();
    l.report.weight = range_stats(shadow, options.range.percentiles);
    l.report.effective_weight_zero_fraction = zero_fraction(effective);
  }

  void on_call(const nn::LayerCall& call) {
    if (names.find(call.module) == names.end()) return;  // a layer of another model
    if (first_call_of_batch) {
      first_call_of_batch = false;
      if (call.input.defined() && call.input.dim() >= 1) samples += call.input.size(0);
    }
    nn::QuantizedLayer q;
    if (!nn::as_quantized_layer(*call.module, q)) return;
    auto& l =
        layer(call.module, q.kind_name(), q.quantizer().bits, q.quantizer().fixed_point, q.role());
    if (q.has_weight()) weight_stats(l, q.weight(), call.weight);
    if (q.kind == nn::LayerKind::kConv2d) {
      const auto& o = q.conv->options;
      l.report.macs += conv_mac_sparsity(call.input, call.weight, o.stride(), o.padding(),
                                         o.dilation(), o.groups());
    } else if (q.kind == nn::LayerKind::kLinear) {
      l.report.macs += linear_mac_sparsity(call.input, call.weight);
    }
    l.activation.add(q.has_weight() ? call.input : call.output);
    ++l.report.calls;
  }
};

ModelAnalyzer::ModelAnalyzer(torch::nn::Module& model, AnalysisOptions options)
    : state_(std::make_unique<State>()) {
  options.validate();
  state_->model = &model;
  state_->options = std::move(options);
  for (const auto& item : model.named_modules()) {
    state_->names.emplace(item.value().get(), item.key());
  }
}

ModelAnalyzer::~ModelAnalyzer() = default;

void ModelAnalyzer::observe(const std::function<void()>& forward) {
  struct RestoreMode {
    torch::nn::Module* m;
    bool training;
    ~RestoreMode() { m->train(training); }
  } restore{state_->model, state_->model->is_training()};
  state_->model->eval();
  torch::NoGradGuard no_grad;
  state_->first_call_of_batch = true;
  nn::ForwardObserver observer([this](const nn::LayerCall& call) { state_->on_call(call); });
  forward();
  ++state_->batches;
}

ModelAnalysis ModelAnalyzer::result() const {
  const State& s = *state_;
  ModelAnalysis a;
  a.options = s.options;
  a.batches = s.batches;
  a.samples = s.samples;
  for (const auto& l : s.layers) {
    LayerReport r = l->report;
    r.activation = l->activation.stats();
    if (r.has_weight() && r.weight.count > 0) {
      r.weight_format = adaption_search(r.weight, s.options.total_bits, s.options.threshold);
    }
    if (r.activation.count > 0) {
      r.activation_format =
          adaption_search(r.activation, s.options.total_bits, s.options.threshold);
    }
    a.layers.push_back(std::move(r));
  }
  return a;
}

ModelAnalysis analyze_model(torch::nn::Module& model, const std::vector<torch::Tensor>& batches,
                            const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                            AnalysisOptions options) {
  ModelAnalyzer analyzer(model, std::move(options));
  for (const auto& x : batches) analyzer.observe([&] { forward(x); });
  return analyzer.result();
}

}  // namespace analysis
}  // namespace wrpn
