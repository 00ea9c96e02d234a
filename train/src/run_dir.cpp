#include "run_dir.h"

#include <wrpn/train/utils.h>

#include <fstream>
#include <sstream>

#include "teacher.h"

namespace wrpn::train {
namespace {

using nlohmann::json;

/// The optimizer state and, in scheme A, the teacher's parameters and buffers: one blob in one
/// atomically written checkpoint, so student, teacher and optimizer always resume together.
std::string optimizer_blob(torch::optim::Optimizer& opt, const models::ClassifierImpl* teacher) {
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

}  // namespace

RunDir::RunDir(std::string dir, bool writer) : dir_(std::move(dir)), writer_(writer) {
  if (writer_) make_directories(dir_);
}

std::string RunDir::path(const char* name) const { return join_path(dir_, name); }

bool RunDir::has_last() const { return path_exists(last()); }

void RunDir::start_fresh() const {
  if (!writer_) return;
  remove_file(metrics());
  remove_file(summary());
  remove_file(teacher());
}

void RunDir::prune_metrics(int64_t epochs) const {
  const std::string file = metrics();
  if (!writer_ || !path_exists(file)) return;
  std::ifstream in(file);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("epoch", int64_t{0}) <= epochs) kept += line + "\n";
  }
  atomic_write(file, kept);
}

ResumeState RunDir::resume(models::ClassifierImpl& model, torch::optim::Optimizer& opt,
                           Teacher* teacher, const std::string& scheme,
                           torch::Device device) const {
  const std::string last = this->last();
  const auto meta = models::read_checkpoint(last);
  TORCH_CHECK_VALUE(meta.spec == model.spec(), "--resume: ", last, " holds a different model (",
                    meta.spec.to_json(-1), ") than these options build (", model.spec().to_json(-1),
                    ")");
  const json extra = json::parse(meta.info.extra_json);
  const std::string was_scheme = extra.contains("options")
                                     ? extra["options"].value("distill_scheme", std::string())
                                     : std::string();
  TORCH_CHECK_VALUE(was_scheme == scheme, "--resume: ", last, " was written with ",
                    was_scheme.empty() ? "no distillation" : "--distill-scheme " + was_scheme,
                    " but these options ask for ",
                    scheme.empty() ? "none" : "--distill-scheme " + scheme);
  if (teacher != nullptr) teacher->check_resume(extra);
  models::load_checkpoint_into(last, model);
  TORCH_CHECK(!meta.info.blob.empty(), "--resume: ", last,
              " has no optimizer state; it was not written by wrpn_train");
  torch::serialize::InputArchive ar;
  ar.load_from(meta.info.blob.data(), meta.info.blob.size(), device);
  opt.load(ar);
  if (teacher != nullptr) teacher->load_state(ar, extra);
  ResumeState st;
  st.start_epoch = meta.info.epoch;
  st.best_top1 = extra.value("best_top1", -1.0);
  st.best_top5 = extra.value("best_top5", 0.0);
  st.best_epoch = extra.value("best_epoch", int64_t{0});
  st.wall_before = extra.value("wall_seconds", 0.0);
  prune_metrics(st.start_epoch);
  return st;
}

void RunDir::write_options(const TrainOptions& o) const {
  if (!writer_) return;
  atomic_write(path("options.json"), o.to_json().dump(2) + "\n");
}

void RunDir::append_metrics(const json& line) const {
  if (writer_) append_line(metrics(), line.dump());
}

void RunDir::write_summary(const json& summary) const {
  if (!writer_) return;
  atomic_write(this->summary(), summary.dump(2) + "\n");
}

void RunDir::save_best(const models::ClassifierImpl& model,
                       const models::CheckpointInfo& info) const {
  if (!writer_) return;
  models::save_checkpoint(best(), model, info);
}

void RunDir::save_last(const models::ClassifierImpl& model, models::CheckpointInfo info,
                       torch::optim::Optimizer& opt, const Teacher* teacher) const {
  if (!writer_) return;
  info.blob = optimizer_blob(opt, teacher != nullptr ? teacher->resumable_state() : nullptr);
  models::save_checkpoint(last(), model, info);
}

}  // namespace wrpn::train
