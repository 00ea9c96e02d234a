#include "app/train.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <wrpn/data.h>
#include <wrpn/models/checkpoint.h>
#include <wrpn/models/cost.h>
#include <wrpn/models/registry.h>
#include <wrpn/nn/init.h>
#include <wrpn/ops.h>
#include <wrpn/nn/quant_conv.h>
#include <wrpn/nn/quant_linear.h>
#include <wrpn/train/distill.h>
#include <wrpn/version.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

namespace wrpn::app {
namespace {

using nlohmann::json;

std::atomic<bool> g_stop{false};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t split_size(const data::AnyDataset& ds, int64_t limit) {
  const auto n = static_cast<int64_t>(ds.size().value_or(0));
  return limit > 0 ? std::min(n, limit) : n;
}

/// The examples at `idx` as one batch: sliced from memory, or decoded by `workers` threads.
torch::data::Example<> get_batch(data::AnyDataset& ds, const torch::Tensor& idx, int64_t epoch,
                                 int64_t workers) {
  if (const data::TensorData* t = ds.tensors()) return t->batch(idx, epoch);
  ds.set_epoch(epoch);
  const int64_t n = idx.numel();
  const auto* ip = idx.const_data_ptr<int64_t>();
  std::vector<torch::data::Example<>> ex(static_cast<size_t>(n));
  const int64_t nt = std::max<int64_t>(1, std::min(workers, n));
  std::vector<std::thread> pool;
  std::exception_ptr error;
  std::mutex error_mutex;
  for (int64_t t = 0; t < nt; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (int64_t i = t; i < n; i += nt) ex[i] = ds.get(static_cast<size_t>(ip[i]));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        error = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  std::vector<torch::Tensor> xs, ys;
  for (auto& e : ex) {
    xs.push_back(e.data);
    ys.push_back(e.target);
  }
  return {torch::stack(xs), torch::stack(ys)};
}

/// bf16 autocast on CUDA for the scope (no scaler needed for bf16).
class Autocast {
 public:
  explicit Autocast(bool on) : on_(on) {
    if (on_) {
      at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
      at::autocast::set_autocast_enabled(at::kCUDA, true);
    }
  }
  ~Autocast() {
    if (on_) {
      at::autocast::set_autocast_enabled(at::kCUDA, false);
      at::autocast::clear_cache();
    }
  }

 private:
  bool on_;
};

EvalResult evaluate(models::ClassifierImpl& model, data::AnyDataset& ds, int64_t limit,
                    torch::Device device, int64_t batch_size, int64_t workers, bool amp) {
  const bool was_training = model.is_training();
  model.eval();
  torch::NoGradGuard no_grad;
  const double t0 = now_s();
  EvalResult r;
  const int64_t n = split_size(ds, limit);
  double loss_sum = 0.0;
  int64_t c1 = 0, c5 = 0;
  for (int64_t b = 0; b < n; b += batch_size) {
    const auto idx = torch::arange(b, std::min(n, b + batch_size), torch::kLong);
    auto batch = get_batch(ds, idx, 0, workers);
    const auto x = batch.data.to(device), y = batch.target.to(device);
    torch::Tensor logits;
    {
      Autocast ac(amp && device.is_cuda());
      logits = model.forward(x);
    }
    logits = logits.to(torch::kFloat);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    c1 += train::topk_correct(logits, y, 1);
    c5 += train::topk_correct(logits, y, 5);
  }
  model.train(was_training);
  r.images = n;
  r.loss = n ? loss_sum / n : 0.0;
  r.top1 = n ? static_cast<double>(c1) / n : 0.0;
  r.top5 = n ? static_cast<double>(c5) / n : 0.0;
  r.seconds = now_s() - t0;
  r.images_per_second = r.seconds > 0 ? n / r.seconds : 0.0;
  return r;
}

data::DatasetOptions dataset_options(const TrainOptions& o, bool train) {
  data::DatasetOptions d;
  d.augment(train && o.augment)
      .flip(o.dataset != "digits")  // a mirrored digit is another glyph
      .padding(o.dataset == "digits" ? 2 : 4)
      .seed(o.seed)
      .image_size(o.image_size)
      .resize_size(std::max<int64_t>(o.image_size, o.image_size * 8 / 7));
  return d;
}

/// Key of scheme A's teacher state inside last.ckpt's blob (beside the optimizer's own keys).
constexpr const char* kTeacherArchiveKey = "wrpn_distill_teacher";

/// The optimizer state and, in scheme A, the teacher's parameters and buffers: one blob in one
/// atomically written checkpoint, so student, teacher and optimizer always resume together.
std::string optimizer_blob(torch::optim::Optimizer& opt,
                           const models::ClassifierImpl* teacher = nullptr) {
  torch::serialize::OutputArchive ar;
  opt.save(ar);
  if (teacher != nullptr) {
    torch::serialize::OutputArchive t;
    teacher->save(t);
    ar.write(kTeacherArchiveKey, t);
  }
  std::ostringstream ss;
  ar.save_to(ss);
  return ss.str();
}

/// Keeps the metrics of epochs 1..epochs only: what a run resumed from that checkpoint owns.
void prune_metrics(const std::string& path, int64_t epochs) {
  if (!train::path_exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("epoch", int64_t{0}) <= epochs) kept += line + "\n";
  }
  train::atomic_write(path, kept);
}

/// "auto": He for 3..16-bit weights (on digits a 4-bit ResNet-20 reached 93% after 4 epochs from
/// He against 71% from quant_aware at lr 0.1), quant_aware at 1-2 bits, where He starts every
/// weight at zero, and for fp32 models, where quant_aware is the usual torchvision-style draw
/// (He for convs, torch's default for the FC; plain He on the FC gives exploding first logits).
std::string auto_init(int64_t weight_bits) {
  return weight_bits >= 3 && weight_bits <= 16 ? "he" : "quant_aware";
}

/// The number --quantized-lr-mult gives, or 0 for "auto"; throws for anything else.
double fixed_lr_mult(const std::string& text) {
  if (text == "auto") return 0.0;
  double m = 0.0;
  size_t used = 0;
  try {
    m = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TORCH_CHECK_VALUE(used == text.size() && std::isfinite(m) && m > 0,
                    "--quantized-lr-mult must be auto or a positive number, got '", text, "'");
  return m;
}

std::string resolved_init(const TrainOptions& o) {
  return o.init != "auto" ? o.init : auto_init(o.precision.weight_bits);
}

/// True when --teacher names a zoo model rather than a checkpoint (an existing file wins).
bool teacher_is_zoo_model(const std::string& teacher) {
  if (teacher.empty() || train::path_exists(teacher)) return false;
  for (const auto& name : models::list_models()) {
    if (name == teacher) return true;
  }
  return false;
}

PrecisionConfig teacher_precision(const TrainOptions& o) {
  return PrecisionConfig::make(o.teacher_weight_bits, o.teacher_act_bits, o.teacher_width);
}

/// The teacher: loaded from its checkpoint, or a fresh zoo model (scheme A). Only the class
/// count and input channels must match the student; depth and width may differ.
models::Classifier make_teacher(const TrainOptions& o, const models::ModelSpec& student) {
  models::Classifier t;
  if (teacher_is_zoo_model(o.teacher)) {
    models::ModelSpec s;
    s.name = o.teacher;
    s.num_classes = student.num_classes;
    s.in_channels = student.in_channels;
    s.precision = teacher_precision(o);
    s.init = nn::weight_init_from_string(auto_init(s.precision.weight_bits));
    t = models::create_model(s);
  } else {
    t = models::load_checkpoint(o.teacher);
  }
  const auto& ts = t->spec();
  TORCH_CHECK_VALUE(ts.num_classes == student.num_classes, "--teacher ", o.teacher, " has ",
                    ts.num_classes, " classes, but the student (dataset '", o.dataset, "') has ",
                    student.num_classes, "; teacher and student must share the classes");
  TORCH_CHECK_VALUE(ts.in_channels == student.in_channels, "--teacher ", o.teacher, " reads ",
                    ts.in_channels, "-channel images, but the dataset '", o.dataset, "' has ",
                    student.in_channels, " channels");
  return t;
}

std::string teacher_description(const TrainOptions& o, const models::ClassifierImpl& t) {
  return (teacher_is_zoo_model(o.teacher) ? "zoo model " : "checkpoint ") + o.teacher + " (" +
         t.spec().name + " " + t.spec().precision.short_name() + ")";
}

json eval_json(const EvalResult& r, const std::string& prefix) {
  return {{prefix + "top1", r.top1}, {prefix + "top5", r.top5}, {prefix + "loss", r.loss}};
}

double mean_zero_fraction(models::ClassifierImpl& model) {
  // Over every quantized weight, as the cost report defines it.
  const auto report = models::cost_report(model, 0, 0, false);
  return report.totals.zero_fraction;
}

}  // namespace

void request_stop() { g_stop.store(true); }

torch::Device resolve_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;
  torch::Device d(name);  // throws on a malformed name
  TORCH_CHECK(!d.is_cuda() || torch::cuda::is_available(), "device '", name,
              "' was asked for, but no CUDA device is available (use --device cpu or auto)");
  return d;
}

void TrainOptions::validate() const {
  precision.validate();
  if (init != "auto") (void)nn::weight_init_from_string(init);
  (void)models::model_info(model);
  schedule.validate();
  TORCH_CHECK_VALUE(epochs >= 1, "--epochs must be >= 1, got ", epochs);
  (void)fixed_lr_mult(quantized_lr_mult);
  TORCH_CHECK_VALUE(batch_size >= 2, "--batch-size must be >= 2 (BatchNorm), got ", batch_size);
  TORCH_CHECK_VALUE(eval_batch_size >= 1, "--eval-batch-size must be >= 1, got ", eval_batch_size);
  TORCH_CHECK_VALUE(momentum >= 0 && momentum < 1, "--momentum must be in [0, 1), got ", momentum);
  TORCH_CHECK_VALUE(!nesterov || momentum > 0, "--nesterov needs --momentum > 0");
  TORCH_CHECK_VALUE(weight_decay >= 0, "--weight-decay must be >= 0, got ", weight_decay);
  TORCH_CHECK_VALUE(label_smoothing >= 0 && label_smoothing < 1,
                    "--label-smoothing must be in [0, 1), got ", label_smoothing);
  TORCH_CHECK_VALUE(limit_train >= 0 && limit_test >= 0, "--limit-* must be >= 0");
  TORCH_CHECK_VALUE(workers >= 1, "--workers must be >= 1, got ", workers);
  TORCH_CHECK_VALUE(threads >= 0, "--threads must be >= 0, got ", threads);
  TORCH_CHECK_VALUE(image_size >= 8, "--image-size must be >= 8, got ", image_size);
  TORCH_CHECK_VALUE(!run_dir.empty(), "--run-dir must not be empty");
  TORCH_CHECK_VALUE(stop_after >= 0, "--stop-after must be >= 0, got ", stop_after);

  // Distillation.
  const std::string& s = distill_scheme;
  TORCH_CHECK_VALUE(s.empty() || s == "A" || s == "B" || s == "C",
                    "--distill-scheme must be A, B or C (or empty: no distillation), got '", s,
                    "'");
  if (s.empty()) {
    TORCH_CHECK_VALUE(teacher.empty(), "--teacher needs --distill-scheme A, B or C");
    TORCH_CHECK_VALUE(student_init.empty(), "--student-init needs --distill-scheme C");
    return;
  }
  try {
    distill.validate();
  } catch (const c10::Error& e) {
    TORCH_CHECK_VALUE(false, "--distill-*: ", e.what_without_backtrace());
  }
  TORCH_CHECK_VALUE(label_smoothing == 0,
                    "--label-smoothing is not used with distillation (the soft term replaces it); "
                    "got ", label_smoothing);
  TORCH_CHECK_VALUE(!teacher.empty(), "--distill-scheme ", s, " needs --teacher: ",
                    s == "A" ? "a zoo model name (e.g. resnet20) or a checkpoint"
                             : "the checkpoint of a trained teacher");
  TORCH_CHECK_VALUE(student_init.empty() || s == "C",
                    "--student-init applies to --distill-scheme C only (got scheme ", s, ")");
  const bool zoo = teacher_is_zoo_model(teacher);
  const bool default_teacher_precision =
      teacher_width == 1.0 && teacher_weight_bits == 32 && teacher_act_bits == 32;
  if (zoo) {
    TORCH_CHECK_VALUE(s == "A", "--distill-scheme ", s,
                      " needs a pretrained teacher: --teacher must be a checkpoint file, got the "
                      "zoo model name '",
                      teacher, "' (scheme A trains a zoo-model teacher jointly)");
    try {
      teacher_precision(*this).validate();
    } catch (const c10::Error& e) {
      TORCH_CHECK_VALUE(false, "--teacher-width / --teacher-weight-bits / --teacher-act-bits: ",
                        e.what_without_backtrace());
    }
  } else {
    TORCH_CHECK_VALUE(train::path_exists(teacher), "--teacher '", teacher,
                      "' is neither a checkpoint file nor a zoo model (",
                      c10::Join(", ", models::list_models()), ")");
    TORCH_CHECK_VALUE(default_teacher_precision,
                      "--teacher-width / --teacher-weight-bits / --teacher-act-bits describe a "
                      "zoo-model teacher; the checkpoint '", teacher, "' holds its own");
  }
  TORCH_CHECK_VALUE(s != "A" || distill.alpha > 0,
                    "--distill-scheme A trains the teacher through the alpha term: "
                    "--distill-alpha must be > 0, got ", distill.alpha);
}

json TrainOptions::to_json() const {
  return {{"model", model},
          {"precision", json::parse(precision.to_json(-1))},
          {"init", init},
          {"dataset", dataset},
          {"data_root", data_root},
          {"augment", augment},
          {"image_size", image_size},
          {"limit_train", limit_train},
          {"limit_test", limit_test},
          {"workers", workers},
          {"epochs", epochs},
          {"batch_size", batch_size},
          {"eval_batch_size", eval_batch_size},
          {"lr", schedule.base_lr},
          {"min_lr", schedule.min_lr},
          {"schedule", schedule.kind},
          {"warmup_epochs", schedule.warmup_epochs},
          {"milestones", schedule.milestones},
          {"gamma", schedule.gamma},
          {"momentum", momentum},
          {"nesterov", nesterov},
          {"weight_decay", weight_decay},
          {"label_smoothing", label_smoothing},
          {"distill_scheme", distill_scheme},
          {"teacher", teacher},
          {"teacher_width", teacher_width},
          {"teacher_weight_bits", teacher_weight_bits},
          {"teacher_act_bits", teacher_act_bits},
          {"student_init", student_init},
          {"student_init_rescale", student_init_rescale},
          {"quantized_lr_mult", quantized_lr_mult},
          {"distill_alpha", distill.alpha},
          {"distill_beta", distill.beta},
          {"distill_gamma", distill.gamma},
          {"distill_temperature", distill.temperature},
          {"distill_kl", distill.kl},
          {"seed", seed},
          {"device", device},
          {"amp", amp},
          {"threads", threads},
          {"run_dir", run_dir}};
}

void TrainOptions::update_from_json(const json& j) {
  TORCH_CHECK_VALUE(j.is_object(), "a training config must be a JSON object");
  for (const auto& [key, v] : j.items()) {
    try {
      if (key == "model") model = v.get<std::string>();
      else if (key == "precision") precision = PrecisionConfig::from_json(v.dump());
      else if (key == "init") init = v.get<std::string>();
      else if (key == "dataset") dataset = v.get<std::string>();
      else if (key == "data_root") data_root = v.get<std::string>();
      else if (key == "augment") augment = v.get<bool>();
      else if (key == "image_size") image_size = v.get<int64_t>();
      else if (key == "limit_train") limit_train = v.get<int64_t>();
      else if (key == "limit_test") limit_test = v.get<int64_t>();
      else if (key == "workers") workers = v.get<int64_t>();
      else if (key == "epochs") epochs = v.get<int64_t>();
      else if (key == "batch_size") batch_size = v.get<int64_t>();
      else if (key == "eval_batch_size") eval_batch_size = v.get<int64_t>();
      else if (key == "lr") schedule.base_lr = v.get<double>();
      else if (key == "min_lr") schedule.min_lr = v.get<double>();
      else if (key == "schedule") schedule.kind = v.get<std::string>();
      else if (key == "warmup_epochs") schedule.warmup_epochs = v.get<double>();
      else if (key == "milestones") schedule.milestones = v.get<std::vector<int64_t>>();
      else if (key == "gamma") schedule.gamma = v.get<double>();
      else if (key == "momentum") momentum = v.get<double>();
      else if (key == "nesterov") nesterov = v.get<bool>();
      else if (key == "weight_decay") weight_decay = v.get<double>();
      else if (key == "label_smoothing") label_smoothing = v.get<double>();
      else if (key == "distill_scheme") distill_scheme = v.get<std::string>();
      else if (key == "teacher") teacher = v.get<std::string>();
      else if (key == "teacher_width") teacher_width = v.get<double>();
      else if (key == "teacher_weight_bits") teacher_weight_bits = v.get<int64_t>();
      else if (key == "teacher_act_bits") teacher_act_bits = v.get<int64_t>();
      else if (key == "student_init") student_init = v.get<std::string>();
      else if (key == "student_init_rescale") student_init_rescale = v.get<bool>();
      else if (key == "quantized_lr_mult") quantized_lr_mult = v.is_number() ? std::to_string(v.get<double>()) : v.get<std::string>();
      else if (key == "distill_alpha") distill.alpha = v.get<double>();
      else if (key == "distill_beta") distill.beta = v.get<double>();
      else if (key == "distill_gamma") distill.gamma = v.get<double>();
      else if (key == "distill_temperature") distill.temperature = v.get<double>();
      else if (key == "distill_kl") distill.kl = v.get<bool>();
      else if (key == "seed") seed = v.get<uint64_t>();
      else if (key == "device") device = v.get<std::string>();
      else if (key == "amp") amp = v.get<bool>();
      else if (key == "threads") threads = v.get<int64_t>();
      else if (key == "run_dir") run_dir = v.get<std::string>();
      else TORCH_CHECK_VALUE(false, "unknown training config key '", key, "'");
    } catch (const json::exception& e) {
      TORCH_CHECK_VALUE(false, "training config key '", key, "' has the wrong type: ", e.what());
    }
  }
}

json EvalResult::to_json() const {
  return {{"images", images},   {"loss", loss},       {"top1", top1},
          {"top5", top5},       {"seconds", seconds}, {"images_per_second", images_per_second}};
}

json train(const TrainOptions& o) {
  o.validate();
  g_stop.store(false);
  if (o.threads > 0) at::set_num_threads(static_cast<int>(o.threads));
  torch::manual_seed(o.seed);
  const torch::Device device = resolve_device(o.device);
  const std::string& dir = o.run_dir;
  train::make_directories(dir);
  auto say = [&](const std::string& s) {
    if (!o.quiet) std::fprintf(stderr, "%s\n", s.c_str());
  };

  auto train_ds = data::open_dataset(o.dataset, o.data_root, data::Split::Train,
                                     dataset_options(o, true));
  auto test_ds = data::open_dataset(o.dataset, o.data_root, data::Split::Test,
                                    dataset_options(o, false));
  const int64_t n_train = split_size(train_ds, o.limit_train);
  const int64_t n_test = split_size(test_ds, o.limit_test);
  TORCH_CHECK_VALUE(n_train >= 2, "the training split of '", o.dataset, "' has ", n_train,
                    " images; at least 2 are needed");

  models::ModelSpec spec;
  spec.name = o.model;
  spec.num_classes = train_ds.num_classes();
  spec.in_channels = train_ds.channels();
  spec.precision = o.precision;
  spec.init = nn::weight_init_from_string(resolved_init(o));
  models::Classifier model = models::create_model(spec);

  const std::string last = train::join_path(dir, "last.ckpt");
  const std::string best = train::join_path(dir, "best.ckpt");
  const std::string teacher_path = train::join_path(dir, "teacher.ckpt");
  const std::string metrics_path = train::join_path(dir, "metrics.jsonl");
  const std::string summary_path = train::join_path(dir, "summary.json");
  const bool resuming = o.resume && train::path_exists(last);

  // Distillation (README, "Knowledge distillation"): A trains the teacher with the student; B and C freeze
  // it (eval mode, no gradients, so its weights and BatchNorm statistics stay bit-identical).
  const std::string& scheme = o.distill_scheme;
  const bool distilling = !scheme.empty();
  const bool joint = scheme == "A";
  models::Classifier teacher;
  int64_t teacher_params = 0;
  json distill_start = json::object();  // scheme C: the student's accuracy before training
  if (distilling) {
    teacher = make_teacher(o, model->spec());
    teacher->to(device);
    for (const auto& p : teacher->parameters()) teacher_params += p.numel();
    if (!joint) {
      teacher->eval();
      for (auto& p : teacher->parameters()) p.set_requires_grad(false);
    }
  }
  std::string student_init_path;
  nlohmann::json student_rescale = nlohmann::json::object();
  if (scheme == "C") {
    // Also when resuming (last.ckpt then replaces these weights), so that the run reports the
    // same starting point either way.
    student_init_path = o.student_init.empty() ? o.teacher : o.student_init;
    try {
      models::load_checkpoint_into(student_init_path, *model);
    } catch (const c10::Error& e) {
      TORCH_CHECK_VALUE(false, "--distill-scheme C starts the student (", o.model, " ",
                        o.precision.short_name(), ") from ", student_init_path,
                        ", which does not fit it (a teacher of another depth or width needs "
                        "--student-init with an fp32 checkpoint of the student's architecture): ",
                        e.what_without_backtrace());
    }
    if (o.student_init_rescale) {
      const auto factors = nn::fit_weights_to_quantizer_(*model);
      for (const auto& [name, f] : factors) student_rescale[name] = f;
    }
  }
  const double init_zero_fraction = mean_zero_fraction(*model);
  model->to(device);
  int64_t n_params = 0;
  for (const auto& p : model->parameters()) n_params += p.numel();

  // One optimizer. Group 0: everything else (in scheme A the teacher's parameters too). Then one group per WRPN-quantized
  // conv/FC weight of the student, with lr * m and weight decay / m (m: quantized_lr_mult, or
  // per layer under "auto"): a reparametrisation w = c v with c^2 = m.
  const auto sgd = torch::optim::SGDOptions(o.schedule.base_lr)
                       .momentum(o.momentum)
                       .nesterov(o.nesterov)
                       .weight_decay(o.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  std::vector<double> group_mult{1.0};
  nlohmann::json lr_mults = nlohmann::json::object();
  {
    const double fixed_mult = fixed_lr_mult(o.quantized_lr_mult);
    std::set<const c10::TensorImpl*> quantized;
    auto add = [&](const std::string& name, const torch::Tensor& w, nn::WeightInit init,
                   int64_t bits, bool fixed, bool is_conv) {
      if (bits < 2 || bits > wrpn::kMaxBits || fixed) return;
      double m = fixed_mult;
      if (m == 0.0) m = scheme == "C" ? 1.0 : nn::matched_lr_multiplier(w.sizes(), init, bits, is_conv);
      auto opts = std::make_unique<torch::optim::SGDOptions>(sgd);
      opts->lr(o.schedule.base_lr * m).weight_decay(o.weight_decay / m);
      groups.emplace_back(std::vector<torch::Tensor>{w}, std::move(opts));
      group_mult.push_back(m);
      lr_mults[name] = m;
      quantized.insert(w.unsafeGetTensorImpl());
    };
    for (const auto& item : model->named_modules("", false)) {
      if (auto* c = item.value()->as<nn::QuantConv2dImpl>()) {
        add(item.key(), c->weight, c->options.init(), c->options.weight_bits(),
            c->options.fixed_point().enabled(), true);
      } else if (auto* f = item.value()->as<nn::QuantLinearImpl>()) {
        add(item.key(), f->weight, f->options.init(), f->options.weight_bits(),
            f->options.fixed_point().enabled(), false);
      }
    }
    std::vector<torch::Tensor> others;
    for (const auto& p : model->parameters()) {
      if (!quantized.count(p.unsafeGetTensorImpl())) others.push_back(p);
    }
    if (joint) {
      for (const auto& p : teacher->parameters()) others.push_back(p);
    }
    groups.insert(groups.begin(), torch::optim::OptimizerParamGroup(others));
  }
  torch::optim::SGD opt(groups, sgd);

  int64_t start_epoch = 0, best_epoch = 0;
  double best_top1 = -1.0, best_top5 = 0.0, wall_before = 0.0;
  if (resuming) {
    const auto meta = models::read_checkpoint(last);
    TORCH_CHECK_VALUE(meta.spec == model->spec(), "--resume: ", last,
                      " holds a different model (", meta.spec.to_json(-1),
                      ") than these options build (", model->spec().to_json(-1), ")");
    const json extra = json::parse(meta.info.extra_json);
    const std::string was_scheme =
        extra.contains("options") ? extra["options"].value("distill_scheme", std::string())
                                  : std::string();
    TORCH_CHECK_VALUE(was_scheme == scheme, "--resume: ", last, " was written with ",
                      was_scheme.empty() ? "no distillation" : "--distill-scheme " + was_scheme,
                      " but these options ask for ",
                      scheme.empty() ? "none" : "--distill-scheme " + scheme);
    if (joint) {
      const std::string was_teacher =
          extra.contains("distill") ? extra["distill"].value("teacher_spec", json()).dump() : "";
      TORCH_CHECK_VALUE(was_teacher == json::parse(teacher->spec().to_json(-1)).dump(),
                        "--resume: ", last, " trained another teacher (", was_teacher,
                        ") than these options build (", teacher->spec().to_json(-1), ")");
    }
    models::load_checkpoint_into(last, *model);
    TORCH_CHECK(!meta.info.blob.empty(), "--resume: ", last,
                " has no optimizer state; it was not written by wrpn_train");
    torch::serialize::InputArchive ar;
    ar.load_from(meta.info.blob.data(), meta.info.blob.size(), device);
    opt.load(ar);
    if (joint) {
      torch::serialize::InputArchive t;
      TORCH_CHECK(ar.try_read(kTeacherArchiveKey, t), "--resume: ", last,
                  " holds no teacher state; it was not written by a scheme A run");
      teacher->load(t);
    }
    start_epoch = meta.info.epoch;
    best_top1 = extra.value("best_top1", -1.0);
    best_top5 = extra.value("best_top5", 0.0);
    best_epoch = extra.value("best_epoch", int64_t{0});
    wall_before = extra.value("wall_seconds", 0.0);
    if (extra.contains("distill")) distill_start = extra["distill"].value("start", json::object());
    prune_metrics(metrics_path, start_epoch);
    say("resuming " + last + " after epoch " + std::to_string(start_epoch));
  } else {
    train::remove_file(metrics_path);
    train::remove_file(summary_path);
    train::remove_file(teacher_path);
  }
  train::atomic_write(train::join_path(dir, "options.json"), o.to_json().dump(2) + "\n");

  say("wrpn " + std::string(kVersion) + ": " + o.model + " " + o.precision.short_name() + " on " +
      o.dataset + " (" + std::to_string(n_train) + " train / " + std::to_string(n_test) +
      " test images), " + std::to_string(n_params) + " parameters, device " + device.str() +
      ", " + std::to_string(at::get_num_threads()) + " threads");
  const std::string init_name =
      scheme == "C" ? "loaded from " + student_init_path : resolved_init(o);
  char zbuf[256];
  std::snprintf(zbuf, sizeof zbuf, "quantized weights at zero after init (%s): %.1f%%",
                init_name.c_str(), 100.0 * init_zero_fraction);
  say(zbuf);

  // The frozen teacher's accuracy, once (B, C); the student's starting point (C).
  EvalResult tev;
  auto say_teacher = [&](const EvalResult& r) {
    char tbuf[128];
    std::snprintf(tbuf, sizeof tbuf, "  teacher test: loss %.4f  top-1 %.2f%%", r.loss,
                  100 * r.top1);
    say(tbuf);
  };
  // teacher.ckpt: the teacher with its last test result, for wrpn_eval.
  auto save_teacher = [&](int64_t epoch_done, json extra) {
    models::CheckpointInfo tinfo;
    tinfo.epoch = epoch_done;
    tinfo.metrics = eval_json(tev, "test_");
    extra["distill_teacher_of"] = last;
    extra["options"] = o.to_json();
    tinfo.extra_json = extra.dump();
    models::save_checkpoint(teacher_path, *teacher, tinfo);
  };
  if (distilling) {
    say("distillation scheme " + scheme + " from the teacher " +
        teacher_description(o, *teacher) + ", " + std::to_string(teacher_params) +
        " parameters");
    if (!joint) {
      tev = evaluate(*teacher, test_ds, o.limit_test, device, o.eval_batch_size, o.workers, o.amp);
      say_teacher(tev);
    }
    if (scheme == "C" && !resuming) {
      const EvalResult sev =
          evaluate(*model, test_ds, o.limit_test, device, o.eval_batch_size, o.workers, o.amp);
      distill_start = eval_json(sev, "student_init_test_");
      char sbuf[160];
      std::snprintf(sbuf, sizeof sbuf, "  student from %s before training: top-1 %.2f%%",
                    student_init_path.c_str(), 100 * sev.top1);
      say(sbuf);
    }
  }
  // What summary.json and each checkpoint record about the distillation.
  auto distill_json = [&]() {
    json d = {{"scheme", scheme},
              {"alpha", o.distill.alpha},
              {"beta", o.distill.beta},
              {"gamma", o.distill.gamma},
              {"temperature", o.distill.temperature},
              {"kl", o.distill.kl},
              {"teacher", o.teacher},
              {"teacher_source", teacher_is_zoo_model(o.teacher) ? "zoo" : "checkpoint"},
              {"teacher_spec", json::parse(teacher->spec().to_json(-1))},
              {"teacher_parameters", teacher_params},
              {"teacher_test_top1", tev.top1},
              {"teacher_test_top5", tev.top5},
              {"teacher_test_loss", tev.loss},
              {"start", distill_start}};
    if (scheme == "C") {
      d["student_init"] = student_init_path;
      d["student_init_rescale"] = student_rescale;  // factor by conv; empty: none rescaled
    }
    return d;
  };

  const double t_run = now_s();
  EvalResult ev;
  double last_ips = 0.0;
  int64_t epoch = start_epoch;
  for (; epoch < o.epochs; ++epoch) {
    model->train();
    train_ds.set_epoch(epoch);
    auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed * 1000003ULL + epoch + 1);
    const auto perm = torch::randperm(n_train, gen, torch::kLong);
    // A last batch of one image would break BatchNorm: fold it into the previous one.
    int64_t batches = (n_train + o.batch_size - 1) / o.batch_size;
    if (batches > 1 && n_train % o.batch_size == 1) --batches;
    train::Progress prog("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(o.epochs),
                         batches, o.quiet ? nullptr : stderr);
    double lr = o.schedule.base_lr;
    if (joint) teacher->train();
    // Per-image sums of the distillation terms and the teacher's training accuracy.
    double teacher_ce_sum = 0, student_ce_sum = 0, soft_sum = 0;
    int64_t teacher_correct = 0;
    const bool teacher_used = distilling && (o.distill.alpha > 0 || o.distill.gamma > 0);
    for (int64_t b = 0; b < batches; ++b) {
      const int64_t lo = b * o.batch_size;
      const int64_t hi = b + 1 == batches ? n_train : lo + o.batch_size;
      auto batch = get_batch(train_ds, perm.slice(0, lo, hi), epoch, o.workers);
      const auto x = batch.data.to(device), y = batch.target.to(device);
      lr = o.schedule.at(epoch + static_cast<double>(b) / batches, o.epochs);
      for (size_t gi = 0; gi < opt.param_groups().size(); ++gi) {
        static_cast<torch::optim::SGDOptions&>(opt.param_groups()[gi].options())
            .lr(lr * group_mult[gi]);
      }
      opt.zero_grad();
      torch::Tensor logits, teacher_logits;
      {
        Autocast ac(o.amp && device.is_cuda());
        logits = model->forward(x);
        if (teacher_used) {
          std::optional<torch::NoGradGuard> frozen;
          if (!joint) frozen.emplace();
          teacher_logits = teacher->forward(x).to(torch::kFloat);
        }
      }
      logits = logits.to(torch::kFloat);
      torch::Tensor loss;
      if (distilling) {
        const auto parts =
            train::distillation_loss_parts(teacher_logits, logits, y, o.distill);
        loss = parts.total;
        const auto n = static_cast<double>(hi - lo);
        if (parts.teacher_ce.defined()) teacher_ce_sum += n * parts.teacher_ce.item<double>();
        if (parts.student_ce.defined()) student_ce_sum += n * parts.student_ce.item<double>();
        if (parts.soft.defined()) soft_sum += n * parts.soft.item<double>();
        if (teacher_used) teacher_correct += train::topk_correct(teacher_logits.detach(), y, 1);
      } else {
        loss = torch::nn::functional::cross_entropy(
            logits, y,
            torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(o.label_smoothing));
      }
      const double loss_v = loss.item<double>();
      TORCH_CHECK(std::isfinite(loss_v), "the training loss became ", loss_v, " at epoch ",
                  epoch + 1, ", batch ", b + 1, "; try a lower --lr (now ", lr, ")");
      loss.backward();
      opt.step();
      prog.update(hi - lo, loss_v, train::topk_correct(logits.detach(), y, 1));
    }
    const double train_s = prog.finish();
    last_ips = prog.images_per_second();
    ev = evaluate(*model, test_ds, o.limit_test, device, o.eval_batch_size, o.workers, o.amp);
    if (joint) {
      tev = evaluate(*teacher, test_ds, o.limit_test, device, o.eval_batch_size, o.workers, o.amp);
    }
    const bool improved = ev.top1 > best_top1;
    if (improved) {
      best_top1 = ev.top1;
      best_top5 = ev.top5;
      best_epoch = epoch + 1;
    }
    json line = {{"epoch", epoch + 1},
                 {"lr", lr},
                 {"train_loss", prog.mean_loss()},
                 {"train_top1", prog.accuracy()},
                 {"test_loss", ev.loss},
                 {"test_top1", ev.top1},
                 {"test_top5", ev.top5},
                 {"seconds", train_s + ev.seconds + (joint ? tev.seconds : 0.0)},
                 {"images_per_second", last_ips}};
    if (distilling) {
      // train_loss is the whole distillation loss; a term whose weight is 0 is null.
      const double n = static_cast<double>(n_train);
      auto term = [&](double w, double sum) { return w > 0 ? json(sum / n) : json(); };
      line["train_teacher_loss"] = term(o.distill.alpha, teacher_ce_sum);
      line["train_student_loss"] = term(o.distill.beta, student_ce_sum);
      line["train_soft_loss"] = term(o.distill.gamma, soft_sum);
      line["train_teacher_top1"] = teacher_used ? json(teacher_correct / n) : json();
      line["teacher_test_loss"] = tev.loss;
      line["teacher_test_top1"] = tev.top1;
      line["teacher_test_top5"] = tev.top5;
    }
    train::append_line(metrics_path, line.dump());
    char buf[160];
    std::snprintf(buf, sizeof buf, "  test: loss %.4f  top-1 %.2f%%  top-5 %.2f%%  (best %.2f%%)",
                  ev.loss, 100 * ev.top1, 100 * ev.top5, 100 * best_top1);
    say(buf);
    if (joint) say_teacher(tev);

    models::CheckpointInfo info;
    info.epoch = epoch + 1;
    info.metrics = eval_json(ev, "test_");
    json extra = {{"best_top1", best_top1},
                  {"best_top5", best_top5},
                  {"best_epoch", best_epoch},
                  {"wall_seconds", wall_before + now_s() - t_run},
                  {"options", o.to_json()}};
    if (distilling) extra["distill"] = distill_json();
    info.extra_json = extra.dump();
    if (improved) models::save_checkpoint(best, *model, info);
    if (joint) {
      // The trained teacher, for wrpn_eval; resume reads it from last.ckpt's blob instead.
      save_teacher(epoch + 1, json::object());
    }
    info.blob = optimizer_blob(opt, joint ? teacher.get() : nullptr);
    models::save_checkpoint(last, *model, info);
    const bool stop_now = g_stop.load() || (o.stop_after > 0 && epoch + 1 >= o.stop_after);
    if (stop_now && epoch + 1 < o.epochs) {
      say("stopped after epoch " + std::to_string(epoch + 1) + "; continue with --resume");
      ++epoch;
      break;
    }
  }
  const bool completed = epoch >= o.epochs;
  if (start_epoch >= o.epochs) {
    // Nothing left to train: report the checkpoint's own accuracy.
    ev = evaluate(*model, test_ds, o.limit_test, device, o.eval_batch_size, o.workers, o.amp);
    if (joint) {
      tev = evaluate(*teacher, test_ds, o.limit_test, device, o.eval_batch_size, o.workers, o.amp);
    }
  }
  if (distilling && !joint) {
    // The frozen teacher as this run used it (bit-identical to its source checkpoint).
    save_teacher(0, json{{"source", o.teacher}});
  }
  const auto report = models::cost_report(*model, 0, 0, true);
  json summary = {{"model", o.model},
                  {"dataset", o.dataset},
                  {"precision", json::parse(o.precision.to_json(-1))},
                  {"precision_name", o.precision.short_name()},
                  {"spec", json::parse(model->spec().to_json(-1))},
                  {"parameters", n_params},
                  {"epochs", o.epochs},
                  {"epochs_completed", std::min(epoch, o.epochs)},
                  {"completed", completed},
                  {"best_top1", best_top1},
                  {"best_top5", best_top5},
                  {"best_epoch", best_epoch},
                  {"final_top1", ev.top1},
                  {"final_top5", ev.top5},
                  {"final_test_loss", ev.loss},
                  {"train_images_per_second", last_ips},
                  {"wall_seconds", wall_before + now_s() - t_run},
                  {"bit_ops", report.totals.bit_ops},
                  {"macs", report.totals.macs},
                  {"weight_storage_bytes", report.totals.storage_bits / 8},
                  {"zero_fraction_init", init_zero_fraction},
                  {"zero_fraction_final", report.totals.zero_fraction},
                  {"quantized_lr_mult", lr_mults},
                  {"device", device.str()},
                  {"library_version", kVersion}};
  if (distilling) summary["distill"] = distill_json();
  if (report.baseline) {
    summary["baseline_fp32_1x"] = {{"bit_ops", report.baseline->bit_ops},
                                   {"weight_storage_bytes", report.baseline->storage_bits / 8}};
  }
  train::atomic_write(summary_path, summary.dump(2) + "\n");
  return summary;
}

EvalResult evaluate_checkpoint(const std::string& checkpoint, const std::string& dataset,
                               const std::string& data_root, const std::string& split,
                               const std::string& device_name, int64_t batch_size,
                               int64_t limit, int64_t image_size) {
  TORCH_CHECK_VALUE(batch_size >= 1, "--batch-size must be >= 1, got ", batch_size);
  const torch::Device device = resolve_device(device_name);
  models::CheckpointMeta meta;
  models::Classifier model = models::load_checkpoint(checkpoint, &meta);
  model->to(device);
  TrainOptions o;
  o.dataset = dataset;
  o.image_size = image_size;
  auto ds = data::open_dataset(dataset, data_root, data::parse_split(split),
                               dataset_options(o, false));
  TORCH_CHECK_VALUE(ds.channels() == meta.spec.in_channels && ds.num_classes() == meta.spec.num_classes,
                    checkpoint, " was trained on ", meta.spec.in_channels, "-channel images with ",
                    meta.spec.num_classes, " classes, but '", dataset, "' has ", ds.channels(),
                    " channels and ", ds.num_classes(), " classes");
  return evaluate(*model, ds, limit, device, batch_size, 2, false);
}

}  // namespace wrpn::app
