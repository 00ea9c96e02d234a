#include "evaluate.h"

#include <ATen/autocast_mode.h>
#include <wrpn/deploy/integer_model.h>
#include <wrpn/models/checkpoint.h>

#include <algorithm>
#include <chrono>

#include "batches.h"

namespace wrpn::train {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Autocast::Autocast(bool on) : on_(on) {
  if (on_) {
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
  }
}

Autocast::~Autocast() {
  if (on_) {
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    at::autocast::clear_cache();
  }
}

EvalResult evaluate(models::ClassifierImpl& model, data::AnyDataset& ds, const EvalSetup& s) {
  const bool was_training = model.is_training();
  model.eval();
  EvalResult r = evaluate_forward([&](const torch::Tensor& x) { return model.forward(x); }, ds, s);
  model.train(was_training);
  return r;
}

EvalResult evaluate_forward(const Forward& forward, data::AnyDataset& ds, const EvalSetup& s,
                            const Forward& reference) {
  torch::NoGradGuard no_grad;
  const double t0 = now_s();
  EvalResult r;
  const int64_t n = split_size(ds, s.limit);
  const auto mine =
      torch::arange(std::min<int64_t>(s.rank, n), n, std::max(1, s.world), torch::kLong);
  const int64_t n_mine = mine.size(0);
  double loss_sum = 0.0;
  int64_t c1 = 0, c5 = 0, disagree = 0;
  double max_diff = 0.0;
  for (int64_t b = 0; b < n_mine; b += s.batch_size) {
    const auto idx = mine.slice(0, b, std::min(n_mine, b + s.batch_size));
    auto batch = get_batch(ds, idx, 0, s.workers);
    const auto x = batch.data.to(s.device), y = batch.target.to(s.device);
    torch::Tensor logits;
    {
      Autocast ac(s.amp && s.device.is_cuda());
      logits = forward(x);
    }
    logits = logits.to(torch::kFloat);
    if (reference) {
      const torch::Tensor ref = reference(x).to(torch::kFloat);
      disagree += ref.argmax(1).ne(logits.argmax(1)).sum().item<int64_t>();
      max_diff = std::max(max_diff, (ref - logits).abs().max().item<double>());
    }
    loss_sum +=
        torch::nn::functional::cross_entropy(
            logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
            .item<double>();
    c1 += topk_correct(logits, y, 1);
    c5 += topk_correct(logits, y, 5);
  }
  std::vector<double> sums{loss_sum, static_cast<double>(c1), static_cast<double>(c5),
                           static_cast<double>(n_mine)};
  if (s.reduce) s.reduce(sums);
  TORCH_CHECK(static_cast<int64_t>(sums[3]) == n, "data-parallel evaluation covered ", sums[3],
              " of ", n, " images");
  loss_sum = sums[0];
  c1 = static_cast<int64_t>(sums[1]);
  c5 = static_cast<int64_t>(sums[2]);
  r.images = n;
  if (reference) {
    r.top1_disagreements = disagree;
    r.max_logit_diff = max_diff;
  }
  r.loss = n ? loss_sum / n : 0.0;
  r.top1 = n ? static_cast<double>(c1) / n : 0.0;
  r.top5 = n ? static_cast<double>(c5) / n : 0.0;
  r.seconds = now_s() - t0;
  r.images_per_second = r.seconds > 0 ? n / r.seconds : 0.0;
  return r;
}

nlohmann::json eval_json(const EvalResult& r, const std::string& prefix) {
  return {{prefix + "top1", r.top1}, {prefix + "top5", r.top5}, {prefix + "loss", r.loss}};
}

nlohmann::json EvalResult::to_json() const {
  nlohmann::json j = {{"images", images},   {"loss", loss},
                      {"top1", top1},       {"top5", top5},
                      {"seconds", seconds}, {"images_per_second", images_per_second}};
  if (top1_disagreements >= 0) {
    j["top1_disagreements"] = top1_disagreements;
    j["max_logit_diff"] = max_logit_diff;
  }
  return j;
}

torch::Device resolve_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;
  torch::Device d(name);  // throws on a malformed name
  TORCH_CHECK(!d.is_cuda() || torch::cuda::is_available(), "device '", name,
              "' was asked for, but no CUDA device is available (use --device cpu or auto)");
  return d;
}

EvalResult evaluate_checkpoint(const std::string& checkpoint, const std::string& dataset,
                               const std::string& data_root, const std::string& split,
                               const std::string& device_name, int64_t batch_size, int64_t limit,
                               int64_t image_size, const InferenceOptions& inference) {
  TORCH_CHECK_VALUE(batch_size >= 1, "--batch-size must be >= 1, got ", batch_size);
  const torch::Device device = resolve_device(device_name);
  models::CheckpointMeta meta;
  models::Classifier model = models::load_checkpoint(checkpoint, &meta);
  model->to(device);
  TrainOptions o;
  o.dataset = dataset;
  o.image_size = image_size;
  auto ds =
      data::open_dataset(dataset, data_root, data::parse_split(split), dataset_options(o, false));
  TORCH_CHECK_VALUE(
      ds.channels() == meta.spec.in_channels && ds.num_classes() == meta.spec.num_classes,
      checkpoint, " was trained on ", meta.spec.in_channels, "-channel images with ",
      meta.spec.num_classes, " classes, but '", dataset, "' has ", ds.channels(), " channels and ",
      ds.num_classes(), " classes");
  const EvalSetup setup{limit, device, batch_size, 2, false};
  if (inference.engine == "fake-quant") {
    TORCH_CHECK_VALUE(!inference.compare,
                      "--compare needs an integer --engine (int8, onednn or gemm)");
    return evaluate(*model, ds, setup);
  }
  const deploy::Engine engine =
      inference.engine == "int8" ? deploy::Engine::kAuto : deploy::parse_engine(inference.engine);
  model->eval();
  const deploy::IntegerModel im =
      deploy::deploy(*model, deploy::DeployOptions().engine(engine).device(device));
  if (inference.on_deployed) inference.on_deployed(im);
  Forward reference;
  if (inference.compare) reference = [&](const torch::Tensor& x) { return model->forward(x); };
  return evaluate_forward([&](const torch::Tensor& x) { return im.forward(x); }, ds, setup,
                          reference);
}

}  // namespace wrpn::train
