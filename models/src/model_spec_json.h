#pragma once
// JSON conversion of ModelSpec for checkpoint and packed-export headers.

#include <nlohmann/json.hpp>
#include <string>

#include "wrpn/models/classifier.h"

namespace wrpn {
namespace models {
namespace detail {

nlohmann::json spec_to_json(const ModelSpec& spec);

/// Parses and validates; `where` names the object in error messages.
ModelSpec spec_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace detail
}  // namespace models
}  // namespace wrpn
