#pragma once
// Resolves the precision config into one quantizer per layer while a model is built, and checks
// afterwards that every precision override named a layer the model has.

#include <c10/util/Exception.h>

#include <string>
#include <vector>

#include "wrpn/precision.h"

namespace wrpn {
namespace models {
namespace detail {

class QuantizerResolver {
 public:
  explicit QuantizerResolver(const PrecisionConfig& config) : config_(config) {}

  /// The weight quantizer of conv/FC `name` whose bits are `default_bits` unless overridden.
  nn::Quantizer weight(const std::string& name, int64_t default_bits) {
    names_.push_back(name);
    return config_.quantizer_for(name, LayerRole::kWeight, default_bits);
  }

  /// The activation quantizer `name` whose bits are `default_bits` unless overridden.
  nn::Quantizer activation(const std::string& name, int64_t default_bits) {
    names_.push_back(name);
    return config_.quantizer_for(name, LayerRole::kActivation, default_bits);
  }

  /// Throws c10::Error if an override names a module no call asked about.
  void check_overrides(const std::string& model) const {
    for (const auto& kv : config_.overrides) check_name(kv.first, model);
    for (const auto& kv : config_.fixed_point) check_name(kv.first, model);
  }

 private:
  void check_name(const std::string& name, const std::string& model) const {
    for (const auto& n : names_) {
      if (n == name) return;
    }
    std::string known;
    for (const auto& n : names_) known += (known.empty() ? "" : ", ") + n;
    TORCH_CHECK(false, "precision override \"", name, "\" names no quantizable layer of ", model,
                "; its layers are: ", known);
  }

 private:
  const PrecisionConfig& config_;
  std::vector<std::string> names_;
};

}  // namespace detail
}  // namespace models
}  // namespace wrpn
