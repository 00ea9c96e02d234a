#pragma once
// JSON conversion of PrecisionConfig for the library's own files (checkpoint headers, model
// specs); the public API exchanges JSON as text.

#include <nlohmann/json.hpp>
#include <string>

#include "wrpn/precision.h"

namespace wrpn {
namespace detail {

nlohmann::json precision_to_json(const PrecisionConfig& config);

/// Parses and validates; `where` names the object in error messages ("precision config").
PrecisionConfig precision_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace detail
}  // namespace wrpn
