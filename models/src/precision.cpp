#include "wrpn/precision.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <wrpn/util/text.h>

#include <cmath>
#include <set>

#include "precision_json.h"
#include "wrpn/ops.h"

namespace wrpn {

PrecisionConfig PrecisionConfig::make(int64_t weight_bits, int64_t act_bits, double width) {
  PrecisionConfig c;
  c.weight_bits = weight_bits;
  c.act_bits = act_bits;
  c.width = width;
  c.validate();
  return c;
}

namespace {
constexpr double kMaxWidth = 64.0;
}  // namespace

void PrecisionConfig::validate() const {
  check_bits(weight_bits, "precision config: weight_bits");
  check_bits(act_bits, "precision config: act_bits");
  TORCH_CHECK(std::isfinite(width) && width > 0.0 && width <= kMaxWidth,
              "precision config: width = ", width, ": expected a multiplier in (0, ", kMaxWidth,
              "], e.g. 1, 2, 3 or 1.5");
  for (const auto& [name, bits] : overrides) {
    TORCH_CHECK(!name.empty(), "precision config: an override has an empty module name");
    check_bits(bits, "precision config: overrides[\"" + name + "\"]");
  }
  TORCH_CHECK(scheme == "wrpn" || scheme == "fixed", "precision config: scheme = \"", scheme,
              "\": expected \"wrpn\" or \"fixed\"");
  if (scheme == "fixed") {
    for (int64_t b : {weight_bits, act_bits}) {
      TORCH_CHECK(b == kFullPrecisionBits || (b >= 2 && b <= kMaxBits),
                  "precision config: scheme \"fixed\" needs weight_bits and act_bits in 2..",
                  kMaxBits, " (total fixed-point bits) or 32, got ", b);
    }
  }
  for (const auto& [name, f] : fixed_point) {
    const std::string what = "precision config: overrides[\"" + name + "\"] = " + f.to_string();
    TORCH_CHECK(!name.empty(), "precision config: a fixed-point entry has an empty module name");
    TORCH_CHECK(f.total_bits >= 2 && f.total_bits <= kMaxBits, what, ": total bits must be 2..",
                kMaxBits);
    TORCH_CHECK(f.frac_bits >= -1 && f.frac_bits < f.total_bits, what,
                ": fraction bits must be in 0..total_bits - 1");
    TORCH_CHECK(!overrides.count(name), "precision config: \"", name,
                "\" has both a bits override and a fixed-point format; keep one");
  }
}

int64_t PrecisionConfig::channels(int64_t base) const {
  return std::max<int64_t>(1, std::llround(static_cast<double>(base) * width));
}

int64_t PrecisionConfig::bits_for(const std::string& name, int64_t default_bits) const {
  auto f = fixed_point.find(name);
  if (f != fixed_point.end()) return f->second.total_bits;
  auto it = overrides.find(name);
  return it == overrides.end() ? default_bits : it->second;
}

FixedPointFormat PrecisionConfig::fixed_point_for(const std::string& name, LayerRole role,
                                                  int64_t bits) const {
  auto f = fixed_point.find(name);
  if (f != fixed_point.end()) return f->second.resolved(role);
  if (scheme != "fixed" || bits == kFullPrecisionBits) return {};
  FixedPointFormat d = default_fixed_point(bits, role);
  d.stochastic = fixed_stochastic;
  return d;
}

nn::Quantizer PrecisionConfig::quantizer_for(const std::string& name, LayerRole role,
                                             int64_t default_bits) const {
  nn::Quantizer q;
  q.bits = bits_for(name, default_bits);
  q.fixed_point = fixed_point_for(name, role, q.bits);  // resolved for the role already
  return q;
}

bool PrecisionConfig::is_full_precision() const {
  if (!fixed_point.empty()) return false;
  if (weight_bits != kFullPrecisionBits || act_bits != kFullPrecisionBits) return false;
  for (const auto& kv : overrides) {
    if (kv.second != kFullPrecisionBits) return false;
  }
  return true;
}

std::string PrecisionConfig::short_name() const {
  auto bits = [](int64_t b) {
    return b == kFullPrecisionBits ? std::string("32") : std::to_string(b);
  };
  std::string s =
      is_full_precision() ? std::string("fp32") : "w" + bits(weight_bits) + "a" + bits(act_bits);
  if (scheme == "fixed") s = "fixed " + s;
  s += fmt::format(" x{:g}", width);
  const size_t n = overrides.size() + fixed_point.size();
  if (n > 0) s += fmt::format(" +{} overrides", n);
  return s;
}

bool PrecisionConfig::operator==(const PrecisionConfig& o) const {
  return weight_bits == o.weight_bits && act_bits == o.act_bits && width == o.width &&
         fp32_first_layer == o.fp32_first_layer && fp32_last_layer == o.fp32_last_layer &&
         quantized_residual == o.quantized_residual && overrides == o.overrides &&
         scheme == o.scheme && fixed_stochastic == o.fixed_stochastic &&
         fixed_point == o.fixed_point;
}

std::string PrecisionConfig::to_json(int indent) const {
  return detail::precision_to_json(*this).dump(indent);
}

PrecisionConfig PrecisionConfig::from_json(const std::string& text) {
  return detail::precision_from_json(wrpn::util::parse_json(text, "precision config"),
                                     "precision config");
}

namespace detail {

nlohmann::json precision_to_json(const PrecisionConfig& c) {
  nlohmann::json overrides = nlohmann::json::object();
  for (const auto& [name, bits] : c.overrides) overrides[name] = bits;
  for (const auto& [name, f] : c.fixed_point) overrides[name] = f.to_string();
  nlohmann::json j = {{"weight_bits", c.weight_bits},
                      {"act_bits", c.act_bits},
                      {"width", c.width},
                      {"fp32_first_layer", c.fp32_first_layer},
                      {"fp32_last_layer", c.fp32_last_layer},
                      {"quantized_residual", c.quantized_residual},
                      {"overrides", overrides}};
  // Written only when used, so WRPN configs keep their documented shape.
  if (c.scheme != "wrpn") j["scheme"] = c.scheme;
  if (c.fixed_stochastic) j["fixed_stochastic"] = true;
  return j;
}

namespace {

int64_t get_bits(const nlohmann::json& v, const std::string& key) {
  TORCH_CHECK(v.is_number_integer(), key, ": expected an integer number of bits (1..16, or 32),",
              " got ", wrpn::util::json_excerpt(v));
  return v.get<int64_t>();
}

}  // namespace

PrecisionConfig precision_from_json(const nlohmann::json& j, const std::string& where) {
  TORCH_CHECK(j.is_object(), where, ": expected a JSON object, got ", wrpn::util::json_excerpt(j));
  static const std::set<std::string> kKeys = {
      "weight_bits",        "act_bits",  "width",  "fp32_first_layer", "fp32_last_layer",
      "quantized_residual", "overrides", "scheme", "fixed_stochastic"};
  PrecisionConfig c;
  for (const auto& [key, v] : j.items()) {
    TORCH_CHECK(kKeys.count(key), where, ": unknown key ", wrpn::util::printable(key),
                "; expected one of ",
                "weight_bits, act_bits, width, fp32_first_layer, fp32_last_layer, ",
                "quantized_residual, overrides, scheme, fixed_stochastic");
    const std::string what = where + ": " + key;
    if (key == "weight_bits") {
      c.weight_bits = get_bits(v, what);
    } else if (key == "act_bits") {
      c.act_bits = get_bits(v, what);
    } else if (key == "width") {
      TORCH_CHECK(v.is_number(), what, ": expected a number, got ", wrpn::util::json_excerpt(v));
      c.width = v.get<double>();
    } else if (key == "scheme") {
      TORCH_CHECK(v.is_string(), what, ": expected \"wrpn\" or \"fixed\", got ",
                  wrpn::util::json_excerpt(v));
      c.scheme = v.get<std::string>();
    } else if (key == "fp32_first_layer" || key == "fp32_last_layer" ||
               key == "quantized_residual" || key == "fixed_stochastic") {
      TORCH_CHECK(v.is_boolean(), what, ": expected true or false, got ",
                  wrpn::util::json_excerpt(v));
      bool& field = key == "fp32_first_layer"   ? c.fp32_first_layer
                    : key == "fp32_last_layer"  ? c.fp32_last_layer
                    : key == "fixed_stochastic" ? c.fixed_stochastic
                                                : c.quantized_residual;
      field = v.get<bool>();
    } else {
      TORCH_CHECK(v.is_object(), what,
                  ": expected an object of module name -> bits or fixed-point format, got ",
                  wrpn::util::json_excerpt(v));
      for (const auto& [name, value] : v.items()) {
        const std::string entry = what + "[" + wrpn::util::printable(name) + "]";
        if (value.is_string()) {
          c.fixed_point[name] = FixedPointFormat::parse(value.get<std::string>());
        } else {
          TORCH_CHECK(value.is_number_integer(), entry,
                      ": expected bits (1..16, or 32) or a fixed-point format such as \"Q2.14\" "
                      "or \"fixed16\", got ",
                      wrpn::util::json_excerpt(value));
          c.overrides[name] = value.get<int64_t>();
        }
      }
    }
  }
  c.validate();
  return c;
}

}  // namespace detail
}  // namespace wrpn
