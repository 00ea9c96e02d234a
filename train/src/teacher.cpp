#include "teacher.h"

#include <wrpn/models/checkpoint.h>
#include <wrpn/models/registry.h>
#include <wrpn/nn/init.h>
#include <wrpn/train/distill.h>

#include <cstdio>
#include <optional>

#include "run_dir.h"

namespace wrpn::train {
namespace {

using nlohmann::json;

/// A fresh zoo model (scheme A) or a checkpoint's model; only the class count and input
/// channels must match the student.
models::Classifier build_teacher(const TrainOptions& o, const models::ModelSpec& student) {
  models::Classifier t;
  if (teacher_is_zoo_model(o.teacher)) {
    models::ModelSpec s;
    s.name = o.teacher;
    s.num_classes = student.num_classes;
    s.in_channels = student.in_channels;
    s.precision = PrecisionConfig::make(o.teacher_weight_bits, o.teacher_act_bits, o.teacher_width);
    s.init = nn::weight_init_from_string(auto_weight_init(s.precision.weight_bits));
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

/// Scheme A: the teacher trains with the student, through the alpha term of the same loss.
class JointTeacher final : public Teacher {
 public:
  JointTeacher(const TrainOptions& o, models::Classifier m, const RunDir& dir)
      : Teacher(o, std::move(m), dir) {}

  std::vector<torch::Tensor> trainable_parameters() const override { return model_->parameters(); }
  void check_resume(const json& extra) const override {
    const std::string was =
        extra.contains("distill") ? extra["distill"].value("teacher_spec", json()).dump() : "";
    TORCH_CHECK_VALUE(was == json::parse(model_->spec().to_json(-1)).dump(),
                      "--resume: ", last_path_, " trained another teacher (", was,
                      ") than these options build (", model_->spec().to_json(-1), ")");
  }
  void load_state(torch::serialize::InputArchive& blob, const json& extra) override {
    torch::serialize::InputArchive t;
    TORCH_CHECK(blob.try_read(kTeacherArchiveKey, t), "--resume: ", last_path_,
                " holds no teacher state; it was not written by a scheme A run");
    model_->load(t);
    Teacher::load_state(blob, extra);
  }
  const models::ClassifierImpl* resumable_state() const override { return model_.get(); }
  void begin_epoch() override {
    Teacher::begin_epoch();
    model_->train();
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    return model_->forward(x).to(torch::kFloat);
  }
  double evaluate_epoch(data::AnyDataset& test, const EvalSetup& setup) override {
    test_ = evaluate(*model_, test, setup);
    return test_.seconds;
  }
  void end_epoch(int64_t epoch_done, const Say& say) override {
    say_test(say);
    // The trained teacher, for wrpn_eval; resume reads it from last.ckpt's blob instead.
    save(epoch_done, json::object());
  }
  void finish(bool trained, data::AnyDataset& test, const EvalSetup& setup) override {
    if (!trained) test_ = evaluate(*model_, test, setup);
  }
};

/// Scheme B: a trained teacher, frozen (eval mode, no gradients, so its weights and BatchNorm
/// statistics stay bit-identical).
class FrozenTeacher : public Teacher {
 public:
  FrozenTeacher(const TrainOptions& o, models::Classifier m, const RunDir& dir)
      : Teacher(o, std::move(m), dir) {
    model_->eval();
    for (auto& p : model_->parameters()) p.set_requires_grad(false);
  }

  void start(models::ClassifierImpl& student, data::AnyDataset& test, const EvalSetup& setup,
             bool resuming, const Say& say) override {
    Teacher::start(student, test, setup, resuming, say);
    test_ = evaluate(*model_, test, setup);
    say_test(say);
  }
  torch::Tensor forward(const torch::Tensor& x) override {
    torch::NoGradGuard frozen;
    return model_->forward(x).to(torch::kFloat);
  }
  void finish(bool trained, data::AnyDataset& test, const EvalSetup& setup) override {
    // The frozen teacher as this run used it (bit-identical to its source checkpoint).
    save(0, json{{"source", o_.teacher}});
  }
};

/// Scheme C: a frozen teacher, and the student starts from trained fp32 weights.
class Fp32StartTeacher final : public FrozenTeacher {
 public:
  Fp32StartTeacher(const TrainOptions& o, models::Classifier m, const RunDir& dir)
      : FrozenTeacher(o, std::move(m), dir),
        init_path_(o.student_init.empty() ? o.teacher : o.student_init) {}

  void prepare_student(models::ClassifierImpl& student) override {
    try {
      models::load_checkpoint_into(init_path_, student);
    } catch (const c10::Error& e) {
      TORCH_CHECK_VALUE(false, "--distill-scheme C starts the student (", o_.model, " ",
                        o_.precision.short_name(), ") from ", init_path_,
                        ", which does not fit it (a teacher of another depth or width needs "
                        "--student-init with an fp32 checkpoint of the student's architecture): ",
                        e.what_without_backtrace());
    }
    if (o_.student_init_rescale) {
      for (const auto& [name, f] : nn::fit_weights_to_quantizer_(student)) rescale_[name] = f;
    }
  }
  void start(models::ClassifierImpl& student, data::AnyDataset& test, const EvalSetup& setup,
             bool resuming, const Say& say) override {
    FrozenTeacher::start(student, test, setup, resuming, say);
    if (resuming) return;
    const EvalResult sev = evaluate(student, test, setup);
    start_ = eval_json(sev, "student_init_test_");
    char buf[160];
    std::snprintf(buf, sizeof buf, "  student from %s before training: top-1 %.2f%%",
                  init_path_.c_str(), 100 * sev.top1);
    say(buf);
  }
  json describe() const override {
    json d = Teacher::describe();
    d["student_init"] = init_path_;
    d["student_init_rescale"] = rescale_;  // factor by conv; empty: none rescaled
    return d;
  }

 private:
  std::string init_path_;
  json rescale_ = json::object();
};

}  // namespace

std::unique_ptr<Teacher> Teacher::make(const TrainOptions& o, const models::ModelSpec& student,
                                       const RunDir& dir, torch::Device device) {
  if (o.distill_scheme.empty()) return nullptr;
  models::Classifier t = build_teacher(o, student);
  t->to(device);
  if (o.distill_scheme == "A") return std::make_unique<JointTeacher>(o, std::move(t), dir);
  if (o.distill_scheme == "B") return std::make_unique<FrozenTeacher>(o, std::move(t), dir);
  return std::make_unique<Fp32StartTeacher>(o, std::move(t), dir);
}

Teacher::Teacher(const TrainOptions& o, models::Classifier model, const RunDir& dir)
    : o_(o), model_(std::move(model)), path_(dir.teacher()), last_path_(dir.last()) {
  for (const auto& p : model_->parameters()) parameters_ += p.numel();
}

void Teacher::load_state(torch::serialize::InputArchive& blob, const json& extra) {
  if (extra.contains("distill")) start_ = extra["distill"].value("start", json::object());
}

void Teacher::start(models::ClassifierImpl& student, data::AnyDataset& test, const EvalSetup& setup,
                    bool resuming, const Say& say) {
  const std::string source = teacher_is_zoo_model(o_.teacher) ? "zoo model " : "checkpoint ";
  say("distillation scheme " + o_.distill_scheme + " from the teacher " + source + o_.teacher +
      " (" + model_->spec().name + " " + model_->spec().precision.short_name() + "), " +
      std::to_string(parameters_) + " parameters");
}

void Teacher::begin_epoch() {
  teacher_ce_sum_ = student_ce_sum_ = soft_sum_ = 0;
  teacher_correct_ = 0;
}

bool Teacher::used() const { return o_.distill.alpha > 0 || o_.distill.gamma > 0; }

torch::Tensor Teacher::loss(const torch::Tensor& teacher_logits, const torch::Tensor& logits,
                            const torch::Tensor& y, int64_t n_images) {
  const auto parts = distillation_loss_parts(teacher_logits, logits, y, o_.distill);
  const auto n = static_cast<double>(n_images);
  if (parts.teacher_ce.defined()) teacher_ce_sum_ += n * parts.teacher_ce.item<double>();
  if (parts.student_ce.defined()) student_ce_sum_ += n * parts.student_ce.item<double>();
  if (parts.soft.defined()) soft_sum_ += n * parts.soft.item<double>();
  if (used()) teacher_correct_ += topk_correct(teacher_logits.detach(), y, 1);
  return parts.total;
}

void Teacher::add_epoch_metrics(json& line, int64_t n_train) const {
  // train_loss is the whole distillation loss; a term whose weight is 0 is null.
  const double n = static_cast<double>(n_train);
  auto term = [&](double w, double sum) { return w > 0 ? json(sum / n) : json(); };
  line["train_teacher_loss"] = term(o_.distill.alpha, teacher_ce_sum_);
  line["train_student_loss"] = term(o_.distill.beta, student_ce_sum_);
  line["train_soft_loss"] = term(o_.distill.gamma, soft_sum_);
  line["train_teacher_top1"] = used() ? json(teacher_correct_ / n) : json();
  line["teacher_test_loss"] = test_.loss;
  line["teacher_test_top1"] = test_.top1;
  line["teacher_test_top5"] = test_.top5;
}

json Teacher::describe() const {
  return {{"scheme", o_.distill_scheme},
          {"alpha", o_.distill.alpha},
          {"beta", o_.distill.beta},
          {"gamma", o_.distill.gamma},
          {"temperature", o_.distill.temperature},
          {"kl", o_.distill.kl},
          {"teacher", o_.teacher},
          {"teacher_source", teacher_is_zoo_model(o_.teacher) ? "zoo" : "checkpoint"},
          {"teacher_spec", json::parse(model_->spec().to_json(-1))},
          {"teacher_parameters", parameters_},
          {"teacher_test_top1", test_.top1},
          {"teacher_test_top5", test_.top5},
          {"teacher_test_loss", test_.loss},
          {"start", start_}};
}

void Teacher::say_test(const Say& say) const {
  char buf[128];
  std::snprintf(buf, sizeof buf, "  teacher test: loss %.4f  top-1 %.2f%%", test_.loss,
                100 * test_.top1);
  say(buf);
}

void Teacher::save(int64_t epoch_done, json extra) const {
  models::CheckpointInfo info;
  info.epoch = epoch_done;
  info.metrics = eval_json(test_, "test_");
  extra["distill_teacher_of"] = last_path_;
  extra["options"] = o_.to_json();
  info.extra_json = extra.dump();
  models::save_checkpoint(path_, *model_, info);
}

}  // namespace wrpn::train
