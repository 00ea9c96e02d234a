// CPU tests of the ADaPTION fixed-point op (spec.md, "ADaPTION fixed point") against hand values
// and the plain-ATen references in quant_reference.h, and of fixed point in the precision config,
// the modules and the zoo.

#include <torch/torch.h>
#include <wrpn/wrpn.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "quant_reference.h"

namespace {

using Catch::Contains;
using wrpn_test::bit_mismatch;
using wrpn_test::CapabilityReset;
using wrpn_test::float_dtypes;
using wrpn_test::make_input;
using wrpn_test::mask_mismatch;
using wrpn_test::ref_fixed_point;
using wrpn_test::ref_stochastic_fixed_point;
using wrpn_test::supported_capabilities;
using wrpn_test::ThreadCountReset;

constexpr double kInf = std::numeric_limits<double>::infinity();

at::Tensor vals(const std::vector<double>& v, at::ScalarType st = at::kFloat) {
  return torch::tensor(v, torch::kDouble).to(st);
}

at::Generator seeded(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

at::Tensor fixed_pass(const at::Tensor& x, int64_t total, int64_t frac) {
  // Compared in the spec's math type: M itself may not exist in fp16/bf16.
  const double m = wrpn::fixed_point_max(total, frac);
  const auto xm = x.to(wrpn_test::opmath(x.scalar_type()));
  return (xm >= -m) & (xm <= m);
}

}  // namespace

TEST_CASE("fixed point: hand values of Q2.2 and Q1.3", "[cpu][fixed]") {
  // Q2.2: step 1/4, M = 2^1 - 1/4 = 1.75. Ties go to even: 0.125 * 4 = 0.5 -> 0, 0.375 -> 1.5 -> 2.
  const auto x = vals({0.0, 0.1, 0.125, 0.375, 0.625, -0.625, 1.7, 1.8, 5.0, -5.0, -1.75});
  const auto want = vals({0.0, 0.0, 0.0, 0.5, 0.5, -0.5, 1.75, 1.75, 1.75, -1.75, -1.75});
  CHECK(bit_mismatch(wrpn::quantize_fixed_point(x, 4, 2), want).empty());
  CHECK(wrpn::fixed_point_max(4, 2) == 1.75);
  // Q1.3: only the sign is integer: M = 1 - 1/8.
  const auto y = vals({0.9, 1.0, -1.0, 0.0625, 0.1875});
  const auto want_y = vals({0.875, 0.875, -0.875, 0.0, 0.25});
  CHECK(bit_mismatch(wrpn::quantize_fixed_point(y, 4, 3), want_y).empty());
  // Q16.0 at 16 bits: integers, M = 2^15 - 1.
  const auto z = vals({2.5, 3.5, -2.5, 40000.0, -40000.0});
  CHECK(
      bit_mismatch(wrpn::quantize_fixed_point(z, 16, 0), vals({2, 4, -2, 32767, -32767})).empty());
}

TEST_CASE("fixed point: NaN stays NaN, +-inf saturate, gradient zero outside [-M, M]",
          "[cpu][fixed]") {
  const auto x = vals({std::nan(""), kInf, -kInf, 1.0, 1.75, 1.76, -1.75, -1.76}).requires_grad_();
  const auto q = wrpn::quantize_fixed_point(x, 4, 2);
  CHECK(std::isnan(q[0].item<double>()));
  CHECK(q[1].item<double>() == 1.75);
  CHECK(q[2].item<double>() == -1.75);
  q.backward(torch::ones_like(q));
  CHECK(bit_mismatch(x.grad(), vals({0, 0, 0, 1, 1, 0, 1, 0})).empty());
}

TEST_CASE("fixed point: every dtype, CPU build, format and odd size against the reference",
          "[cpu][fixed]") {
  CapabilityReset reset;
  ThreadCountReset threads;
  at::set_num_threads(1);
  const std::vector<std::pair<int64_t, int64_t>> formats = {{2, 0}, {2, 1},  {4, 2},   {8, 4},
                                                            {8, 7}, {16, 8}, {16, 14}, {24, 12}};
  for (const auto& cap : supported_capabilities()) {
    wrpn::set_cpu_kernel_capability(cap);
    for (auto st : float_dtypes()) {
      for (int64_t n : {1, 7, 63, 64, 65, 1000, 4099}) {
        const auto x = make_input(n, st, 31 * n + 7).mul(3.0);
        for (const auto& [total, frac] : formats) {
          INFO(cap << " " << st << " n=" << n << " Q" << total - frac << "." << frac);
          auto [q, mask] = wrpn::quantize_fixed_point_with_mask(x, total, frac);
          CHECK(bit_mismatch(q, ref_fixed_point(x, total, frac)).empty());
          CHECK(mask_mismatch(mask, fixed_pass(x, total, frac)).empty());
          CHECK(bit_mismatch(wrpn::quantize_fixed_point(x, total, frac), q).empty());
        }
      }
    }
  }
}

TEST_CASE("fixed point: stochastic rounding follows the documented Philox stream", "[cpu][fixed]") {
  CapabilityReset reset;
  ThreadCountReset threads;
  for (const auto& cap : supported_capabilities()) {
    wrpn::set_cpu_kernel_capability(cap);
    for (auto st : float_dtypes()) {
      for (int64_t n : {1, 5, 64, 67, 3001, 70001}) {
        const auto x = make_input(n, st, 5 * n + 1).mul(2.0);
        for (int t : {1, 2}) {
          at::set_num_threads(t);
          INFO(cap << " " << st << " n=" << n << " threads " << t);
          auto [q, mask] = wrpn::quantize_fixed_point_with_mask(x, 8, 4, true, seeded(99));
          CHECK(bit_mismatch(q, ref_stochastic_fixed_point(x, 8, 4, 99)) == "");
          CHECK(mask_mismatch(mask, fixed_pass(x, 8, 4)).empty());
        }
      }
    }
  }
}

TEST_CASE("fixed point: stochastic rounding is reproducible, seed-dependent and unbiased",
          "[cpu][fixed]") {
  const int64_t n = 1 << 20;
  const auto x = torch::full({n}, 0.3);
  const auto a = wrpn::quantize_fixed_point(x, 8, 0, true, seeded(1));
  const auto b = wrpn::quantize_fixed_point(x, 8, 0, true, seeded(1));
  const auto c = wrpn::quantize_fixed_point(x, 8, 0, true, seeded(2));
  CHECK(torch::equal(a, b));
  CHECK_FALSE(torch::equal(a, c));
  // Each value is floor or ceil of x on the grid; P(ceil) = 0.3, so the mean is 0.3 with a
  // standard error of sqrt(0.21 / n) ~ 4.5e-4.
  CHECK(((a == 0) | (a == 1)).all().item<bool>());
  CHECK(a.mean().item<double>() == Approx(0.3).margin(5 * std::sqrt(0.21 / n)));
  // Unbiased at every grid offset, negative values included.
  const auto y = torch::linspace(-2.0, 2.0, 17, torch::kDouble).repeat_interleave(1 << 16);
  const auto qy = wrpn::quantize_fixed_point(y.to(at::kFloat), 8, 2, true, seeded(3));
  const auto means = qy.to(at::kDouble).reshape({17, -1}).mean(1);
  CHECK(torch::allclose(means, torch::linspace(-2.0, 2.0, 17, torch::kDouble), 0, 0.01));
  // Never past M: at Q2.14, y = x * 2^14 is near 2^15, where a float sum y + u would round up.
  const double big_m = wrpn::fixed_point_max(16, 14);
  const auto over = torch::linspace(big_m - 0.01, 3.0, 4097);
  const auto qo = wrpn::quantize_fixed_point(over, 16, 14, true, seeded(6));
  CHECK(qo.max().item<double>() == big_m);
  // Just below a grid point the draw still picks floor or ceil, never anything else.
  const double step = std::ldexp(1.0, -14);
  const auto near = torch::full({4096}, 1.0 - step / 1024, torch::kFloat);
  const auto qn = wrpn::quantize_fixed_point(near, 16, 14, true, seeded(7));
  CHECK(((qn == 1.0) | (qn == 1.0 - step)).all().item<bool>());
  // Deterministic rounding of the same inputs is biased at ties (half to even), stochastic is not.
  const auto t = torch::full({n}, 0.5);
  CHECK(wrpn::quantize_fixed_point(t, 8, 0).mean().item<double>() == 0.0);
  CHECK(wrpn::quantize_fixed_point(t, 8, 0, true, seeded(4)).mean().item<double>() ==
        Approx(0.5).margin(0.005));
}

TEST_CASE("fixed point: the default generator follows manual_seed", "[cpu][fixed]") {
  const auto x = torch::rand({1000});
  torch::manual_seed(7);
  const auto a = wrpn::quantize_fixed_point(x, 4, 2, true);
  const auto b = wrpn::quantize_fixed_point(x, 4, 2, true);
  torch::manual_seed(7);
  CHECK(torch::equal(wrpn::quantize_fixed_point(x, 4, 2, true), a));
  CHECK_FALSE(torch::equal(a, b));  // the stream advances between calls
}

TEST_CASE("fixed point: straight-through gradient and double backward", "[cpu][fixed]") {
  for (bool stochastic : {false, true}) {
    const auto x = torch::linspace(-3, 3, 101, torch::kDouble).requires_grad_();
    const auto q = wrpn::quantize_fixed_point(x, 6, 3, stochastic, seeded(5));
    const auto g = torch::randn({101}, torch::kDouble);
    g.requires_grad_();
    auto grads = torch::autograd::grad({q}, {x}, {g}, /*retain_graph=*/true, /*create_graph=*/true);
    const auto pass = fixed_pass(x.detach(), 6, 3);
    CHECK(bit_mismatch(grads[0].detach(), torch::where(pass, g.detach(), torch::zeros_like(g)))
              .empty());
    // Double backward: d(sum(dL/dx))/d(g) is the same mask.
    auto gg = torch::autograd::grad({grads[0].sum()}, {g});
    CHECK(bit_mismatch(gg[0], pass.to(at::kDouble)).empty());
  }
}

TEST_CASE("fixed point: empty, non-contiguous and meta tensors", "[cpu][fixed]") {
  CHECK(wrpn::quantize_fixed_point(torch::empty({0, 3}), 8, 4).sizes() == at::IntArrayRef{0, 3});
  CHECK(wrpn::quantize_fixed_point(torch::empty({0}), 8, 4, true).numel() == 0);
  const auto base = torch::randn({16, 10}).mul(4);
  const auto view = base.t().slice(0, 1, 9, 2);
  CHECK(
      bit_mismatch(wrpn::quantize_fixed_point(view, 8, 3), ref_fixed_point(view.contiguous(), 8, 3))
          .empty());
  const auto meta = torch::empty({5, 7}, torch::TensorOptions().device(torch::kMeta));
  auto [q, mask] = wrpn::quantize_fixed_point_with_mask(meta, 8, 4);
  CHECK(q.sizes() == meta.sizes());
  CHECK(mask.numel() == 5);
}

TEST_CASE("fixed point: bad arguments name the argument and the allowed range", "[cpu][fixed]") {
  const auto x = torch::randn({4});
  CHECK_THROWS_WITH(wrpn::quantize_fixed_point(x, 1, 0),
                    Contains("'total_bits' must be in [2, 24]"));
  CHECK_THROWS_WITH(wrpn::quantize_fixed_point(x, 25, 4), Contains("'total_bits'"));
  CHECK_THROWS_WITH(wrpn::quantize_fixed_point(x, 8, 8),
                    Contains("'frac_bits' must be in [0, total_bits - 1] = [0, 7]"));
  CHECK_THROWS_WITH(wrpn::quantize_fixed_point(x, 8, -1), Contains("'frac_bits'"));
  CHECK_THROWS_WITH(wrpn::quantize_fixed_point(torch::ones({4}, torch::kInt), 8, 4),
                    Contains("floating-point"));
  CHECK_THROWS_WITH(wrpn::quantize_fixed_point(at::Tensor(), 8, 4), Contains("undefined"));
  CHECK_THROWS_WITH(wrpn::fixed_point_max(8, 9), Contains("frac_bits"));
}

TEST_CASE("fixed point in the precision config: formats, JSON and errors", "[cpu][fixed][nn]") {
  using wrpn::FixedPointFormat;
  using wrpn::LayerRole;
  const auto q = FixedPointFormat::parse("Q3.13");
  CHECK(q.total_bits == 16);
  CHECK(q.frac_bits == 13);
  CHECK(q.int_bits() == 3);
  CHECK_FALSE(q.stochastic);
  CHECK(FixedPointFormat::parse("Q2.6s").stochastic);
  CHECK(FixedPointFormat::parse("fixed16").frac_bits == -1);
  CHECK(FixedPointFormat::parse("fixed16").resolved(LayerRole::kWeight).to_string() == "Q2.14");
  CHECK(FixedPointFormat::parse("fixed16").resolved(LayerRole::kActivation).to_string() == "Q8.8");
  for (const char* bad : {"Q0.8", "Q3", "Q3.14", "fixed17", "fixed1", "int8", "", "Q.3", "Qa.b"}) {
    INFO(bad);
    CHECK_THROWS_WITH(FixedPointFormat::parse(bad), Contains("expected Q<m>.<f>"));
  }

  auto c = wrpn::PrecisionConfig::from_json(
      R"({"weight_bits": 16, "act_bits": 16, "scheme": "fixed", "fixed_stochastic": true,
          "overrides": {"layer1.0.conv1": "Q3.13", "fc": 8}})");
  CHECK(c.scheme == "fixed");
  CHECK(c.bits_for("layer1.0.conv1", 16) == 16);
  CHECK(c.fixed_point_for("layer1.0.conv1", LayerRole::kWeight, 16).to_string() == "Q3.13");
  CHECK(c.fixed_point_for("layer2.0.conv1", LayerRole::kWeight, 16).to_string() == "Q2.14s");
  CHECK(c.fixed_point_for("layer2.0.act1", LayerRole::kActivation, 16).to_string() == "Q8.8s");
  CHECK_FALSE(c.fixed_point_for("conv1", LayerRole::kWeight, 32).enabled());
  CHECK(wrpn::PrecisionConfig::from_json(c.to_json()) == c);
  CHECK(c.short_name().find("fixed") != std::string::npos);

  CHECK_THROWS_WITH(wrpn::PrecisionConfig::from_json(R"({"scheme": "float"})"),
                    Contains("expected \"wrpn\" or \"fixed\""));
  CHECK_THROWS_WITH(
      wrpn::PrecisionConfig::from_json(R"({"scheme": "fixed", "weight_bits": 1, "act_bits": 8})"),
      Contains("2..16"));
  CHECK_THROWS_WITH(wrpn::PrecisionConfig::from_json(R"({"overrides": {"fc": "Q9.9"}})"),
                    Contains("Q9.9"));
  CHECK_THROWS_WITH(wrpn::PrecisionConfig::from_json(R"({"overrides": {"fc": 2.5}})"),
                    Contains("fixed-point format"));
  wrpn::PrecisionConfig both;
  both.overrides["fc"] = 8;
  both.fixed_point["fc"] = FixedPointFormat::parse("Q2.6");
  CHECK_THROWS_WITH(both.validate(), Contains("both"));
}

TEST_CASE("fixed point in modules: QuantConv2d, QuantLinear and QuantReLU", "[cpu][fixed][nn]") {
  namespace wn = wrpn::nn;
  torch::manual_seed(0);
  wn::QuantConv2d conv(wn::QuantConv2dOptions(3, 4, 3).weight_bits(8).fixed_point(
      wrpn::FixedPointFormat::parse("Q1.7")));
  conv->eval();
  CHECK(
      bit_mismatch(conv->effective_weight(), ref_fixed_point(conv->weight.detach(), 8, 7)).empty());
  wn::QuantLinear fc(wn::QuantLinearOptions(5, 2).weight_bits(16).fixed_point(
      wrpn::FixedPointFormat::parse("fixed16")));
  CHECK(fc->options.fixed_point().to_string() == "Q2.14");  // resolved for the weight role
  wn::QuantReLU act(wn::QuantReLUOptions(8).fixed_point(wrpn::FixedPointFormat::parse("Q4.4")));
  const auto x = torch::randn({200}).mul(10);
  CHECK(bit_mismatch(act(x), ref_fixed_point(torch::relu(x), 8, 4)).empty());
  // Stochastic rounding only while training.
  wn::QuantReLU sr(wn::QuantReLUOptions(8).fixed_point(wrpn::FixedPointFormat::parse("Q4.4s")));
  sr->eval();
  CHECK(bit_mismatch(sr(x), ref_fixed_point(torch::relu(x), 8, 4)).empty());
  sr->train();
  CHECK_FALSE(torch::equal(sr(x), ref_fixed_point(torch::relu(x), 8, 4)));
  CHECK_THROWS_WITH(wn::QuantConv2d(wn::QuantConv2dOptions(3, 4, 3).weight_bits(4).fixed_point(
                        wrpn::FixedPointFormat::parse("Q2.6"))),
                    Contains("8 total bits but the layer has 4 bits"));
}

TEST_CASE("fixed point in the zoo: scheme fixed quantizes every quantized layer",
          "[cpu][fixed][models]") {
  wrpn::models::ModelSpec spec;
  spec.name = "resnet20";
  spec.num_classes = 10;
  spec.precision = wrpn::PrecisionConfig::from_json(
      R"({"weight_bits": 8, "act_bits": 8, "scheme": "fixed", "width": 0.5,
          "overrides": {"layer1.0.conv1": "Q3.5", "conv1": "Q2.6"}})");
  auto model = wrpn::models::create_model(spec);
  int64_t fixed = 0, plain = 0;
  for (const auto& item : model->named_modules("", false)) {
    const std::string& name = item.key();
    if (auto* conv = item.value()->as<wrpn::nn::QuantConv2dImpl>()) {
      const auto& f = conv->options.fixed_point();
      if (name == "layer1.0.conv1") CHECK(f.to_string() == "Q3.5");
      if (name == "conv1") CHECK(f.to_string() == "Q2.6");  // explicit entry beats fp32 first layer
      if (name != "layer1.0.conv1" && name != "conv1") CHECK(f.to_string() == "Q2.6");
      ++fixed;
    } else if (auto* fc = item.value()->as<wrpn::nn::QuantLinearImpl>()) {
      CHECK_FALSE(fc->options.fixed_point().enabled());  // fp32 last layer
      ++plain;
    } else if (auto* act = item.value()->as<wrpn::nn::QuantReLUImpl>()) {
      if (act->options.bits() == 8) {
        CHECK(act->options.fixed_point().to_string() == "Q4.4");
        ++fixed;
      } else {
        CHECK_FALSE(act->options.fixed_point().enabled());
      }
    }
  }
  CHECK(fixed > 20);
  CHECK(plain == 1);
  const auto out = model->forward(torch::randn({2, 3, 32, 32}));
  CHECK(out.sizes() == at::IntArrayRef{2, 10});
  CHECK(torch::isfinite(out).all().item<bool>());
  spec.precision.fixed_point["no.such.layer"] = wrpn::FixedPointFormat::parse("Q2.6");
  CHECK_THROWS_WITH(wrpn::models::create_model(spec), Contains("no.such.layer"));
}
