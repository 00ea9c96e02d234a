#pragma once
/// What one layer's quantizer is: full precision, WRPN k-bit (Wide Reduced-Precision Networks,
/// arXiv 1709.01134), or ADaPTION fixed point Q(m.f) with deterministic or stochastic rounding
/// (arXiv 1711.04713). A plain value type: modules take it in their options, a model builder
/// resolves its precision policy into one per layer.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace wrpn {

/// "32 bits": full precision. A module set to it skips the quantizer.
constexpr int64_t kFullPrecisionBits = 32;

/// True for the bit widths modules accept: 1..16 (the quantizer ops) or 32 (full precision).
bool is_valid_bits(int64_t bits);

/// Throws c10::Error naming `what` and the allowed values unless `bits` is 1..16 or 32.
void check_bits(int64_t bits, const std::string& what);

/// The role of a quantized layer, which picks the default fixed-point format.
enum class LayerRole { kWeight, kActivation };

/// ADaPTION fixed point Q(m.f): total_bits = m + f, the sign bit inside m. Text form "Q3.13"
/// (m = 3, f = 13), or "fixed16" for the default split of 16 bits by role
/// (default_fixed_point()); a trailing "s" ("Q3.13s") asks for stochastic rounding while
/// training.
struct FixedPointFormat {
  /// 2..16 (the module bit range); 0: not fixed point.
  int64_t total_bits = 0;
  /// 0..total_bits - 1; -1: the default for the layer's role (default_fixed_point()).
  int64_t frac_bits = -1;
  /// Stochastic rounding in training (evaluation always rounds half to even).
  bool stochastic = false;

  bool enabled() const { return total_bits > 0; }
  /// m, sign bit included (needs frac_bits >= 0).
  int64_t int_bits() const { return total_bits - frac_bits; }
  /// This format with frac_bits resolved for `role` when it is -1.
  FixedPointFormat resolved(LayerRole role) const;
  /// "Q3.13", "Q3.13s", "fixed16" (frac_bits -1).
  std::string to_string() const;
  /// Parses to_string()'s forms; throws c10::Error naming the text and the accepted forms.
  static FixedPointFormat parse(const std::string& text);
  bool operator==(const FixedPointFormat& o) const {
    return total_bits == o.total_bits && frac_bits == o.frac_bits && stochastic == o.stochastic;
  }
  bool operator!=(const FixedPointFormat& o) const { return !(*this == o); }
};

/// The format "fixed<N>" means: weights Q2.(N-2) (range about [-2, 2), which holds the
/// weights of a BatchNorm network), activations Q(ceil(N/2)).(floor(N/2)).
FixedPointFormat default_fixed_point(int64_t total_bits, LayerRole role);

namespace nn {

/// One layer's quantizer. `bits` says how many bits the layer's values take (1..16, or 32 for
/// full precision); an enabled `fixed_point` format makes it ADaPTION fixed point, whose
/// total_bits must equal `bits`. Otherwise a layer with bits < 32 is a WRPN quantizer:
/// weights round(clamp(w, -1, 1) * s) / s with s = 2^(k-1) - 1 (k = 1: +-mean|w|),
/// activations round(clamp(x, 0, 1) * s) / s with s = 2^k - 1 (it replaces the ReLU).
struct Quantizer {
  enum class Kind { kFullPrecision, kWrpn, kFixedPoint };

  int64_t bits = kFullPrecisionBits;
  FixedPointFormat fixed_point{};

  /// Full precision (32 bits): weights as they are, activations through a plain ReLU.
  static Quantizer full_precision() { return {}; }
  /// The WRPN quantizer at `bits` (1..16), or full precision at 32.
  static Quantizer wrpn(int64_t bits);
  /// ADaPTION fixed point in `format` (bits = its total bits).
  static Quantizer fixed(const FixedPointFormat& format);

  Kind kind() const;
  bool is_full_precision() const { return kind() == Kind::kFullPrecision; }

  /// Checks the bits and the format (total bits equal to `bits`, fraction bits in range) and
  /// resolves a default fraction split for `role`. `module` names the layer in messages.
  Quantizer resolved(LayerRole role, const std::string& module) const;

  /// Applies the quantizer as a weight quantizer: identity, wrpn::quantize_weight, or
  /// wrpn::quantize_fixed_point (stochastic rounding only when `training`).
  at::Tensor quantize_weight(const at::Tensor& w, bool training) const;
  /// Applies it as an activation function: relu, wrpn::quantize_activation, or relu followed by
  /// fixed point.
  at::Tensor quantize_activation(const at::Tensor& x, bool training) const;

  /// "fp32", "wrpn4" or the fixed-point format ("Q2.14", "Q4.4s").
  std::string to_string() const;

  bool operator==(const Quantizer& o) const {
    return bits == o.bits && fixed_point == o.fixed_point;
  }
  bool operator!=(const Quantizer& o) const { return !(*this == o); }
};

/// Shorthands for the fields of a conv's or FC's quantizers, mixed into their options (which
/// hold `weight_quantizer` and `input_quantizer`): weight bits (1..16, or 32 for fp32), the
/// fixed-point format of the weight quantizer (its total_bits must equal the weight bits;
/// frac_bits -1 takes the weight default), and the bits of the input.
template <typename Options>
struct LayerQuantizerShorthands {
  Options& weight_bits(int64_t bits) {
    Quantizer q = self().weight_quantizer();
    q.bits = bits;
    return self().weight_quantizer(q);
  }
  int64_t weight_bits() const { return self().weight_quantizer().bits; }
  Options& fixed_point(const FixedPointFormat& format) {
    Quantizer q = self().weight_quantizer();
    q.fixed_point = format;
    return self().weight_quantizer(q);
  }
  const FixedPointFormat& fixed_point() const { return self().weight_quantizer().fixed_point; }
  Options& input_bits(int64_t bits) {
    Quantizer q = self().input_quantizer();
    q.bits = bits;
    return self().input_quantizer(q);
  }
  int64_t input_bits() const { return self().input_quantizer().bits; }

 private:
  Options& self() { return static_cast<Options&>(*this); }
  const Options& self() const { return static_cast<const Options&>(*this); }
};

}  // namespace nn
}  // namespace wrpn
