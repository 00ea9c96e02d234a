#include "wrpn/precision.h"

#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <cmath>
#include <set>

#include "wrpn/ops.h"
#include "wrpn/src/nn/precision_json.h"

namespace wrpn {

bool is_valid_bits(int64_t bits) {
  return (bits >= kMinBits && bits <= kMaxBits) || bits == kFullPrecisionBits;
}

void check_bits(int64_t bits, const std::string& what) {
  TORCH_CHECK(is_valid_bits(bits), what, " = ", bits, ": expected ", kMinBits, "..", kMaxBits,
              " bits, or ", kFullPrecisionBits, " for full precision");
}

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
}

int64_t PrecisionConfig::channels(int64_t base) const {
  return std::max<int64_t>(1, std::llround(static_cast<double>(base) * width));
}

int64_t PrecisionConfig::bits_for(const std::string& name, int64_t default_bits) const {
  auto it = overrides.find(name);
  return it == overrides.end() ? default_bits : it->second;
}

bool PrecisionConfig::is_full_precision() const {
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
  s += fmt::format(" x{:g}", width);
  if (!overrides.empty()) s += fmt::format(" +{} overrides", overrides.size());
  return s;
}

bool PrecisionConfig::operator==(const PrecisionConfig& o) const {
  return weight_bits == o.weight_bits && act_bits == o.act_bits && width == o.width &&
         fp32_first_layer == o.fp32_first_layer && fp32_last_layer == o.fp32_last_layer &&
         quantized_residual == o.quantized_residual && overrides == o.overrides;
}

std::string PrecisionConfig::to_json(int indent) const {
  return detail::precision_to_json(*this).dump(indent);
}

PrecisionConfig PrecisionConfig::from_json(const std::string& text) {
  return detail::precision_from_json(detail::parse_json(text, "precision config"),
                                     "precision config");
}

namespace detail {

nlohmann::json parse_json(const std::string& text, const std::string& what) {
  std::string error;
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    error = e.what();
  }
  TORCH_CHECK(false, what, ": not valid JSON (", error, ")");
  return {};
}

nlohmann::json precision_to_json(const PrecisionConfig& c) {
  nlohmann::json overrides = nlohmann::json::object();
  for (const auto& [name, bits] : c.overrides) overrides[name] = bits;
  return {{"weight_bits", c.weight_bits},
          {"act_bits", c.act_bits},
          {"width", c.width},
          {"fp32_first_layer", c.fp32_first_layer},
          {"fp32_last_layer", c.fp32_last_layer},
          {"quantized_residual", c.quantized_residual},
          {"overrides", overrides}};
}

namespace {

int64_t get_bits(const nlohmann::json& v, const std::string& key) {
  TORCH_CHECK(v.is_number_integer(), key, ": expected an integer number of bits (1..16, or 32),",
              " got ", v.dump());
  return v.get<int64_t>();
}

}  // namespace

PrecisionConfig precision_from_json(const nlohmann::json& j, const std::string& where) {
  TORCH_CHECK(j.is_object(), where, ": expected a JSON object, got ", j.dump());
  static const std::set<std::string> kKeys = {
      "weight_bits",     "act_bits",           "width",    "fp32_first_layer",
      "fp32_last_layer", "quantized_residual", "overrides"};
  PrecisionConfig c;
  for (const auto& [key, v] : j.items()) {
    TORCH_CHECK(kKeys.count(key), where, ": unknown key \"", key, "\"; expected one of ",
                "weight_bits, act_bits, width, fp32_first_layer, fp32_last_layer, ",
                "quantized_residual, overrides");
    const std::string what = where + ": " + key;
    if (key == "weight_bits") {
      c.weight_bits = get_bits(v, what);
    } else if (key == "act_bits") {
      c.act_bits = get_bits(v, what);
    } else if (key == "width") {
      TORCH_CHECK(v.is_number(), what, ": expected a number, got ", v.dump());
      c.width = v.get<double>();
    } else if (key == "fp32_first_layer" || key == "fp32_last_layer" ||
               key == "quantized_residual") {
      TORCH_CHECK(v.is_boolean(), what, ": expected true or false, got ", v.dump());
      bool& field = key == "fp32_first_layer"  ? c.fp32_first_layer
                    : key == "fp32_last_layer" ? c.fp32_last_layer
                                               : c.quantized_residual;
      field = v.get<bool>();
    } else {
      TORCH_CHECK(v.is_object(), what, ": expected an object of module name -> bits, got ",
                  v.dump());
      for (const auto& [name, bits] : v.items()) {
        c.overrides[name] = get_bits(bits, what + "[\"" + name + "\"]");
      }
    }
  }
  c.validate();
  return c;
}

}  // namespace detail
}  // namespace wrpn
