// Tests of the run directory's protection of finished work: one owner at a time (an advisory
// lock, checked with two wrpn_train processes), no fresh run over a previous one without
// --overwrite, --resume with nothing to resume, resume with options that would change the
// result, and the cleanup of temporary files an interrupted write left.

#include <sys/file.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <wrpn/models/checkpoint.h>
#include <wrpn/train/trainer.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "dist/spawn.h"
#include "train_test_helpers.h"

namespace {

using Catch::Contains;
using wrpn::train::TrainOptions;
using wrpn_test::small_run;
using wrpn_test::temp_dir;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// The bytes of every file a run leaves, by name.
std::map<std::string, std::string> run_files(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const char* f :
       {"options.json", "metrics.jsonl", "summary.json", "last.ckpt", "best.ckpt"}) {
    const std::string p = dir + "/" + f;
    if (wrpn::train::path_exists(p)) files[f] = slurp(p);
  }
  return files;
}

TrainOptions tiny(const std::string& dir) {
  wrpn_test::SmallRun r;
  r.limit_train = 64;
  r.limit_test = 32;
  r.epochs = 2;
  return small_run(dir, r);
}

}  // namespace

TEST_CASE("a fresh run refuses a directory that holds a run; --overwrite replaces it",
          "[train][rundir]") {
  const std::string dir = temp_dir("rundir_fresh");
  TrainOptions o = tiny(dir);
  wrpn::train::fit(o);
  const auto before = run_files(dir);
  REQUIRE(before.size() == 5);
  CHECK_THROWS_WITH(wrpn::train::fit(o), Contains("holds a previous run") &&
                                             Contains("metrics.jsonl") && Contains("last.ckpt") &&
                                             Contains("--resume") && Contains("--overwrite"));
  CHECK(run_files(dir) == before);  // nothing touched

  // Even a run that died before its first epoch ended (only options.json) is not overwritten.
  const std::string dir2 = temp_dir("rundir_partial");
  { std::ofstream(dir2 + "/options.json") << "{}\n"; }
  CHECK_THROWS_WITH(wrpn::train::fit(tiny(dir2)), Contains("options.json"));

  o.overwrite = true;
  o.seed = 8;
  const auto summary = wrpn::train::fit(o);
  const auto after = run_files(dir);
  REQUIRE(after.size() == 5);
  CHECK(after.at("options.json") != before.at("options.json"));
  CHECK(after.at("last.ckpt") != before.at("last.ckpt"));
  CHECK(wrpn_test::read_jsonl(dir + "/metrics.jsonl").size() == 2);

  TrainOptions bad = tiny(dir);
  bad.overwrite = true;
  bad.resume = true;
  CHECK_THROWS_WITH(bad.validate(), Contains("--overwrite"));
  bad.overwrite = false;
  bad.auto_resume = true;
  CHECK_THROWS_WITH(bad.validate(), Contains("--auto-resume"));
}

TEST_CASE("resume with nothing to resume is an error; auto-resume starts fresh",
          "[train][rundir]") {
  const std::string dir = temp_dir("rundir_resume");
  TrainOptions o = tiny(dir);
  o.resume = true;
  CHECK_THROWS_WITH(wrpn::train::fit(o), Contains("nothing to resume") && Contains(dir));
  CHECK(run_files(dir).empty());
  // A dangling last.ckpt is nothing to resume either.
  REQUIRE(::symlink("/nonexistent/last.ckpt", (dir + "/last.ckpt").c_str()) == 0);
  CHECK_THROWS_WITH(wrpn::train::fit(o), Contains("nothing to resume"));
  ::unlink((dir + "/last.ckpt").c_str());

  o.resume = false;
  o.auto_resume = true;
  o.stop_after = 1;
  wrpn::train::fit(o);
  CHECK(wrpn_test::read_jsonl(dir + "/metrics.jsonl").size() == 1);
  o.stop_after = 0;
  const auto done = wrpn::train::fit(o);  // continues the run it finds
  CHECK(done["completed"].get<bool>());
  CHECK(wrpn_test::read_jsonl(dir + "/metrics.jsonl").size() == 2);
}

TEST_CASE("resume refuses options that change the result and names them", "[train][rundir]") {
  const std::string dir = temp_dir("rundir_mismatch");
  TrainOptions o = tiny(dir);
  o.stop_after = 1;
  wrpn::train::fit(o);
  const auto before = run_files(dir);
  TrainOptions r = tiny(dir);
  r.resume = true;
  r.schedule.base_lr = 0.1;
  r.seed = 9;
  CHECK_THROWS_WITH(wrpn::train::fit(r), Contains("lr was 0.05, now 0.1") &&
                                             Contains("seed was 7, now 9") &&
                                             Contains("options.json"));
  r = tiny(dir);
  r.resume = true;
  r.limit_train = 32;
  CHECK_THROWS_WITH(wrpn::train::fit(r), Contains("limit_train was 64, now 32"));
  CHECK(run_files(dir) == before);
  // Where the data lives and how many threads compute do not change what is computed: the
  // thread count is accepted (with a warning on the progress stream).
  r = tiny(dir);
  r.resume = true;
  r.threads = 2;
  const auto done = wrpn::train::fit(r);
  CHECK(done["completed"].get<bool>());
}

TEST_CASE("the run directory has one owner; a second process is told who holds it",
          "[train][rundir]") {
  const std::string dir = temp_dir("rundir_lock");
  {  // Another open file description holds the lock: fit() refuses, touching nothing.
    const int fd = ::open((dir + "/.lock").c_str(), O_RDWR | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::flock(fd, LOCK_EX | LOCK_NB) == 0);
    REQUIRE(::pwrite(fd, "pid 12345 on testhost, since now\n", 33, 0) == 33);
    CHECK_THROWS_WITH(
        wrpn::train::fit(tiny(dir)),
        Contains("in use by another run (pid 12345 on testhost") && Contains("--run-dir"));
    CHECK(run_files(dir).empty());
    ::close(fd);  // released: the next run owns it
  }
  // Two wrpn_train processes: the second is refused while the first trains, and names it.
  const std::string bin = std::string(WRPN_TEST_BINARY_DIR) + "/examples/wrpn_train";
  const std::string run = dir + "/two";
  const std::vector<std::string> args = {bin,
                                         "--model",
                                         "resnet20",
                                         "--dataset",
                                         "digits",
                                         "--data-root",
                                         wrpn_test::digits_root(),
                                         "--epochs",
                                         "40",
                                         "--batch-size",
                                         "32",
                                         "--threads",
                                         "1",
                                         "--device",
                                         "cpu",
                                         "--quiet",
                                         "--run-dir",
                                         run};
  auto first = wrpn_dist_test::spawn(args, {}, dir + "/first");
  bool locked = false;
  for (int i = 0; i < 3000 && !locked; ++i) {
    locked = slurp(run + "/.lock").find("pid " + std::to_string(first.pid)) != std::string::npos;
    if (!locked) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(locked);
  auto second = wrpn_dist_test::spawn(args, {}, dir + "/second");
  CHECK(wrpn_dist_test::wait_for(second, 120) != 0);
  const std::string err = slurp(second.err);
  INFO(err);
  CHECK_THAT(err, Contains("in use by another run (pid " + std::to_string(first.pid)));
  ::kill(first.pid, SIGKILL);
  wrpn_dist_test::wait_for(first, 60);
  // The kernel dropped the dead process's lock: resuming (or overwriting) works at once.
  auto third = wrpn_dist_test::spawn(
      [&] {
        auto a = args;
        a.push_back("--overwrite");
        a[8] = "1";  // one epoch
        return a;
      }(),
      {}, dir + "/third");
  CHECK(wrpn_dist_test::wait_for(third, 300) == 0);
  INFO(slurp(third.err));
  CHECK(wrpn::train::path_exists(run + "/summary.json"));
}

TEST_CASE("temporary files of an interrupted write are removed by the next run",
          "[train][rundir]") {
  const std::string dir = temp_dir("rundir_tmp");
  TrainOptions o = tiny(dir);
  o.stop_after = 1;
  wrpn::train::fit(o);
  const std::string stale = dir + "/.last.ckpt.tmp.99999.0";
  { std::ofstream(stale) << "half a checkpoint"; }
  const std::string other = dir + "/notes.txt";  // not ours: kept
  { std::ofstream(other) << "mine"; }
  o.stop_after = 0;
  o.resume = true;
  wrpn::train::fit(o);
  CHECK_FALSE(wrpn::train::path_exists(stale));
  CHECK(wrpn::train::path_exists(other));
  // Files the run writes are readable by the group and others, as checkpoints are (umask 022).
  struct stat a {
  }, b{};
  REQUIRE(::stat((dir + "/metrics.jsonl").c_str(), &a) == 0);
  REQUIRE(::stat((dir + "/last.ckpt").c_str(), &b) == 0);
  CHECK((a.st_mode & 0777) == (b.st_mode & 0777));
}

TEST_CASE("a closed progress pipe does not kill a run", "[train][rundir]") {
  // wrpn_train ... 2>&1 | head -1: once head exits, every progress write hits a closed pipe.
  const std::string dir = temp_dir("rundir_pipe");
  const std::string bin = std::string(WRPN_TEST_BINARY_DIR) + "/examples/wrpn_train";
  const std::string root = wrpn_test::digits_root();
  const std::vector<std::string> args = {
      bin,  "--model",   "resnet20",  "--dataset", "digits", "--data-root",   root, "--epochs",
      "2",  "--threads", "1",         "--device",  "cpu",    "--limit-train", "64", "--limit-test",
      "32", "--run-dir", dir + "/run"};
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  ::close(fds[0]);  // the reader is gone before the first line
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  pid_t pid = -1;
  REQUIRE(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  wrpn_dist_test::Child c;
  c.pid = pid;
  const int rc = wrpn_dist_test::wait_for(c, 300);
  CHECK(rc == 0);
  CHECK(wrpn::train::path_exists(dir + "/run/summary.json"));
  CHECK(wrpn_test::read_jsonl(dir + "/run/metrics.jsonl").size() == 2);
}

TEST_CASE("a negative seed on the command line is refused, not wrapped", "[train][rundir]") {
  const std::string dir = temp_dir("rundir_seed");
  const std::string bin = std::string(WRPN_TEST_BINARY_DIR) + "/examples/wrpn_train";
  auto c =
      wrpn_dist_test::spawn({bin, "--seed", "-1", "--run-dir", dir + "/run"}, {}, dir + "/seed");
  CHECK(wrpn_dist_test::wait_for(c, 60) != 0);
  const std::string err = slurp(c.err);
  INFO(err);
  CHECK_THAT(err, Contains("--seed") && Contains("expected a non-negative integer, got -1"));
  CHECK_FALSE(wrpn::train::path_exists(dir + "/run"));
}

TEST_CASE("wrpn_eval evaluates a run's checkpoint on the run's test images", "[train][rundir]") {
  const std::string dir = temp_dir("rundir_eval");
  TrainOptions o = tiny(dir);  // --limit-test 32
  wrpn::train::fit(o);
  const std::string bin = std::string(WRPN_TEST_BINARY_DIR) + "/examples/wrpn_eval";
  auto c = wrpn_dist_test::spawn({bin, dir + "/best.ckpt", "--data-root", o.data_root, "--threads",
                                  "1", "--json", dir + "/eval.json"},
                                 {}, dir + "/eval");
  REQUIRE(wrpn_dist_test::wait_for(c, 120) == 0);
  const auto j = nlohmann::json::parse(slurp(dir + "/eval.json"));
  CHECK(j["images"] == 32);
  const auto meta = wrpn::models::read_checkpoint(dir + "/best.ckpt");
  CHECK(j["top1"].get<double>() == Approx(meta.info.metrics.at("test_top1")).epsilon(1e-12));
  auto all = wrpn_dist_test::spawn({bin, dir + "/best.ckpt", "--data-root", o.data_root, "--limit",
                                    "0", "--threads", "1", "--json", dir + "/eval_all.json"},
                                   {}, dir + "/eval_all");
  REQUIRE(wrpn_dist_test::wait_for(all, 120) == 0);
  CHECK(nlohmann::json::parse(slurp(dir + "/eval_all.json"))["images"] == 355);
}
