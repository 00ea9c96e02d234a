#pragma once
// The model and batches both the data-parallel worker and the test build, identically.

#include <torch/torch.h>
#include <wrpn/models/registry.h>
#include <wrpn/nn/init.h>
#include <wrpn/precision.h>

#include <cstdint>
#include <utility>

namespace wrpn_dist_test {

inline constexpr uint64_t kSeed = 100;
inline constexpr int64_t kGlobalBatch = 8;

/// A 4-bit ResNet-20 of `width` for 1x12x12 inputs and 10 classes, drawn from `seed`.
inline wrpn::models::Classifier make_model(uint64_t seed, double width = 1.0) {
  torch::manual_seed(seed);
  wrpn::models::ModelSpec spec;
  spec.name = "resnet20";
  spec.num_classes = 10;
  spec.in_channels = 1;
  spec.precision = wrpn::PrecisionConfig::make(4, 4, width);
  spec.init = wrpn::nn::weight_init_from_string("quant_aware");
  return wrpn::models::create_model(spec);
}

/// Global batch `step`: the same on every rank.
inline std::pair<torch::Tensor, torch::Tensor> batch(int64_t step) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + step);
  auto x = torch::randn({kGlobalBatch, 1, 12, 12}, gen, torch::kFloat);
  auto y = torch::randint(0, 10, {kGlobalBatch}, gen, torch::kLong);
  return {x, y};
}

}  // namespace wrpn_dist_test
