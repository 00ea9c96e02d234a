// Tests of integer inference (wrpn/deploy): the integer conv against an fp64 reference of the
// same integer sums, requantization at ties, the epilogue kernel against ATen, BatchNorm folding
// against hand values, and deployed zoo ResNets against their fake-quantized selves.

#include <torch/torch.h>
#include <unistd.h>
#include <wrpn/wrpn.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace {

using Catch::Contains;
using wrpn::PrecisionConfig;
using wrpn::deploy::DeployOptions;
using wrpn::deploy::Engine;
using wrpn::deploy::IntegerConv2d;
using wrpn::models::Classifier;
using wrpn::models::ModelSpec;

std::vector<Engine> cpu_engines() {
  std::vector<Engine> e{Engine::kGemm};
  if (wrpn::deploy::engine_available(Engine::kOneDnn, torch::kCPU)) e.push_back(Engine::kOneDnn);
  return e;
}

/// The fp64 reference of an integer conv: exact sums (every value is a small integer), then
/// y = A * scale + shift.
torch::Tensor reference_y(const torch::Tensor& codes, const torch::Tensor& w,
                          const torch::Tensor& scale, const torch::Tensor& shift,
                          std::vector<int64_t> stride, std::vector<int64_t> padding,
                          std::vector<int64_t> dilation) {
  const torch::Tensor a =
      torch::conv2d(codes.to(torch::kDouble), w.to(torch::kDouble), {}, stride, padding, dilation);
  return a * scale.to(torch::kDouble).view({1, -1, 1, 1}) +
         shift.to(torch::kDouble).view({1, -1, 1, 1});
}

/// Elements whose scaled value is within `eps` of a rounding boundary (where fp32 evaluation
/// order may pick either neighbour).
torch::Tensor near_tie(const torch::Tensor& y, int64_t levels, double eps = 1e-4) {
  const torch::Tensor v = y.clamp(0, 1) * static_cast<double>(levels);
  return (v - v.floor() - 0.5).abs() < eps;
}

torch::Tensor reference_codes(const torch::Tensor& y, int64_t levels) {
  return torch::round(y.clamp(0, 1) * static_cast<double>(levels)).to(torch::kByte);
}

}  // namespace

TEST_CASE("integer conv: exact sums and requantization against an fp64 reference",
          "[deploy][cpu]") {
  torch::manual_seed(3);
  struct Case {
    int64_t n, c, h, o, k, stride, pad, dil, in_levels, w_max;
  };
  const std::vector<Case> cases = {
      {2, 16, 9, 24, 3, 1, 1, 1, 15, 7},   // 4/4 bits, odd spatial size
      {3, 8, 8, 16, 3, 2, 1, 1, 3, 1},     // 2/2 bits (ternary), stride 2
      {1, 5, 7, 3, 1, 1, 0, 1, 255, 127},  // 8/8 bits: the largest codes, odd channel counts
      {2, 12, 10, 8, 3, 1, 2, 2, 15, 7},   // dilation 2
      {4, 32, 4, 40, 3, 1, 1, 1, 1, 1},    // 1-bit activations, binary-like weights
  };
  for (const auto& cs : cases) {
    const torch::Tensor codes =
        torch::randint(0, cs.in_levels + 1, {cs.n, cs.c, cs.h, cs.h}).to(torch::kByte);
    const torch::Tensor w =
        torch::randint(-cs.w_max, cs.w_max + 1, {cs.o, cs.c, cs.k, cs.k}).to(torch::kChar);
    // Scales of both signs (a negative BatchNorm gamma), so y spreads over the clamp range.
    const double span = 1.0 / (cs.in_levels * cs.w_max * std::sqrt(cs.c * cs.k * cs.k));
    torch::Tensor scale = (torch::rand({cs.o}) * 2 + 0.5) * span;
    scale.index_put_({torch::indexing::Slice(0, torch::indexing::None, 3)},
                     -scale.index({torch::indexing::Slice(0, torch::indexing::None, 3)}));
    const torch::Tensor shift = torch::rand({cs.o}) * 0.6 + 0.2;
    const torch::Tensor y = reference_y(codes, w, scale, shift, {cs.stride}, {cs.pad}, {cs.dil});
    for (Engine e : cpu_engines()) {
      INFO("engine " << wrpn::deploy::to_string(e) << ", case c=" << cs.c << " k=" << cs.k
                     << " levels=" << cs.in_levels);
      const IntegerConv2d conv(w, scale.to(torch::kFloat), shift.to(torch::kFloat), {cs.stride},
                               {cs.pad}, {cs.dil}, 1, DeployOptions().engine(e));
      const torch::Tensor f = conv.forward_float(codes);
      REQUIRE(f.sizes() == y.sizes());
      CHECK(torch::allclose(f.to(torch::kDouble), y, 1e-5, 1e-5));
      const torch::Tensor fr = conv.forward_float(codes, /*relu=*/true);
      CHECK(torch::allclose(fr.to(torch::kDouble), y.clamp_min(0), 1e-5, 1e-5));
      for (int64_t out_levels : {1, 3, 15, 255}) {
        const torch::Tensor q = conv.forward_codes(codes, out_levels);
        REQUIRE(q.scalar_type() == torch::kByte);
        REQUIRE(q.is_contiguous(at::MemoryFormat::ChannelsLast));
        const torch::Tensor ref = reference_codes(y, out_levels);
        const torch::Tensor differ = q.ne(ref) & ~near_tie(y, out_levels);
        CHECK(differ.sum().item<int64_t>() == 0);
        CHECK((q.to(torch::kInt) - ref.to(torch::kInt)).abs().max().item<int64_t>() <= 1);
        // Codes above the level count never appear (the clamp at 1 is fused).
        CHECK(q.max().item<int64_t>() <= out_levels);
      }
    }
  }
}

TEST_CASE("integer conv: requantization rounds exact ties half to even", "[deploy][cpu]") {
  // One input channel, code 1, weight 1, scale 0.5: y = 0.5 exactly, so y * levels is an exact
  // tie for odd levels. Half to even: 0.5 -> 0, 2.5 -> 2, 4.5 -> 4, 1.5 -> 2, 3.5 -> 4.
  const torch::Tensor codes = torch::ones({1, 1, 2, 2}, torch::kByte);
  const torch::Tensor w = torch::ones({1, 1, 1, 1}, torch::kChar);
  const torch::Tensor scale = torch::full({1}, 0.5f), shift = torch::zeros({1});
  for (Engine e : cpu_engines()) {
    const IntegerConv2d conv(w, scale, shift, {1}, {0}, {1}, 1, DeployOptions().engine(e));
    for (auto [levels, want] :
         std::vector<std::pair<int64_t, int64_t>>{{1, 0}, {5, 2}, {9, 4}, {3, 2}, {7, 4}}) {
      INFO("engine " << wrpn::deploy::to_string(e) << ", levels " << levels);
      CHECK(conv.forward_codes(codes, levels).max().item<int64_t>() == want);
      CHECK(conv.forward_codes(codes, levels).min().item<int64_t>() == want);
    }
  }
}

TEST_CASE("integer conv: bad arguments get clear errors", "[deploy][cpu]") {
  const torch::Tensor w = torch::ones({4, 2, 3, 3}, torch::kChar);
  const torch::Tensor s = torch::ones({4}), t = torch::zeros({4});
  CHECK_THROWS_WITH(IntegerConv2d(w.to(torch::kFloat), s, t, {1}, {1}, {1}, 1, {}),
                    Contains("weight_codes must be int8"));
  CHECK_THROWS_WITH(IntegerConv2d(w, torch::ones({3}), t, {1}, {1}, {1}, 1, {}),
                    Contains("scale and shift must be float [4]"));
  CHECK_THROWS_WITH(IntegerConv2d(w * 0 - 128, s, t, {1}, {1}, {1}, 1, {}), Contains("-127..127"));
  CHECK_THROWS_WITH(IntegerConv2d(w, s, t, {0}, {1}, {1}, 1, {}), Contains("stride"));
  CHECK_THROWS_WITH(IntegerConv2d(w, s, t, {1}, {1}, {1}, 3, {}), Contains("groups"));
  CHECK_THROWS_WITH(
      IntegerConv2d(w, s, t, {1}, {1}, {1}, 1, DeployOptions().engine(Engine::kFloat)),
      Contains("float engine"));
  const IntegerConv2d conv(w, s, t, {1}, {1}, {1}, 1, DeployOptions().engine(Engine::kGemm));
  CHECK_THROWS_WITH(conv.forward_codes(torch::zeros({1, 2, 5, 5}), 15), Contains("uint8 codes"));
  CHECK_THROWS_WITH(conv.forward_codes(torch::zeros({1, 3, 5, 5}, torch::kByte), 15),
                    Contains("expected 2 input channels"));
  CHECK_THROWS_WITH(conv.forward_codes(torch::zeros({1, 2, 5, 5}, torch::kByte), 256),
                    Contains("out_levels must be 1..255"));
  CHECK_THROWS_WITH(wrpn::deploy::parse_engine("int4"), Contains("expected auto, onednn"));
  CHECK(wrpn::deploy::parse_engine("onednn") == Engine::kOneDnn);
  if (!torch::cuda::is_available()) {
    CHECK_THROWS_WITH(IntegerConv2d(w, s, t, {1}, {1}, {1}, 1,
                                    DeployOptions().engine(Engine::kOneDnn).device(torch::kCUDA)),
                      Contains("CPU-only"));
  }
}

TEST_CASE("BatchNorm folding against hand-computed values", "[deploy][cpu]") {
  torch::nn::BatchNorm2d bn(torch::nn::BatchNorm2dOptions(2).eps(0.25));
  {
    torch::NoGradGuard g;
    bn->weight.copy_(torch::tensor({2.0f, -0.5f}));
    bn->bias.copy_(torch::tensor({1.0f, 0.25f}));
    bn->running_mean.copy_(torch::tensor({0.5f, -2.0f}));
    bn->running_var.copy_(torch::tensor({3.75f, 0.0f}));
  }
  // scale = gamma / sqrt(var + eps) = {2 / 2, -0.5 / 0.5}; shift = beta - mean * scale.
  auto f = wrpn::deploy::fold_batch_norm(*bn);
  CHECK(torch::equal(f.scale, torch::tensor({1.0f, -1.0f})));
  CHECK(torch::equal(f.shift, torch::tensor({0.5f, -1.75f})));
  f = wrpn::deploy::fold_batch_norm(*bn, torch::tensor({1.0f, 2.0f}));
  CHECK(torch::equal(f.shift, torch::tensor({1.5f, -3.75f})));
  // And it is what eval-mode batch_norm computes.
  bn->eval();
  const torch::Tensor x = torch::randn({3, 2, 4, 4});
  const torch::Tensor folded = x * f.scale.view({1, 2, 1, 1}) +
                               (f.shift - torch::tensor({1.0f, 2.0f}) * f.scale).view({1, 2, 1, 1});
  CHECK(torch::allclose(bn->forward(x), folded, 1e-6, 1e-6));
}

TEST_CASE("epilogue: affine, residual, ReLU and codes against ATen", "[deploy][cpu]") {
  // Through IntegerConv2d's GEMM path with a 1x1 identity conv the epilogue sees exact int32
  // accumulators; here the whole chain is checked through a deployed model's pieces instead:
  // codes of a float tensor equal round(clamp(x, 0, 1) * L), NaN -> 0, exact ties half to even.
  torch::manual_seed(5);
  const torch::Tensor w = torch::eye(6).to(torch::kChar).view({6, 6, 1, 1});
  const torch::Tensor x = torch::randint(0, 256, {2, 6, 5, 5}).to(torch::kByte);
  const torch::Tensor scale = torch::rand({6}) * 0.01f - 0.002f, shift = torch::rand({6}) * 0.5f;
  const IntegerConv2d conv(w, scale, shift, {1}, {0}, {1}, 1,
                           DeployOptions().engine(Engine::kGemm));
  const torch::Tensor y =
      x.to(torch::kFloat) * scale.view({1, -1, 1, 1}) + shift.view({1, -1, 1, 1});
  // fma(a, scale, shift) against a separately rounded product: within one ulp-ish.
  CHECK(torch::allclose(conv.forward_float(x), y, 1e-6, 1e-6));
  const torch::Tensor fused =
      torch::addcmul(shift.view({1, -1, 1, 1}).to(torch::kDouble), x.to(torch::kDouble),
                     scale.view({1, -1, 1, 1}).to(torch::kDouble))
          .to(torch::kFloat);
  CHECK(torch::equal(conv.forward_float(x), fused));
  CHECK(torch::equal(conv.forward_float(x, true), torch::relu(fused)));
  const torch::Tensor codes = conv.forward_codes(x, 15);
  CHECK(torch::equal(codes, torch::round(fused.clamp(0, 1) * 15.0f).to(torch::kByte)));
}

namespace {

ModelSpec spec(const std::string& name, int64_t wb, int64_t ab, double width, bool qres,
               int64_t in_ch = 1) {
  ModelSpec s;
  s.name = name;
  s.num_classes = 10;
  s.in_channels = in_ch;
  s.precision = PrecisionConfig::make(wb, ab, width);
  s.precision.quantized_residual = qres;
  return s;
}

/// A model whose BatchNorms hold the statistics of real-looking activations (one training-mode
/// pass with momentum 1) and random affine parameters of both signs, in eval mode.
Classifier calibrated(const ModelSpec& s, const torch::Tensor& images) {
  Classifier m = wrpn::models::create_model(s);
  torch::NoGradGuard g;
  for (auto& mod : m->modules()) {
    if (auto* bn = mod->as<torch::nn::BatchNorm2dImpl>()) {
      bn->options.momentum(1.0);
      bn->weight.copy_(torch::rand_like(bn->weight) * 1.5 + 0.25);
      // A few negative gammas: the integer conv flips those channels' weight codes.
      bn->weight.index_put_(
          {torch::indexing::Slice(0, torch::indexing::None, 5)},
          -bn->weight.index({torch::indexing::Slice(0, torch::indexing::None, 5)}));
      bn->bias.copy_(torch::rand_like(bn->bias) * 0.6);
    }
  }
  m->train();
  m->forward(images);
  m->eval();
  return m;
}

torch::Tensor images(int64_t n, int64_t ch, int64_t hw) {
  torch::manual_seed(11);
  return torch::rand({n, ch, hw, hw});
}

/// How a deployed model's logits compare with the fake-quantized model's on a batch. Integer
/// sums are exact while the fake-quantized model sums in fp32, so an activation within rounding
/// error of a half step may land on the neighbouring code; such a flip moves the logits of its
/// image, never of the others. A lowering bug moves every image.
struct Agreement {
  int64_t images = 0;
  int64_t top1_differ = 0;
  /// Images whose logits differ by more than 1e-4 of the largest logit.
  int64_t images_moved = 0;
  double max_logit_diff = 0;
  double logit_scale = 0;
};

Agreement compare(const Classifier& m, const wrpn::deploy::IntegerModel& im,
                  const torch::Tensor& x) {
  torch::NoGradGuard g;
  const torch::Tensor ref = m->forward(x);
  const torch::Tensor got = im.forward(x);
  REQUIRE(got.sizes() == ref.sizes());
  Agreement a;
  a.images = ref.size(0);
  a.top1_differ = ref.argmax(1).ne(got.argmax(1)).sum().item<int64_t>();
  a.logit_scale = ref.abs().max().item<double>();
  const torch::Tensor per_image = std::get<0>((ref - got).abs().max(1));
  a.max_logit_diff = per_image.max().item<double>();
  a.images_moved = (per_image > 1e-4 * std::max(1.0, a.logit_scale)).sum().item<int64_t>();
  std::printf("  %lld/%lld images moved, top-1 differs on %lld, max logit diff %.3g (scale %.3g)\n",
              static_cast<long long>(a.images_moved), static_cast<long long>(a.images),
              static_cast<long long>(a.top1_differ), a.max_logit_diff, a.logit_scale);
  return a;
}

/// Tie flips only, and at most one top-1 change. Up to 4-bit activations flips are rare (at most
/// an eighth of the images move); at 8 bits, with 255 levels, most images hold a flip or two,
/// each moving a value by 1/255, so there the logits must stay within 2% of their scale (1.1%
/// measured on an AVX2 CPU without VNNI, 0.6% on an AVX-512 one: oneDNN's kernels differ).
void check_agreement(const Agreement& a, int64_t act_bits = 4) {
  if (act_bits >= 8) {
    CHECK(a.max_logit_diff <= 2e-2 * std::max(1.0, a.logit_scale));
  } else {
    CHECK(a.images_moved * 8 <= a.images);
  }
  CHECK(a.top1_differ <= 1);
}

}  // namespace

TEST_CASE("deployed CIFAR ResNets answer as the fake-quantized model", "[deploy][models]") {
  const torch::Tensor x = images(48, 1, 16);
  struct Case {
    int64_t wb, ab;
    double width;
    bool qres;
  };
  const std::vector<Case> cases = {
      {4, 4, 1, false}, {4, 4, 2, false}, {2, 2, 1, false}, {2, 2, 2, false}, {2, 4, 1, false},
      {4, 2, 1, false}, {4, 4, 1, true},  {2, 2, 2, true},  {1, 4, 1, false}, {8, 8, 1, false}};
  for (const auto& c : cases) {
    const Classifier m = calibrated(spec("resnet20", c.wb, c.ab, c.width, c.qres), x);
    for (Engine e : cpu_engines()) {
      INFO("w" << c.wb << "a" << c.ab << " width " << c.width << (c.qres ? " quantized" : " fp32")
               << " residual, engine " << wrpn::deploy::to_string(e));
      const auto im = wrpn::deploy::deploy(*m, DeployOptions().engine(e));
      CHECK(im.engine() == e);
      // Every conv but the fp32 stem is integer; the FC is fp32.
      CHECK(im.integer_layers() == static_cast<int64_t>(im.layers().size()) - 2);
      check_agreement(compare(m, im, x), c.ab);
      CHECK(im.weight_bytes() < im.fp32_weight_bytes() / 2);
    }
  }
}

TEST_CASE("deploy: quantized first and last layers, ImageNet stem and bottlenecks",
          "[deploy][models]") {
  const torch::Tensor x = images(16, 3, 32);
  ModelSpec s = spec("resnet20", 4, 4, 1, false, 3);
  s.precision.fp32_first_layer = false;
  s.precision.fp32_last_layer = false;
  for (const ModelSpec& sp :
       {s, spec("resnet18", 4, 4, 0.25, false, 3), spec("resnet50", 2, 4, 0.125, true, 3)}) {
    INFO(sp.name << " first fp32 " << sp.precision.fp32_first_layer);
    const Classifier m = calibrated(sp, x);
    const auto im = wrpn::deploy::deploy(*m);
    check_agreement(compare(m, im, x));
  }
  // With a quantized first layer the stem conv is integer too.
  const auto im = wrpn::deploy::deploy(*calibrated(s, x));
  CHECK(im.layers().front().integer);
  CHECK_FALSE(im.layers().back().integer);
}

TEST_CASE("deploy: 16-bit and fixed-point layers take the fp32 path, and say so",
          "[deploy][models]") {
  const torch::Tensor x = images(16, 1, 16);
  ModelSpec s = spec("resnet20", 4, 4, 1, false);
  s.precision.overrides["layer2.1.conv1"] = 16;
  s.precision.overrides["layer3.0.act1"] = 12;
  const Classifier m = calibrated(s, x);
  const auto im = wrpn::deploy::deploy(*m);
  int64_t float_convs = 0;
  for (const auto& l : im.layers()) {
    if (l.name == "layer2.1.conv1") {
      CHECK_FALSE(l.integer);
      CHECK_THAT(l.reason, Contains("16-bit weights"));
    }
    if (l.name == "layer3.0.conv2") {
      CHECK_FALSE(l.integer);
      CHECK_THAT(l.reason, Contains("12-bit activations"));
    }
    if (!l.integer) ++float_convs;
  }
  CHECK(float_convs == 4);  // stem, the two above, fc
  CHECK_THAT(im.summary(), Contains("layer2.1.conv1 (16-bit weights"));
  check_agreement(compare(m, im, x));
  Agreement a;

  ModelSpec f = spec("resnet20", 8, 8, 1, false);
  f.precision.scheme = "fixed";
  const Classifier mf = calibrated(f, x);
  const auto imf = wrpn::deploy::deploy(*mf);
  CHECK(imf.integer_layers() == 0);
  CHECK_THAT(imf.layers()[1].reason, Contains("fixed-point"));
  a = compare(mf, imf, x);
  CHECK(a.top1_differ == 0);
  CHECK(a.max_logit_diff <= 1e-4 * std::max(1.0, a.logit_scale));

  // The float engine runs everything in fp32 and answers as the model does.
  const Classifier m4 = calibrated(spec("resnet20", 4, 4, 1, false), x);
  const auto fl = wrpn::deploy::deploy(*m4, DeployOptions().engine(Engine::kFloat));
  CHECK(fl.integer_layers() == 0);
  a = compare(m4, fl, x);
  // Folded BatchNorm reassociates fp32 sums, which can flip a 4-bit quantizer tie (a value moves
  // by 1/15): on an AVX-512 CPU the logits matched to 1e-4, on an AVX2 one 8 of 16 images moved,
  // by at most 4.7% of the logit scale, with the same top-1 answers.
  CHECK(a.top1_differ == 0);
  CHECK(a.max_logit_diff <= 0.1 * std::max(1.0, a.logit_scale));
}

TEST_CASE("deploy: packed export round trip", "[deploy][models]") {
  const torch::Tensor x = images(16, 1, 16);
  const Classifier m = calibrated(spec("resnet20", 2, 4, 2, false), x);
  char dir[] = "/tmp/wrpn_deploy_XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  const std::string path = std::string(dir) + "/model.wrpnpack";
  wrpn::models::export_packed(path, *m);
  const auto a = wrpn::deploy::deploy(*m);
  const auto b = wrpn::deploy::deploy_packed(path);
  torch::NoGradGuard g;
  CHECK(torch::equal(a.forward(x), b.forward(x)));
  std::remove(path.c_str());
  rmdir(dir);
}

TEST_CASE("deploy: bad input gets clear errors", "[deploy][models]") {
  const torch::Tensor x = images(4, 1, 16);
  const Classifier m = calibrated(spec("resnet20", 4, 4, 1, false), x);
  const auto im = wrpn::deploy::deploy(*m);
  CHECK_THROWS_WITH(im.forward(torch::rand({4, 3, 16, 16})),
                    Contains("expected images [N, 1, H, W]"));
  CHECK_THROWS_WITH(im.forward(torch::rand({4, 1, 16})), Contains("expected images"));
  CHECK_THROWS_WITH(im.forward(x.to(torch::kDouble)), Contains("expected float32 images"));
  CHECK_THROWS_WITH(wrpn::deploy::IntegerModel().forward(x), Contains("empty"));

  struct Other : wrpn::models::ClassifierImpl {
    Other() : ClassifierImpl(::spec("resnet20", 4, 4, 1, false)) {}
    torch::Tensor forward(torch::Tensor t) override { return t; }
  };
  Other other;
  CHECK_THROWS_WITH(wrpn::deploy::deploy(other), Contains("supports the zoo's ResNets"));
  CHECK_THROWS_WITH(wrpn::deploy::deploy(*m, DeployOptions().device(torch::Device("meta"))),
                    Contains("CPU or CUDA"));
}

TEST_CASE("deploy on CUDA: the GEMM engine against the CPU", "[deploy][cuda]") {
  if (!torch::cuda::is_available()) {
    std::printf("WRPN_SKIP: no CUDA device\n");
    return;
  }
  const torch::Tensor x = images(32, 1, 16);
  const Classifier m = calibrated(spec("resnet20", 4, 4, 2, false), x);
  const auto cpu = wrpn::deploy::deploy(*m, DeployOptions().engine(Engine::kGemm));
  const auto gpu = wrpn::deploy::deploy(*m, DeployOptions().device(torch::kCUDA));
  CHECK(gpu.engine() == Engine::kGemm);
  torch::NoGradGuard g;
  const torch::Tensor a = cpu.forward(x), b = gpu.forward(x.cuda()).cpu();
  // The integer sums and the epilogue are the same arithmetic on both devices; the fp32 stem
  // (oneDNN against cuDNN) may move a value across a rounding tie, which moves one image.
  CHECK(a.argmax(1).ne(b.argmax(1)).sum().item<int64_t>() <= 1);
  const torch::Tensor per_image = std::get<0>((a - b).abs().max(1));
  CHECK((per_image > 1e-4 * std::max(1.0, a.abs().max().item<double>())).sum().item<int64_t>() *
            8 <=
        a.size(0));
}
