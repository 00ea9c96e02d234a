// Saved activations as packed k-bit codes: the packing against hand-built bit streams, round
// trips, refusals, exact memory accounting on hand-computed layers, and training steps that are
// bit-identical with packing on and off across bit widths, residual modes and fixed point.

#include <torch/torch.h>
#include <wrpn/models/registry.h>
#include <wrpn/nn/quant_conv.h>
#include <wrpn/nn/quant_linear.h>
#include <wrpn/nn/saved_codes.h>
#include <wrpn/ops.h>
#include <wrpn/util/memory.h>

#include <catch2/catch.hpp>
#include <optional>

namespace {

using wrpn::nn::pack_codes;
using wrpn::nn::Quantizer;
using wrpn::nn::unpack_codes;

/// Equal bit for bit (signed zeros and NaN payloads included).
bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  const auto as_int = [](const torch::Tensor& t) {
    const auto c = t.contiguous();
    switch (c.element_size()) {
      case 8:
        return c.view(torch::kLong);
      case 4:
        return c.view(torch::kInt);
      default:
        return c.view(torch::kShort);
    }
  };
  return torch::equal(as_int(a), as_int(b));
}

/// A WRPN k-bit activation of the given shape and dtype, drawn so every level and both clip
/// bounds occur.
torch::Tensor activation(std::vector<int64_t> sizes, int64_t k, torch::Dtype dt = torch::kFloat) {
  auto x = (torch::rand(sizes, torch::kDouble) * 1.2 - 0.1).to(dt);
  return wrpn::quantize_activation(x, k);
}

/// The stream bit by bit, as the spec defines it.
std::vector<uint8_t> reference_stream(const std::vector<uint32_t>& codes, int k) {
  const int64_t nbits = static_cast<int64_t>(codes.size()) * k;
  std::vector<uint8_t> bytes((nbits + 7) / 8, 0);
  for (int64_t bit = 0; bit < nbits; ++bit) {
    const uint32_t v = (codes[bit / k] >> (bit % k)) & 1u;
    bytes[bit / 8] |= static_cast<uint8_t>(v << (bit % 8));
  }
  return bytes;
}

}  // namespace

TEST_CASE("packed codes: the bit stream of the spec, bit by bit", "[nn][codes]") {
  for (const int k : {1, 3, 5, 8, 12, 16}) {
    for (const int64_t n : {1, 7, 8, 9, 11, 64, 67}) {
      INFO("k " << k << " n " << n);
      const double s = static_cast<double>((int64_t{1} << k) - 1);
      std::vector<uint32_t> codes(n);
      std::vector<float> values(n);
      for (int64_t i = 0; i < n; ++i) {
        codes[i] = static_cast<uint32_t>((i * 2654435761u + 17u) % (uint32_t{1} << k));
        values[i] = static_cast<float>(codes[i] / s);
      }
      const auto x = torch::tensor(values);
      const auto p = pack_codes(x, Quantizer::wrpn(k));
      REQUIRE(p.has_value());
      const auto ref = reference_stream(codes, k);
      REQUIRE(p->bytes.numel() == static_cast<int64_t>(ref.size()));
      const auto* got = p->bytes.data_ptr<uint8_t>();
      CHECK(std::vector<uint8_t>(got, got + ref.size()) == ref);
      CHECK(same_bits(unpack_codes(*p), x));
    }
  }
}

TEST_CASE("packed codes round-trip every width, dtype, odd size and layout", "[nn][codes]") {
  torch::manual_seed(3);
  for (int64_t k = 1; k <= 16; ++k) {
    for (const auto dt : {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16}) {
      for (const int64_t n : {0, 1, 7, 9, 63, 65, 1000}) {
        INFO("k " << k << " dtype " << dt << " n " << n);
        const auto x = activation({n}, k, dt);
        const auto p = pack_codes(x, Quantizer::wrpn(k));
        REQUIRE(p.has_value());
        CHECK(p->bytes.numel() == (n * k + 7) / 8);
        CHECK(same_bits(unpack_codes(*p), x));
      }
    }
    // A non-contiguous view packs in its logical order.
    const auto t = activation({6, 5, 7}, k).transpose(0, 2);
    REQUIRE_FALSE(t.is_contiguous());
    const auto p = pack_codes(t, Quantizer::wrpn(k));
    REQUIRE(p.has_value());
    CHECK(same_bits(unpack_codes(*p), t.contiguous()));
  }
}

TEST_CASE("packed codes: fixed point as signed codes, and what cannot be packed", "[nn][codes]") {
  wrpn::FixedPointFormat q44;
  q44.total_bits = 8;
  q44.frac_bits = 4;
  auto r = torch::arange(-127, 128, torch::kFloat);
  const auto x = r / 16.0f;
  const auto p = pack_codes(x, Quantizer::fixed(q44));
  REQUIRE(p.has_value());
  CHECK(p->is_signed);
  CHECK(p->bits == 8);
  CHECK(same_bits(unpack_codes(*p), x));

  const auto a = activation({100}, 4);
  SECTION("a value off the grid, a NaN, a value past the clip bound") {
    for (const float bad : {0.5f, std::nanf(""), 2.0f, -1.0f / 15.0f}) {
      auto b = a.clone();
      b[37] = bad;
      INFO("value " << bad);
      CHECK_FALSE(pack_codes(b, Quantizer::wrpn(4)).has_value());
    }
    auto neg_zero = a.clone();
    neg_zero[3] = -0.0f;  // -0 would come back +0: not bit-identical, so not packed
    CHECK_FALSE(pack_codes(neg_zero, Quantizer::wrpn(4)).has_value());
  }
  SECTION("quantizers that do not pack") {
    CHECK_FALSE(wrpn::nn::can_pack(Quantizer::full_precision()));
    CHECK_FALSE(pack_codes(a, Quantizer::full_precision()).has_value());
    wrpn::FixedPointFormat wide;
    wide.total_bits = 20;
    wide.frac_bits = 12;
    CHECK_FALSE(wrpn::nn::can_pack(Quantizer::fixed(wide)));
    CHECK(wrpn::nn::can_pack(Quantizer::wrpn(16)));
  }
  SECTION("bad arguments") {
    CHECK_THROWS_WITH(pack_codes(torch::ones({4}, torch::kInt), Quantizer::wrpn(4)),
                      Catch::Contains("floating-point"));
    auto q = *pack_codes(a, Quantizer::wrpn(4));
    q.bytes = q.bytes.slice(0, 0, 10);
    CHECK_THROWS_WITH(unpack_codes(q), Catch::Contains("expected 50 packed bytes"));
  }
}

TEST_CASE("what a graph holds, counted: codes instead of the input, saved once for two convs",
          "[nn][codes][memory]") {
  // A 2x3x5x5 input through a 4-bit activation quantizer into 3->4-channel 3x3 convs with fp32
  // weights and no bias: after the forward the graph holds the quantizer's 1-bit mask
  // (ceil(150 / 8) = 19 bytes), the codes (150 * 4 / 8 = 75 bytes) or the float input
  // (600 bytes), and the outputs (2x4x5x5 floats, 800 bytes each).
  auto conv = [](bool pack) {
    return wrpn::nn::QuantConv2d(wrpn::nn::QuantConv2dOptions(3, 4, 3)
                                     .padding(1)
                                     .bias(false)
                                     .weight_bits(32)
                                     .input_bits(4)
                                     .pack_saved_input(pack));
  };
  const auto leaf = torch::randn({2, 3, 5, 5}).requires_grad_(true);
  for (const bool pack : {true, false}) {
    for (const int n_convs : {1, 2}) {
      INFO("pack " << pack << " convs " << n_convs);
      auto c1 = conv(pack), c2 = conv(pack);
      torch::Tensor y1, y2;
      int64_t held = 0;
      {
        wrpn::util::CpuMemoryCounter counter;
        const int64_t before = counter.live_bytes();
        {
          const auto x = wrpn::quantize_activation(leaf, 4);
          y1 = c1->forward(x);
          if (n_convs == 2) y2 = c2->forward(x);
        }
        held = counter.live_bytes() - before;
      }
      const int64_t expected = 19 + (pack ? 75 : 600) + 800 * n_convs;
      CHECK(held == expected);
      // And the backward still works from what was kept.
      auto loss = y1.sum() + (n_convs == 2 ? y2.sum() : torch::zeros({}));
      loss.backward();
      CHECK(leaf.grad().defined());
      leaf.mutable_grad().reset();
    }
  }
}

TEST_CASE("a packed layer refuses double backward with a clear error", "[nn][codes]") {
  auto c = wrpn::nn::QuantConv2d(wrpn::nn::QuantConv2dOptions(2, 2, 3).input_bits(4));
  const auto x = wrpn::quantize_activation(torch::rand({1, 2, 4, 4}).requires_grad_(true), 4);
  const auto y = c->forward(x).sum();
  CHECK_THROWS_WITH(torch::autograd::grad({y}, {c->weight}, {}, true, /*create_graph=*/true),
                    Catch::Contains("cannot be differentiated twice"));
}

namespace {

/// Gradients of every step and the final parameters and buffers of `steps` SGD steps.
struct Trace {
  std::vector<torch::Tensor> tensors;
  int64_t held = 0;  ///< bytes the first step's graph held after its forward
};

Trace train_steps(const wrpn::PrecisionConfig& precision, const std::string& model, bool pack,
                  int steps, int64_t image, bool recompute = false) {
  torch::manual_seed(11);
  wrpn::models::ModelSpec spec;
  spec.name = model;
  spec.num_classes = 10;
  spec.in_channels = 3;
  spec.precision = precision;
  spec.init = wrpn::nn::weight_init_from_string("quant_aware");
  auto m = wrpn::models::create_model(spec);
  wrpn::nn::set_pack_saved_inputs(*m, pack);
  wrpn::nn::set_recompute_bn_inputs(*m, recompute);
  m->train();
  torch::optim::SGD opt(m->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  Trace t;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  for (int s = 0; s < steps; ++s) {
    const auto x = torch::randn({4, 3, image, image}, gen, torch::kFloat);
    const auto y = torch::randint(0, 10, {4}, gen, torch::kLong);
    opt.zero_grad();
    torch::Tensor loss;
    {
      wrpn::util::CpuMemoryCounter counter;
      const int64_t before = counter.live_bytes();
      loss = torch::nn::functional::cross_entropy(m->forward(x), y);
      if (s == 0) t.held = counter.live_bytes() - before;
    }
    loss.backward();
    for (const auto& p : m->parameters()) t.tensors.push_back(p.grad().clone());
    opt.step();
  }
  for (const auto& p : m->parameters()) t.tensors.push_back(p.detach().clone());
  for (const auto& b : m->buffers()) t.tensors.push_back(b.clone());
  return t;
}

void check_identical(const wrpn::PrecisionConfig& p, const std::string& model, int64_t image) {
  const auto on = train_steps(p, model, true, 3, image);
  const auto off = train_steps(p, model, false, 3, image);
  REQUIRE(on.tensors.size() == off.tensors.size());
  int64_t differ = 0;
  for (size_t i = 0; i < on.tensors.size(); ++i)
    differ += !same_bits(on.tensors[i], off.tensors[i]);
  CHECK(differ == 0);
  // And the codes were used: the graph held less.
  CHECK(on.held < off.held);
}

}  // namespace

TEST_CASE("training steps are bit-identical with packed codes, every activation width",
          "[nn][codes][models]") {
  for (const bool residual : {false, true}) {
    for (int64_t k = 1; k <= 16; ++k) {
      INFO("act bits " << k << " quantized_residual " << residual);
      auto p = wrpn::PrecisionConfig::make(4, k, 1.0);
      p.quantized_residual = residual;
      check_identical(p, "resnet20", 12);
    }
  }
}

TEST_CASE("bit-identical with packed codes: fixed point, 2x width, shared inputs, a packed FC",
          "[nn][codes][models]") {
  SECTION("fixed-point activations (8 and 16 bits pack)") {
    for (const int64_t bits : {8, 16}) {
      INFO("fixed " << bits);
      auto p = wrpn::PrecisionConfig::make(bits, bits, 1.0);
      p.scheme = "fixed";
      check_identical(p, "resnet20", 12);
    }
  }
  SECTION("2x width, 2/2 bits, a quantized last layer") {
    auto p = wrpn::PrecisionConfig::make(2, 2, 2.0);
    p.fp32_last_layer = false;
    check_identical(p, "resnet20", 12);
  }
  SECTION("projection shortcuts: one activation feeds conv1 and downsample.0") {
    check_identical(wrpn::PrecisionConfig::make(4, 4, 0.25), "resnet18_small", 8);
  }
}

TEST_CASE("a QuantLinear reading a k-bit activation: the same gradients from its codes",
          "[nn][codes]") {
  for (const int64_t k : {1, 2, 4, 8, 16}) {
    for (const bool bias : {true, false}) {
      INFO("bits " << k << " bias " << bias);
      std::vector<torch::Tensor> got[2];
      for (const bool pack : {true, false}) {
        torch::manual_seed(21);
        auto fc = wrpn::nn::QuantLinear(wrpn::nn::QuantLinearOptions(37, 5)
                                            .bias(bias)
                                            .weight_bits(4)
                                            .input_bits(k)
                                            .pack_saved_input(pack));
        const auto leaf = torch::randn({6, 37}).requires_grad_(true);
        const auto y = fc->forward(wrpn::quantize_activation(leaf, k));
        (y * torch::linspace(-1, 1, 5)).sum().backward();
        got[pack] = {y.detach(), leaf.grad(), fc->weight.grad()};
        if (bias) got[pack].push_back(fc->bias.grad());
      }
      for (size_t i = 0; i < got[0].size(); ++i) CHECK(same_bits(got[0][i], got[1][i]));
    }
  }
}

TEST_CASE("recomputing the BatchNorm input from the codes: the same steps, less held",
          "[nn][codes][models]") {
  struct Case {
    std::string model;
    wrpn::PrecisionConfig p;
    int64_t image;
  };
  auto residual = wrpn::PrecisionConfig::make(4, 4, 1.0);
  residual.quantized_residual = true;
  const std::vector<Case> cases = {{"resnet20", wrpn::PrecisionConfig::make(4, 4, 1.0), 12},
                                   {"resnet20", wrpn::PrecisionConfig::make(2, 2, 2.0), 12},
                                   {"resnet20", residual, 12},
                                   {"resnet50_small", wrpn::PrecisionConfig::make(4, 4, 0.25), 8}};
  for (const auto& c : cases) {
    INFO(c.model << " " << c.p.to_json(-1));
    const auto plain = train_steps(c.p, c.model, true, 3, c.image, false);
    const auto rec = train_steps(c.p, c.model, true, 3, c.image, true);
    REQUIRE(plain.tensors.size() == rec.tensors.size());
    int64_t differ = 0;
    for (size_t i = 0; i < rec.tensors.size(); ++i) {
      differ += !same_bits(plain.tensors[i], rec.tensors[i]);
    }
    CHECK(differ == 0);  // gradients, weights and BatchNorm buffers
    CHECK(rec.held < plain.held);
  }
}

TEST_CASE("packed codes on CUDA: the CPU's bytes, the same rebuilt tensor and gradients",
          "[cuda][codes]") {
  if (!torch::cuda::is_available()) {
    WARN("WRPN_SKIP: no CUDA device");
    return;
  }
  for (int64_t k = 1; k <= 16; ++k) {
    for (const int64_t n : {1, 9, 1000, 100003}) {
      INFO("k " << k << " n " << n);
      const auto x = activation({n}, k);
      const auto cpu = pack_codes(x, Quantizer::wrpn(k));
      const auto gpu = pack_codes(x.cuda(), Quantizer::wrpn(k));
      REQUIRE(cpu.has_value());
      REQUIRE(gpu.has_value());
      CHECK(torch::equal(cpu->bytes, gpu->bytes.cpu()));
      CHECK(same_bits(unpack_codes(*gpu).cpu(), x));
    }
  }
  // A packed conv step on CUDA against the same step on the CPU.
  torch::manual_seed(4);
  auto c = wrpn::nn::QuantConv2d(wrpn::nn::QuantConv2dOptions(3, 5, 3).padding(1).input_bits(4));
  const auto leaf = torch::randn({2, 3, 6, 6});
  std::vector<torch::Tensor> grads[2];
  for (const bool cuda : {false, true}) {
    auto m = std::dynamic_pointer_cast<wrpn::nn::QuantConv2dImpl>(c->clone());
    if (cuda) m->to(torch::kCUDA);
    auto l = (cuda ? leaf.cuda() : leaf).requires_grad_(true);
    m->forward(wrpn::quantize_activation(l, 4)).sum().backward();
    grads[cuda] = {l.grad().cpu(), m->weight.grad().cpu()};
  }
  for (size_t i = 0; i < 2; ++i) CHECK(torch::allclose(grads[0][i], grads[1][i], 1e-4, 1e-5));
}
