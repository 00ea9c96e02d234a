#pragma once
/// Pieces a training program is made of: learning-rate schedules, top-k accuracy, a progress
/// line with throughput and ETA, and crash-safe files (atomic writes, fsync'd JSON lines).

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "wrpn/util/fs.h"

namespace wrpn::train {

/// A learning-rate schedule over epochs, with linear warm-up.
struct LrSchedule {
  /// "cosine" (to min_lr at the last epoch), "step" (times gamma at each milestone epoch) or
  /// "constant".
  std::string kind = "cosine";
  double base_lr = 0.1;
  double min_lr = 0.0;
  /// Linear ramp from base_lr / warmup_epochs... to base_lr over these (fractional) epochs.
  double warmup_epochs = 0.0;
  /// Epochs at which "step" multiplies the rate by gamma.
  std::vector<int64_t> milestones;
  double gamma = 0.1;

  /// Throws with the allowed values when a field is out of range.
  void validate() const;
  /// The rate at fractional epoch `t` (0 <= t <= total_epochs), e.g. epoch + batch / batches.
  double at(double t, int64_t total_epochs) const;
};

/// Number of rows of `logits` [N, C] whose target [N] is among the k largest logits.
int64_t topk_correct(const at::Tensor& logits, const at::Tensor& target, int64_t k);

/// One progress line per reporting interval: batches done, loss, accuracy, images/s and ETA.
class Progress {
 public:
  /// `label` is printed first (e.g. "epoch 3/30"); `total_batches` sets the ETA. A null `out`
  /// prints nothing but still measures.
  Progress(std::string label, int64_t total_batches, std::FILE* out = stderr);
  /// Records one batch; prints at most every `interval_s` seconds (and always on the last).
  void update(int64_t batch_size, double loss, int64_t correct);
  /// Prints the final line and returns the elapsed seconds.
  double finish();
  double images_per_second() const;
  double mean_loss() const { return images_ ? loss_sum_ / images_ : 0.0; }
  double accuracy() const { return images_ ? static_cast<double>(correct_) / images_ : 0.0; }

  double interval_s = 2.0;
  /// What update()'s batch_size counts, in the rate ("img" prints "img/s"; "tok" for tokens).
  std::string unit = "img";
  /// Print the accuracy column (off where update()'s `correct` means nothing).
  bool show_accuracy = true;
  /// With show_accuracy off: print exp(mean loss) as "ppl" (a language model's perplexity).
  bool show_perplexity = false;

 private:
  void print(bool final);
  std::string label_;
  int64_t total_;
  std::FILE* out_;
  bool tty_;
  int64_t batches_ = 0;
  int64_t images_ = 0;
  int64_t correct_ = 0;
  double loss_sum_ = 0.0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
};

/// Seconds as "1h02m", "3m05s" or "12s".
std::string format_duration(double seconds);

/// The file helpers of wrpn/util/fs.h under their training names: atomic_write creates missing
/// parent directories.
inline void atomic_write(const std::string& path, const std::string& bytes) {
  fs::atomic_write(path, bytes, /*make_parents=*/true);
}
inline std::string read_file(const std::string& path) { return fs::read_file(path); }
inline std::string join_path(const std::string& dir, const std::string& name) {
  return fs::join(dir, name);
}
using fs::append_line;
using fs::make_directories;
using fs::parent_path;
using fs::path_exists;
using fs::remove_file;

}  // namespace wrpn::train
