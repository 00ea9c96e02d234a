// Data-parallel training on c10d: the sharding plan, torchrun's environment, and two local
// processes on 127.0.0.1 (the gradient of a 2-rank step, parameters kept identical, wrpn_train
// on 2 ranks with files from rank 0 only, resume across world sizes, a killed rank, bad
// configurations). Every child process runs under a deadline.

#include <dirent.h>
#include <torch/torch.h>
#include <wrpn/train/distributed.h>
#include <wrpn/train/trainer.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <set>

#include "dist/dist_common.h"
#include "dist/spawn.h"
#include "train_test_helpers.h"

namespace {

using nlohmann::json;
using wrpn::train::epoch_batches;
using wrpn::train::shard;
using wrpn_dist_test::Child;
using wrpn_dist_test::rank_env;
using wrpn_dist_test::read_file;
using wrpn_dist_test::spawn;
using wrpn_dist_test::wait_for;

/// A program of this build (WRPN_BINARY_DIR overrides the build folder).
std::string binary(const std::string& rel) {
  const char* b = std::getenv("WRPN_BINARY_DIR");
  const std::string path = std::string(b ? b : WRPN_TEST_BINARY_DIR) + "/" + rel;
  INFO("built by the project: " << path);
  REQUIRE(wrpn::train::path_exists(path));
  return path;
}

/// The single-process plan as the trainer had it before data-parallel training: ceil(n / b)
/// batches, a last one of one image folded into the one before.
std::vector<std::pair<int64_t, int64_t>> single_plan(int64_t n, int64_t b) {
  int64_t batches = (n + b - 1) / b;
  if (batches > 1 && n % b == 1) --batches;
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t i = 0; i < batches; ++i) {
    out.emplace_back(i * b, i + 1 == batches ? n : (i + 1) * b);
  }
  return out;
}

/// Starts `world` ranks of `args` on a fresh port; returns their exit codes (-1: killed at the
/// deadline). Logs go to `dir`/rank<r>.{out,err}.
std::vector<int> run_ranks(int world, const std::vector<std::string>& args, const std::string& dir,
                           double deadline_s, std::vector<Child>* children = nullptr) {
  const int port = wrpn_dist_test::free_port();
  std::vector<Child> cs;
  for (int r = 0; r < world; ++r) {
    cs.push_back(spawn(args, rank_env(r, world, port), dir + "/rank" + std::to_string(r)));
  }
  std::vector<int> rcs;
  for (auto& c : cs) rcs.push_back(wait_for(c, deadline_s));
  if (children != nullptr) *children = cs;
  return rcs;
}

std::vector<torch::Tensor> load_tensors(const std::string& path) {
  std::vector<torch::Tensor> v;
  torch::load(v, path);
  return v;
}

/// wrpn_train's flags for a short 4-bit ResNet-20 run on digits.
std::vector<std::string> train_args(const std::string& run_dir, int64_t epochs) {
  return {binary("examples/wrpn_train"),
          "--model",
          "resnet20",
          "--width",
          "1",
          "--data-root",
          wrpn_test::digits_root(),
          "--epochs",
          std::to_string(epochs),
          "--batch-size",
          "64",
          "--threads",
          "1",
          "--device",
          "cpu",
          "--run-dir",
          run_dir,
          "--dist-timeout",
          "30",
          "--quiet"};
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

json read_json(const std::string& path) { return json::parse(read_file(path)); }

/// The names in `dir` (POSIX calls: see the README on std::filesystem and the torch wheel).
std::set<std::string> files_in(const std::string& dir) {
  std::set<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  REQUIRE(d != nullptr);
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.insert(n);
  }
  ::closedir(d);
  return names;
}

}  // namespace

TEST_CASE("epoch_batches: every rank the same steps, every sample at most once", "[dist]") {
  SECTION("world 1 is the single-process plan") {
    for (const int64_t n : {1, 2, 5, 63, 64, 65, 127, 128, 129, 1442}) {
      for (const int64_t b : {2, 3, 32, 64}) {
        INFO("n " << n << " batch " << b);
        CHECK(epoch_batches(n, b, 1) == single_plan(n, b));
      }
    }
  }
  SECTION("two and three ranks cover the permutation once, minus fewer than world samples") {
    for (const int world : {2, 3}) {
      for (const int64_t n : {6, 7, 97, 193, 194, 1442}) {
        const int64_t b = 6 * world;
        INFO("world " << world << " n " << n << " batch " << b);
        const auto plan = epoch_batches(n, b, world);
        const auto perm = torch::randperm(n, torch::kLong);
        std::vector<int> seen(n, 0);
        int64_t covered = 0;
        for (const auto& [lo, hi] : plan) {
          REQUIRE((hi - lo) % world == 0);
          REQUIRE(hi - lo >= 2 * world);  // never one sample per rank when n allows more
          for (int r = 0; r < world; ++r) {
            const auto mine = shard(perm.slice(0, lo, hi), r, world);
            CHECK(mine.size(0) == (hi - lo) / world);
            for (int64_t i = 0; i < mine.size(0); ++i) ++seen[mine[i].item<int64_t>()];
          }
          covered += hi - lo;
        }
        CHECK(n - covered < world);
        int64_t once = 0;
        for (const int s : seen) {
          CHECK(s <= 1);
          once += s;
        }
        CHECK(once == covered);
      }
    }
  }
  SECTION("a last batch of one sample per rank is folded, a remainder below world dropped") {
    CHECK(epoch_batches(130, 64, 2) ==
          std::vector<std::pair<int64_t, int64_t>>{{0, 64}, {64, 130}});
    CHECK(epoch_batches(131, 64, 2) ==
          std::vector<std::pair<int64_t, int64_t>>{{0, 64}, {64, 130}});
    CHECK(epoch_batches(132, 64, 2) ==
          std::vector<std::pair<int64_t, int64_t>>{{0, 64}, {64, 128}, {128, 132}});
  }
  SECTION("bad arguments") {
    CHECK_THROWS_WITH(epoch_batches(100, 10, 3), Catch::Contains("multiple of the world size 3"));
    CHECK_THROWS(epoch_batches(-1, 10, 1));
    CHECK_THROWS_WITH(shard(torch::arange(4), 2, 2), Catch::Contains("outside a world of 2"));
  }
}

TEST_CASE("LaunchEnv reads torchrun's variables and names what is missing", "[dist]") {
  const char* names[] = {"RANK",
                         "WORLD_SIZE",
                         "LOCAL_RANK",
                         "MASTER_ADDR",
                         "MASTER_PORT",
                         "TORCHELASTIC_USE_AGENT_STORE",
                         "TORCHELASTIC_RESTART_COUNT"};
  for (const char* n : names) ::unsetenv(n);
  CHECK_FALSE(wrpn::train::LaunchEnv::from_environment().has_value());
  ::setenv("WORLD_SIZE", "4", 1);
  CHECK_THROWS_WITH(wrpn::train::LaunchEnv::from_environment(), Catch::Contains("RANK is not set"));
  ::setenv("RANK", "4", 1);
  CHECK_THROWS_WITH(wrpn::train::LaunchEnv::from_environment(), Catch::Contains("0..3"));
  ::setenv("RANK", "3", 1);
  CHECK_THROWS_WITH(wrpn::train::LaunchEnv::from_environment(),
                    Catch::Contains("MASTER_ADDR is not"));
  ::setenv("MASTER_ADDR", "10.0.0.7", 1);
  ::setenv("MASTER_PORT", "70000", 1);
  CHECK_THROWS_WITH(wrpn::train::LaunchEnv::from_environment(), Catch::Contains("1..65535"));
  ::setenv("MASTER_PORT", "29400", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
  ::setenv("TORCHELASTIC_RESTART_COUNT", "2", 1);
  const auto e = wrpn::train::LaunchEnv::from_environment();
  REQUIRE(e.has_value());
  CHECK(e->rank == 3);
  CHECK(e->world_size == 4);
  CHECK(e->local_rank == 1);
  CHECK(e->master_addr == "10.0.0.7");
  CHECK(e->master_port == 29400);
  CHECK(e->agent_store);
  CHECK(e->restart_count == 2);
  for (const char* n : names) ::unsetenv(n);
}

TEST_CASE("2 ranks: the averaged gradient is the union batch's, parameters are rank 0's",
          "[dist][procs]") {
  const std::string dir = wrpn_test::temp_dir("dist_grad");
  const auto rcs =
      run_ranks(2, {binary("tests/wrpn_dist_worker"), "grad", dir + "/grad"}, dir, 120);
  INFO(read_file(dir + "/rank0.err") << read_file(dir + "/rank1.err"));
  REQUIRE(rcs == std::vector<int>{0, 0});
  const auto r0 = load_tensors(dir + "/grad0.pt");
  const auto r1 = load_tensors(dir + "/grad1.pt");
  // The reference: rank 0's initial model (seed kSeed), one process, the whole batch.
  auto model = wrpn_dist_test::make_model(wrpn_dist_test::kSeed);
  model->eval();
  const auto [x, y] = wrpn_dist_test::batch(0);
  torch::nn::functional::cross_entropy(model->forward(x), y).backward();
  const auto params = model->parameters();
  REQUIRE(r0.size() == 2 * params.size());
  REQUIRE(r1.size() == r0.size());
  for (size_t i = 0; i < params.size(); ++i) {
    INFO("parameter " << i << " " << params[i].sizes());
    REQUIRE(r0[i].defined());
    CHECK(torch::equal(r0[i], r1[i]));                      // the same average on both ranks
    CHECK(torch::equal(r0[params.size() + i], params[i]));  // rank 0's weights everywhere
    CHECK(torch::equal(r1[params.size() + i], params[i]));
    CHECK(torch::allclose(r0[i], params[i].grad(), 1e-4, 1e-6));  // == the union batch's
  }
  // Each rank's own half-batch gradient is not the union's: the allreduce did something.
  auto half = wrpn_dist_test::make_model(wrpn_dist_test::kSeed);
  half->eval();
  torch::nn::functional::cross_entropy(half->forward(shard(x, 0, 2)), shard(y, 0, 2)).backward();
  double diff = 0;
  const auto hp = half->parameters();
  for (size_t i = 0; i < hp.size(); ++i) diff += (hp[i].grad() - r0[i]).abs().sum().item<double>();
  CHECK(diff > 1e-3);
}

TEST_CASE("2 ranks that built different models are refused, naming the difference",
          "[dist][procs]") {
  const std::string dir = wrpn_test::temp_dir("dist_mismatch");
  const auto rcs =
      run_ranks(2, {binary("tests/wrpn_dist_worker"), "mismatch", dir + "/m"}, dir, 120);
  CHECK(rcs == std::vector<int>{1, 1});
  for (const char* r : {"/rank0.err", "/rank1.err"}) {
    const std::string err = read_file(dir + r);
    INFO(err);
    // Width 2 doubles the stem's 16 output channels.
    CHECK_THAT(err, Catch::Contains("the ranks built different models") &&
                        Catch::Contains("[16, 1, 3, 3]") && Catch::Contains("[32, 1, 3, 3]"));
  }
}

TEST_CASE("2 ranks: parameters and buffers stay identical over SGD steps", "[dist][procs]") {
  const std::string dir = wrpn_test::temp_dir("dist_steps");
  const auto rcs =
      run_ranks(2, {binary("tests/wrpn_dist_worker"), "steps", dir + "/steps", "4"}, dir, 120);
  INFO(read_file(dir + "/rank0.err") << read_file(dir + "/rank1.err"));
  REQUIRE(rcs == std::vector<int>{0, 0});
  const auto a = load_tensors(dir + "/steps0.pt");
  const auto b = load_tensors(dir + "/steps1.pt");
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("tensor " << i);
    CHECK(torch::equal(a[i], b[i]));
  }
  // And the steps trained: the weights moved from rank 0's initial ones.
  const auto init = wrpn_dist_test::make_model(wrpn_dist_test::kSeed)->parameters();
  double moved = 0;
  for (size_t i = 0; i < init.size(); ++i) moved += (a[i] - init[i]).abs().sum().item<double>();
  CHECK(moved > 1e-3);
}

TEST_CASE("wrpn_train on 2 ranks: files from rank 0, accuracy of one process, resume",
          "[dist][procs][train]") {
  const std::string dir = wrpn_test::temp_dir("dist_train");
  const std::string dp_run = dir + "/dp", sp_run = dir + "/sp";
  const auto rcs = run_ranks(2, train_args(dp_run, 4), dir, 600);
  INFO(read_file(dir + "/rank0.err") << read_file(dir + "/rank1.err"));
  REQUIRE(rcs == std::vector<int>{0, 0});
  // Rank 0 printed the summary and wrote every file; rank 1 neither.
  CHECK(read_file(dir + "/rank1.out").empty());
  const json printed = json::parse(read_file(dir + "/rank0.out"));
  // (.lock: rank 0's ownership of the run directory.)
  CHECK(files_in(dp_run) == std::set<std::string>{".lock", "best.ckpt", "last.ckpt",
                                                  "metrics.jsonl", "options.json", "summary.json"});
  const json dp = read_json(dp_run + "/summary.json");
  CHECK(printed == dp);
  CHECK(dp["world_size"] == 2);
  CHECK(dp["backend"] == "gloo");
  CHECK(dp["batch_size_per_rank"] == 32);
  CHECK(dp["completed"] == true);
  CHECK(dp["test_images"] == 355);
  const auto metrics = wrpn_test::read_jsonl(dp_run + "/metrics.jsonl");
  REQUIRE(metrics.size() == 4);
  for (int e = 0; e < 4; ++e) CHECK(metrics[e]["epoch"] == e + 1);

  // The same run in one process: the same schedule and data, close accuracy.
  Child single = spawn(train_args(sp_run, 4), {}, dir + "/single");
  REQUIRE(wait_for(single, 600) == 0);
  const json sp = read_json(sp_run + "/summary.json");
  const double dp_top1 = dp["final_top1"], sp_top1 = sp["final_top1"];
  CHECK(sp_top1 > 0.8);
  CHECK(dp_top1 > 0.8);
  CHECK(std::abs(dp_top1 - sp_top1) < 0.08);

  // The distributed checkpoint loads and evaluates in one process, to the summary's figure.
  const auto ev = wrpn::train::evaluate_checkpoint(dp_run + "/last.ckpt", "digits",
                                                   wrpn_test::digits_root(), "test", "cpu", 128);
  CHECK(ev.images == 355);
  CHECK(ev.top1 == Approx(dp_top1).margin(1e-12));

  {  // Interrupted and resumed under 2 ranks: the uninterrupted run's result.
    const std::string run = dir + "/dp_resume";
    auto a = run_ranks(2, with(train_args(run, 4), {"--stop-after", "2"}), dir, 600);
    REQUIRE(a == std::vector<int>{3, 3});  // stopped, not completed
    CHECK(wrpn_test::read_jsonl(run + "/metrics.jsonl").size() == 2);
    auto b = run_ranks(2, with(train_args(run, 4), {"--resume"}), dir, 600);
    INFO(read_file(dir + "/rank0.err"));
    REQUIRE(b == std::vector<int>{0, 0});
    const json resumed = read_json(run + "/summary.json");
    CHECK(resumed["final_top1"] == dp["final_top1"]);
    CHECK(resumed["final_test_loss"] == dp["final_test_loss"]);
    CHECK(wrpn_test::read_jsonl(run + "/metrics.jsonl").size() == 4);
  }
  {  // A single-process checkpoint resumed on 2 ranks.
    const std::string run = dir + "/sp_then_dp";
    const auto args = with(train_args(run, 2), {"--limit-train", "512"});
    Child first = spawn(with(args, {"--stop-after", "1"}), {}, dir + "/first");
    REQUIRE(wait_for(first, 600) == 3);
    auto b = run_ranks(2, with(args, {"--resume"}), dir, 600);
    INFO(read_file(dir + "/rank0.err") << read_file(dir + "/rank1.err"));
    REQUIRE(b == std::vector<int>{0, 0});
    const json s = read_json(run + "/summary.json");
    CHECK(s["world_size"] == 2);
    CHECK(s["epochs_completed"] == 2);
    const auto m = wrpn_test::read_jsonl(run + "/metrics.jsonl");
    REQUIRE(m.size() == 2);
    CHECK(m[0]["epoch"] == 1);  // the single process's epoch, kept
    CHECK(m[1]["epoch"] == 2);
  }
}

TEST_CASE("a killed rank ends the other with a message naming it", "[dist][procs]") {
  const std::string dir = wrpn_test::temp_dir("dist_kill");
  const int port = wrpn_dist_test::free_port();
  const auto args = with(train_args(dir + "/run", 50), {"--dist-timeout", "20"});
  Child r0 = spawn(args, rank_env(0, 2, port), dir + "/rank0");
  Child r1 = spawn(args, rank_env(1, 2, port), dir + "/rank1");
  // Once the first epoch is done (rank 0 wrote its metrics line), kill rank 1.
  for (int i = 0; i < 6000 && !wrpn::train::path_exists(dir + "/run/last.ckpt"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(wrpn::train::path_exists(dir + "/run/last.ckpt"));
  ::kill(r1.pid, SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  const int rc0 = wait_for(r0, 60);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  wait_for(r1, 5);
  const std::string err = read_file(dir + "/rank0.err");
  INFO(err);
  CHECK(rc0 == 1);
  CHECK(took < 25);  // the peer's closed connection, at worst the 20 s timeout
  CHECK_THAT(err, Catch::Contains("rank 1") && Catch::Contains("no longer running"));
  // The finished epochs are kept.
  CHECK(wrpn::train::path_exists(dir + "/run/last.ckpt"));
  CHECK_FALSE(wrpn::train::path_exists(dir + "/run/summary.json"));
}

TEST_CASE("under torchrun a killed rank's world restarts and --auto-resume continues the run",
          "[dist][procs][torchrun]") {
  const char* src = std::getenv("WRPN_SOURCE_DIR");
  const std::string torchrun = std::string(src ? src : ".") + "/.venv/bin/torchrun";
  if (!wrpn::train::path_exists(torchrun)) {
    WARN("WRPN_SKIP: no " << torchrun << " (scripts/setup.sh creates .venv)");
    return;
  }
  const std::string dir = wrpn_test::temp_dir("dist_torchrun");
  const std::string run = dir + "/run";
  std::vector<std::string> args = {
      torchrun, "--standalone", "--nproc-per-node", "2", "--max-restarts", "1", "--no-python"};
  for (const auto& a : with(train_args(run, 3), {"--auto-resume", "--limit-train", "512"})) {
    args.push_back(a);
  }
  Child agent = spawn(args, {{"OMP_NUM_THREADS", "1"}}, dir + "/torchrun");
  for (int i = 0; i < 6000 && !wrpn::train::path_exists(run + "/last.ckpt"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(wrpn::train::path_exists(run + "/last.ckpt"));
  // The newest process naming this run directory is one of torchrun's two workers.
  // ([w] keeps the pattern from matching the shell that runs pkill.)
  REQUIRE(std::system(("pkill -9 -n -f '[w]rpn_train.*" + run + "'").c_str()) == 0);
  const int rc = wait_for(agent, 300);
  const std::string err = read_file(dir + "/torchrun.err");
  INFO(err);
  CHECK(rc == 0);
  CHECK_THAT(err, Catch::Contains("no longer running"));
  const json s = read_json(run + "/summary.json");
  CHECK(s["completed"] == true);
  CHECK(s["world_size"] == 2);
  const auto m = wrpn_test::read_jsonl(run + "/metrics.jsonl");
  REQUIRE(m.size() == 3);
  for (int e = 0; e < 3; ++e) CHECK(m[e]["epoch"] == e + 1);
}

TEST_CASE("bad data-parallel configurations get a clear error", "[dist][procs]") {
  const std::string dir = wrpn_test::temp_dir("dist_bad");
  SECTION("ranks launched with different options") {
    const int port = wrpn_dist_test::free_port();
    Child a = spawn(train_args(dir + "/run", 1), rank_env(0, 2, port), dir + "/rank0");
    Child b = spawn(with(train_args(dir + "/run", 1), {"--width", "2"}), rank_env(1, 2, port),
                    dir + "/rank1");
    CHECK(wait_for(a, 120) == 1);
    CHECK(wait_for(b, 120) == 1);
    CHECK_THAT(read_file(dir + "/rank0.err"),
               Catch::Contains("different options") && Catch::Contains("\"width\":2.0"));
  }
  SECTION("a global batch the world size does not divide") {
    const auto rcs =
        run_ranks(3, with(train_args(dir + "/run", 1), {"--batch-size", "64"}), dir, 120);
    CHECK(rcs == std::vector<int>{1, 1, 1});
    CHECK_THAT(read_file(dir + "/rank0.err"), Catch::Contains("multiple of the world size 3"));
  }
  SECTION("WORLD_SIZE without MASTER_ADDR") {
    auto env = rank_env(0, 2, 29500);
    env["MASTER_ADDR"] = "";
    Child c = spawn(train_args(dir + "/run", 1), env, dir + "/rank0");
    CHECK(wait_for(c, 60) == 1);
    CHECK_THAT(read_file(dir + "/rank0.err"), Catch::Contains("MASTER_ADDR is not"));
  }
  SECTION("a port in use") {
    int port = 0;
    const int fd = wrpn_dist_test::listening_socket(&port);
    Child c = spawn(train_args(dir + "/run", 1), rank_env(0, 2, port), dir + "/rank0");
    CHECK(wait_for(c, 60) == 1);
    ::close(fd);
    CHECK_THAT(read_file(dir + "/rank0.err"), Catch::Contains("port is in use"));
  }
  SECTION("a rank whose peer never comes fails at the timeout") {
    auto args = with(train_args(dir + "/run", 1), {"--dist-timeout", "3"});
    Child c = spawn(args, rank_env(1, 2, wrpn_dist_test::free_port()), dir + "/rank1");
    CHECK(wait_for(c, 30) == 1);
    CHECK_THAT(read_file(dir + "/rank1.err"), Catch::Contains("could not reach the store"));
  }
}
