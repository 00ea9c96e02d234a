#include "app/cli.h"

#include <c10/util/Exception.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <iostream>

#include <wrpn/train/utils.h>

namespace wrpn::app {
namespace {

struct PrecisionFlags {
  std::string config_file;
  std::vector<std::string> overrides;
  bool quantize_first = false;
  bool quantize_last = false;
  bool quantized_residual = false;
  std::string scheme;
  bool fixed_stochastic = false;
  int64_t weight_bits = 0, act_bits = 0;
  double width = 0;
  CLI::Option* weight_bits_opt = nullptr;
  CLI::Option* act_bits_opt = nullptr;
  CLI::Option* width_opt = nullptr;
};
PrecisionFlags g_precision;

void on_signal(int) {
  static volatile std::sig_atomic_t count = 0;
  if (++count > 1) std::_Exit(130);
  request_stop();
  const char msg[] = "\nstopping after this epoch (its checkpoint is kept); press again to quit now\n";
  (void)!::write(2, msg, sizeof msg - 1);
}

}  // namespace

void add_model_flags(CLI::App& app, TrainOptions& o) {
  auto& g = g_precision;
  g.weight_bits = o.precision.weight_bits;
  g.act_bits = o.precision.act_bits;
  g.width = o.precision.width;
  app.add_option("--model", o.model, "zoo model (wrpn_models list)")->capture_default_str();
  g.width_opt = app.add_option("--width", g.width, "width multiplier of every internal layer")
                    ->capture_default_str();
  g.weight_bits_opt =
      app.add_option("--weight-bits", g.weight_bits, "weight bits: 1..16, or 32 for fp32")
          ->capture_default_str();
  g.act_bits_opt = app.add_option("--act-bits", g.act_bits, "activation bits: 1..16, or 32 for ReLU")
                       ->capture_default_str();
  app.add_flag("--quantize-first", g.quantize_first, "quantize the first conv too (default: fp32)");
  app.add_flag("--quantize-last", g.quantize_last, "quantize the last FC too (default: fp32)");
  app.add_flag("--quantized-residual", g.quantized_residual,
               "quantize block outputs too (k-bit activations between blocks)");
  app.add_option("--scheme", g.scheme,
                 "quantizer family: wrpn (default), or fixed (ADaPTION Q(m.f) with --weight-bits / "
                 "--act-bits total bits)")
      ->check(CLI::IsMember({"wrpn", "fixed"}));
  app.add_flag("--fixed-stochastic", g.fixed_stochastic,
               "scheme fixed: stochastic rounding while training");
  app.add_option("--override", g.overrides,
                 "per-layer NAME=BITS or NAME=FORMAT, e.g. layer1.0.conv1=8, fc=Q2.14 or "
                 "layer1.0.act1=fixed16 (repeatable)");
  app.add_option("--precision-config", g.config_file,
                 "a precision config JSON file (flags given beside it override its values)")
      ->check(CLI::ExistingFile);
  app.add_option("--init", o.init,
                 "weight init: auto (he for 3..16 bits, else quant_aware), quant_aware, he, "
                 "torch_default")
      ->capture_default_str();
}

void finish_precision_flags(TrainOptions& o) {
  const auto& g = g_precision;
  PrecisionConfig p = o.precision;
  if (!g.config_file.empty()) p = PrecisionConfig::from_json(train::read_file(g.config_file));
  if (g.config_file.empty() || g.weight_bits_opt->count()) p.weight_bits = g.weight_bits;
  if (g.config_file.empty() || g.act_bits_opt->count()) p.act_bits = g.act_bits;
  if (g.config_file.empty() || g.width_opt->count()) p.width = g.width;
  if (g.quantize_first) p.fp32_first_layer = false;
  if (g.quantize_last) p.fp32_last_layer = false;
  if (g.quantized_residual) p.quantized_residual = true;
  if (!g.scheme.empty()) p.scheme = g.scheme;
  if (g.fixed_stochastic) p.fixed_stochastic = true;
  for (const auto& kv : g.overrides) {
    const auto eq = kv.find('=');
    TORCH_CHECK_VALUE(eq != std::string::npos && eq > 0,
                      "--override expects NAME=BITS or NAME=FORMAT, got '", kv, "'");
    const std::string name = kv.substr(0, eq), value = kv.substr(eq + 1);
    if (!value.empty() && value.find_first_not_of("0123456789") == std::string::npos) {
      p.fixed_point.erase(name);
      p.overrides[name] = std::stoll(value);
    } else {
      p.overrides.erase(name);
      p.fixed_point[name] = FixedPointFormat::parse(value);  // names the accepted forms
    }
  }
  p.validate();
  o.precision = p;
}

void load_config_arg(int argc, char** argv, TrainOptions& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], file;
    if (a == "--config" && i + 1 < argc) {
      file = argv[i + 1];
    } else if (a.rfind("--config=", 0) == 0) {
      file = a.substr(9);
    } else {
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(train::read_file(file));
    } catch (const nlohmann::json::exception& e) {
      TORCH_CHECK_VALUE(false, "--config ", file, " is not valid JSON: ", e.what());
    }
    o.update_from_json(j);
  }
}

void add_train_flags(CLI::App& app, TrainOptions& o) {
  app.add_option("--config", "training options as JSON (keys as in a run's options.json); "
                              "flags given beside it override its values")
      ->check(CLI::ExistingFile);
  add_model_flags(app, o);
  app.add_option("--dataset", o.dataset, "digits, cifar10 or folder")->capture_default_str();
  app.add_option("--data-root", o.data_root, "dataset directory (default: data/<dataset>)");
  app.add_flag("!--no-augment", o.augment, "turn off the training augmentation");
  app.add_option("--image-size", o.image_size, "folder datasets: crop size")->capture_default_str();
  app.add_option("--limit-train", o.limit_train, "use only the first N training images");
  app.add_option("--limit-test", o.limit_test, "use only the first N test images");
  app.add_option("--workers", o.workers, "image decoding threads (folder datasets)")
      ->capture_default_str();
  app.add_option("--epochs", o.epochs, "epochs")->capture_default_str();
  app.add_option("--batch-size", o.batch_size, "training batch size")->capture_default_str();
  app.add_option("--eval-batch-size", o.eval_batch_size, "evaluation batch size")
      ->capture_default_str();
  app.add_option("--lr", o.schedule.base_lr, "peak learning rate")->capture_default_str();
  app.add_option("--min-lr", o.schedule.min_lr, "cosine: final learning rate")
      ->capture_default_str();
  app.add_option("--schedule", o.schedule.kind, "cosine, step or constant")
      ->check(CLI::IsMember({"cosine", "step", "constant"}))
      ->capture_default_str();
  app.add_option("--milestones", o.schedule.milestones, "step: epochs that multiply lr by gamma")
      ->delimiter(',');
  app.add_option("--gamma", o.schedule.gamma, "step: factor at each milestone")
      ->capture_default_str();
  app.add_option("--warmup-epochs", o.schedule.warmup_epochs, "linear warm-up (epochs)")
      ->capture_default_str();
  app.add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
  app.add_flag("--nesterov", o.nesterov, "Nesterov momentum");
  app.add_option("--weight-decay", o.weight_decay, "L2 weight decay")->capture_default_str();
  app.add_option("--quantized-lr-mult", o.quantized_lr_mult,
                 "lr multiplier for WRPN-quantized conv/FC weights (weight decay divided by "
                 "it): auto (per layer, the fp32 twin's SGD dynamics: their effective step is "
                 "about lr/|w|^2 behind BatchNorm) or a number")
      ->capture_default_str();
  app.add_option("--label-smoothing", o.label_smoothing, "label smoothing in [0, 1)")
      ->capture_default_str();
  app.add_option("--distill-scheme", o.distill_scheme,
                 "Apprentice distillation: A (teacher and student trained jointly), B (frozen "
                 "trained teacher), C (student starts from trained fp32 weights; frozen teacher)");
  app.add_option("--teacher", o.teacher,
                 "teacher: a checkpoint, or (scheme A) a zoo model name built with --teacher-*");
  app.add_option("--teacher-width", o.teacher_width, "zoo-model teacher: width multiplier")
      ->capture_default_str();
  app.add_option("--teacher-weight-bits", o.teacher_weight_bits,
                 "zoo-model teacher: weight bits (32: fp32)")
      ->capture_default_str();
  app.add_option("--teacher-act-bits", o.teacher_act_bits,
                 "zoo-model teacher: activation bits (32: ReLU)")
      ->capture_default_str();
  app.add_option("--student-init", o.student_init,
                 "scheme C: checkpoint the student starts from (default: the teacher's)");
  app.add_flag("!--no-student-rescale", o.student_init_rescale,
               "scheme C: keep the loaded fp32 weights as they are (default: scale each conv's "
               "weights up to its quantizer's step where they are narrower, so low-bit weights "
               "do not all start at zero)");
  app.add_option("--distill-alpha", o.distill.alpha, "weight of the teacher's CE(y, p_T)")
      ->capture_default_str();
  app.add_option("--distill-beta", o.distill.beta, "weight of the student's CE(y, p_S)")
      ->capture_default_str();
  app.add_option("--distill-gamma", o.distill.gamma, "weight of the soft term CE(p_T, p_S)")
      ->capture_default_str();
  app.add_option("--distill-temperature", o.distill.temperature,
                 "softmax temperature of the soft term")
      ->capture_default_str();
  app.add_flag("--distill-kl", o.distill.kl, "soft term as KL(p_T || p_S) * T^2");
  app.add_option("--seed", o.seed, "seed of init, shuffling and augmentation")
      ->capture_default_str();
  app.add_option("--device", o.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  app.add_flag("--amp", o.amp, "bf16 autocast on CUDA");
  app.add_option("--threads", o.threads, "CPU threads (0: LibTorch's default)");
  app.add_option("--run-dir", o.run_dir, "output directory")->capture_default_str();
  app.add_flag("--resume", o.resume, "continue from RUN_DIR/last.ckpt when it exists");
  app.add_option("--stop-after", o.stop_after,
                 "stop after this many epochs of the schedule (continue later with --resume)");
  app.add_flag("--quiet", o.quiet, "no progress output");
}

void finish_train_flags(TrainOptions& o) {
  finish_precision_flags(o);
  o.validate();
}

void install_stop_handler() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

int run_main(const std::function<int()>& body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
  }
  return 1;
}

}  // namespace wrpn::app
