// Tests of wrpn::nn (QuantConv2d, QuantLinear, QuantReLU, initialisation) and PrecisionConfig,
// against plain-ATen references of spec.md's quantizers and torch::nn's own modules.

#include <torch/torch.h>
#include <wrpn/wrpn.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace {

using Catch::Contains;

/// spec.md's weight quantizer in plain ATen ops.
torch::Tensor ref_weight(const torch::Tensor& w, int64_t bits) {
  if (bits == 32) return w;
  if (bits == 1) {
    const auto a = w.abs().mean();
    return torch::where(w.ge(0), a, -a);
  }
  const double s = std::pow(2.0, bits - 1) - 1;
  return torch::round(w.clamp(-1, 1) * s) / s;
}

/// spec.md's activation quantizer in plain ATen ops.
torch::Tensor ref_activation(const torch::Tensor& x, int64_t bits) {
  if (bits == 32) return torch::relu(x);
  const double s = std::pow(2.0, bits) - 1;
  return torch::round(x.clamp(0, 1) * s) / s;
}

torch::Tensor spread(std::vector<int64_t> shape, uint64_t seed, double scale = 0.6) {
  torch::manual_seed(seed);
  return torch::randn(shape) * scale;
}

std::string printed(const torch::nn::Module& m) {
  std::ostringstream s;
  m.pretty_print(s);
  return s.str();
}

/// P(|Z| < z) for a standard normal Z.
double normal_mass(double z) { return std::erf(z / std::sqrt(2.0)); }

}  // namespace

TEST_CASE("nn: QuantConv2d forward equals conv2d with reference-quantized weights", "[nn]") {
  for (int64_t bits : {1, 2, 3, 4, 8, 16, 32}) {
    for (bool bias : {false, true}) {
      INFO("bits " << bits << ", bias " << bias);
      wrpn::nn::QuantConv2d conv(wrpn::nn::QuantConv2dOptions(4, 6, {3, 2})
                                     .stride({2, 1})
                                     .padding({1, 0})
                                     .dilation({1, 2})
                                     .groups(2)
                                     .bias(bias)
                                     .weight_bits(bits));
      {
        torch::NoGradGuard no_grad;
        conv->weight.copy_(spread(conv->weight.sizes().vec(), 1, 0.7));
      }
      const auto x = spread({2, 4, 7, 9}, 2);
      const auto want =
          torch::conv2d(x, ref_weight(conv->weight.detach(), bits),
                        bias ? conv->bias.detach() : torch::Tensor(), {2, 1}, {1, 0}, {1, 2}, 2);
      const auto got = conv(x);
      REQUIRE(got.sizes() == want.sizes());
      REQUIRE(torch::allclose(got, want, 1e-5, 1e-6));
      REQUIRE(torch::equal(conv->effective_weight(), ref_weight(conv->weight.detach(), bits)));
    }
  }
}

TEST_CASE("nn: QuantConv2d backward is the straight-through estimator", "[nn]") {
  for (int64_t bits : {1, 2, 4}) {
    INFO("bits " << bits);
    wrpn::nn::QuantConv2d conv(
        wrpn::nn::QuantConv2dOptions(3, 5, 3).padding(1).bias(true).weight_bits(bits));
    {
      torch::NoGradGuard no_grad;
      conv->weight.copy_(spread(conv->weight.sizes().vec(), 3, 0.9));  // some |w| > 1
    }
    const auto x = spread({2, 3, 6, 6}, 4).requires_grad_(true);
    const auto g = spread({2, 5, 6, 6}, 5);
    conv(x).backward(g);

    // Reference: the gradient with respect to the quantized weight, masked by |w| <= 1.
    const auto q = ref_weight(conv->weight.detach(), bits).requires_grad_(true);
    const auto b = conv->bias.detach().clone().requires_grad_(true);
    const auto x2 = x.detach().clone().requires_grad_(true);
    torch::conv2d(x2, q, b, 1, 1).backward(g);
    const auto mask = conv->weight.detach().abs().le(1);
    REQUIRE(mask.logical_not().any().item<bool>());
    REQUIRE(torch::allclose(conv->weight.grad(), q.grad() * mask, 1e-5, 1e-6));
    REQUIRE(torch::allclose(conv->bias.grad(), b.grad(), 1e-5, 1e-6));
    REQUIRE(torch::allclose(x.grad(), x2.grad(), 1e-5, 1e-6));
  }
}

TEST_CASE("nn: QuantLinear forward and backward against references", "[nn]") {
  for (int64_t bits : {1, 2, 4, 32}) {
    INFO("bits " << bits);
    wrpn::nn::QuantLinear fc(wrpn::nn::QuantLinearOptions(7, 3).weight_bits(bits));
    {
      torch::NoGradGuard no_grad;
      fc->weight.copy_(spread({3, 7}, 6, 0.8));
    }
    const auto x = spread({4, 7}, 7);
    const auto y = fc(x);
    const auto q = ref_weight(fc->weight.detach(), bits).requires_grad_(true);
    const auto want = torch::linear(x, q, fc->bias.detach());
    REQUIRE(torch::allclose(y, want, 1e-5, 1e-6));
    const auto g = spread({4, 3}, 8);
    y.backward(g);
    want.backward(g);
    const auto mask = bits == 32 ? torch::ones_like(q) : fc->weight.detach().abs().le(1);
    REQUIRE(torch::allclose(fc->weight.grad(), q.grad() * mask, 1e-5, 1e-6));
  }
}

TEST_CASE("nn: QuantReLU is the activation quantizer, or ReLU at 32 bits", "[nn]") {
  const auto x = torch::tensor({-1.0f, 0.0f, 0.2f, 0.5f, 1.0f, 1.7f, 0.0333f, 0.9667f});
  for (int64_t bits : {1, 2, 4, 8, 32}) {
    INFO("bits " << bits);
    wrpn::nn::QuantReLU act(bits);
    const auto leaf = x.clone().requires_grad_(true);
    const auto y = act(leaf);
    REQUIRE(torch::equal(y, ref_activation(x, bits)));
    y.sum().backward();
    const auto want_grad =
        bits == 32 ? x.gt(0).to(torch::kFloat) : (x.ge(0) & x.le(1)).to(torch::kFloat);
    REQUIRE(torch::equal(leaf.grad(), want_grad));
  }
  // Hand values at 2 bits: levels 0, 1/3, 2/3, 1.
  const auto q2 = wrpn::nn::QuantReLU(2)(torch::tensor({-0.5f, 0.1f, 0.2f, 0.5f, 0.9f, 3.0f}));
  REQUIRE(torch::allclose(q2, torch::tensor({0.0f, 0.0f, 1.0f / 3, 2.0f / 3, 1.0f, 1.0f})));
  REQUIRE(wrpn::nn::QuantReLU()->options.bits() == 4);
}

TEST_CASE("nn: state dicts move between torch::nn and wrpn::nn modules", "[nn]") {
  for (bool bias : {false, true}) {
    INFO("bias " << bias);
    torch::nn::Conv2d ref(torch::nn::Conv2dOptions(3, 8, 3).stride(2).padding(1).bias(bias));
    wrpn::nn::QuantConv2d conv(
        wrpn::nn::QuantConv2dOptions(3, 8, 3).stride(2).padding(1).bias(bias).weight_bits(4));
    const auto ref_params = ref->named_parameters();
    const auto params = conv->named_parameters();
    REQUIRE(ref_params.keys() == params.keys());
    for (const auto& p : ref_params) REQUIRE(params[p.key()].sizes() == p.value().sizes());

    // torch::save of the fp32 module loads into the quantized one, and back.
    std::stringstream stream;
    torch::save(ref, stream);
    torch::load(conv, stream);
    for (const auto& p : ref_params) REQUIRE(torch::equal(params[p.key()], p.value()));
    const auto x = spread({1, 3, 8, 8}, 9);
    conv->options.weight_bits(32);
    REQUIRE(torch::allclose(conv(x), ref(x), 1e-6, 1e-7));
    conv->options.weight_bits(4);
    REQUIRE(!torch::allclose(conv(x), ref(x), 1e-3, 1e-4));

    torch::nn::Conv2d back(torch::nn::Conv2dOptions(3, 8, 3).stride(2).padding(1).bias(bias));
    std::stringstream stream2;
    torch::save(conv, stream2);
    torch::load(back, stream2);
    REQUIRE(torch::equal(back->weight, conv->weight));
  }
  torch::nn::Linear ref(torch::nn::LinearOptions(5, 2));
  wrpn::nn::QuantLinear fc(wrpn::nn::QuantLinearOptions(5, 2).weight_bits(32));
  REQUIRE(ref->named_parameters().keys() == fc->named_parameters().keys());
  std::stringstream stream;
  torch::save(ref, stream);
  torch::load(fc, stream);
  const auto x = spread({3, 5}, 10);
  REQUIRE(torch::allclose(fc(x), ref(x), 1e-6, 1e-7));
}

TEST_CASE("nn: modules print like torch::nn's and clone deeply", "[nn]") {
  wrpn::nn::QuantConv2d conv(
      wrpn::nn::QuantConv2dOptions(16, 32, 3).stride(2).padding(1).bias(false).input_bits(4));
  REQUIRE(printed(*conv) ==
          "wrpn::nn::QuantConv2d(16, 32, kernel_size=[3, 3], stride=[2, 2], padding=[1, 1], "
          "bias=false, weight_bits=4, input_bits=4)");
  REQUIRE(printed(*wrpn::nn::QuantLinear(wrpn::nn::QuantLinearOptions(64, 10).weight_bits(32))) ==
          "wrpn::nn::QuantLinear(in_features=64, out_features=10, weight_bits=32)");
  REQUIRE(printed(*wrpn::nn::QuantReLU(2)) == "wrpn::nn::QuantReLU(bits=2)");

  auto copy = std::dynamic_pointer_cast<wrpn::nn::QuantConv2dImpl>(conv->clone());
  REQUIRE(copy);
  REQUIRE(torch::equal(copy->weight, conv->weight));
  REQUIRE(copy->options.input_bits() == 4);
  {
    torch::NoGradGuard no_grad;
    copy->weight.add_(1.0);
  }
  REQUIRE(!torch::equal(copy->weight, conv->weight));
  REQUIRE(!conv->bias.defined());
  REQUIRE(conv->parameters().size() == 1);
}

TEST_CASE("nn: modules reject bad options with the field and the allowed values", "[nn]") {
  using wrpn::nn::QuantConv2dOptions;
  for (int64_t bits : {0, 17, 31, 33, -4}) {
    INFO("bits " << bits);
    REQUIRE_THROWS_WITH(
        wrpn::nn::QuantConv2d(QuantConv2dOptions(3, 4, 3).weight_bits(bits)),
        Contains("weight_bits = " + std::to_string(bits)) && Contains("1..16") && Contains("32"));
    REQUIRE_THROWS_WITH(wrpn::nn::QuantLinear(wrpn::nn::QuantLinearOptions(3, 4).input_bits(bits)),
                        Contains("QuantLinear input_bits") && Contains("1..16"));
    REQUIRE_THROWS_WITH(wrpn::nn::QuantReLU(bits), Contains("QuantReLU bits") && Contains("1..16"));
  }
  REQUIRE_THROWS_WITH(wrpn::nn::QuantConv2d(QuantConv2dOptions(3, 4, 3).groups(2)),
                      Contains("divisible by groups"));
  REQUIRE_THROWS_WITH(wrpn::nn::QuantConv2d(QuantConv2dOptions(0, 4, 3)),
                      Contains("in_channels (0)"));
  REQUIRE_THROWS_WITH(wrpn::nn::QuantConv2d(QuantConv2dOptions(3, 4, 3).stride(0)),
                      Contains("stride"));
  REQUIRE_THROWS_WITH(wrpn::nn::weight_init_from_string("xavier"),
                      Contains("xavier") && Contains("quant_aware, he or torch_default"));
}

TEST_CASE("nn: initialisation: zero fractions against the normal distribution", "[nn]") {
  // A 64 -> 64 3x3 conv: He's std is sqrt(2 / (64 * 9)); the zero band is |w| < 1/(2s).
  const double he_std = std::sqrt(2.0 / 576.0);
  struct Case {
    int64_t bits;
    wrpn::nn::WeightInit init;
    double want;
  };
  const std::vector<Case> cases = {
      {4, wrpn::nn::WeightInit::kHe, normal_mass((1.0 / 14) / he_std)},           // 0.775
      {2, wrpn::nn::WeightInit::kHe, normal_mass(0.5 / he_std)},                  // 1.0
      {4, wrpn::nn::WeightInit::kQuantAware, normal_mass(0.5)},                   // 0.383
      {3, wrpn::nn::WeightInit::kQuantAware, normal_mass(0.5) / normal_mass(3)},  // 0.384
      {2, wrpn::nn::WeightInit::kQuantAware, normal_mass(0.5) / normal_mass(1)},  // 0.561
      // At 8 bits the step (1/127) is narrower than He's std: the draw is He.
      {8, wrpn::nn::WeightInit::kQuantAware, normal_mass((0.5 / 127) / he_std)},
      // kaiming_uniform_(a = sqrt(5)): U(-1/24, 1/24), entirely inside 4-bit's band.
      {4, wrpn::nn::WeightInit::kTorchDefault, 1.0},
  };
  torch::manual_seed(11);
  for (const auto& c : cases) {
    INFO("bits " << c.bits << ", init " << wrpn::nn::to_string(c.init));
    wrpn::nn::QuantConv2d conv(
        wrpn::nn::QuantConv2dOptions(64, 64, 3).bias(false).weight_bits(c.bits).init(c.init));
    REQUIRE(std::abs(wrpn::nn::zero_fraction(conv->weight, c.bits) - c.want) < 0.01);
    REQUIRE(conv->weight.abs().max().item<double>() <= 1.0);
  }
  // The truncated draw of quant_aware at 2 bits keeps the normal's shape inside [-1, 1].
  auto w = torch::empty({400, 500});
  wrpn::nn::init_weight_(w, wrpn::nn::WeightInit::kQuantAware, 2, /*is_conv=*/false);
  REQUIRE(w.abs().max().item<double>() <= 1.0);
  const double frac_half = w.abs().lt(0.5).to(torch::kDouble).mean().item<double>();
  REQUIRE(std::abs(frac_half - normal_mass(0.5) / normal_mass(1.0)) < 0.01);
  // fp32 and 1-bit keep the usual draw; zero_fraction counts exact zeros at 32 bits.
  REQUIRE(wrpn::nn::zero_fraction(torch::tensor({0.0f, 1.0f, 0.0f, 2.0f}), 32) == 0.5);
  REQUIRE(wrpn::nn::zero_fraction(torch::tensor({0.01f, -0.5f, 0.07f, 0.2f}), 4) == 0.5);
  REQUIRE(wrpn::nn::zero_fraction(torch::empty({0}), 4) == 0.0);
}

TEST_CASE("nn: PrecisionConfig: JSON round trip", "[nn]") {
  wrpn::PrecisionConfig c = wrpn::PrecisionConfig::make(4, 2, 1.5);
  c.fp32_last_layer = false;
  c.quantized_residual = true;
  c.overrides = {{"layer1.0.conv1", 8}, {"fc", 32}, {"layer2.1.act1", 1}};
  for (int indent : {-1, 2}) {
    const auto text = c.to_json(indent);
    INFO(text);
    REQUIRE(wrpn::PrecisionConfig::from_json(text) == c);
  }
  const auto parsed = wrpn::PrecisionConfig::from_json(
      R"({"weight_bits": 2, "width": 3, "overrides": {"conv1": 4}})");
  REQUIRE(parsed.weight_bits == 2);
  REQUIRE(parsed.act_bits == 32);
  REQUIRE(parsed.width == 3.0);
  REQUIRE(parsed.fp32_first_layer);
  REQUIRE(parsed.overrides.at("conv1") == 4);
  REQUIRE(wrpn::PrecisionConfig::from_json("{}") == wrpn::PrecisionConfig{});
  REQUIRE(wrpn::PrecisionConfig{}.is_full_precision());
  REQUIRE(wrpn::PrecisionConfig::make(4, 4, 2).short_name() == "w4a4 x2");
  REQUIRE(wrpn::PrecisionConfig::make(32, 32, 1.5).short_name() == "fp32 x1.5");
}

TEST_CASE("nn: PrecisionConfig: channels round the width multiplier", "[nn]") {
  REQUIRE(wrpn::PrecisionConfig::make(4, 4, 2).channels(64) == 128);
  REQUIRE(wrpn::PrecisionConfig::make(4, 4, 1.5).channels(16) == 24);
  REQUIRE(wrpn::PrecisionConfig::make(4, 4, 1.3).channels(64) == 83);
  REQUIRE(wrpn::PrecisionConfig::make(4, 4, 0.01).channels(16) == 1);
}

TEST_CASE("nn: PrecisionConfig: validation errors name the field and what is expected", "[nn]") {
  using wrpn::PrecisionConfig;
  struct Bad {
    std::string json;
    std::vector<std::string> needles;
  };
  const std::vector<Bad> bad = {
      {R"({"weight_bits": 0})", {"weight_bits = 0", "1..16", "32 for full precision"}},
      {R"({"weight_bits": 17})", {"weight_bits = 17"}},
      {R"({"act_bits": 31})", {"act_bits = 31"}},
      {R"({"act_bits": 4.5})", {"act_bits", "integer"}},
      {R"({"weight_bits": "4"})", {"weight_bits", "integer"}},
      {R"({"width": 0})", {"width = 0", "(0, 64]"}},
      {R"({"width": -2})", {"width = -2"}},
      {R"({"width": 65})", {"width = 65"}},
      {R"({"width": "2"})", {"width", "expected a number"}},
      {R"({"fp32_first_layer": 1})", {"fp32_first_layer", "true or false"}},
      {R"({"widht": 2})", {"unknown key 'widht'", "width"}},
      {R"({"overrides": {"conv1": 9000}})", {"overrides[\"conv1\"] = 9000"}},
      {R"({"overrides": ["conv1"]})", {"overrides", "module name -> bits"}},
      {R"([4, 4])", {"expected a JSON object"}},
      {R"({"weight_bits": 4,)", {"not valid JSON"}},
  };
  for (const auto& b : bad) {
    INFO(b.json);
    try {
      PrecisionConfig::from_json(b.json);
      FAIL("no error");
    } catch (const c10::Error& e) {
      const std::string msg = e.what_without_backtrace();
      for (const auto& needle : b.needles) {
        INFO(msg);
        REQUIRE_THAT(msg, Contains(needle));
      }
    }
  }
  PrecisionConfig c;
  c.width = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(c.validate(), Contains("width = nan"));
  REQUIRE_THROWS_WITH(PrecisionConfig::make(4, 0), Contains("act_bits = 0"));
}
