#pragma once
/// WRPN's compute-cost report (arXiv 1709.01134): per conv/FC layer and in total,
/// parameters, MACs at an input size, weight and activation bits, bit-ops (MACs * b_w * b_a)
/// and weight storage at the chosen bits, beside the same model at fp32 and width 1.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "wrpn/models/classifier.h"

namespace wrpn {
namespace models {

/// One QuantConv2d or QuantLinear layer.
struct LayerCost {
  /// Module name, e.g. "layer1.0.conv1".
  std::string name;
  /// "conv" or "fc".
  std::string kind;
  std::vector<int64_t> weight_shape;
  /// Weight and bias elements.
  int64_t params = 0;
  /// Multiply-accumulates for one input image.
  int64_t macs = 0;
  /// Weight bits (32: fp32).
  int64_t weight_bits = 32;
  /// Bits of the activation the layer reads (32: unquantized).
  int64_t act_bits = 32;
  /// macs * weight_bits * act_bits.
  int64_t bit_ops = 0;
  /// Weight elements * weight_bits, plus a 32-bit scale for a quantized weight and 32 bits per
  /// bias element: what export_packed() writes for the layer.
  int64_t storage_bits = 0;
  /// Fraction of the weights the quantizer maps to zero (at initialisation for a new model);
  /// for an fp32 layer, the fraction of exact zeros.
  double zero_fraction = 0.0;
};

/// Sums over a model.
struct CostTotals {
  /// All parameters, conv/FC and the rest (BatchNorm).
  int64_t params = 0;
  /// Conv and FC parameters alone.
  int64_t layer_params = 0;
  int64_t macs = 0;
  int64_t bit_ops = 0;
  /// Conv/FC storage at their bits plus the other parameters at 32 bits.
  int64_t storage_bits = 0;
  /// Mean of the layers' zero fractions over quantized weights, weighted by weight count.
  double zero_fraction = 0.0;
};

/// The report for one model at one input size.
struct CostReport {
  ModelSpec spec;
  int64_t input_height = 0;
  int64_t input_width = 0;
  std::vector<LayerCost> layers;
  CostTotals totals;
  /// The same model at fp32 and width 1 (no overrides), when requested.
  std::optional<CostTotals> baseline;

  /// A fixed-width text table: one row per layer, then totals, baseline and ratios.
  std::string to_table() const;
  /// The report as JSON text (layers, totals, baseline, ratios).
  std::string to_json(int indent = 2) const;
};

/// Traces one forward pass of a 1-image batch (no gradients, eval mode, restored afterwards)
/// through `model` at `height` x `width` and reports every wrpn::nn::QuantConv2d and
/// QuantLinear in call order. With `with_baseline`, also builds and traces the model's fp32
/// width-1 twin from the registry. Sizes <= 0 take the registry's default input size.
CostReport cost_report(ClassifierImpl& model, int64_t height = 0, int64_t width = 0,
                       bool with_baseline = true);

}  // namespace models
}  // namespace wrpn
