#pragma once
/// The model zoo by name: create_model({"resnet34", ...}), list_models().

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "wrpn/models/classifier.h"

namespace wrpn {
namespace models {

/// A registry entry.
struct ModelInfo {
  std::string name;
  /// One line for `wrpn_models list`.
  std::string description;
  /// num_classes when the spec says 0.
  int64_t default_classes = 1000;
  /// Input height and width the cost report uses by default.
  int64_t default_input_size = 224;
  /// Builds the model from a validated spec whose num_classes is resolved.
  std::function<Classifier(const ModelSpec&)> factory;
};

/// Names of all registered models, sorted.
std::vector<std::string> list_models();

/// A copy of the entry for `name`; throws c10::Error listing the known names if there is none.
ModelInfo model_info(const std::string& name);

/// Validates `spec`, resolves num_classes and builds the model (weights freshly initialised).
/// Unknown names and precision overrides naming no layer of the model throw c10::Error.
Classifier create_model(const ModelSpec& spec);

/// Adds a model family to the registry (the built-in ResNets are always there). Replaces an
/// entry of the same name.
void register_model(ModelInfo info);

}  // namespace models
}  // namespace wrpn
