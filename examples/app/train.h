#pragma once
/// The training and evaluation loops behind wrpn_train, wrpn_eval and wrpn_sweep: a zoo model
/// from the registry, a wrpn::data dataset, SGD with a schedule, per-epoch metrics, atomic
/// checkpoints and exact resume.

#include <torch/types.h>
#include <wrpn/models/classifier.h>
#include <wrpn/train/distill.h>
#include <wrpn/train/utils.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace wrpn::app {

/// Everything a training run depends on. Defaults train on a laptop CPU.
struct TrainOptions {
  // Model.
  std::string model = "resnet20";
  PrecisionConfig precision = PrecisionConfig::make(4, 4, 2.0);
  /// Weight init: "auto" (He for 3..16-bit weights; quant_aware at 1-2 bits, where He leaves
  /// every weight in the zero band, and for fp32), or one of quant_aware, he, torch_default.
  std::string init = "auto";
  // Data.
  std::string dataset = "digits";
  std::string data_root;        ///< empty: data/<dataset> ($WRPN_DATA_DIR/<dataset>)
  bool augment = true;          ///< random crop (+ flip except on digits)
  int64_t image_size = 224;     ///< folder datasets only
  int64_t limit_train = 0;      ///< use only the first N training images (0: all)
  int64_t limit_test = 0;       ///< use only the first N test images (0: all)
  int64_t workers = 2;          ///< threads that decode folder images
  // Optimisation.
  int64_t epochs = 12;
  int64_t batch_size = 64;
  int64_t eval_batch_size = 256;
  train::LrSchedule schedule{"cosine", 0.1, 0.0, 1.0, {}, 0.1};
  double momentum = 0.9;
  bool nesterov = false;
  double weight_decay = 5e-4;
  double label_smoothing = 0.0;
  /// Learning-rate multiplier m for the weights of WRPN-quantized convs and FCs (2..16 bits),
  /// whose weight decay is divided by m: "auto" (per layer nn::matched_lr_multiplier, the
  /// SGD dynamics of the fp32 twin: 1 for He-drawn weights, ~20-170 for 2-bit quant_aware
  /// convs; 1 in distillation scheme C), or a positive number for every such layer. A BatchNorm
  /// follows each conv, so SGD's effective step on a conv's weight is about lr / |w|^2.
  std::string quantized_lr_mult = "auto";
  // Distillation (Apprentice, arXiv 1711.05852; docs/distillation.md).
  /// "" (none), "A" (teacher and student trained jointly from scratch), "B" (frozen pretrained
  /// teacher, student from scratch) or "C" (student starts from trained fp32 weights, frozen
  /// teacher).
  std::string distill_scheme;
  /// A checkpoint path (its model is the teacher) or, for scheme A, a zoo model name built with
  /// teacher_width / teacher_weight_bits / teacher_act_bits. An existing file wins over a name.
  std::string teacher;
  double teacher_width = 1.0;
  int64_t teacher_weight_bits = 32;
  int64_t teacher_act_bits = 32;
  /// Scheme C: the checkpoint the student's weights start from (empty: the teacher checkpoint).
  std::string student_init;
  /// Scheme C: fit the loaded fp32 weights to the student's weight quantizer
  /// (nn::fit_weights_to_quantizer_) before training.
  bool student_init_rescale = true;
  /// Loss weights and temperature.
  train::DistillLossOptions distill;
  // Machine.
  uint64_t seed = 0;
  std::string device = "auto";  ///< auto (CUDA when available), cpu, cuda, cuda:N
  bool amp = false;             ///< bf16 autocast on CUDA
  int64_t threads = 0;          ///< CPU threads (0: LibTorch's default)
  // Output.
  std::string run_dir = "runs/latest";
  bool resume = false;  ///< continue from run_dir/last.ckpt if it exists
  int64_t stop_after = 0;  ///< stop (resumably) once this many epochs are done (0: never)
  bool quiet = false;

  /// Throws c10::Error naming the first bad option and what it expects.
  void validate() const;
  nlohmann::json to_json() const;
  /// Reads options from JSON with the keys to_json() writes (missing keys keep their values);
  /// unknown keys throw, naming the key.
  void update_from_json(const nlohmann::json& j);
};

/// Accuracy and loss of a model on a dataset split.
struct EvalResult {
  int64_t images = 0;
  double loss = 0.0;
  double top1 = 0.0;  ///< fraction in [0, 1]
  double top5 = 0.0;
  double seconds = 0.0;
  double images_per_second = 0.0;
  nlohmann::json to_json() const;
};

/// Trains as `options` says, writing into options.run_dir: metrics.jsonl (one line per epoch),
/// last.ckpt and best.ckpt (atomic), options.json and, at the end, summary.json, which it also
/// returns. With options.resume it continues from last.ckpt to the result an uninterrupted run
/// would have reached. Throws for bad options, a missing dataset or a mismatched checkpoint.
/// With a distillation scheme it also writes teacher.ckpt (scheme A: each epoch, the trained
/// teacher; B and C: at the end, the frozen teacher as used) and teacher fields in the metrics
/// and summary; scheme A's last.ckpt carries the teacher's state for an exact resume.
nlohmann::json train(const TrainOptions& options);

/// Evaluates a checkpoint's model on a dataset split.
EvalResult evaluate_checkpoint(const std::string& checkpoint, const std::string& dataset,
                               const std::string& data_root, const std::string& split,
                               const std::string& device, int64_t batch_size,
                               int64_t limit = 0, int64_t image_size = 224);

/// The device `name` names ("auto": CUDA when available).
torch::Device resolve_device(const std::string& name);

/// Asks a running train() to stop at the end of the current epoch (after its checkpoint); the
/// programs call it from their SIGINT/SIGTERM handler.
void request_stop();

}  // namespace wrpn::app
