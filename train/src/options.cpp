#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>
#include <wrpn/models/registry.h>
#include <wrpn/nn/init.h>
#include <wrpn/train/options.h>
#include <wrpn/util/text.h>

#include <cmath>
#include <type_traits>

namespace wrpn::train {
namespace {

using nlohmann::json;
using G = OptionGroup;

PrecisionConfig teacher_precision(const TrainOptions& o) {
  return PrecisionConfig::make(o.teacher_weight_bits, o.teacher_act_bits, o.teacher_width);
}

std::vector<OptionDescriptor> make_table() {
  // clang-format off
  return {
    {"model", "--model", "zoo model (wrpn_models list)", G::kModel,
     [](TrainOptions& o) -> OptionField { return &o.model; }},
    {"precision", "", "bit widths, width and per-layer overrides", G::kModel,
     [](TrainOptions& o) -> OptionField { return &o.precision; }},
    {"init", "--init",
     "weight init: auto (he for 3..16 bits, else quant_aware), quant_aware, he, torch_default",
     G::kModel, [](TrainOptions& o) -> OptionField { return &o.init; }},
    {"dataset", "--dataset", "digits, fashion_mnist, mnist, cifar10 or folder", G::kData,
     [](TrainOptions& o) -> OptionField { return &o.dataset; }},
    {"data_root", "--data-root", "dataset directory (default: data/<dataset>)", G::kData,
     [](TrainOptions& o) -> OptionField { return &o.data_root; }},
    {"augment", "--no-augment", "turn off the training augmentation", G::kData,
     [](TrainOptions& o) -> OptionField { return &o.augment; }},
    {"image_size", "--image-size", "folder datasets: crop size", G::kData,
     [](TrainOptions& o) -> OptionField { return &o.image_size; }},
    {"limit_train", "--limit-train", "use only the first N training images (0: all)", G::kData,
     [](TrainOptions& o) -> OptionField { return &o.limit_train; }},
    {"limit_test", "--limit-test", "use only the first N test images (0: all)", G::kData,
     [](TrainOptions& o) -> OptionField { return &o.limit_test; }},
    {"workers", "--workers", "image decoding threads (folder datasets)", G::kData,
     [](TrainOptions& o) -> OptionField { return &o.workers; }},
    {"epochs", "--epochs", "epochs", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.epochs; }},
    {"batch_size", "--batch-size", "training batch size", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.batch_size; }},
    {"eval_batch_size", "--eval-batch-size", "evaluation batch size", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.eval_batch_size; }},
    {"lr", "--lr", "peak learning rate", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.schedule.base_lr; }},
    {"min_lr", "--min-lr", "cosine: final learning rate", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.schedule.min_lr; }},
    {"schedule", "--schedule", "cosine, step or constant", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.schedule.kind; },
     {"cosine", "step", "constant"}},
    {"milestones", "--milestones", "step: epochs that multiply lr by gamma", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.schedule.milestones; }},
    {"gamma", "--gamma", "step: factor at each milestone", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.schedule.gamma; }},
    {"warmup_epochs", "--warmup-epochs", "linear warm-up (epochs)", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.schedule.warmup_epochs; }},
    {"momentum", "--momentum", "SGD momentum", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.momentum; }},
    {"nesterov", "--nesterov", "Nesterov momentum", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.nesterov; }},
    {"weight_decay", "--weight-decay", "L2 weight decay", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.weight_decay; }},
    {"quantized_lr_mult", "--quantized-lr-mult",
     "lr multiplier for WRPN-quantized conv/FC weights (weight decay divided by it): auto (per "
     "layer, the fp32 twin's SGD dynamics: their effective step is about lr/|w|^2 behind "
     "BatchNorm) or a number",
     G::kOptimization, [](TrainOptions& o) -> OptionField { return &o.quantized_lr_mult; }, {},
     /*number_as_text=*/true},
    {"label_smoothing", "--label-smoothing", "label smoothing in [0, 1)", G::kOptimization,
     [](TrainOptions& o) -> OptionField { return &o.label_smoothing; }},
    {"distill_scheme", "--distill-scheme",
     "Apprentice distillation: A (teacher and student trained jointly), B (frozen trained "
     "teacher), C (student starts from trained fp32 weights; frozen teacher)",
     G::kDistillation, [](TrainOptions& o) -> OptionField { return &o.distill_scheme; }},
    {"teacher", "--teacher",
     "teacher: a checkpoint, or (scheme A) a zoo model name built with --teacher-*",
     G::kDistillation, [](TrainOptions& o) -> OptionField { return &o.teacher; }},
    {"teacher_width", "--teacher-width", "zoo-model teacher: width multiplier", G::kDistillation,
     [](TrainOptions& o) -> OptionField { return &o.teacher_width; }},
    {"teacher_weight_bits", "--teacher-weight-bits", "zoo-model teacher: weight bits (32: fp32)",
     G::kDistillation, [](TrainOptions& o) -> OptionField { return &o.teacher_weight_bits; }},
    {"teacher_act_bits", "--teacher-act-bits", "zoo-model teacher: activation bits (32: ReLU)",
     G::kDistillation, [](TrainOptions& o) -> OptionField { return &o.teacher_act_bits; }},
    {"student_init", "--student-init",
     "scheme C: checkpoint the student starts from (default: the teacher's)", G::kDistillation,
     [](TrainOptions& o) -> OptionField { return &o.student_init; }},
    {"student_init_rescale", "--no-student-rescale",
     "scheme C: keep the loaded fp32 weights as they are (default: scale each conv's weights up "
     "to its quantizer's step where they are narrower, so low-bit weights do not all start at "
     "zero)",
     G::kDistillation, [](TrainOptions& o) -> OptionField { return &o.student_init_rescale; }},
    {"distill_alpha", "--distill-alpha", "weight of the teacher's CE(y, p_T)", G::kDistillation,
     [](TrainOptions& o) -> OptionField { return &o.distill.alpha; }},
    {"distill_beta", "--distill-beta", "weight of the student's CE(y, p_S)", G::kDistillation,
     [](TrainOptions& o) -> OptionField { return &o.distill.beta; }},
    {"distill_gamma", "--distill-gamma", "weight of the soft term CE(p_T, p_S)",
     G::kDistillation, [](TrainOptions& o) -> OptionField { return &o.distill.gamma; }},
    {"distill_temperature", "--distill-temperature", "softmax temperature of the soft term",
     G::kDistillation, [](TrainOptions& o) -> OptionField { return &o.distill.temperature; }},
    {"distill_kl", "--distill-kl", "soft term as KL(p_T || p_S) * T^2", G::kDistillation,
     [](TrainOptions& o) -> OptionField { return &o.distill.kl; }},
    {"packed_activations", "--no-packed-activations",
     "save quantized layers' inputs as float tensors, not packed k-bit codes (more memory, the "
     "same gradients)", G::kMachine,
     [](TrainOptions& o) -> OptionField { return &o.packed_activations; }},
    {"recompute_bn_input", "--recompute-bn-input",
     "recompute each quantized conv's output in the backward instead of saving it for its "
     "BatchNorm (less memory, one more conv forward a step)", G::kMachine,
     [](TrainOptions& o) -> OptionField { return &o.recompute_bn_input; }},
    {"seed", "--seed", "seed of init, shuffling and augmentation", G::kMachine,
     [](TrainOptions& o) -> OptionField { return &o.seed; }},
    {"device", "--device", "auto, cpu, cuda or cuda:N", G::kMachine,
     [](TrainOptions& o) -> OptionField { return &o.device; }},
    {"amp", "--amp", "bf16 autocast on CUDA", G::kMachine,
     [](TrainOptions& o) -> OptionField { return &o.amp; }},
    {"threads", "--threads", "CPU threads (0: LibTorch's default)", G::kMachine,
     [](TrainOptions& o) -> OptionField { return &o.threads; }},
    {"", "--dist-backend", "data-parallel backend under torchrun: auto (NCCL on CUDA, Gloo on CPU)",
     G::kMachine, [](TrainOptions& o) -> OptionField { return &o.dist_backend; },
     {"auto", "gloo", "nccl"}},
    {"", "--dist-timeout",
     "seconds a data-parallel rank waits for the others before it fails (store, collectives)",
     G::kMachine, [](TrainOptions& o) -> OptionField { return &o.dist_timeout; }},
    {"run_dir", "--run-dir", "output directory", G::kOutput,
     [](TrainOptions& o) -> OptionField { return &o.run_dir; }},
    {"", "--resume", "continue the run in RUN_DIR from its last.ckpt (an error when there is none)",
     G::kOutput, [](TrainOptions& o) -> OptionField { return &o.resume; }},
    {"", "--auto-resume",
     "continue from RUN_DIR/last.ckpt when there is one, else start fresh (torchrun restarts, "
     "sweeps)", G::kOutput, [](TrainOptions& o) -> OptionField { return &o.auto_resume; }},
    {"", "--overwrite",
     "start fresh even though RUN_DIR holds a previous run: its metrics, summary and "
     "checkpoints are deleted", G::kOutput,
     [](TrainOptions& o) -> OptionField { return &o.overwrite; }},
    {"", "--stop-after",
     "stop after this many epochs of the schedule (continue later with --resume)", G::kOutput,
     [](TrainOptions& o) -> OptionField { return &o.stop_after; }},
    {"", "--quiet", "no progress output", G::kOutput,
     [](TrainOptions& o) -> OptionField { return &o.quiet; }},
  };
  // clang-format on
}

json field_to_json(const OptionField& field) {
  return std::visit(
      [](auto* p) -> json {
        if constexpr (std::is_same_v<std::remove_pointer_t<decltype(p)>, PrecisionConfig>) {
          return json::parse(p->to_json(-1));
        } else {
          return *p;
        }
      },
      field);
}

/// Reads `v` into `field`, refusing a JSON value of another type (an integer option takes no
/// fraction, a negative seed or a string).
void field_from_json(const OptionDescriptor& d, const OptionField& field, const json& v) {
  const auto wrong = [&](const char* want) {
    TORCH_CHECK_VALUE(false, "training config key '", d.key, "' has the wrong type: expected ",
                      want, ", got ", wrpn::util::json_excerpt(v));
  };
  std::visit(
      [&](auto* p) {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, PrecisionConfig>) {
          *p = PrecisionConfig::from_json(v.dump());
        } else if constexpr (std::is_same_v<T, std::string>) {
          if (d.number_as_text && v.is_number()) {
            *p = std::to_string(v.get<double>());
          } else {
            if (!v.is_string()) wrong("a string");
            *p = v.get<std::string>();
          }
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!v.is_boolean()) wrong("true or false");
          *p = v.get<bool>();
        } else if constexpr (std::is_same_v<T, double>) {
          if (!v.is_number()) wrong("a number");
          *p = v.get<double>();
        } else if constexpr (std::is_same_v<T, int64_t>) {
          if (!v.is_number_integer()) wrong("an integer");
          *p = v.get<int64_t>();
        } else if constexpr (std::is_same_v<T, uint64_t>) {
          if (!v.is_number_unsigned()) wrong("a non-negative integer");
          *p = v.get<uint64_t>();
        } else {
          if (!v.is_array()) wrong("an array of integers");
          for (const auto& e : v) {
            if (!e.is_number_integer()) wrong("an array of integers");
          }
          *p = v.get<std::vector<int64_t>>();
        }
      },
      field);
}

void validate_distillation(const TrainOptions& o) {
  const std::string& s = o.distill_scheme;
  try {
    o.distill.validate();
  } catch (const c10::Error& e) {
    TORCH_CHECK_VALUE(false, "--distill-*: ", e.what_without_backtrace());
  }
  TORCH_CHECK_VALUE(o.label_smoothing == 0,
                    "--label-smoothing is not used with distillation (the soft term replaces it); "
                    "got ",
                    o.label_smoothing);
  TORCH_CHECK_VALUE(!o.teacher.empty(), "--distill-scheme ", s, " needs --teacher: ",
                    s == "A" ? "a zoo model name (e.g. resnet20) or a checkpoint"
                             : "the checkpoint of a trained teacher");
  TORCH_CHECK_VALUE(o.student_init.empty() || s == "C",
                    "--student-init applies to --distill-scheme C only (got scheme ", s, ")");
  const bool default_teacher_precision =
      o.teacher_width == 1.0 && o.teacher_weight_bits == 32 && o.teacher_act_bits == 32;
  if (teacher_is_zoo_model(o.teacher)) {
    TORCH_CHECK_VALUE(s == "A", "--distill-scheme ", s,
                      " needs a pretrained teacher: --teacher must be a checkpoint file, got the "
                      "zoo model name '",
                      o.teacher, "' (scheme A trains a zoo-model teacher jointly)");
    try {
      teacher_precision(o).validate();
    } catch (const c10::Error& e) {
      TORCH_CHECK_VALUE(false, "--teacher-width / --teacher-weight-bits / --teacher-act-bits: ",
                        e.what_without_backtrace());
    }
  } else {
    TORCH_CHECK_VALUE(path_exists(o.teacher), "--teacher '", o.teacher,
                      "' is neither a checkpoint file nor a zoo model (",
                      c10::Join(", ", models::list_models()), ")");
    TORCH_CHECK_VALUE(default_teacher_precision,
                      "--teacher-width / --teacher-weight-bits / --teacher-act-bits describe a "
                      "zoo-model teacher; the checkpoint '",
                      o.teacher, "' holds its own");
  }
  TORCH_CHECK_VALUE(s != "A" || o.distill.alpha > 0,
                    "--distill-scheme A trains the teacher through the alpha term: "
                    "--distill-alpha must be > 0, got ",
                    o.distill.alpha);
}

}  // namespace

std::string auto_weight_init(int64_t weight_bits) {
  // He for 3..16-bit weights (on digits a 4-bit ResNet-20 reached 93% after 4 epochs from He
  // against 71% from quant_aware at lr 0.1), quant_aware at 1-2 bits, where He starts every
  // weight at zero, and for fp32 models, where quant_aware is the usual torchvision-style draw
  // (He for convs, torch's default for the FC; plain He on the FC gives exploding first logits).
  return weight_bits >= 3 && weight_bits <= 16 ? "he" : "quant_aware";
}

bool teacher_is_zoo_model(const std::string& teacher) {
  if (teacher.empty() || path_exists(teacher)) return false;
  for (const auto& name : models::list_models()) {
    if (name == teacher) return true;
  }
  return false;
}

std::string TrainOptions::resolved_init() const {
  return init != "auto" ? init : auto_weight_init(precision.weight_bits);
}

double TrainOptions::fixed_quantized_lr_mult() const {
  const std::string& text = quantized_lr_mult;
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

void TrainOptions::validate() const {
  precision.validate();
  if (init != "auto") (void)nn::weight_init_from_string(init);
  (void)models::model_info(model);
  schedule.validate();
  TORCH_CHECK_VALUE(epochs >= 1, "--epochs must be >= 1, got ", epochs);
  (void)fixed_quantized_lr_mult();
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
  TORCH_CHECK_VALUE(dist_backend == "auto" || dist_backend == "gloo" || dist_backend == "nccl",
                    "--dist-backend must be auto, gloo or nccl, got '", dist_backend, "'");
  TORCH_CHECK_VALUE(!(overwrite && (resume || auto_resume)),
                    "--overwrite starts a run afresh; it cannot be combined with --resume or "
                    "--auto-resume");
  TORCH_CHECK_VALUE(!(resume && auto_resume), "--resume and --auto-resume: pass one of them");
  TORCH_CHECK_VALUE(dist_timeout > 0 && dist_timeout <= 86400,
                    "--dist-timeout must be in (0, 86400] seconds, got ", dist_timeout);
  TORCH_CHECK_VALUE(image_size >= 8, "--image-size must be >= 8, got ", image_size);
  TORCH_CHECK_VALUE(!run_dir.empty(), "--run-dir must not be empty");
  TORCH_CHECK_VALUE(stop_after >= 0, "--stop-after must be >= 0, got ", stop_after);

  const std::string& s = distill_scheme;
  TORCH_CHECK_VALUE(s.empty() || s == "A" || s == "B" || s == "C",
                    "--distill-scheme must be A, B or C (or empty: no distillation), got '", s,
                    "'");
  if (s.empty()) {
    TORCH_CHECK_VALUE(teacher.empty(), "--teacher needs --distill-scheme A, B or C");
    TORCH_CHECK_VALUE(student_init.empty(), "--student-init needs --distill-scheme C");
    return;
  }
  validate_distillation(*this);
}

json TrainOptions::to_json() const {
  json j = json::object();
  auto& self = const_cast<TrainOptions&>(*this);  // read only
  for (const auto& d : train_option_table()) {
    if (!d.key.empty()) j[d.key] = field_to_json(d.field(self));
  }
  return j;
}

void TrainOptions::update_from_json(const json& j) {
  TORCH_CHECK_VALUE(j.is_object(), "a training config must be a JSON object");
  for (const auto& [key, v] : j.items()) {
    const OptionDescriptor* d = nullptr;
    for (const auto& e : train_option_table()) {
      if (!e.key.empty() && e.key == key) d = &e;
    }
    TORCH_CHECK_VALUE(d != nullptr, "unknown training config key ", wrpn::util::printable(key));
    field_from_json(*d, d->field(*this), v);
  }
}

const std::vector<OptionDescriptor>& train_option_table() {
  static const std::vector<OptionDescriptor> table = make_table();
  return table;
}

const OptionDescriptor& train_option(const std::string& name) {
  for (const auto& d : train_option_table()) {
    if (d.key == name && !name.empty()) return d;
  }
  for (const auto& d : train_option_table()) {
    if (d.flag == name && !name.empty()) return d;
  }
  TORCH_CHECK_VALUE(false, "no training option is called '", name, "'");
}

}  // namespace wrpn::train
