#pragma once
// A run directory: options.json, metrics.jsonl, summary.json, last.ckpt / best.ckpt /
// teacher.ckpt, and the state an exact resume reads back from last.ckpt.

#include <torch/torch.h>
#include <wrpn/models/checkpoint.h>
#include <wrpn/models/classifier.h>
#include <wrpn/train/options.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace wrpn::train {

class Teacher;

/// Key of scheme A's teacher state inside last.ckpt's blob (beside the optimizer's own keys).
inline constexpr const char* kTeacherArchiveKey = "wrpn_distill_teacher";

/// Where a resumed run stands (a fresh run: the defaults).
struct ResumeState {
  int64_t start_epoch = 0;
  int64_t best_epoch = 0;
  double best_top1 = -1.0;
  double best_top5 = 0.0;
  double wall_before = 0.0;  ///< seconds the run trained before
  /// Differences from the run's recorded options that do not change what is computed but do
  /// change its rounding (threads, device): printed, not refused.
  std::vector<std::string> warnings;
};

/// Whether request_stop() was called since the last clear_stop() (trainer.cpp).
bool stop_requested();
void clear_stop();

/// The differences between the options a run recorded (`was`) and `now` that would change its
/// result, as "key was X, now Y; ..." ("" when none). Keys in `place` are skipped; a difference
/// in a key of `rounding` (threads, device) is added to `warnings` instead.
std::string option_differences(const nlohmann::json& was, const nlohmann::json& now,
                               const std::set<std::string>& place,
                               const std::set<std::string>& rounding,
                               std::vector<std::string>& warnings);

/// An optimizer's state as bytes (a checkpoint's blob), and back; errors name `what`.
std::string optimizer_state(torch::optim::Optimizer& opt);
void load_optimizer_state(const std::string& blob, torch::optim::Optimizer& opt,
                          torch::Device device, const std::string& what);

class RunDir {
 public:
  /// Creates `dir` (and its parents) when missing. The writer owns the directory while it
  /// lives: it takes an advisory lock on dir/.lock (a second process gets an error naming the
  /// holder) and removes the temporary files of writes a killed process left behind. A RunDir
  /// that is not the `writer` (the ranks other than 0 of a data-parallel run) reads last.ckpt
  /// but locks, writes and removes nothing.
  explicit RunDir(std::string dir, bool writer = true);

  bool writer() const { return writer_; }

  std::string last() const { return path("last.ckpt"); }
  std::string best() const { return path("best.ckpt"); }
  std::string teacher() const { return path("teacher.ckpt"); }
  std::string metrics() const { return path("metrics.jsonl"); }
  std::string summary() const { return path("summary.json"); }

  /// Whether last.ckpt exists (what --resume continues from).
  bool has_last() const;
  /// The files of a run that are present (options.json, metrics.jsonl, summary.json, last.ckpt,
  /// best.ckpt, teacher.ckpt).
  std::vector<std::string> run_files() const;
  /// A fresh run. A directory that holds a previous run is refused (naming its files and the
  /// ways on: --resume, --overwrite, another --run-dir) unless `overwrite`, which deletes them.
  void start_fresh(bool overwrite) const;
  /// Loads last.ckpt into `model`, `opt` and `teacher` after checking that it was written for
  /// options `o` (model, precision, data, schedule, seed, teacher: every recorded option that
  /// changes the result), and keeps the metrics of the epochs it holds. Throws naming every
  /// difference.
  ResumeState resume(models::ClassifierImpl& model, torch::optim::Optimizer& opt, Teacher* teacher,
                     const TrainOptions& o, torch::Device device) const;

  void write_options(const TrainOptions& o) const;
  /// options.json from any options' JSON (the language model's trainer).
  void write_options_json(const nlohmann::json& options) const;
  /// Keeps the metrics of epochs 1..epochs only: what a run resumed from that checkpoint owns.
  void prune_metrics(int64_t epochs) const;
  void append_metrics(const nlohmann::json& line) const;
  void write_summary(const nlohmann::json& summary) const;
  void save_best(const models::ClassifierImpl& model, const models::CheckpointInfo& info) const;
  /// last.ckpt with the optimizer state (and scheme A's teacher) in its blob.
  void save_last(const models::ClassifierImpl& model, models::CheckpointInfo info,
                 torch::optim::Optimizer& opt, const Teacher* teacher) const;

 private:
  std::string path(const char* name) const;

  std::string dir_;
  bool writer_ = true;
  /// The open, locked dir/.lock (writers only); shared by copies, released with the last.
  std::shared_ptr<int> lock_fd_;
};

}  // namespace wrpn::train
