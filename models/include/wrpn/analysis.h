#pragma once
/// ADaPTION's range and sparsity measurements (Milde et al., arXiv 1711.04713): value ranges per
/// layer, the Q(m.f) range search, exact zero fractions and the share of MACs a zero-skipping
/// engine would skip (Venkatesh et al., arXiv 1610.00324).
///
/// Everything here works on plain tensors and on any torch::nn::Module built from
/// wrpn::nn::QuantConv2d, QuantLinear and QuantReLU (seen through wrpn::nn::ForwardObserver), so
/// the zoo's models and hand-built Sequentials are analysed alike.

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "wrpn/precision.h"

namespace wrpn {
namespace analysis {

/// The percentiles reported by default, in percent.
std::vector<double> default_percentiles();

/// Summary of a stream of values. Everything but `percentiles` is exact. NaN and +-inf are
/// counted in `nonfinite` and left out of every other field.
struct RangeStats {
  /// Finite values seen (zeros included).
  int64_t count = 0;
  /// Exact zeros (+0 and -0) among them.
  int64_t zeros = 0;
  /// NaN and +-inf values, excluded from everything else.
  int64_t nonfinite = 0;
  /// Over the finite values; all 0 when count is 0.
  double min = 0.0, max = 0.0, abs_max = 0.0, mean = 0.0, std = 0.0;
  /// Key e: how many nonzero finite values have 2^(e-1) < |x| <= 2^e. Exact; the range search
  /// reads saturation counts from it.
  std::map<int64_t, int64_t> log2_counts;
  /// Percent (e.g. 99.9) -> value, linearly interpolated between order statistics (numpy's and
  /// torch.quantile's default) of the finite values, or of a uniform random sample of them.
  std::map<double, double> percentiles;
  /// True when `percentiles` come from every finite value, false when from a sample.
  bool percentiles_exact = true;
  /// How many values the percentiles were computed from.
  int64_t sample_size = 0;

  /// zeros / count (0 when count is 0).
  double zero_fraction() const;
  /// Share of the finite values with |x| > 2^e (0 when count is 0).
  double fraction_above_pow2(int64_t e) const;
  /// JSON object text.
  std::string to_json(int indent = 2) const;
};

/// Options of a RangeAccumulator.
struct RangeOptions {
  /// Percentiles to report, each in [0, 100].
  std::vector<double> percentiles = default_percentiles();
  /// Percentiles are exact while at most this many finite values were added; beyond it they
  /// come from a uniform random sample of this size (bottom-k by random key, without
  /// replacement, over all values added). Memory: 16 bytes a sampled value.
  int64_t sample_capacity = int64_t{1} << 18;
  /// Seed of the sample's keys: equal inputs give equal results.
  uint64_t seed = 0;
};

/// Accumulates RangeStats over many tensors (e.g. one layer's activations over batches).
/// Counts, min/max, mean/std, zeros and the log2 histogram are exact; see RangeOptions for the
/// percentiles. Tensors may be on any device and of any floating dtype; they are not kept.
class RangeAccumulator {
 public:
  explicit RangeAccumulator(RangeOptions options = {});
  ~RangeAccumulator();
  RangeAccumulator(RangeAccumulator&&) noexcept;
  RangeAccumulator& operator=(RangeAccumulator&&) noexcept;

  /// Adds every element of `x` (detached; autograd history is ignored).
  void add(const torch::Tensor& x);
  /// The statistics of everything added so far.
  RangeStats stats() const;
  /// Finite values added so far.
  int64_t count() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

/// RangeStats of one tensor, percentiles exact.
RangeStats range_stats(const torch::Tensor& x,
                       const std::vector<double>& percentiles = default_percentiles());

/// The outcome of the ADaPTION range search for one layer.
struct FixedPointChoice {
  /// Q(int_bits.frac_bits), int_bits counting the sign bit, int_bits + frac_bits = total_bits.
  FixedPointFormat format;
  /// The search's m (magnitude bits, before the sign bit and before clamping); <= 0 for values
  /// below 1 in magnitude, e.g. -2 when nearly all |x| <= 1/4.
  int64_t magnitude_bits = 0;
  /// Share of the finite values that saturate in `format`: |x| > 2^(int_bits - 1).
  double saturated_fraction = 0.0;
  /// JSON object text: {"format":"Q3.13","magnitude_bits":2,"saturated_fraction":0.0}.
  std::string to_json(int indent = 2) const;
};

/// ADaPTION's range search on measured values. Saturation at m magnitude bits means
/// |x| > 2^m (the clamp bound of Q(m+1).f is 2^m - 2^-f, one LSB lower: values in between lose
/// less than an LSB, like rounding). m starts as the smallest integer with max|x| <= 2^m and
/// decreases while fewer than `threshold` of the finite values (zeros included) would saturate
/// at m - 1; it stops once every nonzero value saturates. Then int_bits = m + 1 (the sign bit),
/// clamped to [1, total_bits], and frac_bits = total_bits - int_bits, so at most
/// total_bits - 1 fraction bits however small the values are. All-zero input gives
/// Q1.(total_bits-1). Throws c10::Error for total_bits outside [2, 16], threshold outside
/// [0, 1] or NaN, and stats without finite values.
FixedPointChoice adaption_search(const RangeStats& stats, int64_t total_bits,
                                 double threshold = 0.1);

/// adaption_search() on the values of `x` (NaN and +-inf are ignored).
FixedPointChoice adaption_search(const torch::Tensor& x, int64_t total_bits,
                                 double threshold = 0.1);

/// The int_bits (sign bit included) adaption_search() chooses.
int64_t adaption_int_bits(const torch::Tensor& x, int64_t total_bits, double threshold = 0.1);

/// Share of the elements of `x` that are exactly zero (+0 or -0); 0 for an empty tensor.
double zero_fraction(const torch::Tensor& x);

/// MAC counts of a conv or linear call, as a zero-skipping engine sees them. Every MAC multiplies
/// one activation by one weight; a conv's zero padding counts as zero activations.
struct MacSparsity {
  /// All MACs: N*Hout*Wout*Cout*(Cin/groups)*kh*kw for a conv, rows*out*in for a linear (the
  /// cost report's count).
  int64_t total = 0;
  /// MACs whose weight and activation are both nonzero: what a zero-skipping engine computes.
  int64_t nonzero = 0;
  /// MACs whose weight is nonzero.
  int64_t nonzero_weight = 0;
  /// MACs whose activation is nonzero.
  int64_t nonzero_activation = 0;

  /// 1 - nonzero / total (0 when total is 0).
  double skipped() const;
  /// Share skipped when only zero weights are skipped.
  double skipped_by_weights() const;
  /// Share skipped when only zero activations are skipped.
  double skipped_by_activations() const;
  MacSparsity& operator+=(const MacSparsity& other);
  std::string to_json(int indent = 2) const;
};

/// Exact MAC counts of conv2d(input [N, Cin, H, W], weight [Cout, Cin/groups, kh, kw]) with
/// zero padding; the nonzero counts are convolutions of the operands' nonzero masks.
MacSparsity conv_mac_sparsity(const torch::Tensor& input, const torch::Tensor& weight,
                              torch::IntArrayRef stride, torch::IntArrayRef padding,
                              torch::IntArrayRef dilation, int64_t groups = 1);

/// Exact MAC counts of linear(input [..., in], weight [out, in]).
MacSparsity linear_mac_sparsity(const torch::Tensor& input, const torch::Tensor& weight);

/// Options of a model-level analysis.
struct AnalysisOptions {
  /// Total bits of the fixed-point formats the range search picks (2..16).
  int64_t total_bits = 16;
  /// Saturation threshold of the range search, in [0, 1].
  double threshold = 0.1;
  /// Percentiles, sample size and seed of every range.
  RangeOptions range;

  /// Throws c10::Error naming the first bad field.
  void validate() const;
};

/// What the analysis measured for one layer.
struct LayerReport {
  /// Module name as in named_modules(), e.g. "layer1.0.conv1".
  std::string name;
  /// "conv" (QuantConv2d), "linear" (QuantLinear) or "act" (QuantReLU).
  std::string kind;
  /// Weight bits of a conv/linear, activation bits of an act; 32 is fp32.
  int64_t bits = kFullPrecisionBits;
  /// The layer's fixed-point format when it already uses one (scheme "fixed"), else disabled.
  FixedPointFormat fixed_point;
  /// Forward calls observed.
  int64_t calls = 0;

  // conv and linear only.
  /// Number of weight elements.
  int64_t weight_numel = 0;
  /// The fp32 shadow weight.
  RangeStats weight;
  /// Zero fraction of the weight forward() uses (quantized at `bits`).
  double effective_weight_zero_fraction = 0.0;
  /// Q(m.f) for the fp32 shadow weight.
  FixedPointChoice weight_format;
  /// Summed over the calls.
  MacSparsity macs;

  /// The activation: a conv/linear's input, an act's output (the quantized ReLU's values).
  RangeStats activation;
  /// Q(m.f) for `activation`; for an act it is the format written to the precision config.
  FixedPointChoice activation_format;

  bool has_weight() const { return kind != "act"; }
  /// The quantizer the layer runs: "fp32", "wrpn4" (WRPN at 4 bits) or "Q3.13" (fixed point).
  std::string quantizer() const;
  std::string to_json(int indent = 2) const;
};

/// A model-level analysis: every observed layer, in the order of its first call.
struct ModelAnalysis {
  AnalysisOptions options;
  std::vector<LayerReport> layers;
  /// Batches and samples (first dimension of the first layer's input) observed.
  int64_t batches = 0;
  int64_t samples = 0;

  /// Summed over every conv and linear.
  MacSparsity total_macs() const;
  /// Zero fraction of all effective conv/linear weights together (weighted by element count).
  double effective_weight_zero_fraction() const;

  /// `base` with scheme "fixed", weight_bits = act_bits = options.total_bits and an explicit
  /// fixed_point entry for every observed layer: a conv/linear gets its weight format, an act
  /// the format of its output (fp32 first/last layers included, as in ADaPTION; a bits override
  /// of the same name is dropped). Pass the model's own config as `base` to keep width etc.
  PrecisionConfig fixed_point_config(PrecisionConfig base) const;

  /// JSON text: {"options":{...},"batches":..,"samples":..,"layers":[...],"totals":{...}}.
  std::string to_json(int indent = 2) const;
};

/// Observes a model's QuantConv2d, QuantLinear and QuantReLU layers over any number of forward
/// passes and reports ranges, zero fractions, MAC sparsity and the Q(m.f) choices.
///
///   wrpn::analysis::ModelAnalyzer analyzer(*model);
///   for (auto& x : batches) analyzer.observe([&] { model->forward(x); });
///   auto report = analyzer.result();
class ModelAnalyzer {
 public:
  /// Names layers by `model.named_modules()`; `model` must outlive the analyzer.
  explicit ModelAnalyzer(torch::nn::Module& model, AnalysisOptions options = {});
  ~ModelAnalyzer();
  ModelAnalyzer(const ModelAnalyzer&) = delete;
  ModelAnalyzer& operator=(const ModelAnalyzer&) = delete;

  /// Runs `forward` (one batch through the model) in eval mode, without grad, with every layer
  /// call recorded; restores the model's training flag afterwards.
  void observe(const std::function<void()>& forward);

  /// Everything observed so far.
  ModelAnalysis result() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

/// Runs `forward(x)` for every batch under a ModelAnalyzer and returns its result.
ModelAnalysis analyze_model(torch::nn::Module& model, const std::vector<torch::Tensor>& batches,
                            const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                            AnalysisOptions options = {});

}  // namespace analysis
}  // namespace wrpn
