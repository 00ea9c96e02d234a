#include "run_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wrpn/train/utils.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>
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

/// The files that make up a run, in the order a message lists them.
const char* const kRunFiles[] = {"options.json", "metrics.jsonl", "summary.json",
                                 "last.ckpt",    "best.ckpt",     "teacher.ckpt"};

/// Whether `path` names anything, a dangling symbolic link included.
bool entry_exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

/// Printable ASCII of what a lock file says, at most 200 bytes of it.
std::string read_holder(int fd) {
  char buf[201] = {};
  const ssize_t n = ::pread(fd, buf, 200, 0);
  std::string out;
  for (ssize_t i = 0; i < n; ++i) {
    const char c = buf[i];
    if (c == '\n') break;
    out += (c >= 32 && c < 127) ? c : '?';
  }
  return out.empty() ? "a process that has not yet said who it is" : out;
}

/// Locks dir/.lock for this process (flock: released by the kernel when the process dies, so a
/// killed run leaves no stale lock) and writes who holds it.
std::shared_ptr<int> lock_run_dir(const std::string& dir) {
  const std::string path = join_path(dir, ".lock");
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  TORCH_CHECK_VALUE(fd >= 0, "cannot lock the run directory '", dir, "': opening ", path,
                    " failed: ", std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = read_holder(fd);
    ::close(fd);
    TORCH_CHECK_VALUE(err != EWOULDBLOCK, "the run directory '", dir,
                      "' is in use by another run (", holder,
                      "): wait for it to finish, or pass another --run-dir");
    TORCH_CHECK_VALUE(false, "cannot lock the run directory '", dir, "': ", std::strerror(err));
  }
  char when[32] = "?";
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  if (::gmtime_r(&now, &tm) != nullptr) std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  char host[256] = "?";
  ::gethostname(host, sizeof host - 1);
  const std::string who =
      "pid " + std::to_string(::getpid()) + " on " + host + ", since " + when + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, who.data(), who.size(), 0) < 0) {
    // The lock holds without the note; a second run then reports an anonymous holder.
  }
  return std::shared_ptr<int>(new int(fd), [](int* p) {
    ::close(*p);
    delete p;
  });
}

/// Removes ".<name>.tmp.<pid>.<n>": what atomic_write leaves when its process is killed between
/// creating and renaming the file. Only the lock holder writes here, so none is in flight.
void remove_temporaries(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  std::vector<std::string> stale;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() > 1 && name[0] == '.' && name.find(".tmp.") != std::string::npos &&
        name != "." && name != "..") {
      stale.push_back(name);
    }
  }
  ::closedir(d);
  for (const auto& name : stale) ::unlink(join_path(dir, name).c_str());
}

/// Options that do not change what a run computes (where the data lives, where the run is
/// written, how many decoding threads), and those that change only its rounding: compared on
/// resume by resume_differences().
const std::set<std::string> kPlaceOptions = {"data_root", "run_dir", "workers", "eval_batch_size"};
const std::set<std::string> kRoundingOptions = {"threads", "device"};

}  // namespace

std::string option_differences(const json& was, const json& now, const std::set<std::string>& place,
                               const std::set<std::string>& rounding,
                               std::vector<std::string>& warnings) {
  std::string differ;
  for (const auto& [key, value] : now.items()) {
    if (place.count(key)) continue;
    const json before = was.contains(key) ? was[key] : json();
    if (before == value) continue;
    if (rounding.count(key)) {
      warnings.push_back("resuming with " + key + " " + value.dump() + " where the run used " +
                         before.dump() +
                         ": LibTorch's kernels reduce in an order that depends on it, so the "
                         "result will not repeat an uninterrupted run bit for bit");
      continue;
    }
    differ +=
        (differ.empty() ? "" : "; ") + key + " was " + before.dump() + ", now " + value.dump();
  }
  return differ;
}

std::string optimizer_state(torch::optim::Optimizer& opt) { return optimizer_blob(opt, nullptr); }

void load_optimizer_state(const std::string& blob, torch::optim::Optimizer& opt,
                          torch::Device device, const std::string& what) {
  TORCH_CHECK_VALUE(!blob.empty(), what, " has no optimizer state");
  try {
    torch::serialize::InputArchive ar;
    ar.load_from(blob.data(), blob.size(), device);
    opt.load(ar);
  } catch (const c10::Error& e) {
    TORCH_CHECK_VALUE(false, "the optimizer state in ", what, " cannot be read (",
                      e.what_without_backtrace(), ")");
  }
}

RunDir::RunDir(std::string dir, bool writer) : dir_(std::move(dir)), writer_(writer) {
  if (!writer_) return;
  make_directories(dir_);
  lock_fd_ = lock_run_dir(dir_);
  remove_temporaries(dir_);
}

std::string RunDir::path(const char* name) const { return join_path(dir_, name); }

bool RunDir::has_last() const { return path_exists(last()); }

std::vector<std::string> RunDir::run_files() const {
  std::vector<std::string> found;
  for (const char* name : kRunFiles) {
    if (entry_exists(path(name))) found.push_back(name);
  }
  return found;
}

void RunDir::start_fresh(bool overwrite) const {
  if (!writer_) return;
  const std::vector<std::string> found = run_files();
  if (found.empty()) return;
  std::string list;
  for (const auto& f : found) list += (list.empty() ? "" : ", ") + f;
  TORCH_CHECK_VALUE(overwrite, "the run directory '", dir_, "' holds a previous run (", list,
                    "): pass --resume to continue it, --overwrite to replace it, or another "
                    "--run-dir");
  for (const auto& f : found) remove_file(path(f.c_str()));
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
                           Teacher* teacher, const TrainOptions& o, torch::Device device) const {
  const std::string& scheme = o.distill_scheme;
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
  ResumeState st;
  if (extra.contains("options") && extra["options"].is_object()) {
    const std::string differ = option_differences(extra["options"], o.to_json(), kPlaceOptions,
                                                  kRoundingOptions, st.warnings);
    TORCH_CHECK_VALUE(differ.empty(), "--resume: ", last,
                      " was trained with other options than these, which would change the "
                      "result: ",
                      differ, ". Resume with the run's options (", path("options.json"),
                      " as --config), or start a new run");
  }
  models::load_checkpoint_into(last, model);
  TORCH_CHECK(!meta.info.blob.empty(), "--resume: ", last,
              " has no optimizer state; it was not written by wrpn_train");
  torch::serialize::InputArchive ar;
  try {
    ar.load_from(meta.info.blob.data(), meta.info.blob.size(), device);
    opt.load(ar);
  } catch (const c10::Error& e) {
    TORCH_CHECK_VALUE(false, "--resume: the optimizer state in ", last, " cannot be read (",
                      e.what_without_backtrace(), ")");
  }
  if (teacher != nullptr) teacher->load_state(ar, extra);
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

void RunDir::write_options_json(const json& options) const {
  if (!writer_) return;
  atomic_write(path("options.json"), options.dump(2) + "\n");
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
