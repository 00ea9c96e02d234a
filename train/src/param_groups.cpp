#include "param_groups.h"

#include <wrpn/nn/layers.h>
#include <wrpn/ops.h>

#include <memory>
#include <set>

namespace wrpn::train {

std::vector<QuantizedWeight> quantized_weights(models::ClassifierImpl& model) {
  std::vector<QuantizedWeight> out;
  nn::for_each_quantized_layer(model, [&](const std::string& name, const nn::QuantizedLayer& l) {
    if (!l.has_weight()) return;
    const nn::WeightInit init =
        l.kind == nn::LayerKind::kConv2d ? l.conv->options.init() : l.linear->options.init();
    out.push_back({name, l.weight(), init, l.quantizer().bits,
                   l.quantizer().kind() == nn::Quantizer::Kind::kFixedPoint,
                   l.kind == nn::LayerKind::kConv2d});
  });
  return out;
}

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
  for (const auto& q : quantized_weights(model)) {
    if (q.bits < 2 || q.bits > wrpn::kMaxBits || q.fixed_point) continue;
    double m = fixed_mult;
    if (m == 0.0) {
      m = o.distill_scheme == "C"
              ? 1.0
              : nn::matched_lr_multiplier(q.weight.sizes(), q.init, q.bits, q.is_conv);
    }
    auto opts = std::make_unique<torch::optim::SGDOptions>(sgd);
    opts->lr(o.schedule.base_lr * m).weight_decay(o.weight_decay / m);
    pg.groups.emplace_back(std::vector<torch::Tensor>{q.weight}, std::move(opts));
    pg.mult.push_back(m);
    pg.lr_mults[q.name] = m;
    quantized.insert(q.weight.unsafeGetTensorImpl());
  }
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
