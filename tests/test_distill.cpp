// Apprentice distillation: the loss against hand-computed values and gradients, its input
// checks, and the three training schemes (joint teacher, frozen teacher, student started from
// fp32 weights), including an exact resume of scheme A.

#include <torch/torch.h>
#include <wrpn/models/checkpoint.h>
#include <wrpn/models/registry.h>
#include <wrpn/nn/init.h>
#include <wrpn/nn/quant_conv.h>
#include <wrpn/train/distill.h>
#include <wrpn/train/trainer.h>
#include <wrpn/train/utils.h>

// After LibTorch: Catch2's CHECK must replace c10's glog-style CHECK.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "train_test_helpers.h"

using nlohmann::json;
using wrpn::train::DistillLossOptions;
using wrpn::train::TrainOptions;

namespace {

// ---- Reference arithmetic in plain doubles -------------------------------------------------

using Rows = std::vector<std::vector<double>>;

std::vector<double> softmax(const std::vector<double>& z, double t) {
  double m = z[0];
  for (double v : z) m = std::max(m, v / t);
  std::vector<double> p(z.size());
  double s = 0;
  for (size_t i = 0; i < z.size(); ++i) s += (p[i] = std::exp(z[i] / t - m));
  for (double& v : p) v /= s;
  return p;
}

/// Mean over rows of -log softmax(z)[y].
double ref_ce(const Rows& z, const std::vector<int64_t>& y) {
  double s = 0;
  for (size_t n = 0; n < z.size(); ++n) s -= std::log(softmax(z[n], 1.0)[y[n]]);
  return s / z.size();
}

/// Mean over rows of -sum_c p_T log p_S at temperature t.
double ref_soft_ce(const Rows& zt, const Rows& zs, double t) {
  double s = 0;
  for (size_t n = 0; n < zt.size(); ++n) {
    const auto pt = softmax(zt[n], t), ps = softmax(zs[n], t);
    for (size_t c = 0; c < pt.size(); ++c) s -= pt[c] * std::log(ps[c]);
  }
  return s / zt.size();
}

/// Mean over rows of sum_c p_T (log p_T - log p_S) at temperature t (no T^2).
double ref_kl(const Rows& zt, const Rows& zs, double t) {
  double s = 0;
  for (size_t n = 0; n < zt.size(); ++n) {
    const auto pt = softmax(zt[n], t), ps = softmax(zs[n], t);
    for (size_t c = 0; c < pt.size(); ++c) s += pt[c] * (std::log(pt[c]) - std::log(ps[c]));
  }
  return s / zt.size();
}

torch::Tensor to_tensor(const Rows& r) {
  std::vector<double> flat;
  for (const auto& row : r) flat.insert(flat.end(), row.begin(), row.end());
  return torch::tensor(flat, torch::kDouble)
      .view({static_cast<int64_t>(r.size()), static_cast<int64_t>(r[0].size())});
}

const Rows kTeacher = {{2.0, -1.0, 0.5}, {0.1, 0.3, -2.2}};
const Rows kStudent = {{0.7, 0.2, -0.4}, {-1.5, 1.1, 0.6}};
const std::vector<int64_t> kTargets = {0, 2};

DistillLossOptions loss_options(double a, double b, double g, double t, bool kl = false) {
  DistillLossOptions o;
  o.alpha = a;
  o.beta = b;
  o.gamma = g;
  o.temperature = t;
  o.kl = kl;
  return o;
}

// ---- Training helpers ------------------------------------------------------------------------

using wrpn_test::digits_root;
using wrpn_test::read_jsonl;

std::string temp_dir(const std::string& tag) { return wrpn_test::temp_dir("distill_test_" + tag); }

/// A few seconds of training: a 4-bit ResNet-20 at half width on 128 digits.
TrainOptions small_run(const std::string& dir) {
  TrainOptions o = wrpn_test::small_run(dir, {0.5, 128, 64, 2, 11});
  o.eval_batch_size = 64;
  return o;
}

/// An untrained fp32 ResNet-20 for the 1-channel, 10-class digits, saved to `path`.
wrpn::models::Classifier save_fp32_model(const std::string& path, double width,
                                         int64_t classes = 10, uint64_t seed = 3) {
  torch::manual_seed(seed);
  wrpn::models::ModelSpec s;
  s.name = "resnet20";
  s.num_classes = classes;
  s.in_channels = 1;
  s.precision = wrpn::PrecisionConfig::make(32, 32, width);
  auto m = wrpn::models::create_model(s);
  // Non-trivial BatchNorm statistics and affine parameters: a frozen teacher that updated
  // them would show it, and every tensor differs from a fresh model's.
  {
    torch::NoGradGuard g;
    for (auto& kv : m->named_buffers()) {
      if (kv.key().find("running_var") != std::string::npos) kv.value().uniform_(0.5, 2.0);
      if (kv.key().find("running_mean") != std::string::npos) kv.value().uniform_(-0.2, 0.2);
    }
    for (auto& kv : m->named_parameters()) {
      if (kv.key().find("bn") == std::string::npos) continue;
      if (kv.key().find("weight") != std::string::npos) kv.value().uniform_(0.5, 1.5);
      if (kv.key().find("bias") != std::string::npos) kv.value().uniform_(-0.1, 0.1);
    }
  }
  wrpn::models::save_checkpoint(path, *m);
  return m;
}

/// Every parameter and buffer of `a` and `b` bit-identical.
void check_same_state(torch::nn::Module& a, torch::nn::Module& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (const auto& kv : pa) {
    INFO(kv.key());
    CHECK(torch::equal(kv.value(), pb[kv.key()]));
  }
  const auto ba = a.named_buffers(), bb = b.named_buffers();
  REQUIRE(ba.size() == bb.size());
  for (const auto& kv : ba) {
    INFO(kv.key());
    CHECK(torch::equal(kv.value(), bb[kv.key()]));
  }
}

/// Number of parameters that differ between `a` and `b`.
int count_changed(torch::nn::Module& a, torch::nn::Module& b) {
  const auto pa = a.named_parameters(), pb = b.named_parameters();
  int changed = 0;
  for (const auto& kv : pa) changed += torch::equal(kv.value(), pb[kv.key()]) ? 0 : 1;
  return changed;
}

}  // namespace

// ---- The loss --------------------------------------------------------------------------------

TEST_CASE("distillation loss: hand-computed values, each term and the KL form", "[train]") {
  const auto t = to_tensor(kTeacher), s = to_tensor(kStudent);
  const auto y = torch::tensor(kTargets, torch::kLong);
  const double tce = ref_ce(kTeacher, kTargets), sce = ref_ce(kStudent, kTargets);

  SECTION("paper defaults: alpha 1, beta 0.5, gamma 0.5, T 1") {
    const auto r = wrpn::train::distillation_loss_parts(t, s, y, DistillLossOptions{});
    const double soft = ref_soft_ce(kTeacher, kStudent, 1.0);
    CHECK(r.teacher_ce.item<double>() == Approx(tce).epsilon(1e-12));
    CHECK(r.student_ce.item<double>() == Approx(sce).epsilon(1e-12));
    CHECK(r.soft.item<double>() == Approx(soft).epsilon(1e-12));
    CHECK(r.total.item<double>() == Approx(tce + 0.5 * sce + 0.5 * soft).epsilon(1e-12));
    CHECK(wrpn::train::distillation_loss(t, s, y).item<double>() ==
          Approx(r.total.item<double>()).epsilon(1e-15));
  }
  SECTION("temperature 2.5 softens the soft term only") {
    const auto o = loss_options(0.3, 0.7, 2.0, 2.5);
    const auto r = wrpn::train::distillation_loss_parts(t, s, y, o);
    const double soft = ref_soft_ce(kTeacher, kStudent, 2.5);
    CHECK(soft != Approx(ref_soft_ce(kTeacher, kStudent, 1.0)).epsilon(1e-3));
    CHECK(r.teacher_ce.item<double>() == Approx(tce).epsilon(1e-12));
    CHECK(r.student_ce.item<double>() == Approx(sce).epsilon(1e-12));
    CHECK(r.soft.item<double>() == Approx(soft).epsilon(1e-12));
    CHECK(r.total.item<double>() == Approx(0.3 * tce + 0.7 * sce + 2.0 * soft).epsilon(1e-12));
  }
  SECTION("KL form: KL(p_T || p_S) * T^2") {
    const double temp = 3.0;
    const auto r =
        wrpn::train::distillation_loss_parts(t, s, y, loss_options(1, 0.5, 0.5, temp, true));
    const double kl = ref_kl(kTeacher, kStudent, temp);
    CHECK(kl > 0);
    CHECK(r.soft.item<double>() == Approx(9.0 * kl).epsilon(1e-12));
    CHECK(r.total.item<double>() == Approx(tce + 0.5 * sce + 0.5 * 9.0 * kl).epsilon(1e-12));
    // Identical distributions: the KL form vanishes, the CE form is the teacher's entropy.
    const auto same =
        wrpn::train::distillation_loss_parts(t, t, y, loss_options(0, 0, 1, temp, true));
    CHECK(same.soft.item<double>() == Approx(0.0).margin(1e-12));
    const auto ent = wrpn::train::distillation_loss_parts(t, t, y, loss_options(0, 0, 1, temp));
    CHECK(ent.soft.item<double>() == Approx(ref_soft_ce(kTeacher, kTeacher, temp)).epsilon(1e-12));
    CHECK(ent.soft.item<double>() > 0.1);
  }
  SECTION("a term of weight 0 is not computed") {
    auto r = wrpn::train::distillation_loss_parts(t, s, y, loss_options(0, 0.5, 0.5, 2.0));
    CHECK_FALSE(r.teacher_ce.defined());
    CHECK(r.total.item<double>() ==
          Approx(0.5 * sce + 0.5 * ref_soft_ce(kTeacher, kStudent, 2.0)).epsilon(1e-12));
    r = wrpn::train::distillation_loss_parts(t, s, y, loss_options(1, 0, 0.5, 2.0));
    CHECK_FALSE(r.student_ce.defined());
    CHECK(r.total.item<double>() ==
          Approx(tce + 0.5 * ref_soft_ce(kTeacher, kStudent, 2.0)).epsilon(1e-12));
    r = wrpn::train::distillation_loss_parts(t, s, y, loss_options(1, 0.5, 0, 2.0));
    CHECK_FALSE(r.soft.defined());
    CHECK(r.total.item<double>() == Approx(tce + 0.5 * sce).epsilon(1e-12));
    // No teacher at all when alpha = gamma = 0: plain cross-entropy of the student.
    r = wrpn::train::distillation_loss_parts(torch::Tensor(), s, y, loss_options(0, 1, 0, 1));
    CHECK_FALSE(r.teacher_ce.defined());
    CHECK_FALSE(r.soft.defined());
    CHECK(r.total.item<double>() == Approx(sce).epsilon(1e-12));
    // Pure distillation needs no labels.
    r = wrpn::train::distillation_loss_parts(t, s, torch::Tensor(), loss_options(0, 0, 1, 1));
    CHECK(r.total.item<double>() == Approx(ref_soft_ce(kTeacher, kStudent, 1.0)).epsilon(1e-12));
  }
  SECTION("float32 logits") {
    const auto r = wrpn::train::distillation_loss_parts(t.to(torch::kFloat), s.to(torch::kFloat), y,
                                                        DistillLossOptions{});
    CHECK(r.total.scalar_type() == torch::kFloat);
    CHECK(r.total.item<double>() ==
          Approx(tce + 0.5 * sce + 0.5 * ref_soft_ce(kTeacher, kStudent, 1.0)).epsilon(1e-6));
  }
}

TEST_CASE("distillation loss: gradients reach the teacher only through alpha", "[train]") {
  const double temp = 2.0;
  const size_t n = kTeacher.size(), c = kTeacher[0].size();
  auto run = [&](double a, double b, double g, bool kl) {
    auto t = to_tensor(kTeacher).requires_grad_(true);
    auto s = to_tensor(kStudent).requires_grad_(true);
    const auto y = torch::tensor(kTargets, torch::kLong);
    wrpn::train::distillation_loss(t, s, y, loss_options(a, b, g, temp, kl)).backward();
    return std::make_pair(t.grad(), s.grad());
  };
  for (bool kl : {false, true}) {
    INFO("kl " << kl);
    // alpha = 0: the soft term alone must leave the teacher without a gradient.
    const auto [tg0, sg0] = run(0.0, 0.5, 0.5, kl);
    CHECK((!tg0.defined() || tg0.abs().max().item<double>() == 0.0));
    REQUIRE(sg0.defined());

    // alpha = 0.7: the teacher's gradient is exactly alpha * (softmax(z_T) - onehot) / N.
    const double a = 0.7, b = 0.4, g = 1.3;
    const auto [tg, sg] = run(a, b, g, kl);
    REQUIRE(tg.defined());
    for (size_t i = 0; i < n; ++i) {
      const auto pt1 = softmax(kTeacher[i], 1.0), ps1 = softmax(kStudent[i], 1.0);
      const auto ptT = softmax(kTeacher[i], temp), psT = softmax(kStudent[i], temp);
      for (size_t j = 0; j < c; ++j) {
        const double onehot = static_cast<int64_t>(j) == kTargets[i] ? 1.0 : 0.0;
        const double want_t = a * (pt1[j] - onehot) / n;
        // d/dz_S of the soft term: (p_S - p_T) / (N T); the KL form carries T^2 on top.
        const double soft_scale = kl ? temp * temp : 1.0;
        const double want_s =
            b * (ps1[j] - onehot) / n + g * soft_scale * (psT[j] - ptT[j]) / (n * temp);
        CHECK(tg[i][j].item<double>() == Approx(want_t).epsilon(1e-10).margin(1e-14));
        CHECK(sg[i][j].item<double>() == Approx(want_s).epsilon(1e-10).margin(1e-14));
      }
    }
  }
}

TEST_CASE("distillation loss: bad input names the argument", "[train]") {
  const auto t = to_tensor(kTeacher), s = to_tensor(kStudent);
  const auto y = torch::tensor(kTargets, torch::kLong);
  using wrpn::train::distillation_loss;
  const DistillLossOptions d;
  CHECK_THROWS_WITH(distillation_loss(t.narrow(1, 0, 2), s, y, d),
                    Catch::Contains("teacher_logits") && Catch::Contains("[2, 3]"));
  CHECK_THROWS_WITH(distillation_loss(torch::cat({t, t}), s, y, d),
                    Catch::Contains("teacher_logits"));
  CHECK_THROWS_WITH(distillation_loss(torch::Tensor(), s, y, d),
                    Catch::Contains("teacher_logits") && Catch::Contains("undefined"));
  CHECK_THROWS_WITH(distillation_loss(t, s.flatten(), y, d),
                    Catch::Contains("student_logits") && Catch::Contains("[N, C]"));
  CHECK_THROWS_WITH(distillation_loss(t, s.to(torch::kLong), y, d),
                    Catch::Contains("student_logits") && Catch::Contains("floating"));
  CHECK_THROWS_WITH(distillation_loss(t.to(torch::kInt), s, y, d),
                    Catch::Contains("teacher_logits") && Catch::Contains("floating"));
  CHECK_THROWS_WITH(distillation_loss(t, s, y.to(torch::kFloat), d),
                    Catch::Contains("targets") && Catch::Contains("int64"));
  CHECK_THROWS_WITH(distillation_loss(t, s, y.to(torch::kInt), d),
                    Catch::Contains("targets") && Catch::Contains("int64"));
  CHECK_THROWS_WITH(distillation_loss(t, s, torch::tensor({0, 1, 2}, torch::kLong), d),
                    Catch::Contains("targets") && Catch::Contains("[2]"));
  CHECK_THROWS_WITH(distillation_loss(t, s, y.view({2, 1}), d), Catch::Contains("targets"));
  CHECK_THROWS_WITH(distillation_loss(t, s, torch::Tensor(), d), Catch::Contains("targets"));

  CHECK_THROWS_WITH(loss_options(-1, 0.5, 0.5, 1).validate(), Catch::Contains("alpha"));
  CHECK_THROWS_WITH(loss_options(1, NAN, 0.5, 1).validate(), Catch::Contains("beta"));
  CHECK_THROWS_WITH(loss_options(1, 0.5, INFINITY, 1).validate(), Catch::Contains("gamma"));
  CHECK_THROWS_WITH(loss_options(1, 0.5, 0.5, 0).validate(), Catch::Contains("temperature"));
  CHECK_THROWS_WITH(loss_options(1, 0.5, 0.5, -2).validate(), Catch::Contains("temperature"));
  CHECK_THROWS_WITH(loss_options(0, 0, 0, 1).validate(), Catch::Contains("at least one"));
  CHECK_THROWS_AS(distillation_loss(t, s, y, loss_options(1, 0.5, 0.5, 0)), c10::Error);
  CHECK_NOTHROW(loss_options(0, 0, 1, 0.5).validate());
}

// ---- Options ---------------------------------------------------------------------------------

TEST_CASE("distillation options: JSON round trip and clear errors", "[train]") {
  const std::string dir = temp_dir("opts");
  const std::string ckpt = dir + "/teacher.ckpt";
  save_fp32_model(ckpt, 0.5);

  TrainOptions a;
  a.distill_scheme = "B";
  a.teacher = ckpt;
  a.distill = loss_options(0.25, 0.75, 1.5, 4.0, true);
  TrainOptions b;
  b.update_from_json(a.to_json());
  CHECK(b.to_json() == a.to_json());
  CHECK(b.distill.kl);
  CHECK(b.distill.temperature == 4.0);
  CHECK_NOTHROW(a.validate());
  CHECK_THROWS_WITH(b.update_from_json(json{{"distill_alpha", "one"}}),
                    Catch::Contains("'distill_alpha'"));

  auto with = [&](const std::string& scheme, const std::string& teacher) {
    TrainOptions o;
    o.distill_scheme = scheme;
    o.teacher = teacher;
    return o;
  };
  CHECK_THROWS_WITH(with("D", ckpt).validate(), Catch::Contains("A, B or C"));
  CHECK_THROWS_WITH(with("a", ckpt).validate(), Catch::Contains("A, B or C"));
  CHECK_THROWS_WITH(with("", ckpt).validate(), Catch::Contains("--distill-scheme"));
  CHECK_THROWS_WITH(with("B", "").validate(), Catch::Contains("--teacher"));
  CHECK_THROWS_WITH(with("C", "").validate(), Catch::Contains("--teacher"));
  CHECK_THROWS_WITH(with("B", "resnet20").validate(), Catch::Contains("checkpoint file"));
  CHECK_THROWS_WITH(with("C", "resnet20").validate(), Catch::Contains("checkpoint file"));
  CHECK_THROWS_WITH(with("B", dir + "/missing.ckpt").validate(),
                    Catch::Contains("missing.ckpt") && Catch::Contains("resnet20"));
  CHECK_NOTHROW(with("A", "resnet20").validate());
  CHECK_NOTHROW(with("A", ckpt).validate());
  CHECK_NOTHROW(with("C", ckpt).validate());

  TrainOptions o = with("A", "resnet32");
  o.distill.alpha = 0;
  CHECK_THROWS_WITH(o.validate(), Catch::Contains("--distill-alpha"));
  o = with("A", "resnet32");
  o.teacher_weight_bits = 0;
  CHECK_THROWS_WITH(o.validate(), Catch::Contains("--teacher-weight-bits"));
  o = with("B", ckpt);
  o.teacher_width = 2;
  CHECK_THROWS_WITH(o.validate(), Catch::Contains("--teacher-width"));
  o = with("B", ckpt);
  o.student_init = ckpt;
  CHECK_THROWS_WITH(o.validate(), Catch::Contains("--student-init"));
  o = with("B", ckpt);
  o.distill.temperature = 0;
  CHECK_THROWS_WITH(o.validate(), Catch::Contains("temperature"));
  o = with("B", ckpt);
  o.label_smoothing = 0.1;
  CHECK_THROWS_WITH(o.validate(), Catch::Contains("--label-smoothing"));
  o = TrainOptions();
  o.student_init = ckpt;
  CHECK_THROWS_WITH(o.validate(), Catch::Contains("--student-init"));

  // A teacher for other classes is refused before any training.
  const std::string other = dir + "/seven.ckpt";
  save_fp32_model(other, 0.5, 7);
  o = small_run(dir + "/run");
  o.distill_scheme = "B";
  o.teacher = other;
  CHECK_THROWS_WITH(wrpn::train::fit(o), Catch::Contains("7 classes") && Catch::Contains("10"));
}

// ---- The schemes -----------------------------------------------------------------------------

TEST_CASE("distillation scheme A trains teacher and student jointly and resumes exactly",
          "[train]") {
  const std::string a_dir = temp_dir("A_full"), b_dir = temp_dir("A_resumed");
  auto scheme_a = [](const std::string& dir) {
    TrainOptions o = small_run(dir);
    o.distill_scheme = "A";
    o.teacher = "resnet20";  // fp32, width 1: wider than the student
    o.distill.temperature = 2.0;
    return o;
  };
  const json summary = wrpn::train::fit(scheme_a(a_dir));

  const auto rows = read_jsonl(a_dir + "/metrics.jsonl");
  REQUIRE(rows.size() == 2);
  for (const auto& r : rows) {
    for (const char* key :
         {"train_loss", "train_teacher_loss", "train_student_loss", "train_soft_loss",
          "train_teacher_top1", "teacher_test_top1", "teacher_test_loss", "test_top1"}) {
      INFO(key);
      REQUIRE(r.contains(key));
      CHECK(std::isfinite(r[key].get<double>()));
    }
    // train_loss is the weighted sum of the recorded terms.
    CHECK(r["train_loss"].get<double>() == Approx(r["train_teacher_loss"].get<double>() +
                                                  0.5 * r["train_student_loss"].get<double>() +
                                                  0.5 * r["train_soft_loss"].get<double>())
                                               .epsilon(1e-6));
  }
  REQUIRE(summary.contains("distill"));
  const json& d = summary["distill"];
  CHECK(d["scheme"] == "A");
  CHECK(d["teacher"] == "resnet20");
  CHECK(d["teacher_source"] == "zoo");
  CHECK(d["temperature"].get<double>() == 2.0);
  CHECK(d["teacher_test_top1"].get<double>() == rows[1]["teacher_test_top1"].get<double>());
  CHECK(d["teacher_spec"]["precision"]["weight_bits"] == 32);
  CHECK(d["teacher_spec"]["precision"]["width"].get<double>() == 1.0);

  // The saved teacher reproduces the recorded teacher accuracy.
  const auto tmeta = wrpn::models::read_checkpoint(a_dir + "/teacher.ckpt");
  CHECK(tmeta.info.epoch == 2);
  const auto tr = wrpn::train::evaluate_checkpoint(a_dir + "/teacher.ckpt", "digits", digits_root(),
                                                   "test", "cpu", 64, 64);
  CHECK(tr.top1 == Approx(rows[1]["teacher_test_top1"].get<double>()).epsilon(1e-12));

  // Interrupted after epoch 1 and resumed: the same student, the same teacher.
  TrainOptions b = scheme_a(b_dir);
  b.stop_after = 1;
  CHECK_FALSE(wrpn::train::fit(b)["completed"].get<bool>());
  const auto teacher1 = wrpn::models::load_checkpoint(b_dir + "/teacher.ckpt");
  const auto student1 = wrpn::models::load_checkpoint(b_dir + "/last.ckpt");
  b.stop_after = 0;
  b.resume = true;
  CHECK(wrpn::train::fit(b)["completed"].get<bool>());

  const auto sa = wrpn::models::load_checkpoint(a_dir + "/last.ckpt");
  const auto sb = wrpn::models::load_checkpoint(b_dir + "/last.ckpt");
  const auto ta = wrpn::models::load_checkpoint(a_dir + "/teacher.ckpt");
  const auto tb = wrpn::models::load_checkpoint(b_dir + "/teacher.ckpt");
  {
    INFO("student");
    check_same_state(*sa, *sb);
  }
  {
    INFO("teacher");
    check_same_state(*ta, *tb);
  }
  const auto rb = read_jsonl(b_dir + "/metrics.jsonl");
  REQUIRE(rb.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(rows[i]["train_loss"] == rb[i]["train_loss"]);
    CHECK(rows[i]["teacher_test_top1"] == rb[i]["teacher_test_top1"]);
  }
  // Both models moved during epoch 2: the teacher is trained, not frozen.
  CHECK(count_changed(*teacher1, *ta) == static_cast<int>(ta->parameters().size()));
  CHECK(count_changed(*student1, *sa) > 0);

  // Resuming as another scheme is refused.
  TrainOptions c = scheme_a(b_dir);
  c.resume = true;
  c.distill_scheme = "";
  c.teacher = "";
  CHECK_THROWS_WITH(wrpn::train::fit(c), Catch::Contains("--distill-scheme A"));
}

TEST_CASE("distillation scheme B keeps a wider pretrained teacher bit-identical", "[train]") {
  const std::string dir = temp_dir("B");
  const std::string ckpt = dir + "/fp32_wide.ckpt";
  save_fp32_model(ckpt, 1.0);  // the student is 0.5 wide
  TrainOptions o = small_run(dir + "/run");
  o.distill_scheme = "B";
  o.teacher = ckpt;
  const json summary = wrpn::train::fit(o);

  // teacher.ckpt is the in-memory teacher after training: equal to its source in every
  // parameter and buffer (BatchNorm statistics included).
  const auto source = wrpn::models::load_checkpoint(ckpt);
  const auto used = wrpn::models::load_checkpoint(o.run_dir + "/teacher.ckpt");
  check_same_state(*source, *used);
  CHECK(used->spec() == source->spec());

  // The teacher's recorded accuracy is its source's.
  const auto ref = wrpn::train::evaluate_checkpoint(ckpt, "digits", o.data_root, "test", "cpu",
                                                    o.eval_batch_size, o.limit_test);
  const auto rows = read_jsonl(o.run_dir + "/metrics.jsonl");
  REQUIRE(rows.size() == 2);
  for (const auto& r : rows) {
    CHECK(r["teacher_test_top1"].get<double>() == ref.top1);
    CHECK(r["teacher_test_loss"].get<double>() == Approx(ref.loss).epsilon(1e-6));
  }
  CHECK(summary["distill"]["scheme"] == "B");
  CHECK(summary["distill"]["teacher_source"] == "checkpoint");
  CHECK(summary["distill"]["teacher_test_top1"].get<double>() == ref.top1);

  // The student did train, and differently from a run without a teacher.
  TrainOptions plain = small_run(dir + "/plain");
  wrpn::train::fit(plain);
  const auto s = wrpn::models::load_checkpoint(o.run_dir + "/last.ckpt");
  const auto p = wrpn::models::load_checkpoint(plain.run_dir + "/last.ckpt");
  CHECK(count_changed(*s, *p) > 0);
}

namespace {
/// Scheme C from `teacher` for one epoch at a learning rate too small to move any weight: the run
/// ends with the weights it started from.
TrainOptions frozen_scheme_c(const std::string& dir, const std::string& teacher) {
  TrainOptions o = small_run(dir);
  o.distill_scheme = "C";
  o.teacher = teacher;
  o.epochs = 1;
  o.schedule.base_lr = 1e-9;
  o.schedule.kind = "constant";
  o.momentum = 0;
  o.weight_decay = 0;
  return o;
}
}  // namespace

TEST_CASE("distillation scheme C starts the student from the fp32 weights", "[train]") {
  const std::string dir = temp_dir("C");
  const std::string fp32 = dir + "/fp32_half.ckpt";
  const auto source = save_fp32_model(fp32, 0.5);  // the student's own architecture

  // A learning rate so small that one epoch cannot move the weights visibly: what the run
  // ends with is what it started from.
  TrainOptions o = frozen_scheme_c(dir + "/run", fp32);
  o.student_init_rescale = false;  // the weights exactly as saved (the rescale is tested below)
  const json summary = wrpn::train::fit(o);
  CHECK(summary["distill"]["student_init"] == fp32);
  CHECK(summary["distill"]["student_init_rescale"].empty());

  const auto student = wrpn::models::load_checkpoint(o.run_dir + "/last.ckpt");
  CHECK(student->spec().precision.weight_bits == 4);
  const auto sp = student->named_parameters();
  for (const auto& kv : source->named_parameters()) {
    INFO(kv.key());
    CHECK((sp[kv.key()] - kv.value()).abs().max().item<double>() < 1e-6);
  }

  // The recorded starting accuracy is that of the 4-bit student holding the fp32 weights,
  // computed here independently of the trainer.
  auto ref_model = wrpn::models::create_model(student->spec());
  wrpn::models::load_checkpoint_into(fp32, *ref_model);
  wrpn::models::save_checkpoint(dir + "/ref.ckpt", *ref_model);
  const auto ref = wrpn::train::evaluate_checkpoint(dir + "/ref.ckpt", "digits", o.data_root,
                                                    "test", "cpu", o.eval_batch_size, o.limit_test);
  const json& start = summary["distill"]["start"];
  CHECK(start["student_init_test_top1"].get<double>() == ref.top1);
  CHECK(start["student_init_test_loss"].get<double>() == Approx(ref.loss).epsilon(1e-6));

  // A fresh student of the same seed differs: the run really loaded the checkpoint.
  TrainOptions fresh = o;
  fresh.distill_scheme = "B";
  fresh.run_dir = dir + "/fresh";
  wrpn::train::fit(fresh);
  const auto f = wrpn::models::load_checkpoint(fresh.run_dir + "/last.ckpt");
  CHECK(count_changed(*f, *student) == static_cast<int>(student->parameters().size()));

  // A wider teacher: the student needs --student-init with its own architecture's weights.
  const std::string wide = dir + "/fp32_wide.ckpt";
  save_fp32_model(wide, 1.0, 10, 5);
  TrainOptions w = o;
  w.teacher = wide;
  w.run_dir = dir + "/wide";
  CHECK_THROWS_WITH(wrpn::train::fit(w), Catch::Contains("--student-init"));
  w.student_init = fp32;
  const json ws = wrpn::train::fit(w);
  CHECK(ws["distill"]["student_init"] == fp32);
  CHECK(ws["distill"]["start"]["student_init_test_top1"].get<double>() == ref.top1);
  const auto wst = wrpn::models::load_checkpoint(w.run_dir + "/last.ckpt");
  for (const auto& kv : source->named_parameters()) {
    INFO(kv.key());
    CHECK((wst->named_parameters()[kv.key()] - kv.value()).abs().max().item<double>() < 1e-6);
  }
}

TEST_CASE("distillation scheme C fits the fp32 weights to a 2-bit quantizer", "[train]") {
  const std::string dir = temp_dir("C_rescale");
  const std::string fp32 = dir + "/fp32_half.ckpt";
  const auto source = save_fp32_model(fp32, 0.5);
  TrainOptions o = frozen_scheme_c(dir + "/run", fp32);
  o.precision = wrpn::PrecisionConfig::make(2, 4, 0.5);
  const json summary = wrpn::train::fit(o);
  const json& factors = summary["distill"]["student_init_rescale"];
  const auto student = wrpn::models::load_checkpoint(o.run_dir + "/last.ckpt");
  const auto sp = student->named_parameters();
  int rescaled = 0;
  for (const auto& item : student->named_modules("", false)) {
    auto* conv = item.value()->as<wrpn::nn::QuantConv2dImpl>();
    if (conv == nullptr) continue;
    const at::Tensor w0 = source->named_parameters()[item.key() + ".weight"];
    INFO(item.key());
    if (conv->options.weight_bits() == 32) {  // the fp32 first conv keeps its weights
      CHECK_FALSE(factors.contains(item.key()));
      CHECK((conv->weight - w0).abs().max().item<double>() < 1e-6);
      continue;
    }
    // 2-bit weights: step 1, so w * (1 / std(w)) clamped to [-1, 1].
    REQUIRE(factors.contains(item.key()));
    const double f = factors[item.key()].get<double>();
    CHECK(f == Approx(1.0 / w0.std().item<double>()).epsilon(1e-5));
    CHECK((conv->weight - (w0 * f).clamp(-1, 1)).abs().max().item<double>() < 1e-5);
    CHECK(wrpn::nn::zero_fraction(conv->weight, 2) < 0.6);  // fp32 draw: nearly all zero
    CHECK(wrpn::nn::zero_fraction(w0, 2) > 0.95);
    ++rescaled;
  }
  CHECK(rescaled == static_cast<int>(factors.size()));
  CHECK(rescaled > 10);
}
