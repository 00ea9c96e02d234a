#include "param_groups.h"

#include <wrpn/nn/layers.h>
#include <wrpn/ops.h>

#include <memory>
#include <set>

namespace wrpn::train {

torch::optim::SGDOptions sgd_options(const TrainOptions& o) {
  return torch::optim::SGDOptions(o.schedule.base_lr)
      .momentum(o.momentum)
      .nesterov(o.nesterov)
      .weight_decay(o.weight_decay);
}

ParamGroups make_param_groups(models::ClassifierImpl& model, const TrainOptions& o,
                              const std::vector<torch::Tensor>& extra) {
  const auto sgd = sgd_options(o);
  const double fixed_mult = o.fixed_quantized_lr_mult();
  ParamGroups pg;
  pg.mult.push_back(1.0);
  std::set<const c10::TensorImpl*> quantized;
  nn::for_each_quantized_layer(model, [&](const std::string& name, const nn::QuantizedLayer& l) {
    const nn::Quantizer& q = l.quantizer();
    if (!l.has_weight() || q.kind() != nn::Quantizer::Kind::kWrpn || q.bits < 2) return;
    const bool is_conv = l.kind == nn::LayerKind::kConv2d;
    double m = fixed_mult;
    if (m == 0.0) {
      const nn::WeightInit init = is_conv ? l.conv->options.init() : l.linear->options.init();
      m = o.distill_scheme == "C"
              ? 1.0
              : nn::matched_lr_multiplier(l.weight().sizes(), init, q.bits, is_conv);
    }
    auto opts = std::make_unique<torch::optim::SGDOptions>(sgd);
    opts->lr(o.schedule.base_lr * m).weight_decay(o.weight_decay / m);
    pg.groups.emplace_back(std::vector<torch::Tensor>{l.weight()}, std::move(opts));
    pg.mult.push_back(m);
    pg.lr_mults[name] = m;
    quantized.insert(l.weight().unsafeGetTensorImpl());
  });
  std::vector<torch::Tensor> others;
  for (const auto& p : model.parameters()) {
    if (!quantized.count(p.unsafeGetTensorImpl())) others.push_back(p);
  }
  others.insert(others.end(), extra.begin(), extra.end());
  pg.groups.insert(pg.groups.begin(), torch::optim::OptimizerParamGroup(others));
  return pg;
}

void set_learning_rate(torch::optim::Optimizer& opt, const std::vector<double>& mult, double lr) {
  for (size_t gi = 0; gi < opt.param_groups().size(); ++gi) {
    static_cast<torch::optim::SGDOptions&>(opt.param_groups()[gi].options()).lr(lr * mult[gi]);
  }
}

}  // namespace wrpn::train
