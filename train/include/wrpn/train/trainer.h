#pragma once
/// The trainer: a zoo model from the registry, a wrpn::data dataset, SGD with a schedule,
/// per-epoch metrics, atomic checkpoints, exact resume and Apprentice distillation
/// (arXiv 1711.05852), with hooks for what runs beside the loop.
///
///   wrpn::train::TrainOptions o;
///   o.model = "resnet20";
///   o.data_root = "data/digits";
///   o.run_dir = "runs/w4a4x2";
///   const nlohmann::json summary = wrpn::train::fit(o);

#include <torch/types.h>
#include <wrpn/deploy/integer_model.h>
#include <wrpn/train/options.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace torch::optim {
class Optimizer;
}

namespace wrpn::train {

class DataParallel;

/// Accuracy and loss of a model on a dataset split.
struct EvalResult {
  int64_t images = 0;
  double loss = 0.0;
  double top1 = 0.0;  ///< fraction in [0, 1]
  double top5 = 0.0;
  double seconds = 0.0;
  double images_per_second = 0.0;
  /// With a reference model (wrpn_eval --compare): images whose top-1 differs from the
  /// reference's (-1: not compared) and the largest |logit difference|.
  int64_t top1_disagreements = -1;
  double max_logit_diff = 0.0;
  nlohmann::json to_json() const;
};

/// How evaluate_checkpoint() runs the model.
struct InferenceOptions {
  /// "fake-quant" (the trained model as it trains), "int8" (integer kernels, the best engine
  /// for the device), or an engine of wrpn::deploy by name: "onednn", "gemm", "float".
  std::string engine = "fake-quant";
  /// With an integer engine: also run the fake-quantized model and count disagreements.
  bool compare = false;
  /// Called with the deployed model before evaluation (e.g. to print its summary).
  std::function<void(const deploy::IntegerModel&)> on_deployed;
};

/// One optimizer step, as on_step sees it.
struct StepInfo {
  int64_t epoch = 0;    ///< 0-based epoch of the schedule
  int64_t batch = 0;    ///< 0-based batch within the epoch
  int64_t batches = 0;  ///< batches in the epoch
  int64_t images = 0;   ///< images in this batch
  double loss = 0.0;    ///< the batch's training loss (the whole distillation loss if any)
  double lr = 0.0;      ///< the base learning rate of this step
};

/// Callbacks fit() makes around its loop; each may be empty.
struct TrainHooks {
  /// After each optimizer step.
  std::function<void(const StepInfo&)> on_step;
  /// After backward and before the optimizer step, e.g. to all-reduce the gradients of every
  /// parameter the optimizer holds (data-parallel training).
  std::function<void(torch::optim::Optimizer&)> sync_gradients;
  /// After each epoch's test evaluation of the student (epoch: 1-based, just finished), before
  /// it is compared with the best and recorded, e.g. to combine the results of several ranks.
  std::function<void(int64_t epoch, EvalResult& test)> on_evaluate;
};

/// Trains as `options` says, writing into options.run_dir: metrics.jsonl (one line per epoch),
/// last.ckpt and best.ckpt (atomic), options.json and, at the end, summary.json, which it also
/// returns. With options.resume it continues from last.ckpt to the result an uninterrupted run
/// would have reached. Throws for bad options, a missing dataset or a mismatched checkpoint.
/// With a distillation scheme it also writes teacher.ckpt (scheme A: each epoch, the trained
/// teacher; B and C: at the end, the frozen teacher as used) and teacher fields in the metrics
/// and summary; scheme A's last.ckpt carries the teacher's state for an exact resume.
///
/// With `data_parallel` (see <wrpn/train/distributed.h>) every rank calls fit() with the same
/// options: options.batch_size is the global batch (a multiple of the world size), each rank
/// trains on its share, only rank 0 writes files, and every rank returns the same summary.
/// --resume needs the run directory where every rank can read it. Not with distillation.
nlohmann::json fit(const TrainOptions& options, const TrainHooks& hooks = {},
                   std::shared_ptr<DataParallel> data_parallel = nullptr);

/// Evaluates a checkpoint's model on a dataset split ("train" or "test") without augmentation.
EvalResult evaluate_checkpoint(const std::string& checkpoint, const std::string& dataset,
                               const std::string& data_root, const std::string& split,
                               const std::string& device, int64_t batch_size, int64_t limit = 0,
                               int64_t image_size = 224, const InferenceOptions& inference = {});

/// The device `name` names ("auto": CUDA when available).
torch::Device resolve_device(const std::string& name);

/// Asks a running fit() to stop at the end of the current epoch (after its checkpoint). Safe to
/// call from a signal handler.
void request_stop();

}  // namespace wrpn::train
