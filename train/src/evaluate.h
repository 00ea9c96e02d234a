#pragma once
// Evaluation of a model on a split, under the run's device and autocast.

#include <torch/torch.h>
#include <wrpn/data.h>
#include <wrpn/models/classifier.h>
#include <wrpn/train/trainer.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace wrpn::train {

/// Prints one progress message (nothing when the run is quiet).
using Say = std::function<void(const std::string&)>;

/// Seconds on a monotonic clock.
double now_s();

/// bf16 autocast on CUDA for the scope (no scaler needed for bf16).
class Autocast {
 public:
  explicit Autocast(bool on);
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  bool on_;
};

/// Where and how a run evaluates: the first `limit` images of a split in batches.
struct EvalSetup {
  int64_t limit = 0;
  torch::Device device = torch::kCPU;
  int64_t batch_size = 256;
  int64_t workers = 2;
  bool amp = false;
  /// Data-parallel evaluation: this rank takes images rank, rank + world, ... and `reduce` sums
  /// {loss, top-1, top-5, images} over the ranks in place.
  int rank = 0;
  int world = 1;
  std::function<void(std::vector<double>&)> reduce{};
};

/// Loss and top-1/top-5 of `model` in eval mode on `ds` (its training mode is restored).
EvalResult evaluate(models::ClassifierImpl& model, data::AnyDataset& ds, const EvalSetup& setup);

/// Logits of a batch of images.
using Forward = std::function<torch::Tensor(const torch::Tensor&)>;
/// The same for any forward function; with `reference`, also counts the images whose top-1
/// differs from the reference's and the largest logit difference.
EvalResult evaluate_forward(const Forward& forward, data::AnyDataset& ds, const EvalSetup& setup,
                            const Forward& reference = {});

/// {prefix + "top1", prefix + "top5", prefix + "loss"}: what checkpoints and the summary record.
nlohmann::json eval_json(const EvalResult& r, const std::string& prefix);

}  // namespace wrpn::train
