#pragma once
// Apprentice distillation (arXiv 1711.05852), one strategy per scheme: A trains a teacher jointly
// with the student, B distils from a frozen trained teacher, C also starts the student from
// trained fp32 weights. The loop asks the strategy for the teacher's logits and the loss, and
// tells it where an epoch and the run stand.

#include <torch/torch.h>
#include <wrpn/data.h>
#include <wrpn/models/classifier.h>
#include <wrpn/train/options.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "evaluate.h"

namespace wrpn::train {

class RunDir;

/// The teacher of a distilling run and what the run reports about it.
class Teacher {
 public:
  /// The strategy of `o.distill_scheme`, with its teacher built or loaded and moved to `device`
  /// (frozen for B and C); nullptr without a scheme. Only the class count and input channels
  /// must match the student's.
  static std::unique_ptr<Teacher> make(const TrainOptions& o, const models::ModelSpec& student,
                                       const RunDir& dir, torch::Device device);
  virtual ~Teacher() = default;

  /// Scheme C: the student's starting weights (also when resuming, so that the run reports the
  /// same starting point either way).
  virtual void prepare_student(models::ClassifierImpl& student) {}
  /// Scheme A: the teacher's parameters, trained by the student's optimizer.
  virtual std::vector<torch::Tensor> trainable_parameters() const { return {}; }
  /// Resume: refuses a last.ckpt that trained another teacher (scheme A).
  virtual void check_resume(const nlohmann::json& extra) const {}
  /// Resume: restores the teacher state of last.ckpt's blob (scheme A) and the start record.
  virtual void load_state(torch::serialize::InputArchive& blob, const nlohmann::json& extra);
  /// The teacher whose state last.ckpt's blob carries (scheme A), else nullptr.
  virtual const models::ClassifierImpl* resumable_state() const { return nullptr; }
  /// Before the first epoch: says what distils into what; B and C evaluate the frozen teacher,
  /// C the student's starting point (unless resuming).
  virtual void start(models::ClassifierImpl& student, data::AnyDataset& test,
                     const EvalSetup& setup, bool resuming, const Say& say);

  /// At the start of each epoch.
  virtual void begin_epoch();
  /// Whether the loss reads the teacher's logits (alpha or gamma > 0).
  bool used() const;
  /// The teacher's float logits for a training batch (no gradient when frozen).
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  /// The distillation loss of a batch of `n` images, adding its terms to the epoch's sums.
  torch::Tensor loss(const torch::Tensor& teacher_logits, const torch::Tensor& logits,
                     const torch::Tensor& y, int64_t n);
  /// After the student's test evaluation; returns the seconds it spent (scheme A evaluates the
  /// trained teacher).
  virtual double evaluate_epoch(data::AnyDataset& test, const EvalSetup& setup) { return 0.0; }
  /// The epoch's distillation fields of metrics.jsonl over `n_train` images.
  void add_epoch_metrics(nlohmann::json& line, int64_t n_train) const;
  /// After best.ckpt is written for epoch `epoch_done` (scheme A: says and saves the teacher).
  virtual void end_epoch(int64_t epoch_done, const Say& say) {}
  /// After the last epoch; `trained` is false when the run had no epoch left to train.
  virtual void finish(bool trained, data::AnyDataset& test, const EvalSetup& setup) = 0;
  /// What summary.json and each checkpoint record about the distillation.
  virtual nlohmann::json describe() const;

 protected:
  Teacher(const TrainOptions& o, models::Classifier model, const RunDir& dir);
  void say_test(const Say& say) const;
  /// teacher.ckpt: the teacher with its last test result, for wrpn_eval.
  void save(int64_t epoch_done, nlohmann::json extra) const;

  const TrainOptions& o_;
  models::Classifier model_;
  std::string path_;       ///< teacher.ckpt
  std::string last_path_;  ///< the student's last.ckpt
  int64_t parameters_ = 0;
  EvalResult test_;                                  ///< the teacher's last test result
  nlohmann::json start_ = nlohmann::json::object();  ///< scheme C: the student before training
  // Per-image sums of the distillation terms and the teacher's training accuracy, this epoch.
  double teacher_ce_sum_ = 0, student_ce_sum_ = 0, soft_sum_ = 0;
  int64_t teacher_correct_ = 0;
};

}  // namespace wrpn::train
