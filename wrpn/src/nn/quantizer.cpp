// The layer quantizer descriptor and the fixed-point format it may carry.

#include "wrpn/nn/quantizer.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "wrpn/ops.h"

namespace wrpn {

bool is_valid_bits(int64_t bits) {
  return (bits >= kMinBits && bits <= kMaxBits) || bits == kFullPrecisionBits;
}

void check_bits(int64_t bits, const std::string& what) {
  TORCH_CHECK(is_valid_bits(bits), what, " = ", bits, ": expected ", kMinBits, "..", kMaxBits,
              " bits, or ", kFullPrecisionBits, " for full precision");
}

// ---- fixed point ----

FixedPointFormat default_fixed_point(int64_t total_bits, LayerRole role) {
  TORCH_CHECK(total_bits >= 2 && total_bits <= kMaxBits, "fixed point: total_bits = ", total_bits,
              ": expected 2..", kMaxBits);
  FixedPointFormat f;
  f.total_bits = total_bits;
  f.frac_bits = role == LayerRole::kWeight ? total_bits - 2 : total_bits / 2;
  return f;
}

FixedPointFormat FixedPointFormat::resolved(LayerRole role) const {
  if (!enabled() || frac_bits >= 0) return *this;
  FixedPointFormat f = default_fixed_point(total_bits, role);
  f.stochastic = stochastic;
  return f;
}

std::string FixedPointFormat::to_string() const {
  if (!enabled()) return "none";
  std::string s = frac_bits < 0 ? fmt::format("fixed{}", total_bits)
                                : fmt::format("Q{}.{}", total_bits - frac_bits, frac_bits);
  return stochastic ? s + "s" : s;
}

FixedPointFormat FixedPointFormat::parse(const std::string& text) {
  auto fail = [&]() {
    TORCH_CHECK(false, "fixed-point format \"", text,
                "\": expected Q<m>.<f> (m integer bits with the sign, f fraction bits, m >= 1, "
                "m + f in 2..16, e.g. Q2.14) or fixed<N> (N in 2..16), optionally followed by "
                "'s' for stochastic rounding (e.g. Q2.14s)");
  };
  std::string t = text;
  FixedPointFormat f;
  if (!t.empty() && t.back() == 's') {
    f.stochastic = true;
    t.pop_back();
  }
  auto parse_int = [&](const std::string& digits) -> int64_t {
    if (digits.empty() || digits.size() > 3 ||
        digits.find_first_not_of("0123456789") != std::string::npos) {
      fail();
    }
    return std::stoll(digits);
  };
  if (t.rfind("fixed", 0) == 0) {
    f.total_bits = parse_int(t.substr(5));
    f.frac_bits = -1;
  } else if (!t.empty() && (t[0] == 'Q' || t[0] == 'q')) {
    const auto dot = t.find('.');
    if (dot == std::string::npos) fail();
    const int64_t m = parse_int(t.substr(1, dot - 1));
    f.frac_bits = parse_int(t.substr(dot + 1));
    f.total_bits = m + f.frac_bits;
    if (m < 1) fail();
  } else {
    fail();
  }
  if (f.total_bits < 2 || f.total_bits > kMaxBits) fail();
  return f;
}

namespace nn {

Quantizer Quantizer::wrpn(int64_t bits) {
  Quantizer q;
  q.bits = bits;
  return q;
}

Quantizer Quantizer::fixed(const FixedPointFormat& format) {
  Quantizer q;
  q.bits = format.total_bits;
  q.fixed_point = format;
  return q;
}

Quantizer::Kind Quantizer::kind() const {
  if (fixed_point.enabled()) return Kind::kFixedPoint;
  return bits == kFullPrecisionBits ? Kind::kFullPrecision : Kind::kWrpn;
}

Quantizer Quantizer::resolved(LayerRole role, const std::string& module) const {
  check_bits(bits, module + (role == LayerRole::kWeight ? " weight_bits" : " bits"));
  if (!fixed_point.enabled()) return *this;
  const FixedPointFormat& f = fixed_point;
  TORCH_CHECK(f.total_bits == bits, module, ": fixed_point ", f.to_string(), " has ", f.total_bits,
              " total bits but the layer has ", bits, " bits; set both to the same value");
  const FixedPointFormat r = f.resolved(role);
  TORCH_CHECK(r.frac_bits >= 0 && r.frac_bits < r.total_bits && r.total_bits >= 2, module,
              ": fixed_point ", f.to_string(),
              ": expected 2..16 total bits and 0..total-1 "
              "fraction bits");
  Quantizer q = *this;
  q.fixed_point = r;
  return q;
}

namespace {
/// Q(m.f) of x; stochastic rounding only while training, as ADaPTION trains.
at::Tensor apply_fixed_point(const at::Tensor& x, const FixedPointFormat& f, bool training) {
  TORCH_CHECK(f.frac_bits >= 0, "fixed point ", f.to_string(),
              ": the fraction bits are unresolved; call Quantizer::resolved() first");
  return wrpn::quantize_fixed_point(x, f.total_bits, f.frac_bits, f.stochastic && training);
}
}  // namespace

at::Tensor Quantizer::quantize_weight(const at::Tensor& w, bool training) const {
  switch (kind()) {
    case Kind::kFixedPoint:
      return apply_fixed_point(w, fixed_point, training);
    case Kind::kWrpn:
      return wrpn::quantize_weight(w, bits);
    case Kind::kFullPrecision:
      break;
  }
  return w;
}

at::Tensor Quantizer::quantize_activation(const at::Tensor& x, bool training) const {
  switch (kind()) {
    case Kind::kFixedPoint:
      return apply_fixed_point(torch::relu(x), fixed_point, training);
    case Kind::kWrpn:
      return wrpn::quantize_activation(x, bits);
    case Kind::kFullPrecision:
      break;
  }
  return torch::relu(x);
}

std::string Quantizer::to_string() const {
  switch (kind()) {
    case Kind::kFixedPoint:
      return fixed_point.to_string();
    case Kind::kWrpn:
      return "wrpn" + std::to_string(bits);
    case Kind::kFullPrecision:
      break;
  }
  return "fp32";
}

}  // namespace nn
}  // namespace wrpn
