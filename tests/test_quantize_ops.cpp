// CPU tests of the quantizer ops (spec.md, "Quantizers") against hand values and the plain-ATen
// references in quant_reference.h, bit for bit.

#include <c10/core/InferenceMode.h>
#include <torch/torch.h>
#include <wrpn/wrpn.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <iostream>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "quant_reference.h"

namespace {

using Catch::Contains;
using wrpn_test::bit_mismatch;
using wrpn_test::CapabilityReset;
using wrpn_test::dtype_denorm_min;
using wrpn_test::dtype_eps;
using wrpn_test::float_dtypes;
using wrpn_test::forward;
using wrpn_test::forward_with_mask;
using wrpn_test::make_grad;
using wrpn_test::make_input;
using wrpn_test::mask_mismatch;
using wrpn_test::op_label;
using wrpn_test::pack_loop;
using wrpn_test::poison_output_memory;
using wrpn_test::ref_masked_grad;
using wrpn_test::reference;
using wrpn_test::reference_pass;
using wrpn_test::supported_capabilities;
using wrpn_test::ThreadCountReset;
using wrpn_test::Values;
using wrpn_test::values_for;

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kNaN = std::nan("");

at::Tensor vals(const std::vector<double>& v, at::ScalarType st) {
  return torch::tensor(v, torch::kDouble).to(st);
}

at::Tensor flags(const std::vector<int64_t>& v) { return torch::tensor(v).to(torch::kBool); }

/// m / s as the kernels compute it: a float division for fp16/bf16/fp32, double for fp64.
double level(int64_t m, double s, at::ScalarType st) {
  if (st == at::kDouble) return static_cast<double>(m) / s;
  return static_cast<double>(static_cast<float>(m) / static_cast<float>(s));
}

/// What the references say for one input: q, the pass mask, an incoming gradient and the
/// gradient that must come out.
struct Expected {
  at::Tensor q;
  at::Tensor pass;
  at::Tensor grad_in;
  at::Tensor grad_out;
};

Expected expected_for(const at::Tensor& x, int64_t bits, bool weight, uint64_t seed) {
  Expected e;
  e.q = reference(weight, x, bits);
  e.pass = reference_pass(weight, x);
  e.grad_in = make_grad(x.sizes(), x.scalar_type(), seed);
  e.grad_out = ref_masked_grad(e.grad_in, e.pass);
  return e;
}

/// Values, mask, the mask-free op, _masked_grad and the autograd gradient of one input.
void check_ops(const Expected& e, const at::Tensor& x, int64_t bits, bool weight) {
  poison_output_memory(x);
  auto [q, mask] = forward_with_mask(weight, x, bits);
  REQUIRE(bit_mismatch(q, e.q) == "");
  REQUIRE(mask_mismatch(mask, e.pass) == "");
  poison_output_memory(x);
  REQUIRE(bit_mismatch(forward(weight, x, bits), e.q) == "");
  poison_output_memory(x);
  REQUIRE(bit_mismatch(wrpn::masked_grad(e.grad_in, mask), e.grad_out) == "");

  at::Tensor leaf = x.detach();
  leaf.requires_grad_(true);
  at::Tensor qa = forward(weight, leaf, bits);
  REQUIRE(bit_mismatch(qa.detach(), e.q) == "");
  qa.backward(e.grad_in);
  REQUIRE(bit_mismatch(leaf.grad(), e.grad_out) == "");
}

void check_against_reference(const at::Tensor& x, int64_t bits, bool weight, uint64_t seed) {
  check_ops(expected_for(x, bits, weight, seed), x, bits, weight);
}

const std::vector<std::string>& capabilities() {
  static const std::vector<std::string> kCaps = supported_capabilities();
  return kCaps;
}

/// Hand-made expectations for a 1-D input, checked on every CPU kernel build for the input as
/// given and repeated 37 times (so each value also passes through the vector bodies): q bit for
/// bit, the packed mask, and the autograd gradient for incoming gradients of 2 and of NaN.
void check_hand(bool weight, int64_t bits, const at::Tensor& x, const at::Tensor& want_q,
                const at::Tensor& want_pass) {
  CapabilityReset reset;
  for (const auto& cap : capabilities()) {
    wrpn::set_cpu_kernel_capability(cap);
    for (const int64_t times : {1, 37}) {
      INFO("capability " << cap << ", input repeated " << times << " times");
      const at::Tensor xt = x.repeat({times});
      const at::Tensor qt = want_q.repeat({times});
      const at::Tensor pt = want_pass.repeat({times});
      auto [q, mask] = forward_with_mask(weight, xt, bits);
      REQUIRE(bit_mismatch(q, qt) == "");
      REQUIRE(mask_mismatch(mask, pt) == "");
      REQUIRE(bit_mismatch(forward(weight, xt, bits), qt) == "");
      for (const double g : {2.0, kNaN}) {
        at::Tensor leaf = xt.clone().requires_grad_(true);
        forward(weight, leaf, bits).backward(at::full_like(xt, g));
        REQUIRE(bit_mismatch(leaf.grad(), ref_masked_grad(at::full_like(xt, g), pt)) == "");
      }
    }
  }
}

at::Tensor sorted_levels(const at::Tensor& q) {
  const at::Tensor s = std::get<0>(q.to(at::kDouble).reshape({-1}).sort());
  return std::get<0>(at::unique_consecutive(s));
}

/// A T value c with c * s == m + 1/2 exactly in T arithmetic, when one exists within 8 ulps of
/// (m + 1/2) / s: the product is then an exact tie for the rounding step.
template <typename T>
bool find_tie(int64_t m, T s, T* out) {
  const T target = static_cast<T>(m) + static_cast<T>(0.5);
  T c = target / s;
  for (int k = 0; k < 8; ++k) c = std::nextafter(c, T(0));
  for (int k = 0; k < 17; ++k, c = std::nextafter(c, T(2))) {
    volatile T product = c * s;
    if (product == target) {
      *out = c;
      return true;
    }
  }
  return false;
}

template <typename T>
void check_ties(at::ScalarType st) {
  for (const int64_t act_bits : {2, 3, 4, 5}) {
    const T s = static_cast<T>((int64_t{1} << act_bits) - 1);
    std::vector<double> xs, want;
    for (int64_t m = 0; m < static_cast<int64_t>(s); ++m) {
      T c;
      if (!find_tie(m, s, &c)) continue;
      const int64_t even = m % 2 == 0 ? m : m + 1;
      xs.push_back(static_cast<double>(c));
      want.push_back(static_cast<double>(static_cast<T>(even) / s));
    }
    INFO("dtype " << st << ", scale " << static_cast<double>(s) << ", ties found " << xs.size());
    REQUIRE(xs.size() >= 2);
    const at::Tensor x = vals(xs, st);
    const at::Tensor expected = vals(want, st);
    const at::Tensor all = at::ones({x.numel()}, at::kBool);
    check_hand(false, act_bits, x, expected, all);
    check_hand(true, act_bits + 1, x, expected, all);
    check_hand(true, act_bits + 1, x.neg(), expected.neg(), all);
  }
}

}  // namespace

TEST_CASE("quantize_weight: hand values for ternary and 4-bit weights", "[cpu]") {
  for (const auto st : float_dtypes()) {
    INFO("dtype " << st);
    const at::Tensor w2 = vals({-2, -1, -0.75, -0.5, -0.25, -0.0, 0, 0.25, 0.5, 0.75, 1, 2}, st);
    const at::Tensor q2 = vals({-1, -1, -1, -0.0, -0.0, -0.0, 0, 0, 0, 1, 1, 1}, st);
    check_hand(true, 2, w2, q2, flags({0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0}));

    // s = 7: 0.3*7 = 2.1 -> 2, -0.6*7 = -4.2 -> -4, 0.95*7 = 6.65 -> 7, 0.05*7 -> 0,
    // -0.07*7 = -0.49 -> -0, 0.5*7 = 3.5 -> 4 (tie to even).
    const at::Tensor w4 = vals({0.3, -0.6, 0.95, 0.05, -0.07, 0.5}, st);
    const double s = 7;
    const at::Tensor q4 =
        vals({level(2, s, st), level(-4, s, st), 1, 0, -0.0, level(4, s, st)}, st);
    check_hand(true, 4, w4, q4, flags({1, 1, 1, 1, 1, 1}));
  }
}

TEST_CASE("quantize_weight: 2^k - 1 levels and the zero band |w| < 1/(2(2^(k-1)-1))", "[cpu]") {
  for (const auto st : float_dtypes()) {
    const int64_t max_bits = st == at::kFloat || st == at::kDouble ? 10 : 4;
    const at::Tensor w = at::linspace(-1.5, 1.5, 30001, at::kDouble).to(st);
    for (int64_t k = 2; k <= max_bits; ++k) {
      INFO("dtype " << st << ", bits " << k);
      const at::Tensor levels = sorted_levels(wrpn::quantize_weight(w, k));
      REQUIRE(levels.numel() == (int64_t{1} << k) - 1);
      const double s = wrpn_test::weight_scale(k);
      std::vector<double> want;
      for (int64_t m = -static_cast<int64_t>(s); m <= static_cast<int64_t>(s); ++m) {
        want.push_back(level(m, s, st));
      }
      CAPTURE(levels);
      REQUIRE(at::equal(levels, vals(want, st).to(at::kDouble)));
    }
  }
  const at::Tensor ternary = sorted_levels(wrpn::quantize_weight(at::linspace(-3, 3, 999), 2));
  REQUIRE(at::equal(ternary, vals({-1, 0, 1}, at::kDouble)));

  for (const auto st : float_dtypes()) {
    for (int64_t k = 2; k <= 12; ++k) {
      INFO("dtype " << st << ", bits " << k);
      const double s = wrpn_test::weight_scale(k);
      const double band = 1.0 / (2.0 * s);
      const at::Tensor inside =
          vals({band * 0.99, -band * 0.99, band * 0.5, -band * 0.01, band * 1e-3}, st);
      REQUIRE(wrpn::quantize_weight(inside, k).eq(0).all().item<bool>());
      const at::Tensor outside = vals({band * 1.01, -band * 1.01}, st);
      REQUIRE(bit_mismatch(wrpn::quantize_weight(outside, k),
                           vals({level(1, s, st), level(-1, s, st)}, st)) == "");
    }
  }
  // The band is 1/14 at 4 bits and 1/2 at 2 bits.
  REQUIRE(bit_mismatch(wrpn::quantize_weight(vals({0.0714, -0.0714, 0.0715}, at::kFloat), 4),
                       vals({0, -0.0, level(1, 7, at::kFloat)}, at::kFloat)) == "");
  REQUIRE(bit_mismatch(wrpn::quantize_weight(vals({0.4999, -0.4999, 0.5001}, at::kFloat), 2),
                       vals({0, -0.0, 1}, at::kFloat)) == "");
}

TEST_CASE("quantize_activation: hand values and 2^k levels", "[cpu]") {
  for (const auto st : float_dtypes()) {
    INFO("dtype " << st);
    // s = 3: 0.1 -> 0, 0.4*3 = 1.2 -> 1, 0.5*3 = 1.5 -> 2 (tie to even), 0.9*3 = 2.7 -> 3.
    const at::Tensor x2 = vals({-3, 0, 0.1, 0.4, 0.5, 0.9, 1, 7}, st);
    const at::Tensor q2 = vals({0, 0, 0, level(1, 3, st), level(2, 3, st), 1, 1, 1}, st);
    check_hand(false, 2, x2, q2, flags({0, 1, 1, 1, 1, 1, 1, 0}));
    const at::Tensor x1 = vals({0.49, 0.5, 0.51, -0.5, 1.5}, st);
    check_hand(false, 1, x1, vals({0, 0, 1, 0, 1}, st), flags({1, 1, 1, 0, 0}));

    const int64_t max_bits = st == at::kFloat || st == at::kDouble ? 10 : 4;
    const at::Tensor x = at::linspace(-0.5, 1.5, 30001, at::kDouble).to(st);
    for (int64_t k = 1; k <= max_bits; ++k) {
      INFO("bits " << k);
      const at::Tensor levels = sorted_levels(wrpn::quantize_activation(x, k));
      REQUIRE(levels.numel() == int64_t{1} << k);
      const double s = wrpn_test::activation_scale(k);
      std::vector<double> want;
      for (int64_t m = 0; m <= static_cast<int64_t>(s); ++m) want.push_back(level(m, s, st));
      CAPTURE(levels);
      REQUIRE(at::equal(levels, vals(want, st).to(at::kDouble)));
    }
  }
}

TEST_CASE("quantizers: exact ties round half to even", "[cpu]") {
  // Scale 1 (2-bit weights, 1-bit activations): 0.5 is a tie in every dtype.
  for (const auto st : float_dtypes()) {
    INFO("dtype " << st);
    check_hand(true, 2, vals({0.5, -0.5}, st), vals({0, -0.0}, st), flags({1, 1}));
    check_hand(false, 1, vals({0.5}, st), vals({0}, st), flags({1}));
  }
  // Scales 3, 7, 15, 31: inputs whose product with s is exactly m + 1/2 round to the even m.
  check_ties<float>(at::kFloat);
  check_ties<double>(at::kDouble);
}

TEST_CASE("quantizers: clip bounds and values just outside them", "[cpu]") {
  for (const auto st : float_dtypes()) {
    const double eps = dtype_eps(st);
    const double tiny = dtype_denorm_min(st);
    for (const int64_t bits : {2, 4, 8, 16}) {
      INFO("dtype " << st << ", weight bits " << bits);
      check_hand(true, bits, vals({-1, 1, 1 + eps, -1 - eps, 2, -2, 1e4}, st),
                 vals({-1, 1, 1, -1, 1, -1, 1}, st), flags({1, 1, 0, 0, 0, 0, 0}));
    }
    for (const int64_t bits : {1, 2, 4, 8, 16}) {
      INFO("dtype " << st << ", activation bits " << bits);
      check_hand(false, bits, vals({0, 1, 1 + eps, -tiny, 2, -5, 1e4}, st),
                 vals({0, 1, 1, 0, 1, 0, 1}, st), flags({1, 1, 0, 0, 0, 0, 0}));

      // -0 is inside [0, 1]: its value is a zero and its gradient passes.
      auto [qz, mz] = wrpn::quantize_activation_with_mask(vals({-0.0}, st).repeat({37}), bits);
      REQUIRE(qz.eq(0).all().item<bool>());
      REQUIRE(mask_mismatch(mz, at::ones({37}, at::kBool)) == "");
    }
    INFO("dtype " << st << ", binary weights");
    const at::Tensor wb = vals({-1, 1, 1 + eps, -1 - eps}, st);
    check_hand(true, 1, wb, wrpn_test::ref_binary(wb), flags({1, 1, 0, 0}));
  }
}

TEST_CASE("quantize_weight: binary k=1 is +-mean|w| with the gradient mask |w| <= 1", "[cpu]") {
  for (const auto st : float_dtypes()) {
    INFO("dtype " << st);
    // mean|w| = 8.5 / 8 = 1.0625, exact in every dtype; -0 counts as w >= 0.
    const double a = 1.0625;
    check_hand(true, 1, vals({-2, -0.5, 0, -0.0, 0.5, 1, 3, -1.5}, st),
               vals({-a, -a, a, a, a, a, a, -a}, st), flags({0, 1, 1, 1, 1, 1, 0, 0}));

    // mean|w| = 7/6: the float64 mean, rounded once to the math type.
    const double a7 = st == at::kDouble ? 7.0 / 6.0 : static_cast<float>(7.0 / 6.0);
    check_hand(true, 1, vals({-2, -0.5, 0, 0.5, 1, 3}, st), vals({-a7, -a7, a7, a7, a7, a7}, st),
               flags({0, 1, 1, 1, 1, 0}));

    // A NaN makes the mean NaN, so every output is NaN; +-inf make it infinite. Either way the
    // mask is |w| <= 1.
    check_hand(true, 1, vals({kNaN, 0.5, -0.5}, st), vals({kNaN, kNaN, kNaN}, st),
               flags({0, 1, 1}));
    const at::Tensor wi = vals({kInf, -0.5, 0.5, -kInf}, st);
    check_hand(true, 1, wi, vals({kInf, -kInf, kInf, -kInf}, st), flags({0, 1, 1, 0}));

    for (const int64_t n : {1, 1000, 4097}) {
      INFO("n " << n);
      check_against_reference(make_input(n, st, 11 + n, Values::kBinary), 1, true, 12 + n);
    }
  }
}

TEST_CASE("quantizers: NaN gives NaN and a zero gradient, +-inf clamps with a zero gradient",
          "[cpu]") {
  for (const auto st : float_dtypes()) {
    for (const bool weight : {true, false}) {
      for (const int64_t bits : {1, 2, 4, 16}) {
        if (weight && bits == 1) continue;
        INFO("dtype " << st << ", " << op_label(weight) << ", bits " << bits);
        const double lo = weight ? -1 : 0;
        const double s = weight ? wrpn_test::weight_scale(bits) : wrpn_test::activation_scale(bits);
        // 0.25 * s is never a tie (s is odd).
        const double q = level(static_cast<int64_t>(std::nearbyint(0.25 * s)), s, st);
        check_hand(weight, bits, vals({kNaN, kInf, -kInf, 0.25, -kNaN}, st),
                   vals({kNaN, 1, lo, q, kNaN}, st), flags({0, 0, 0, 1, 0}));
      }
    }
  }
}

TEST_CASE("_masked_grad: +0 where the mask bit is clear, whatever the incoming gradient", "[cpu]") {
  CapabilityReset reset;
  const std::vector<std::string> caps = supported_capabilities();
  at::Generator gen = at::detail::createCPUGenerator(99);
  for (const auto st : float_dtypes()) {
    for (const int64_t n :
         {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000, 65536 + 65}) {
      // Random bytes: the unused bits of the last byte are set too and must be ignored.
      const at::Tensor mask = at::randint(0, 256, {(n + 7) / 8}, gen, at::kByte);
      std::vector<int64_t> by_hand(n);
      const uint8_t* mb = mask.data_ptr<uint8_t>();
      for (int64_t i = 0; i < n; ++i) by_hand[i] = (mb[i / 8] >> (i % 8)) & 1;
      const at::Tensor pass = flags(by_hand);
      const at::Tensor g = make_grad({n}, st, 100 + n);
      const at::Tensor want = ref_masked_grad(g, pass);
      const at::Tensor zero_mask = at::zeros({(n + 7) / 8}, at::kByte);
      const at::Tensor all_nan = at::full({n}, kNaN, at::TensorOptions().dtype(st));
      const at::Tensor all_inf = at::full({n}, -kInf, at::TensorOptions().dtype(st));
      const at::Tensor zeros = at::zeros({n}, st);
      for (const auto& cap : caps) {
        wrpn::set_cpu_kernel_capability(cap);
        INFO("capability " << cap << ", dtype " << st << ", n " << n);
        REQUIRE(bit_mismatch(wrpn::masked_grad(g, mask), want) == "");
        REQUIRE(bit_mismatch(wrpn::masked_grad(all_nan, zero_mask), zeros) == "");
        REQUIRE(bit_mismatch(wrpn::masked_grad(all_inf, zero_mask), zeros) == "");
      }
    }
  }
  wrpn::set_cpu_kernel_capability("");
  for (const auto st : float_dtypes()) {
    INFO("dtype " << st << ", through autograd");
    at::Tensor x = vals({-1, 0.5, 2, kNaN, 0.25, 7, -0.0, 1}, st).requires_grad_(true);
    wrpn::quantize_activation(x, 4).backward(
        vals({kNaN, kNaN, kInf, -kInf, kNaN, kNaN, 5, -3}, st));
    const at::Tensor want = vals({0, kNaN, 0, 0, kNaN, 0, 5, -3}, st);
    REQUIRE(bit_mismatch(x.grad(), want) == "");
  }
}

TEST_CASE("quantizers: empty tensors", "[cpu]") {
  for (const auto st : float_dtypes()) {
    for (const std::vector<int64_t>& shape :
         {std::vector<int64_t>{0}, std::vector<int64_t>{4, 0}, std::vector<int64_t>{0, 3, 5}}) {
      for (const bool weight : {true, false}) {
        for (const int64_t bits : {1, 2, 4}) {
          INFO("dtype " << st << ", " << op_label(weight) << ", bits " << bits << ", shape "
                        << at::IntArrayRef(shape));
          const at::Tensor x = at::empty(shape, at::TensorOptions().dtype(st));
          auto [q, mask] = forward_with_mask(weight, x, bits);
          REQUIRE(q.sizes() == x.sizes());
          REQUIRE(q.scalar_type() == st);
          REQUIRE(mask.sizes().vec() == std::vector<int64_t>{0});
          REQUIRE(mask.scalar_type() == at::kByte);
          REQUIRE(forward(weight, x, bits).sizes() == x.sizes());
          REQUIRE(wrpn::masked_grad(x, mask).sizes() == x.sizes());
          at::Tensor leaf = x.clone().requires_grad_(true);
          forward(weight, leaf, bits).sum().backward();
          REQUIRE(leaf.grad().sizes() == x.sizes());
        }
      }
    }
  }
}

TEST_CASE("quantizers: non-contiguous inputs and gradients", "[cpu]") {
  const auto make_views = [](at::ScalarType st, Values kind) {
    const at::Tensor base = make_input(37 * 53, st, 7, kind).reshape({37, 53});
    const at::Tensor flat = make_input(1001, st, 8, kind);
    const at::Tensor cube = make_input(5 * 6 * 7, st, 9, kind).reshape({5, 6, 7});
    const at::Tensor row = make_input(50, st, 10, kind).reshape({1, 50});
    return std::vector<std::pair<const char*, at::Tensor>>{
        {"transposed", base.t()},
        {"sliced with step 3", flat.slice(0, 0, 1001, 3)},
        {"offset by one element", flat.narrow(0, 1, 999)},
        {"column slice", base.narrow(1, 3, 33)},
        {"permuted", cube.permute({2, 0, 1})},
        {"expanded", row.expand({7, 50})},
    };
  };
  for (const auto st : float_dtypes()) {
    for (const auto& [name, x] : make_views(st, Values::kBinary)) {
      INFO("dtype " << st << ", " << name << ", binary weights");
      REQUIRE((!x.is_contiguous() || x.storage_offset() != 0));
      check_against_reference(x, 1, true, 23);
    }
    for (const auto& [name, x] : make_views(st, Values::kFull)) {
      for (const bool weight : {true, false}) {
        for (const int64_t bits : {2, 4, 8}) {
          INFO("dtype " << st << ", " << name << ", " << op_label(weight) << ", bits " << bits);
          check_against_reference(x, bits, weight, 21);

          // The gradient of q.sum() reaches _masked_grad as an expanded (stride 0) tensor.
          at::Tensor leaf = x.detach().clone().requires_grad_(true);
          forward(weight, leaf, bits).sum().backward();
          REQUIRE(bit_mismatch(leaf.grad(), reference_pass(weight, x).to(st)) == "");

          // A transposed incoming gradient: the mask follows the logical row-major order.
          if (x.dim() == 2) {
            const at::Tensor g = make_grad({x.size(1), x.size(0)}, st, 22).t();
            at::Tensor leaf2 = x.detach().clone().requires_grad_(true);
            forward(weight, leaf2, bits).backward(g);
            REQUIRE(bit_mismatch(leaf2.grad(), ref_masked_grad(g, reference_pass(weight, x))) ==
                    "");
          }
        }
      }
    }
  }
}

TEST_CASE("quantizers: odd sizes in every dtype and every CPU kernel build", "[cpu]") {
  // One thread: the split across threads has its own test below, and idle OpenMP workers spin
  // for a long time on a loaded machine.
  ThreadCountReset restore;
  at::set_num_threads(1);
  CapabilityReset reset;
  const std::vector<std::string> caps = supported_capabilities();
  REQUIRE(!caps.empty());
  REQUIRE(caps.front() == "DEFAULT");
  std::cout << "CPU kernel builds under test:";
  for (const auto& cap : caps) std::cout << " " << cap;
  std::cout << std::endl;

  struct Config {
    bool weight;
    int64_t bits;
    bool large;
  };
  const std::vector<Config> configs = {{true, 1, true},   {true, 2, true},   {true, 4, false},
                                       {true, 16, false}, {false, 1, false}, {false, 4, true},
                                       {false, 16, false}};
  const std::vector<int64_t> sizes = {1,  7,  8,  9,   15,  16,  17,   31,   32,    33,
                                      63, 64, 65, 127, 128, 129, 1000, 4097, 65537, 1000003};
  for (const auto st : float_dtypes()) {
    for (const int64_t n : sizes) {
      for (const auto& c : configs) {
        if (n > 100000 && !c.large) continue;
        const uint64_t seed = static_cast<uint64_t>(n * 131 + c.bits * 7 + (c.weight ? 1 : 0));
        const at::Tensor x = make_input(n, st, seed, values_for(c.weight, c.bits));
        const Expected e = expected_for(x, c.bits, c.weight, seed + 1);
        for (const auto& cap : caps) {
          wrpn::set_cpu_kernel_capability(cap);
          REQUIRE(wrpn::cpu_kernel_capability() == cap);
          INFO("capability " << cap << ", dtype " << st << ", n " << n << ", " << op_label(c.weight)
                             << ", bits " << c.bits);
          check_ops(e, x, c.bits, c.weight);
        }
      }
    }
  }
}

TEST_CASE("quantizers: every bit width against the reference", "[cpu]") {
  for (const auto st : float_dtypes()) {
    for (const bool weight : {true, false}) {
      for (int64_t bits = 1; bits <= 16; ++bits) {
        INFO("dtype " << st << ", " << op_label(weight) << ", bits " << bits);
        const at::Tensor x = make_input(1029, st, 300 + bits, values_for(weight, bits));
        check_against_reference(x, bits, weight, 400 + bits);
      }
    }
  }
}

TEST_CASE("quantizers: one thread and several threads give identical results", "[cpu]") {
  ThreadCountReset restore;
  CapabilityReset reset;
  const std::vector<std::string> caps = supported_capabilities();
  const std::vector<std::pair<bool, int64_t>> configs = {{true, 1}, {true, 2}, {false, 4}};
  // 3073 and 15626 work units of 64 elements: uneven splits for 2, 3 and 4 threads.
  const std::vector<std::pair<at::ScalarType, int64_t>> inputs = {{at::kFloat, 3 * 65536 + 17},
                                                                  {at::kHalf, 3 * 65536 + 17},
                                                                  {at::kBFloat16, 3 * 65536 + 17},
                                                                  {at::kDouble, 3 * 65536 + 17},
                                                                  {at::kFloat, 1000003}};
  for (const auto& [st, n] : inputs) {
    for (const auto& [weight, bits] : configs) {
      at::set_num_threads(1);
      const at::Tensor x = make_input(n, st, 500 + n, values_for(weight, bits));
      const Expected e = expected_for(x, bits, weight, 600 + n);
      wrpn::set_cpu_kernel_capability("");
      auto [q1, m1] = forward_with_mask(weight, x, bits);
      const at::Tensor g1 = wrpn::masked_grad(e.grad_in, m1);
      REQUIRE(bit_mismatch(q1, e.q) == "");
      REQUIRE(mask_mismatch(m1, e.pass) == "");
      REQUIRE(bit_mismatch(g1, e.grad_out) == "");
      for (const auto& cap : caps) {
        wrpn::set_cpu_kernel_capability(cap);
        for (const int threads : {1, 2, 3, 4}) {
          at::set_num_threads(threads);
          INFO("capability " << cap << ", dtype " << st << ", n " << n << ", " << op_label(weight)
                             << ", bits " << bits << ", threads " << threads);
          poison_output_memory(x);
          auto [q, m] = forward_with_mask(weight, x, bits);
          REQUIRE(bit_mismatch(q, q1) == "");
          REQUIRE(bit_mismatch(m, m1) == "");
          poison_output_memory(x);
          REQUIRE(bit_mismatch(wrpn::masked_grad(e.grad_in, m), g1) == "");
        }
      }
    }
  }
}

TEST_CASE("packed mask: bit i of byte j is element 8j+i, pack_mask and unpack_mask", "[cpu]") {
  // In range at elements 0, 2, 3, 7 (byte 0: 1 + 4 + 8 + 128) and 8 (byte 1: 1).
  const at::Tensor x =
      vals({0.5, -1, 0.2, 0.9, 2, kNaN, 3, 1, 0, kInf}, at::kFloat).reshape({2, 5});
  const at::Tensor mask = std::get<1>(wrpn::quantize_activation_with_mask(x, 4));
  REQUIRE(bit_mismatch(mask, torch::tensor({141, 1}, at::kByte)) == "");

  at::Generator gen = at::detail::createCPUGenerator(77);
  for (const int64_t n : {0, 1, 7, 8, 9, 63, 64, 65, 1000}) {
    INFO("n " << n);
    const at::Tensor bits = at::rand({n}, gen) < 0.5;
    const at::Tensor packed = wrpn::pack_mask(bits);
    REQUIRE(bit_mismatch(packed, pack_loop(bits)) == "");
    REQUIRE(mask_mismatch(packed, bits) == "");
    REQUIRE(bit_mismatch(wrpn::unpack_mask(packed, n), bits) == "");
    if (n % 5 == 0 && n > 0) {
      const at::Tensor grid = bits.reshape({5, n / 5});
      REQUIRE(bit_mismatch(wrpn::pack_mask(grid), pack_loop(grid)) == "");
    }
    // unpack_mask ignores the unused bits of the last byte.
    const at::Tensor noisy = at::randint(0, 256, {(n + 7) / 8}, gen, at::kByte);
    std::vector<int64_t> by_hand(n);
    for (int64_t i = 0; i < n; ++i) by_hand[i] = (noisy[i / 8].item<int64_t>() >> (i % 8)) & 1;
    REQUIRE(bit_mismatch(wrpn::unpack_mask(noisy, n), flags(by_hand).reshape({n})) == "");
  }
}

TEST_CASE("meta tensors: output shapes and a mask of ceil(n/8) bytes", "[cpu]") {
  for (const auto st : float_dtypes()) {
    for (const std::vector<int64_t>& shape :
         {std::vector<int64_t>{0}, std::vector<int64_t>{1}, std::vector<int64_t>{8},
          std::vector<int64_t>{9}, std::vector<int64_t>{5, 13}, std::vector<int64_t>{3, 0, 2},
          std::vector<int64_t>{2, 3, 11}}) {
      for (const bool weight : {true, false}) {
        for (const int64_t bits : {1, 4}) {
          INFO("dtype " << st << ", shape " << at::IntArrayRef(shape) << ", " << op_label(weight)
                        << ", bits " << bits);
          const at::Tensor x = at::empty(shape, at::TensorOptions().dtype(st).device(at::kMeta));
          const int64_t n = x.numel();
          auto [q, mask] = forward_with_mask(weight, x, bits);
          REQUIRE(q.is_meta());
          REQUIRE(q.sizes() == x.sizes());
          REQUIRE(q.scalar_type() == st);
          REQUIRE(mask.is_meta());
          REQUIRE(mask.sizes().vec() == std::vector<int64_t>{(n + 7) / 8});
          REQUIRE(mask.scalar_type() == at::kByte);
          const at::Tensor plain = forward(weight, x, bits);
          REQUIRE(plain.is_meta());
          REQUIRE(plain.sizes() == x.sizes());
          const at::Tensor g = wrpn::masked_grad(x, mask);
          REQUIRE(g.is_meta());
          REQUIRE(g.sizes() == x.sizes());
          REQUIRE(g.scalar_type() == st);
        }
      }
    }
  }
  const at::Tensor m = at::empty({10}, at::TensorOptions().device(at::kMeta));
  REQUIRE_THROWS_WITH(wrpn::quantize_weight(m, 0), Contains("'bits'") && Contains("[1, 16]"));
  REQUIRE_THROWS_WITH(
      wrpn::masked_grad(m, at::empty({1}, at::TensorOptions().dtype(at::kByte).device(at::kMeta))),
      Contains("'mask'") && Contains("ceil(numel/8)"));
}

// What is asserted: the autograd node holds neither the input tensor nor its storage. (1) The
// quantizer's input is a temporary whose storage nothing else references: its use count does not
// grow during the forward, its storage is freed once the last handle goes, and the backward still
// gives the gradient of the original values. (2) An in-place change of the input after the
// forward neither trips the saved-tensor version check (which it would if the input were saved)
// nor changes the gradient, which follows the mask taken at forward time.
TEST_CASE("autograd: the backward keeps only the packed mask, not the input", "[cpu]") {
  for (const bool weight : {true, false}) {
    for (const int64_t bits : {1, 4}) {
      INFO(op_label(weight) << ", bits " << bits);
      const at::Tensor leaf = make_input(1001, at::kFloat, 31).requires_grad_(true);
      at::Tensor x = leaf.mul(2.0);
      const at::Tensor pass = reference_pass(weight, x.detach());
      const c10::weak_intrusive_ptr<c10::StorageImpl> storage = x.storage().getWeakStorageImpl();
      const auto uses = x.use_count();
      at::Tensor q = forward(weight, x, bits);
      REQUIRE(q.requires_grad());
      REQUIRE(x.use_count() == uses);
      x.reset();
      REQUIRE(storage.expired());
      q.backward(at::ones_like(q));
      REQUIRE(bit_mismatch(leaf.grad(), ref_masked_grad(at::full_like(q, 2.0), pass)) == "");

      at::Tensor w = make_input(1001, at::kFloat, 32).requires_grad_(true);
      const at::Tensor pass_before = reference_pass(weight, w.detach().clone());
      at::Tensor qw = forward(weight, w, bits);
      {
        torch::NoGradGuard no_grad;
        w.mul_(100.0).add_(-0.5);
      }
      qw.backward(at::ones_like(qw));
      REQUIRE(bit_mismatch(w.grad(), pass_before.to(at::kFloat)) == "");
    }
  }
}

TEST_CASE("autograd: double backward through _masked_grad", "[cpu]") {
  for (const auto st : {at::kFloat, at::kDouble, at::kHalf}) {
    INFO("dtype " << st);
    at::Generator gen = at::detail::createCPUGenerator(41);
    const at::Tensor x = make_input(300, st, 40).requires_grad_(true);
    const at::Tensor pass = wrpn_test::ref_activation_pass(x.detach());
    const at::Tensor v = at::randn({300}, gen).to(st).requires_grad_(true);
    const at::Tensor u = at::randn({300}, gen).to(st).requires_grad_(true);

    const at::Tensor q = wrpn::quantize_activation(x, 3);
    const at::Tensor gx = torch::autograd::grad({q}, {x}, {v}, true, true)[0];
    REQUIRE(gx.requires_grad());
    REQUIRE(bit_mismatch(gx.detach(), ref_masked_grad(v.detach(), pass)) == "");
    const at::Tensor gv = torch::autograd::grad({gx}, {v}, {u}, true, true)[0];
    REQUIRE(gv.requires_grad());
    REQUIRE(bit_mismatch(gv.detach(), ref_masked_grad(u.detach(), pass)) == "");
    const at::Tensor w = at::randn({300}, gen).to(st);
    const at::Tensor gu = torch::autograd::grad({gv}, {u}, {w})[0];
    REQUIRE(bit_mismatch(gu, ref_masked_grad(w, pass)) == "");

    at::Tensor g = at::randn({300}, gen).to(st).requires_grad_(true);
    const at::Tensor mask = pack_loop(pass);
    const at::Tensor y = wrpn::masked_grad(wrpn::masked_grad(g, mask), mask);
    REQUIRE(bit_mismatch(y.detach(), ref_masked_grad(g.detach(), pass)) == "");
    y.backward(w);
    REQUIRE(bit_mismatch(g.grad(), ref_masked_grad(w, pass)) == "");
  }
}

TEST_CASE("no-grad and inference mode give the same values as the autograd path", "[cpu]") {
  for (const auto st : float_dtypes()) {
    for (const bool weight : {true, false}) {
      for (const int64_t bits : {1, 3, 8}) {
        INFO("dtype " << st << ", " << op_label(weight) << ", bits " << bits);
        const at::Tensor x =
            make_input(777, st, 50 + bits, values_for(weight, bits)).requires_grad_(true);
        const at::Tensor with_grad = forward(weight, x, bits);
        REQUIRE(with_grad.requires_grad());
        REQUIRE(bit_mismatch(with_grad.detach(), reference(weight, x.detach(), bits)) == "");
        {
          torch::NoGradGuard no_grad;
          const at::Tensor q = forward(weight, x, bits);
          REQUIRE(!q.requires_grad());
          REQUIRE(bit_mismatch(q, with_grad.detach()) == "");
          auto [qm, mask] = forward_with_mask(weight, x, bits);
          REQUIRE(bit_mismatch(qm, with_grad.detach()) == "");
          REQUIRE(mask_mismatch(mask, reference_pass(weight, x.detach())) == "");
        }
        {
          c10::InferenceMode inference;
          const at::Tensor q = forward(weight, x, bits);
          REQUIRE(!q.requires_grad());
          REQUIRE(bit_mismatch(q, with_grad.detach()) == "");
        }
      }
    }
  }
}

TEST_CASE("errors: non-floating dtypes name the argument and the allowed dtypes", "[cpu]") {
  for (const auto st : {at::kInt, at::kLong, at::kShort, at::kChar, at::kByte, at::kBool,
                        at::kComplexFloat, at::kComplexDouble}) {
    INFO("dtype " << st);
    const at::Tensor x = at::zeros({4}, at::TensorOptions().dtype(st));
    REQUIRE_THROWS_AS(wrpn::quantize_weight(x, 4), c10::TypeError);
    REQUIRE_THROWS_WITH(wrpn::quantize_weight(x, 4), Contains("wrpn::quantize_weight") &&
                                                         Contains("argument 'w'") &&
                                                         Contains("floating-point"));
    REQUIRE_THROWS_WITH(wrpn::quantize_weight_with_mask(x, 2),
                        Contains("argument 'w'") && Contains("float16"));
    REQUIRE_THROWS_AS(wrpn::quantize_activation(x, 4), c10::TypeError);
    REQUIRE_THROWS_WITH(wrpn::quantize_activation(x, 4), Contains("wrpn::quantize_activation") &&
                                                             Contains("argument 'x'") &&
                                                             Contains("floating-point"));
    REQUIRE_THROWS_WITH(wrpn::quantize_activation_with_mask(x, 2),
                        Contains("argument 'x'") && Contains("bfloat16"));
  }
}

TEST_CASE("errors: bits outside the range name 'bits' and the allowed range", "[cpu]") {
  for (const auto st : {at::kFloat, at::kHalf}) {
    const at::Tensor x = at::rand({5}, at::TensorOptions().dtype(st));
    for (const int64_t bits : {0, 17, -1, 32, 64}) {
      INFO("dtype " << st << ", bits " << bits);
      const std::string got = "got " + std::to_string(bits);
      REQUIRE_THROWS_AS(wrpn::quantize_weight(x, bits), c10::ValueError);
      REQUIRE_THROWS_WITH(wrpn::quantize_weight(x, bits),
                          Contains("argument 'bits'") && Contains("[1, 16]") && Contains(got));
      REQUIRE_THROWS_WITH(wrpn::quantize_weight_with_mask(x, bits),
                          Contains("argument 'bits'") && Contains("[1, 16]"));
      REQUIRE_THROWS_AS(wrpn::quantize_activation(x, bits), c10::ValueError);
      REQUIRE_THROWS_WITH(wrpn::quantize_activation(x, bits),
                          Contains("argument 'bits'") && Contains("[1, 16]") && Contains(got));
      REQUIRE_THROWS_WITH(wrpn::quantize_activation_with_mask(x, bits),
                          Contains("argument 'bits'") && Contains("[1, 16]"));
      at::Tensor leaf = x.clone().requires_grad_(true);
      REQUIRE_THROWS_WITH(wrpn::quantize_weight(leaf, bits), Contains("argument 'bits'"));
      REQUIRE_THROWS_WITH(wrpn::quantize_activation(leaf, bits), Contains("argument 'bits'"));
    }
  }
}

TEST_CASE("errors: undefined tensors name the argument", "[cpu]") {
  const at::Tensor undefined;
  REQUIRE_THROWS_WITH(wrpn::quantize_weight(undefined, 4),
                      Contains("argument 'w'") && Contains("undefined"));
  REQUIRE_THROWS_WITH(wrpn::quantize_weight_with_mask(undefined, 4),
                      Contains("argument 'w'") && Contains("undefined"));
  REQUIRE_THROWS_WITH(wrpn::quantize_activation(undefined, 4),
                      Contains("argument 'x'") && Contains("undefined"));
  REQUIRE_THROWS_WITH(wrpn::quantize_activation_with_mask(undefined, 4),
                      Contains("argument 'x'") && Contains("undefined"));
  const at::Tensor g = at::ones({8});
  const at::Tensor mask = at::zeros({1}, at::kByte);
  REQUIRE_THROWS_WITH(wrpn::masked_grad(undefined, mask),
                      Contains("argument 'grad'") && Contains("undefined"));
  REQUIRE_THROWS_WITH(wrpn::masked_grad(g, undefined),
                      Contains("argument 'mask'") && Contains("undefined"));
}

TEST_CASE("errors: _masked_grad checks the mask's dtype, size and device", "[cpu]") {
  const at::Tensor g = at::ones({20});
  REQUIRE(bit_mismatch(wrpn::masked_grad(g, at::full({3}, 255, at::kByte)), g) == "");
  for (const auto st : {at::kFloat, at::kChar, at::kBool, at::kInt}) {
    INFO("mask dtype " << st);
    REQUIRE_THROWS_WITH(wrpn::masked_grad(g, at::zeros({3}, st)),
                        Contains("argument 'mask'") && Contains("uint8"));
  }
  for (const int64_t bytes : {0, 2, 4, 20}) {
    INFO("mask bytes " << bytes);
    REQUIRE_THROWS_WITH(
        wrpn::masked_grad(g, at::zeros({bytes}, at::kByte)),
        Contains("argument 'mask'") && Contains("ceil(numel/8) = 3") && Contains("20 elements"));
  }
  REQUIRE_THROWS_WITH(wrpn::masked_grad(g, at::zeros({1, 3}, at::kByte)),
                      Contains("argument 'mask'") && Contains("1-D"));
  REQUIRE_THROWS_WITH(wrpn::masked_grad(at::ones({20}, at::kInt), at::zeros({3}, at::kByte)),
                      Contains("argument 'grad'") && Contains("floating-point"));
  const at::Tensor meta_mask =
      at::empty({3}, at::TensorOptions().dtype(at::kByte).device(at::kMeta));
  REQUIRE_THROWS_WITH(wrpn::masked_grad(g, meta_mask),
                      Contains("'mask' is on meta") && Contains("same device"));
}

TEST_CASE("errors: CPU kernel build names and pack_mask/unpack_mask arguments", "[cpu]") {
  CapabilityReset reset;
  REQUIRE_THROWS_WITH(wrpn::set_cpu_kernel_capability("SSE9"),
                      Contains("SSE9") && Contains("DEFAULT, AVX2, AVX512"));
  wrpn::set_cpu_kernel_capability("DEFAULT");
  REQUIRE(wrpn::cpu_kernel_capability() == "DEFAULT");
  wrpn::set_cpu_kernel_capability("");
  const std::string automatic = wrpn::cpu_kernel_capability();
  const std::vector<std::string> caps = supported_capabilities();
  REQUIRE(std::find(caps.begin(), caps.end(), automatic) != caps.end());

  REQUIRE_THROWS_WITH(wrpn::unpack_mask(at::zeros({2}, at::kFloat), 9), Contains("'mask'"));
  REQUIRE_THROWS_WITH(wrpn::unpack_mask(at::zeros({2}, at::kByte), 17),
                      Contains("2 bytes") && Contains("17 elements"));
  REQUIRE_THROWS_WITH(wrpn::unpack_mask(at::zeros({2}, at::kByte), -1),
                      Contains("cannot hold -1 elements"));
  REQUIRE_THROWS_WITH(wrpn::pack_mask(at::zeros({8}, at::kFloat)),
                      Contains("'bits'") && Contains("bool"));
}
