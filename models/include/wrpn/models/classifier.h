#pragma once
/// The zoo's common base: every model is a classifier built from a ModelSpec, so trainers,
/// checkpoints and the cost report handle any of them alike.

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "wrpn/nn/init.h"
#include "wrpn/precision.h"

namespace wrpn {
namespace models {

/// Everything that determines a zoo model's architecture and initialisation. A checkpoint stores
/// it, so a checkpoint can recreate its own model.
struct ModelSpec {
  /// Registry name, e.g. "resnet34" or "resnet20" (list_models()).
  std::string name;
  /// Number of classes; 0 means the model's default (1000 for ImageNet models, 10 for CIFAR).
  int64_t num_classes = 0;
  /// Input channels: 3 for RGB; the built-in digits dataset is 1-channel 32x32.
  int64_t in_channels = 3;
  /// Bits, width and fp32 layers.
  PrecisionConfig precision;
  /// How quantized layers draw their initial weights (see wrpn/nn/init.h).
  nn::WeightInit init = nn::WeightInit::kQuantAware;

  /// Throws c10::Error naming the first bad field (the name is checked by create_model()).
  void validate() const;
  /// JSON text: {"name":..., "num_classes":..., "in_channels":..., "init":..., "precision":{...}}.
  std::string to_json(int indent = 2) const;
  /// Parses and validates what to_json() writes; unknown keys throw c10::Error.
  static ModelSpec from_json(const std::string& text);

  bool operator==(const ModelSpec& other) const;
  bool operator!=(const ModelSpec& other) const { return !(*this == other); }
};

/// Abstract base of the zoo's models: logits from an image batch. Derived models register their
/// layers as usual; spec() says how to rebuild them.
class ClassifierImpl : public torch::nn::Module {
 public:
  /// `spec` must be complete (num_classes resolved).
  explicit ClassifierImpl(ModelSpec spec);

  /// Images [N, in_channels, H, W] to logits [N, num_classes].
  virtual torch::Tensor forward(torch::Tensor x) = 0;

  /// The spec this model was built from, num_classes resolved.
  const ModelSpec& spec() const { return spec_; }

 protected:
  ModelSpec spec_;
};

/// Shared handle to any zoo model, as create_model() returns it.
using Classifier = std::shared_ptr<ClassifierImpl>;

}  // namespace models
}  // namespace wrpn
