#pragma once
// The optimizer's parameter groups: one per WRPN-quantized conv/FC weight with its learning-rate
// multiplier, and one for everything else.

#include <torch/torch.h>
#include <wrpn/models/classifier.h>
#include <wrpn/nn/init.h>
#include <wrpn/train/options.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

namespace wrpn::train {

/// The groups of one SGD optimizer and the lr multiplier of each.
struct ParamGroups {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  std::vector<double> mult;  ///< by group; group 0 (everything else) has 1
  nlohmann::json lr_mults = nlohmann::json::object();  ///< the multiplier by module name
};

/// SGD with the options' momentum, Nesterov flag and weight decay at the base learning rate.
torch::optim::SGDOptions sgd_options(const TrainOptions& o);

/// Group 0: every parameter of `model` that is not a WRPN-quantized (2..16-bit) conv/FC weight,
/// then `extra` (scheme A's teacher). Then one group per such weight with lr * m and weight
/// decay / m (m: quantized_lr_mult, or per layer under "auto", 1 in scheme C): a
/// reparametrisation w = c v with c^2 = m.
ParamGroups make_param_groups(models::ClassifierImpl& model, const TrainOptions& o,
                              const std::vector<torch::Tensor>& extra);

/// Sets each group's learning rate to lr times its multiplier.
void set_learning_rate(torch::optim::Optimizer& opt, const std::vector<double>& mult, double lr);

}  // namespace wrpn::train
