// CUDA tests of the quantizer ops: every result must equal the CPU op and the plain-ATen
// reference bit for bit (spec.md, "Quantizers"). Without a GPU every case reports WRPN_SKIP.

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>
#include <wrpn/wrpn.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "quant_reference.h"

#define WRPN_REQUIRE_CUDA_OR_SKIP()                          \
  do {                                                       \
    if (!torch::cuda::is_available()) {                      \
      std::cout << "WRPN_SKIP: no CUDA device" << std::endl; \
      return;                                                \
    }                                                        \
  } while (0)

namespace {

using Catch::Contains;
using wrpn_test::bit_mismatch;
using wrpn_test::float_dtypes;
using wrpn_test::forward;
using wrpn_test::forward_with_mask;
using wrpn_test::make_grad;
using wrpn_test::make_input;
using wrpn_test::mask_mismatch;
using wrpn_test::op_label;
using wrpn_test::poison_output_memory;
using wrpn_test::ref_masked_grad;
using wrpn_test::reference;
using wrpn_test::reference_pass;
using wrpn_test::Values;
using wrpn_test::values_for;

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::nan("");

at::Tensor vals(const std::vector<double>& v, at::ScalarType st) {
  return torch::tensor(v, torch::kDouble).to(st);
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

/// `x` is a CUDA tensor holding the values of the CPU tensor `x_cpu` (any layout or offset); `g` a
/// CUDA incoming gradient of the same shape. Values, masks, _masked_grad and autograd gradients
/// on the GPU must equal the CPU op and the reference bit for bit.
void check_cuda(const at::Tensor& x_cpu, const at::Tensor& x, const at::Tensor& g, int64_t bits,
                bool weight) {
  REQUIRE(x.is_cuda());
  REQUIRE(g.is_cuda());
  const at::Tensor g_cpu = g.cpu();
  const at::Tensor want = reference(weight, x_cpu, bits);
  const at::Tensor pass = reference_pass(weight, x_cpu);
  auto [q_cpu, mask_cpu] = forward_with_mask(weight, x_cpu, bits);
  poison_output_memory(x);
  auto [q, mask] = forward_with_mask(weight, x, bits);
  REQUIRE(q.device() == x.device());
  REQUIRE(mask.device() == x.device());
  REQUIRE(bit_mismatch(q, q_cpu) == "");
  REQUIRE(bit_mismatch(q, want) == "");
  REQUIRE(bit_mismatch(mask, mask_cpu) == "");
  REQUIRE(mask_mismatch(mask, pass) == "");
  poison_output_memory(x);
  REQUIRE(bit_mismatch(forward(weight, x, bits), want) == "");

  const at::Tensor want_grad = ref_masked_grad(g_cpu, pass);
  poison_output_memory(x);
  const at::Tensor grad = wrpn::masked_grad(g, mask);
  REQUIRE(grad.device() == x.device());
  REQUIRE(bit_mismatch(grad, wrpn::masked_grad(g_cpu, mask_cpu)) == "");
  REQUIRE(bit_mismatch(grad, want_grad) == "");

  at::Tensor leaf = x.detach();
  leaf.requires_grad_(true);
  forward(weight, leaf, bits).backward(g);
  REQUIRE(leaf.grad().device() == x.device());
  REQUIRE(bit_mismatch(leaf.grad(), want_grad) == "");
}

struct Config {
  bool weight;
  int64_t bits;
};

const std::vector<Config>& configs() {
  static const std::vector<Config> kAll = {{true, 1},  {true, 2},  {true, 4},  {true, 16},
                                           {false, 1}, {false, 4}, {false, 16}};
  return kAll;
}

const std::vector<int64_t>& odd_sizes() {
  static const std::vector<int64_t> kAll = {1,  7,  8,  9,   15,  16,  17,   31,   32,    33,
                                            63, 64, 65, 127, 128, 129, 1000, 4097, 65537, 1000003};
  return kAll;
}

}  // namespace

TEST_CASE("cuda: values, masks and gradients equal the CPU bit for bit at odd sizes", "[cuda]") {
  WRPN_REQUIRE_CUDA_OR_SKIP();
  for (const auto st : float_dtypes()) {
    for (const int64_t n : odd_sizes()) {
      for (const auto& c : configs()) {
        INFO("dtype " << st << ", n " << n << ", " << op_label(c.weight) << ", bits " << c.bits);
        const uint64_t seed = static_cast<uint64_t>(n * 131 + c.bits * 7 + (c.weight ? 1 : 0));
        const at::Tensor x = make_input(n, st, seed, values_for(c.weight, c.bits));
        const at::Tensor g = make_grad({n}, st, seed + 1).cuda();
        REQUIRE(aligned16(x.cuda()));
        check_cuda(x, x.cuda(), g, c.bits, c.weight);
      }
    }
  }
}

TEST_CASE("cuda: misaligned views take the scalar path and give the same bits", "[cuda]") {
  WRPN_REQUIRE_CUDA_OR_SKIP();
  for (const auto st : float_dtypes()) {
    for (const int64_t n : {1, 8, 9, 64, 65, 1000, 4097, 65537}) {
      for (const int64_t offset : {1, 3}) {
        for (const auto& c : configs()) {
          INFO("dtype " << st << ", n " << n << ", offset " << offset << ", " << op_label(c.weight)
                        << ", bits " << c.bits);
          const uint64_t seed = static_cast<uint64_t>(n * 17 + offset + c.bits);
          const at::Tensor base = make_input(n + offset, st, seed, values_for(c.weight, c.bits));
          const at::Tensor x = base.cuda().narrow(0, offset, n);
          const at::Tensor g = make_grad({n + offset}, st, seed + 1).cuda().narrow(0, offset, n);
          REQUIRE(x.is_contiguous());
          REQUIRE(!aligned16(x));
          REQUIRE(!aligned16(g));
          check_cuda(base.narrow(0, offset, n), x, g, c.bits, c.weight);
        }
      }
    }
  }
}

TEST_CASE("cuda: non-contiguous inputs and gradients", "[cuda]") {
  WRPN_REQUIRE_CUDA_OR_SKIP();
  using View = std::function<at::Tensor(const at::Tensor&)>;
  const std::vector<std::pair<const char*, View>> views = {
      {"transposed",
       [](const at::Tensor& t) {
         return t.reshape({37, 53}).t();
       }},
      {"sliced with step 3", [](const at::Tensor& t) { return t.slice(0, 0, t.size(0), 3); }},
      {"column slice",
       [](const at::Tensor& t) {
         return t.reshape({37, 53}).narrow(1, 3, 33);
       }},
      {"expanded",
       [](const at::Tensor& t) {
         return t.narrow(0, 0, 50).reshape({1, 50}).expand({7, 50});
       }},
  };
  for (const auto st : float_dtypes()) {
    for (const auto& c : configs()) {
      const at::Tensor base = make_input(37 * 53, st, 7, values_for(c.weight, c.bits));
      const at::Tensor base_cuda = base.cuda();
      for (const auto& [name, view] : views) {
        INFO("dtype " << st << ", " << name << ", " << op_label(c.weight) << ", bits " << c.bits);
        const at::Tensor x_cpu = view(base);
        const at::Tensor x = view(base_cuda);
        REQUIRE(!x.is_contiguous());
        const at::Tensor g = make_grad(x_cpu.sizes(), st, 22).cuda();
        check_cuda(x_cpu, x, g, c.bits, c.weight);

        // q.sum() sends an expanded (stride 0) gradient into the backward.
        at::Tensor leaf = x.detach().clone().requires_grad_(true);
        forward(c.weight, leaf, c.bits).sum().backward();
        REQUIRE(bit_mismatch(leaf.grad(), reference_pass(c.weight, x_cpu).to(st)) == "");

        const at::Tensor gt = make_grad({x_cpu.size(1), x_cpu.size(0)}, st, 23).t();
        at::Tensor leaf2 = x.detach().clone().requires_grad_(true);
        forward(c.weight, leaf2, c.bits).backward(gt.cuda());
        REQUIRE(bit_mismatch(leaf2.grad(), ref_masked_grad(gt, reference_pass(c.weight, x_cpu))) ==
                "");
      }
    }
  }
}

TEST_CASE("cuda: hand values, ties, clip bounds, NaN and infinities", "[cuda]") {
  WRPN_REQUIRE_CUDA_OR_SKIP();
  for (const auto st : float_dtypes()) {
    const double eps = wrpn_test::dtype_eps(st);
    const double tiny = wrpn_test::dtype_denorm_min(st);
    INFO("dtype " << st);
    const at::Tensor w2 = vals({-2, -1, -0.75, -0.5, -0.25, -0.0, 0, 0.25, 0.5, 0.75, 1, 2}, st);
    REQUIRE(bit_mismatch(wrpn::quantize_weight(w2.cuda(), 2),
                         vals({-1, -1, -1, -0.0, -0.0, -0.0, 0, 0, 0, 1, 1, 1}, st)) == "");
    REQUIRE(bit_mismatch(wrpn::quantize_activation(vals({0.49, 0.5, 0.51}, st).cuda(), 1),
                         vals({0, 0, 1}, st)) == "");

    const at::Tensor w = vals({-1, 1, 1 + eps, -1 - eps, 2, -2, kNaN, kInf, -kInf, 0.25}, st);
    const at::Tensor x = vals({0, 1, 1 + eps, -tiny, 2, -5, kNaN, kInf, -kInf, 0.25, -0.0}, st);
    for (const int64_t bits : {1, 2, 4, 8, 16}) {
      INFO("bits " << bits);
      if (bits > 1) {
        auto [q, mask] = wrpn::quantize_weight_with_mask(w.cuda(), bits);
        REQUIRE(bit_mismatch(q.narrow(0, 0, 6), vals({-1, 1, 1, -1, 1, -1}, st)) == "");
        REQUIRE(q[6].isnan().item<bool>());
        REQUIRE(bit_mismatch(q.narrow(0, 7, 2), vals({1, -1}, st)) == "");
        REQUIRE(mask_mismatch(mask, wrpn_test::ref_weight_pass(w)) == "");
        check_cuda(w, w.cuda(), make_grad({10}, st, 5).cuda(), bits, true);
      }
      auto [qa, ma] = wrpn::quantize_activation_with_mask(x.cuda(), bits);
      REQUIRE(bit_mismatch(qa.narrow(0, 0, 6), vals({0, 1, 1, 0, 1, 0}, st)) == "");
      REQUIRE(qa[6].isnan().item<bool>());
      REQUIRE(bit_mismatch(qa.narrow(0, 7, 2), vals({1, 0}, st)) == "");
      REQUIRE(qa[10].item<double>() == 0.0);
      REQUIRE(mask_mismatch(ma, wrpn_test::ref_activation_pass(x)) == "");
      check_cuda(x, x.cuda(), make_grad({11}, st, 6).cuda(), bits, false);
    }
  }
}

TEST_CASE("cuda: binary weights are +-mean|w| as on the CPU", "[cuda]") {
  WRPN_REQUIRE_CUDA_OR_SKIP();
  for (const auto st : float_dtypes()) {
    INFO("dtype " << st);
    const double a = 1.0625;
    const at::Tensor w = vals({-2, -0.5, 0, -0.0, 0.5, 1, 3, -1.5}, st);
    auto [q, mask] = wrpn::quantize_weight_with_mask(w.cuda(), 1);
    REQUIRE(bit_mismatch(q, vals({-a, -a, a, a, a, a, a, -a}, st)) == "");
    REQUIRE(mask_mismatch(mask, torch::tensor({0, 1, 1, 1, 1, 1, 0, 0}).to(at::kBool)) == "");
    const double a7 = st == at::kDouble ? 7.0 / 6.0 : static_cast<float>(7.0 / 6.0);
    REQUIRE(bit_mismatch(wrpn::quantize_weight(vals({-2, -0.5, 0, 0.5, 1, 3}, st).cuda(), 1),
                         vals({-a7, -a7, a7, a7, a7, a7}, st)) == "");
    const at::Tensor wi = vals({kInf, -0.5, 0.5, -kInf}, st);
    check_cuda(wi, wi.cuda(), make_grad({4}, st, 3).cuda(), 1, true);
    const at::Tensor big = make_input(1 << 20, st, 99, Values::kBinary);
    check_cuda(big, big.cuda(), make_grad({1 << 20}, st, 98).cuda(), 1, true);
  }
}

TEST_CASE("cuda: every bit width", "[cuda]") {
  WRPN_REQUIRE_CUDA_OR_SKIP();
  for (const auto st : float_dtypes()) {
    for (const bool weight : {true, false}) {
      for (int64_t bits = 1; bits <= 16; ++bits) {
        INFO("dtype " << st << ", " << op_label(weight) << ", bits " << bits);
        const at::Tensor x = make_input(1029, st, 300 + bits, values_for(weight, bits));
        check_cuda(x, x.cuda(), make_grad({1029}, st, 400 + bits).cuda(), bits, weight);
      }
    }
  }
}

TEST_CASE("cuda: a tensor larger than one pass of the grid", "[cuda]") {
  WRPN_REQUIRE_CUDA_OR_SKIP();
  // 2^21 groups of 8 elements: more than the grid's threads on any current GPU, so the
  // grid-stride loop takes several passes.
  const int64_t n = (int64_t{1} << 24) + 5;
  at::Generator gen = at::detail::createCPUGenerator(71);
  const std::vector<std::pair<bool, int64_t>> cases = {{true, 2}, {false, 4}};
  for (const auto st : {at::kFloat, at::kHalf}) {
    const at::Tensor x = at::rand({n}, gen).mul(4).sub(1.5).to(st);
    const at::Tensor g = at::randn({n}, gen).to(st).cuda();
    for (const auto& [weight, bits] : cases) {
      INFO("dtype " << st << ", " << op_label(weight) << ", bits " << bits);
      check_cuda(x, x.cuda(), g, bits, weight);
    }
  }
}

TEST_CASE("cuda: empty tensors", "[cuda]") {
  WRPN_REQUIRE_CUDA_OR_SKIP();
  for (const auto st : float_dtypes()) {
    for (const std::vector<int64_t>& shape :
         {std::vector<int64_t>{0}, std::vector<int64_t>{4, 0}, std::vector<int64_t>{0, 3, 5}}) {
      for (const auto& c : configs()) {
        INFO("dtype " << st << ", " << op_label(c.weight) << ", bits " << c.bits);
        const at::Tensor x = at::empty(shape, at::TensorOptions().dtype(st).device(at::kCUDA));
        auto [q, mask] = forward_with_mask(c.weight, x, c.bits);
        REQUIRE(q.is_cuda());
        REQUIRE(q.sizes() == x.sizes());
        REQUIRE(mask.is_cuda());
        REQUIRE(mask.numel() == 0);
        REQUIRE(mask.scalar_type() == at::kByte);
        REQUIRE(wrpn::masked_grad(x, mask).sizes() == x.sizes());
        at::Tensor leaf = x.clone().requires_grad_(true);
        forward(c.weight, leaf, c.bits).sum().backward();
        REQUIRE(leaf.grad().sizes() == x.sizes());
      }
    }
  }
}

TEST_CASE("cuda: side streams, other devices, autograd and double backward", "[cuda]") {
  WRPN_REQUIRE_CUDA_OR_SKIP();
  const at::Tensor x_cpu = make_input(100003, at::kFloat, 61);
  const at::Tensor g_cpu = make_grad({100003}, at::kFloat, 62);
  {
    const c10::cuda::CUDAStreamGuard stream(c10::cuda::getStreamFromPool());
    check_cuda(x_cpu, x_cpu.cuda(), g_cpu.cuda(), 4, false);
    check_cuda(x_cpu, x_cpu.cuda(), g_cpu.cuda(), 3, true);
  }
  const int devices = static_cast<int>(torch::cuda::device_count());
  for (int d = 1; d < devices && d < 3; ++d) {
    INFO("device " << d);
    const at::Device dev(at::kCUDA, static_cast<c10::DeviceIndex>(d));
    check_cuda(x_cpu, x_cpu.to(dev), g_cpu.to(dev), 4, false);
    const at::Tensor xb = make_input(4097, at::kFloat, 63, Values::kBinary);
    check_cuda(xb, xb.to(dev), make_grad({4097}, at::kFloat, 64).to(dev), 1, true);
  }

  const at::Tensor pass = wrpn_test::ref_activation_pass(x_cpu);
  const at::Tensor x = x_cpu.cuda().requires_grad_(true);
  const at::Tensor v = at::randn({100003}, at::kCUDA).requires_grad_(true);
  const at::Tensor u = at::randn({100003}, at::kCUDA);
  const at::Tensor q = wrpn::quantize_activation(x, 3);
  const at::Tensor gx = torch::autograd::grad({q}, {x}, {v}, true, true)[0];
  REQUIRE(bit_mismatch(gx.detach(), ref_masked_grad(v.detach().cpu(), pass)) == "");
  const at::Tensor gv = torch::autograd::grad({gx}, {v}, {u})[0];
  REQUIRE(gv.is_cuda());
  REQUIRE(bit_mismatch(gv, ref_masked_grad(u.cpu(), pass)) == "");
}

TEST_CASE("cuda: errors name the argument", "[cuda]") {
  WRPN_REQUIRE_CUDA_OR_SKIP();
  const at::Tensor g = at::ones({20}, at::kCUDA);
  REQUIRE_THROWS_WITH(wrpn::masked_grad(g, at::zeros({3}, at::kByte)),
                      Contains("'mask' is on cpu") && Contains("same device"));
  REQUIRE_THROWS_WITH(
      wrpn::masked_grad(g.cpu(),
                        at::zeros({3}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA))),
      Contains("'mask' is on cuda") && Contains("same device"));
  REQUIRE_THROWS_WITH(
      wrpn::masked_grad(g, at::zeros({4}, at::TensorOptions().dtype(at::kByte).device(at::kCUDA))),
      Contains("argument 'mask'") && Contains("ceil(numel/8) = 3"));
  REQUIRE_THROWS_WITH(wrpn::masked_grad(g, at::zeros({3}, at::kCUDA)),
                      Contains("argument 'mask'") && Contains("uint8"));
  for (const int64_t bits : {0, 17, -1, 32}) {
    INFO("bits " << bits);
    REQUIRE_THROWS_WITH(wrpn::quantize_weight(g, bits),
                        Contains("argument 'bits'") && Contains("[1, 16]"));
    REQUIRE_THROWS_WITH(wrpn::quantize_activation_with_mask(g, bits),
                        Contains("argument 'bits'") && Contains("[1, 16]"));
  }
  const at::Tensor ints = at::zeros({4}, at::TensorOptions().dtype(at::kInt).device(at::kCUDA));
  REQUIRE_THROWS_WITH(wrpn::quantize_weight(ints, 2),
                      Contains("argument 'w'") && Contains("floating-point"));
  REQUIRE_THROWS_WITH(wrpn::quantize_activation(ints, 2),
                      Contains("argument 'x'") && Contains("floating-point"));
}

TEST_CASE("cuda: fixed point equals the CPU and the reference, deterministic and stochastic",
          "[cuda][fixed]") {
  WRPN_REQUIRE_CUDA_OR_SKIP();
  const std::vector<std::pair<int64_t, int64_t>> formats = {
      {2, 0}, {4, 2}, {8, 4}, {16, 14}, {24, 12}};
  for (auto st : float_dtypes()) {
    for (int64_t n : {1, 7, 8, 9, 1000, 65537, 1 << 20}) {
      const auto x_cpu = make_input(n, st, 17 * n + 3).mul(3.0);
      const auto x = x_cpu.cuda();
      for (const auto& [total, frac] : formats) {
        INFO(st << " n=" << n << " Q" << total - frac << "." << frac);
        auto [q, mask] = wrpn::quantize_fixed_point_with_mask(x, total, frac);
        auto [q_cpu, mask_cpu] = wrpn::quantize_fixed_point_with_mask(x_cpu, total, frac);
        CHECK(bit_mismatch(q.cpu(), wrpn_test::ref_fixed_point(x_cpu, total, frac)).empty());
        CHECK(bit_mismatch(mask.cpu(), mask_cpu).empty());
        // Stochastic: the same seed gives the same values on both devices.
        at::Generator g1 = at::detail::createCPUGenerator(42);
        at::Generator g2 = at::detail::createCPUGenerator(42);
        const auto s = wrpn::quantize_fixed_point(x, total, frac, true, g1);
        const auto s_cpu = wrpn::quantize_fixed_point(x_cpu, total, frac, true, g2);
        CHECK(bit_mismatch(s.cpu(), s_cpu).empty());
        CHECK(bit_mismatch(s.cpu(), wrpn_test::ref_stochastic_fixed_point(x_cpu, total, frac, 42))
                  .empty());
      }
    }
  }
  // Misaligned view (scalar path) and autograd on the GPU.
  const auto base = torch::randn({1001}, torch::kCUDA).mul(4);
  const auto view = base.narrow(0, 1, 1000).requires_grad_();
  const auto q = wrpn::quantize_fixed_point(view, 8, 4);
  CHECK(bit_mismatch(q.detach().cpu(), wrpn_test::ref_fixed_point(view.detach().cpu(), 8, 4))
            .empty());
  q.sum().backward();
  const double m = wrpn::fixed_point_max(8, 4);
  const auto pass = (view.detach().cpu() >= -m) & (view.detach().cpu() <= m);
  CHECK(bit_mismatch(view.grad().cpu(), pass.to(at::kFloat)).empty());
  // The generator only seeds the stream: a CUDA generator is rejected by name.
  CHECK_THROWS_WITH(wrpn::quantize_fixed_point(base, 8, 4, true,
                                               at::globalContext().defaultGenerator(base.device())),
                    Contains("'generator' must be a CPU generator"));
}
