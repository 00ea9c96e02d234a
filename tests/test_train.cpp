// The training loop, schedules and run files (wrpn::train): loss falls, resume is exact,
// the documented fields are there, evaluation reproduces the trainer's numbers.

#include <torch/torch.h>
#include <wrpn/models/checkpoint.h>
#include <wrpn/nn/quant_conv.h>
#include <wrpn/train/trainer.h>
#include <wrpn/train/utils.h>

// After LibTorch: Catch2's CHECK must replace c10's glog-style CHECK.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "train_test_helpers.h"

using nlohmann::json;
using wrpn::train::TrainOptions;

namespace {

using wrpn_test::digits_root;
using wrpn_test::read_jsonl;
using wrpn_test::small_run;

std::string temp_dir(const std::string& tag) { return wrpn_test::temp_dir("train_test_" + tag); }

}  // namespace

TEST_CASE("learning-rate schedules", "[train]") {
  wrpn::train::LrSchedule s;
  s.kind = "cosine";
  s.base_lr = 0.1;
  s.min_lr = 0.0;
  s.warmup_epochs = 0;
  CHECK(s.at(0, 10) == Approx(0.1));
  CHECK(s.at(5, 10) == Approx(0.05));
  CHECK(s.at(10, 10) == Approx(0.0).margin(1e-12));
  s.warmup_epochs = 2;
  CHECK(s.at(1, 10) == Approx(0.05));
  CHECK(s.at(2, 10) == Approx(0.1));
  CHECK(s.at(6, 10) == Approx(0.05));
  s.kind = "step";
  s.warmup_epochs = 0;
  s.milestones = {3, 6};
  s.gamma = 0.1;
  CHECK(s.at(2.9, 10) == Approx(0.1));
  CHECK(s.at(3, 10) == Approx(0.01));
  CHECK(s.at(7, 10) == Approx(0.001));
  s.kind = "linear";
  CHECK_THROWS_WITH(s.validate(), Catch::Contains("cosine, step or constant"));
  s.kind = "step";
  s.milestones = {5, 2};
  CHECK_THROWS_WITH(s.validate(), Catch::Contains("increasing"));
}

TEST_CASE("top-k correct on hand values", "[train]") {
  const auto logits = torch::tensor({{0.1f, 0.9f, 0.0f}, {0.5f, 0.2f, 0.3f}, {0.2f, 0.3f, 0.5f}});
  const auto target = torch::tensor({1, 2, 0}, torch::kLong);
  CHECK(wrpn::train::topk_correct(logits, target, 1) == 1);
  CHECK(wrpn::train::topk_correct(logits, target, 2) == 2);
  CHECK(wrpn::train::topk_correct(logits, target, 5) == 3);  // k clipped to the class count
  CHECK_THROWS(wrpn::train::topk_correct(logits, target.slice(0, 0, 2), 1));
}

TEST_CASE("atomic_write replaces whole files and append_line appends", "[train]") {
  const std::string dir = temp_dir("io");
  const std::string f = dir + "/sub/dir/file.txt";
  wrpn::train::atomic_write(f, "first");
  CHECK(wrpn::train::read_file(f) == "first");
  wrpn::train::atomic_write(f, "second, longer");
  CHECK(wrpn::train::read_file(f) == "second, longer");
  wrpn::train::append_line(dir + "/m.jsonl", "{\"a\":1}");
  wrpn::train::append_line(dir + "/m.jsonl", "{\"a\":2}");
  CHECK(wrpn::train::read_file(dir + "/m.jsonl") == "{\"a\":1}\n{\"a\":2}\n");
  CHECK_THROWS_WITH(wrpn::train::read_file(dir + "/missing"), Catch::Contains("missing"));
  CHECK_THROWS_WITH(wrpn::train::atomic_write("/proc/wrpn_cannot_write", "x"),
                    Catch::Contains("/proc/wrpn_cannot_write"));
}

TEST_CASE("training options: JSON round trip and clear errors", "[train]") {
  TrainOptions a;
  a.model = "resnet32";
  a.epochs = 7;
  a.schedule.milestones = {2, 5};
  a.precision = wrpn::PrecisionConfig::make(2, 4, 3.0);
  TrainOptions b;
  b.update_from_json(a.to_json());
  CHECK(b.to_json() == a.to_json());
  CHECK_THROWS_WITH(b.update_from_json(json{{"epoch", 3}}), Catch::Contains("'epoch'"));
  CHECK_THROWS_WITH(b.update_from_json(json{{"epochs", "three"}}), Catch::Contains("'epochs'"));
  TrainOptions c;
  c.batch_size = 1;
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("--batch-size"));
  c = TrainOptions();
  c.model = "resnet21";
  CHECK_THROWS_WITH(c.validate(), Catch::Contains("resnet20"));
  c = TrainOptions();
  c.precision.act_bits = 0;
  CHECK_THROWS(c.validate());
  c = TrainOptions();
  c.dataset = "cifar10";
  c.data_root = "/nonexistent/cifar";
  c.run_dir = temp_dir("nodata");
  CHECK_THROWS_WITH(wrpn::train::fit(c), Catch::Contains("/nonexistent/cifar"));
}

TEST_CASE("a short run: loss falls, files have the documented fields, eval agrees", "[train]") {
  const std::string dir = temp_dir("run");
  TrainOptions o = small_run(dir);
  o.augment = false;
  const json summary = wrpn::train::fit(o);

  const auto rows = read_jsonl(dir + "/metrics.jsonl");
  REQUIRE(rows.size() == 3);
  for (const char* key : {"epoch", "lr", "train_loss", "train_top1", "test_loss", "test_top1",
                          "test_top5", "seconds", "images_per_second"}) {
    INFO(key);
    CHECK(rows[0].contains(key));
  }
  CHECK(rows[2]["train_loss"].get<double>() < rows[0]["train_loss"].get<double>());
  CHECK(rows[1]["epoch"] == 2);

  const json file = json::parse(wrpn::train::read_file(dir + "/summary.json"));
  CHECK(file == summary);
  for (const char* key : {"best_top1", "best_top5", "final_top1", "final_top5", "epochs",
                          "wall_seconds", "model", "precision", "parameters"}) {
    INFO(key);
    CHECK(summary.contains(key));
  }
  CHECK(summary["final_top1"].get<double>() == rows[2]["test_top1"].get<double>());
  double best = 0;
  for (const auto& r : rows) best = std::max(best, r["test_top1"].get<double>());
  CHECK(summary["best_top1"].get<double>() == best);
  CHECK(summary["parameters"].get<int64_t>() > 250000);

  // wrpn_eval's path reproduces the accuracy recorded for each checkpoint.
  for (const char* ckpt : {"last.ckpt", "best.ckpt"}) {
    const auto meta = wrpn::models::read_checkpoint(dir + "/" + ckpt);
    const auto r = wrpn::train::evaluate_checkpoint(dir + "/" + ckpt, "digits", o.data_root, "test",
                                                    "cpu", 50, o.limit_test);
    INFO(ckpt);
    CHECK(r.images == o.limit_test);
    CHECK(r.top1 == Approx(meta.info.metrics.at("test_top1")).epsilon(1e-12));
    CHECK(r.loss == Approx(meta.info.metrics.at("test_loss")).epsilon(1e-4));
  }
  CHECK_THROWS_WITH(wrpn::train::evaluate_checkpoint(dir + "/last.ckpt", "digits", o.data_root,
                                                     "valid", "cpu", 50),
                    Catch::Contains("valid"));

  // wrpn_eval --engine int8 --compare: the trained 4/4 model on integer kernels answers as the
  // fake-quantized model (up to a rounding tie) and reports the comparison.
  const auto meta = wrpn::models::read_checkpoint(dir + "/best.ckpt");
  wrpn::train::InferenceOptions inf;
  inf.engine = "int8";
  inf.compare = true;
  int64_t integer_layers = -1;
  inf.on_deployed = [&](const wrpn::deploy::IntegerModel& m) {
    integer_layers = m.integer_layers();
  };
  const auto r = wrpn::train::evaluate_checkpoint(dir + "/best.ckpt", "digits", o.data_root, "test",
                                                  "cpu", 50, o.limit_test, 224, inf);
  CHECK(integer_layers == 18);
  CHECK(r.images == o.limit_test);
  REQUIRE(r.top1_disagreements >= 0);
  CHECK(r.top1_disagreements <= 1);
  CHECK(std::abs(r.top1 - meta.info.metrics.at("test_top1")) <= 1.0 / o.limit_test + 1e-12);
  CHECK(r.to_json().contains("top1_disagreements"));
  inf.compare = true;
  inf.engine = "fake-quant";
  CHECK_THROWS_WITH(wrpn::train::evaluate_checkpoint(dir + "/best.ckpt", "digits", o.data_root,
                                                     "test", "cpu", 50, 10, 224, inf),
                    Catch::Contains("--compare needs an integer --engine"));
  inf.engine = "int4";
  inf.compare = false;
  CHECK_THROWS_WITH(wrpn::train::evaluate_checkpoint(dir + "/best.ckpt", "digits", o.data_root,
                                                     "test", "cpu", 50, 10, 224, inf),
                    Catch::Contains("unknown inference engine"));
}

TEST_CASE("a short run on the real Fashion-MNIST files by name: summary and eval agree",
          "[train]") {
  const char* src = std::getenv("WRPN_SOURCE_DIR");
  const std::string root = std::string(src ? src : ".") + "/data/fashion_mnist";
  if (!wrpn::train::path_exists(root + "/train-images-idx3-ubyte.gz")) {
    std::printf("WRPN_SKIP: %s is missing (scripts/fetch_data.sh fetches it)\n", root.c_str());
    return;
  }
  const std::string dir = temp_dir("fashion");
  wrpn_test::SmallRun small;
  small.limit_train = 512;
  small.limit_test = 200;
  small.epochs = 2;
  small.seed = 3;
  TrainOptions o = small_run(dir, small);
  o.dataset = "fashion_mnist";
  o.data_root = "";  // data/fashion_mnist under the working directory or $WRPN_DATA_DIR
  ::setenv("WRPN_DATA_DIR", (std::string(src ? src : ".") + "/data").c_str(), 1);
  const json summary = wrpn::train::fit(o);
  ::unsetenv("WRPN_DATA_DIR");
  CHECK(summary["dataset"] == "fashion_mnist");
  CHECK(summary["train_images"] == 512);
  CHECK(summary["test_images"] == 200);
  CHECK(summary["seed"] == 3);
  // 10 balanced classes: chance is 10% (+-2.1 points on 200 images); 2 short epochs of a 4-bit
  // ResNet-20 on 512 images reach about 24% here.
  CHECK(summary["best_top1"].get<double>() > 0.15);
  const auto r = wrpn::train::evaluate_checkpoint(dir + "/last.ckpt", "fashion_mnist", root, "test",
                                                  "cpu", 64, o.limit_test);
  CHECK(r.images == 200);
  CHECK(r.top1 == Approx(summary["final_top1"].get<double>()).epsilon(1e-12));
}

TEST_CASE("resume reaches the same weights as an uninterrupted run", "[train]") {
  const std::string a_dir = temp_dir("full"), b_dir = temp_dir("resumed");
  TrainOptions a = small_run(a_dir);
  wrpn::train::fit(a);

  TrainOptions b = small_run(b_dir);
  b.stop_after = 1;
  const json partial = wrpn::train::fit(b);
  CHECK_FALSE(partial["completed"].get<bool>());
  CHECK(read_jsonl(b_dir + "/metrics.jsonl").size() == 1);
  b.stop_after = 0;
  b.resume = true;
  const json done = wrpn::train::fit(b);
  CHECK(done["completed"].get<bool>());

  const auto ma = wrpn::models::load_checkpoint(a_dir + "/last.ckpt");
  const auto mb = wrpn::models::load_checkpoint(b_dir + "/last.ckpt");
  const auto pa = ma->named_parameters(), pb = mb->named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (const auto& kv : pa) {
    INFO(kv.key());
    CHECK(torch::equal(kv.value(), pb[kv.key()]));
  }
  const auto ba = ma->named_buffers(), bb = mb->named_buffers();
  for (const auto& kv : ba) {
    INFO(kv.key());
    CHECK(torch::equal(kv.value(), bb[kv.key()]));
  }
  const auto ra = read_jsonl(a_dir + "/metrics.jsonl"), rb = read_jsonl(b_dir + "/metrics.jsonl");
  REQUIRE(rb.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(ra[i]["train_loss"] == rb[i]["train_loss"]);
    CHECK(ra[i]["test_top1"] == rb[i]["test_top1"]);
  }

  // A checkpoint of another model is refused, naming both.
  TrainOptions c = small_run(b_dir);
  c.precision = wrpn::PrecisionConfig::make(2, 2, 1.0);
  c.resume = true;
  CHECK_THROWS_WITH(wrpn::train::fit(c), Catch::Contains("different model"));
}

namespace {
/// One plain SGD step (one batch, constant lr, no momentum or weight decay, no augmentation).
TrainOptions one_step_options(const std::string& dir, double lr, const std::string& mult) {
  TrainOptions o = small_run(dir);
  o.limit_train = 32;
  o.batch_size = 32;
  o.epochs = 1;
  o.schedule.kind = "constant";
  o.schedule.base_lr = lr;
  o.momentum = 0;
  o.weight_decay = 0;
  o.augment = false;
  o.quantized_lr_mult = mult;
  return o;
}
}  // namespace

TEST_CASE("quantized_lr_mult scales the step of quantized weights only", "[train]") {
  const std::string dir = temp_dir("lr_mult");
  auto one_step = [&](const std::string& name, double lr, const std::string& mult) {
    const TrainOptions o = one_step_options(dir + "/" + name, lr, mult);
    wrpn::train::fit(o);
    return wrpn::models::load_checkpoint(o.run_dir + "/last.ckpt");
  };
  const auto start = one_step("start", 1e-30, "1");  // below every weight's ulp: the init
  const auto m1 = one_step("m1", 0.05, "1");
  const auto m3 = one_step("m3", 0.05, "3");
  const auto p0 = start->named_parameters(), p1 = m1->named_parameters(),
             p3 = m3->named_parameters();
  int quantized = 0, other = 0;
  for (const auto& item : start->named_modules("", false)) {
    const auto* conv = item.value()->as<wrpn::nn::QuantConv2dImpl>();
    if (conv == nullptr) continue;
    const std::string w = item.key() + ".weight";
    const auto d1 = p1[w] - p0[w], d3 = p3[w] - p0[w];
    INFO(w);
    REQUIRE(d1.abs().max().item<double>() > 0);
    const double expect = conv->options.weight_bits() == 32 ? 1.0 : 3.0;
    // Tolerance: the deltas are differences of floats near |w|, so an ulp of w (~1e-7).
    CHECK(torch::allclose(d3, d1 * expect, 1e-2, 3e-7));
    ++(expect == 3.0 ? quantized : other);
  }
  CHECK(quantized > 10);
  CHECK(other == 1);  // the fp32 first conv
  for (const std::string bn : {"bn1.weight", "layer1.0.bn1.bias"}) {
    INFO(bn);
    CHECK(torch::allclose(p3[bn] - p0[bn], p1[bn] - p0[bn], 1e-2, 3e-7));
  }
  for (const std::string bad_mult : {"0", "-1", "x", "2x", "nan"}) {
    TrainOptions bad;
    bad.quantized_lr_mult = bad_mult;
    INFO(bad_mult);
    CHECK_THROWS_WITH(bad.validate(),
                      Catch::Contains("--quantized-lr-mult must be auto or a positive number"));
  }
}

TEST_CASE("quantized_lr_mult auto matches the fp32 draw's dynamics layer by layer", "[train]") {
  // The analytic multiplier: (std of the draw at these bits / std of the fp32 draw)^2.
  using wrpn::nn::WeightInit;
  CHECK(wrpn::nn::matched_lr_multiplier({16, 16, 3, 3}, WeightInit::kHe, 2, true) == 1.0);
  CHECK(wrpn::nn::matched_lr_multiplier({16, 16, 3, 3}, WeightInit::kQuantAware, 8, true) == 1.0);
  // 2 bits: N(0, 1) truncated to [-1, 1] has variance 1 - 2 phi(1) / (2 Phi(1) - 1) =
  // 1 - 2 * 0.2419707 / 0.6826895, std 0.539556; He's std is sqrt(2 / (16 * 9)).
  const double he = std::sqrt(2.0 / 144.0);
  CHECK(wrpn::nn::init_std({16, 16, 3, 3}, WeightInit::kQuantAware, 2, true) ==
        Approx(0.539556).epsilon(1e-4));
  CHECK(wrpn::nn::matched_lr_multiplier({16, 16, 3, 3}, WeightInit::kQuantAware, 2, true) ==
        Approx(std::pow(0.539556 / he, 2)).epsilon(1e-3));
  // The measured spread of a real draw agrees with the analytic one.
  torch::manual_seed(3);
  at::Tensor w = torch::empty({64, 64, 3, 3});
  wrpn::nn::init_weight_(w, WeightInit::kQuantAware, 2, true);
  CHECK(w.std().item<double>() == Approx(0.539556).epsilon(0.02));

  // In training: one step of a 2-bit model moves each quantized conv m times as far as with
  // multiplier 1, and records m in summary.json.
  const std::string dir = temp_dir("lr_auto");
  auto run = [&](const std::string& name, double lr, const std::string& mult) {
    TrainOptions o = one_step_options(dir + "/" + name, lr, mult);
    o.precision = wrpn::PrecisionConfig::make(2, 4, 1.0);
    const auto summary = wrpn::train::fit(o);
    return std::make_pair(wrpn::models::load_checkpoint(o.run_dir + "/last.ckpt"), summary);
  };
  const auto [s0, j0] = run("start", 1e-30, "1");
  const auto [s1, j1] = run("one", 1e-2, "1");
  const auto [sa, ja] = run("auto", 1e-2, "auto");
  const auto p0 = s0->named_parameters(), p1 = s1->named_parameters(), pa = sa->named_parameters();
  int checked = 0;
  for (const auto& item : s0->named_modules("", false)) {
    const auto* conv = item.value()->as<wrpn::nn::QuantConv2dImpl>();
    if (conv == nullptr || conv->options.weight_bits() != 2) continue;
    const std::string w = item.key() + ".weight";
    const double m = wrpn::nn::matched_lr_multiplier(p0[w].sizes(), conv->options.init(), 2, true);
    INFO(w << " m = " << m);
    CHECK(m > 10);
    CHECK(ja["quantized_lr_mult"][item.key()].get<double>() == Approx(m));
    // Deltas are differences of floats near |w| <= 1: an ulp of w (1.2e-7) per delta, times m.
    CHECK(torch::allclose(pa[w] - p0[w], (p1[w] - p0[w]) * m, 2e-2, m * 2.5e-7));
    ++checked;
  }
  CHECK(checked > 10);
}

TEST_CASE("the option table names each option once and reads JSON strictly", "[train]") {
  const auto& table = wrpn::train::train_option_table();
  std::set<std::string> keys, flags;
  for (const auto& d : table) {
    INFO(d.key << " " << d.flag);
    CHECK((d.key.empty() || keys.insert(d.key).second));
    CHECK((d.flag.empty() || flags.insert(d.flag).second));
    CHECK_FALSE(d.help.empty());
  }
  const json j = TrainOptions().to_json();
  CHECK(j.size() == keys.size());
  for (const auto& [key, v] : j.items()) CHECK(keys.count(key) == 1);
  CHECK(wrpn::train::train_option("epochs").flag == "--epochs");
  CHECK(wrpn::train::train_option("--no-augment").key == "augment");
  CHECK_THROWS_WITH(wrpn::train::train_option("epoch"), Catch::Contains("'epoch'"));
  TrainOptions o;
  CHECK_THROWS_WITH(o.update_from_json(json{{"epochs", 2.5}}), Catch::Contains("'epochs'"));
  CHECK_THROWS_WITH(o.update_from_json(json{{"seed", -1}}), Catch::Contains("'seed'"));
  CHECK_THROWS_WITH(o.update_from_json(json{{"augment", 1}}), Catch::Contains("'augment'"));
  CHECK_THROWS_WITH(o.update_from_json(json{{"milestones", {1, "x"}}}),
                    Catch::Contains("'milestones'"));
  o.update_from_json(json{{"quantized_lr_mult", 2}, {"lr", 1}, {"milestones", {3, 6}}});
  CHECK(o.quantized_lr_mult == "2.000000");
  CHECK(o.schedule.base_lr == 1.0);
  CHECK(o.schedule.milestones == std::vector<int64_t>{3, 6});
}

TEST_CASE("fit calls its hooks at each step and evaluation", "[train]") {
  TrainOptions o = small_run(temp_dir("hooks"));
  o.limit_train = 64;
  o.limit_test = 32;
  o.epochs = 2;
  std::vector<wrpn::train::StepInfo> steps;
  int syncs = 0;
  std::vector<int64_t> evaluated;
  wrpn::train::TrainHooks hooks;
  hooks.on_step = [&](const wrpn::train::StepInfo& s) { steps.push_back(s); };
  hooks.sync_gradients = [&](torch::optim::Optimizer& opt) {
    // Called between backward and step: every trained parameter has its gradient.
    for (const auto& g : opt.param_groups()) {
      for (const auto& p : g.params()) CHECK(p.grad().defined());
    }
    ++syncs;
  };
  hooks.on_evaluate = [&](int64_t epoch, wrpn::train::EvalResult& test) {
    CHECK(test.images == 32);
    evaluated.push_back(epoch);
  };
  const json summary = wrpn::train::fit(o, hooks);
  REQUIRE(steps.size() == 4);
  CHECK(syncs == 4);
  CHECK(evaluated == std::vector<int64_t>{1, 2});
  CHECK(steps[3].epoch == 1);
  CHECK(steps[3].batch == 1);
  CHECK(steps[3].batches == 2);
  CHECK(steps[3].images == 32);
  CHECK(std::isfinite(steps[3].loss));
  CHECK(summary["completed"].get<bool>());
}
