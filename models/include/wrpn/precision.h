#pragma once
/// The zoo's precision policy for a whole model: bit widths, width multiplier, which layers stay
/// fp32, where residual networks quantize, and per-layer overrides. A model builder resolves it
/// into one nn::Quantizer per layer (quantizer_for()). Plain data with JSON text I/O.

#include <cstdint>
#include <map>
#include <string>

#include "wrpn/nn/quantizer.h"

namespace wrpn {

/// Bit widths, width multiplier and per-layer exceptions of one model.
///
/// Which bits a layer gets, first match wins: an entry in `overrides` under the layer's module
/// name; the first conv or last FC when `fp32_first_layer` / `fp32_last_layer` holds (32 bits,
/// and the activation entering that layer is not quantized); otherwise `weight_bits` for convs
/// and FCs and `act_bits` for activation quantizers.
struct PrecisionConfig {
  /// Bits of every quantized conv/FC weight: 1..16, or 32 for fp32.
  int64_t weight_bits = kFullPrecisionBits;
  /// Bits of every activation quantizer (each replaces a ReLU): 1..16, or 32 for plain ReLU.
  int64_t act_bits = kFullPrecisionBits;
  /// Multiplier of every internal channel count (1, 2, 3, or e.g. 1.5), in (0, 64].
  double width = 1.0;
  /// Keep the first conv's weights fp32 and its input unquantized (WRPN's default).
  bool fp32_first_layer = true;
  /// Keep the last FC's weights fp32 and the activation feeding it unquantized (WRPN's default).
  bool fp32_last_layer = true;
  /// Where residual networks quantize their block outputs. false (default): the ReLU after each
  /// residual addition stays, the identity shortcut carries that fp32 sum, and each block
  /// quantizes its input once for the convs that read it. true: a quantizer replaces that ReLU
  /// too, so blocks pass k-bit activations to each other (what replacing every ReLU module
  /// gives, as Distiller's WRPN quantizer does). Every quantized
  /// conv reads a k-bit activation either way (the README compares the two).
  bool quantized_residual = false;
  /// Bits by module name (as in named_modules(), e.g. "layer1.0.conv2" or "layer1.0.act1"):
  /// weight bits for a conv/FC, activation bits for an activation quantizer; 32 is fp32.
  /// A model rejects names it does not have.
  std::map<std::string, int64_t> overrides;
  /// Quantizer family of every quantized layer: "wrpn" (the WRPN quantizers) or "fixed"
  /// (ADaPTION Q(m.f) with weight_bits / act_bits total bits, split as default_fixed_point()).
  std::string scheme = "wrpn";
  /// With scheme "fixed": stochastic rounding while training.
  bool fixed_stochastic = false;
  /// Per-layer fixed-point formats by module name; an entry wins over everything else, and its
  /// total_bits are the layer's bits. JSON: string values in "overrides", e.g.
  /// {"layer1.0.conv1": "Q2.14", "fc": "fixed8"}. A name may not be in both maps.
  std::map<std::string, FixedPointFormat> fixed_point;

  /// A config with `weight_bits`, `act_bits` and `width`, the other fields at their defaults.
  static PrecisionConfig make(int64_t weight_bits, int64_t act_bits, double width = 1.0);

  /// Throws c10::Error naming the first field that is out of range and what it expects.
  void validate() const;

  /// `round(base * width)`, at least 1: the channel count of a layer with `base` at width 1.
  int64_t channels(int64_t base) const;

  /// The bits of the layer `name`: its fixed-point entry's total bits, its override, else
  /// `default_bits`.
  int64_t bits_for(const std::string& name, int64_t default_bits) const;

  /// The fixed-point format of layer `name` whose bits (bits_for) are `bits`, resolved for
  /// `role`; disabled (total_bits 0) for WRPN and fp32 layers.
  FixedPointFormat fixed_point_for(const std::string& name, LayerRole role, int64_t bits) const;

  /// The quantizer of layer `name` in `role` whose bits are `default_bits` unless an entry
  /// names it: bits_for() and fixed_point_for() in one resolved descriptor.
  nn::Quantizer quantizer_for(const std::string& name, LayerRole role, int64_t default_bits) const;

  /// True when every quantizer is off (all bits 32, overrides included).
  bool is_full_precision() const;

  /// A one-line summary such as "w4a4 x2" or "fp32 x1".
  std::string short_name() const;

  /// JSON text, e.g. {"weight_bits":4,"act_bits":4,"width":2.0,"fp32_first_layer":true,
  /// "fp32_last_layer":true,"quantized_residual":false,"overrides":{"fc":8}}. `indent` < 0
  /// writes one line.
  std::string to_json(int indent = 2) const;

  /// Parses and validates JSON text as written by to_json(). Missing keys keep their defaults;
  /// unknown keys, wrong types and out-of-range values throw c10::Error naming the key.
  static PrecisionConfig from_json(const std::string& text);

  bool operator==(const PrecisionConfig& other) const;
  bool operator!=(const PrecisionConfig& other) const { return !(*this == other); }
};

}  // namespace wrpn
