// Tests of wrpn::analysis: range statistics, ADaPTION's Q(m.f) range search, zero fractions and
// MAC sparsity against hand-computed values and explicit loops, and the model-level analysis.

#include <torch/torch.h>
#include <wrpn/wrpn.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace {

using Catch::Contains;
using wrpn::analysis::adaption_search;

torch::Tensor values(std::vector<double> v) { return torch::tensor(v, torch::kDouble); }

/// -3, -2.999, ..., 3 (6001 values, 0 exactly once).
torch::Tensor uniform3() { return torch::arange(-3000, 3001, torch::kDouble) / 1000.0; }

/// The spec's search, brute force on the tensor: smallest m with max|x| <= 2^m (by stepping m),
/// then m decreases while under `thr` of the values exceed 2^(m-1), stopping once all nonzero
/// values exceed 2^m.
int64_t ref_magnitude_bits(const torch::Tensor& x, double thr) {
  const auto a = x.abs().to(torch::kDouble);
  const auto nz = a.masked_select(a.ne(0));
  if (nz.numel() == 0) return 0;
  const double amax = a.max().item<double>(), amin = nz.min().item<double>();
  int64_t m = -200;
  while (amax > std::ldexp(1.0, static_cast<int>(m))) ++m;
  auto frac_above = [&](int64_t e) {
    return a.gt(std::ldexp(1.0, static_cast<int>(e))).to(torch::kDouble).mean().item<double>();
  };
  while (amin <= std::ldexp(1.0, static_cast<int>(m)) && frac_above(m - 1) < thr) --m;
  return m;
}

/// Explicit-loop MAC counts of a zero-padded conv2d.
wrpn::analysis::MacSparsity ref_conv_macs(const torch::Tensor& x, const torch::Tensor& w,
                                          int64_t stride, int64_t pad, int64_t dil,
                                          int64_t groups) {
  const auto X = x.to(torch::kDouble).contiguous();
  const auto W = w.to(torch::kDouble).contiguous();
  const auto xa = X.accessor<double, 4>();
  const auto wa = W.accessor<double, 4>();
  const int64_t n = X.size(0), cin = X.size(1), h = X.size(2), wd = X.size(3);
  const int64_t cout = W.size(0), cg = W.size(1), kh = W.size(2), kw = W.size(3);
  const int64_t ho = (h + 2 * pad - dil * (kh - 1) - 1) / stride + 1;
  const int64_t wo = (wd + 2 * pad - dil * (kw - 1) - 1) / stride + 1;
  REQUIRE(cin == cg * groups);
  wrpn::analysis::MacSparsity m;
  for (int64_t b = 0; b < n; ++b)
    for (int64_t co = 0; co < cout; ++co) {
      const int64_t g = co / (cout / groups);
      for (int64_t oy = 0; oy < ho; ++oy)
        for (int64_t ox = 0; ox < wo; ++ox)
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t ky = 0; ky < kh; ++ky)
              for (int64_t kx = 0; kx < kw; ++kx) {
                const int64_t iy = oy * stride - pad + ky * dil, ix = ox * stride - pad + kx * dil;
                const bool inside = iy >= 0 && iy < h && ix >= 0 && ix < wd;
                const bool a = inside && xa[b][g * cg + c][iy][ix] != 0.0;
                const bool wt = wa[co][c][ky][kx] != 0.0;
                ++m.total;
                m.nonzero += a && wt;
                m.nonzero_weight += wt;
                m.nonzero_activation += a;
              }
    }
  return m;
}

/// Integers in [-2, 2] (about 20% zeros), as a float tensor.
torch::Tensor sparse_ints(std::vector<int64_t> shape, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(-2, 3, shape).to(torch::kFloat);
}

void check_macs(const wrpn::analysis::MacSparsity& got, const wrpn::analysis::MacSparsity& want) {
  CHECK(got.total == want.total);
  CHECK(got.nonzero == want.nonzero);
  CHECK(got.nonzero_weight == want.nonzero_weight);
  CHECK(got.nonzero_activation == want.nonzero_activation);
}

}  // namespace

TEST_CASE("analysis: range search: uniform [-3, 3] needs 2 magnitude bits and a sign bit",
          "[analysis]") {
  const auto x = uniform3();
  const auto c = adaption_search(x, 16, 0.0);
  CHECK(c.magnitude_bits == 2);
  CHECK(c.format.total_bits == 16);
  CHECK(c.format.int_bits() == 3);
  CHECK(c.format.frac_bits == 13);
  CHECK(c.format.to_string() == "Q3.13");
  CHECK(c.saturated_fraction == 0.0);
  CHECK(adaption_search(x, 8, 0.0).format.to_string() == "Q3.5");
  CHECK(wrpn::analysis::adaption_int_bits(x, 16, 0.0) == 3);
  // Exactly 2^m fits: max 4 still gives m = 2; a hair above it needs m = 3.
  CHECK(adaption_search(values({-4.0, 1.0, 4.0}), 16, 0.0).magnitude_bits == 2);
  CHECK(adaption_search(values({-1.0, 4.0 + 1e-9}), 16, 0.0).magnitude_bits == 3);
  // Threshold 0.1: above 2 are 1/3 of the values, above 1 are 2/3: no decrease either.
  CHECK(adaption_search(x, 16, 0.1).magnitude_bits == 2);
  // Threshold 0.4: 2000/6001 = 33% exceed 2, so m drops to 1 (Q2.14); 4000/6001 exceed 1.
  const auto c4 = adaption_search(x, 16, 0.4);
  CHECK(c4.magnitude_bits == 1);
  CHECK(c4.format.to_string() == "Q2.14");
  CHECK(c4.saturated_fraction == Approx(2000.0 / 6001.0).epsilon(1e-12));
}

TEST_CASE("analysis: range search: 5% outliers saturate under a 10% threshold", "[analysis]") {
  // 950 values in [-3, 3] and 50 at +100.
  const auto core = torch::linspace(-3.0, 3.0, 950, torch::kDouble);
  const auto x = torch::cat({core, torch::full({50}, 100.0, torch::kDouble)});
  const auto strict = adaption_search(x, 16, 0.0);
  CHECK(strict.magnitude_bits == 7);  // 100 <= 128
  CHECK(strict.format.to_string() == "Q8.8");
  // 1% threshold: the 5% at 100 must not saturate.
  CHECK(adaption_search(x, 16, 0.01).format.to_string() == "Q8.8");
  // 10%: every m down to 2 saturates only the outliers (5%); at m = 1 all |x| > 2 would too.
  const auto c = adaption_search(x, 16, 0.1);
  CHECK(c.magnitude_bits == 2);
  CHECK(c.format.to_string() == "Q3.13");
  CHECK(c.saturated_fraction == Approx(0.05).epsilon(1e-12));
  const double above2 = x.abs().gt(2.0).to(torch::kDouble).mean().item<double>();
  REQUIRE(above2 > 0.1);
  for (double thr : {0.0, 0.01, 0.05, 0.0501, 0.1, above2, above2 + 1e-9, 0.5, 0.9, 1.0}) {
    CHECK(adaption_search(x, 16, thr).magnitude_bits == ref_magnitude_bits(x, thr));
  }
}

TEST_CASE("analysis: range search matches a brute-force reference on random data", "[analysis]") {
  torch::manual_seed(3);
  for (double scale : {1e-3, 0.05, 0.7, 3.0, 250.0}) {
    auto x = torch::randn({4000}, torch::kDouble) * scale;
    x.index_put_({torch::randint(0, 4000, {400})}, 0.0);
    for (double thr : {0.0, 0.001, 0.02, 0.1, 0.3, 0.7, 1.0}) {
      INFO("scale " << scale << " threshold " << thr);
      const auto c = adaption_search(x, 12, thr);
      const int64_t m = ref_magnitude_bits(x, thr);
      CHECK(c.magnitude_bits == m);
      const int64_t ib = std::clamp<int64_t>(m + 1, 1, 12);
      CHECK(c.format.int_bits() == ib);
      CHECK(c.format.frac_bits == 12 - ib);
      CHECK(c.saturated_fraction == Approx(x.abs()
                                               .gt(std::ldexp(1.0, static_cast<int>(ib - 1)))
                                               .to(torch::kDouble)
                                               .mean()
                                               .item<double>()));
    }
  }
}

TEST_CASE("analysis: range search edge cases", "[analysis]") {
  SECTION("all zeros: sign bit only") {
    const auto c = adaption_search(torch::zeros({5, 5}), 16, 0.1);
    CHECK(c.format.to_string() == "Q1.15");
    CHECK(c.magnitude_bits == 0);
    CHECK(c.saturated_fraction == 0.0);
  }
  SECTION("single values") {
    CHECK(adaption_search(values({5.0}), 16, 0.1).format.to_string() == "Q4.12");
    CHECK(adaption_search(values({-1.0}), 16, 0.1).format.to_string() == "Q1.15");
    // 0.3 <= 2^-1: m = -1, clamped to the sign bit with 15 fraction bits at most.
    const auto c = adaption_search(values({0.3}), 16, 0.1);
    CHECK(c.magnitude_bits == -1);
    CHECK(c.format.to_string() == "Q1.15");
  }
  SECTION("too large for the total bits: every integer bit, no fraction") {
    const auto c = adaption_search(values({1e6, -3.0}), 16, 0.0);
    CHECK(c.magnitude_bits == 20);
    CHECK(c.format.to_string() == "Q16.0");
    CHECK(c.saturated_fraction == 0.5);  // 1e6 > 2^15
  }
  SECTION("threshold 1 decreases until every nonzero value saturates") {
    const auto c = adaption_search(values({0.75, 3.0}), 16, 1.0);
    CHECK(c.magnitude_bits == 0);  // at m = -1 both exceed 2^-1
    CHECK(c.saturated_fraction == 0.5);
    // With a zero present the search stops one below the smallest nonzero magnitude's bucket.
    const auto z = adaption_search(uniform3(), 16, 1.0);
    CHECK(z.magnitude_bits == -10);  // 2^-10 < 0.001 <= 2^-9
    CHECK(z.format.to_string() == "Q1.15");
  }
  SECTION("NaN and inf are left out") {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    const auto x = values({nan, inf, -inf, 3.0});
    const auto s = wrpn::analysis::range_stats(x);
    CHECK(s.count == 1);
    CHECK(s.nonfinite == 3);
    CHECK(s.max == 3.0);
    CHECK(adaption_search(x, 16, 0.1).format.to_string() == "Q3.13");
    CHECK_THROWS_WITH(adaption_search(values({nan}), 16, 0.1), Contains("no finite values"));
  }
  SECTION("bad arguments name themselves") {
    const auto x = uniform3();
    for (int64_t b : {-1, 0, 1, 17, 32}) {
      CHECK_THROWS_WITH(adaption_search(x, b, 0.1),
                        Contains("'total_bits'") && Contains("[2, 16]"));
    }
    for (double t : {-0.01, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
      CHECK_THROWS_WITH(adaption_search(x, 16, t), Contains("'threshold'") && Contains("[0, 1]"));
    }
    CHECK_THROWS_WITH(adaption_search(torch::empty({0}), 16, 0.1), Contains("no finite values"));
    CHECK_THROWS_WITH(adaption_search(torch::ones({3}, torch::kInt), 16, 0.1),
                      Contains("floating-point"));
    CHECK_NOTHROW(adaption_search(x, 2, 0.0));
    CHECK(adaption_search(x, 2, 0.0).format.to_string() == "Q2.0");
  }
}

TEST_CASE("analysis: range statistics: exact counts, moments, histogram and percentiles",
          "[analysis]") {
  const auto x = torch::arange(0, 101, torch::kFloat);  // 0, 1, ..., 100
  const auto s = wrpn::analysis::range_stats(x, {0.0, 0.1, 1.0, 25.0, 50.0, 99.9, 100.0});
  CHECK(s.count == 101);
  CHECK(s.zeros == 1);
  CHECK(s.zero_fraction() == Approx(1.0 / 101));
  CHECK(s.min == 0.0);
  CHECK(s.max == 100.0);
  CHECK(s.abs_max == 100.0);
  CHECK(s.mean == Approx(50.0));
  CHECK(s.std == Approx(std::sqrt(850.0)));  // population std of 0..100
  CHECK(s.percentiles_exact);
  CHECK(s.sample_size == 101);
  // Linear interpolation: the p-th percentile of 0..100 is p.
  for (double p : {0.0, 0.1, 1.0, 25.0, 50.0, 99.9, 100.0}) CHECK(s.percentiles.at(p) == Approx(p));
  const auto q =
      torch::quantile(x.to(torch::kDouble), torch::tensor({0.001, 0.999}, torch::kDouble));
  CHECK(s.percentiles.at(0.1) == Approx(q[0].item<double>()));
  CHECK(s.percentiles.at(99.9) == Approx(q[1].item<double>()));
  // Buckets 2^(e-1) < |x| <= 2^e: 1 -> 0, 2 -> 1, {3, 4} -> 2, 5..8 -> 3, ..., 65..100 -> 7.
  const std::map<int64_t, int64_t> hist{{0, 1}, {1, 1},  {2, 2},  {3, 4},
                                        {4, 8}, {5, 16}, {6, 32}, {7, 36}};
  CHECK(s.log2_counts == hist);
  CHECK(s.fraction_above_pow2(3) == Approx(92.0 / 101));
  CHECK(s.fraction_above_pow2(7) == 0.0);
  CHECK(s.fraction_above_pow2(-5) == Approx(100.0 / 101));
  // Negative values and -0 count by magnitude; -0 is a zero.
  const auto n = wrpn::analysis::range_stats(values({-0.0, -0.5, 0.25, -6.0}));
  CHECK(n.zeros == 1);
  CHECK(n.min == -6.0);
  CHECK(n.abs_max == 6.0);
  CHECK(n.log2_counts == std::map<int64_t, int64_t>{{-2, 1}, {-1, 1}, {3, 1}});
}

TEST_CASE("analysis: range accumulator: batches add up to the whole, sampled percentiles",
          "[analysis]") {
  torch::manual_seed(5);
  const auto x = torch::randn({3000}) * 2;
  const auto whole = wrpn::analysis::range_stats(x);
  wrpn::analysis::RangeAccumulator acc;
  for (const auto& part : x.split(1000)) acc.add(part.view({10, 100}));
  const auto s = acc.stats();
  CHECK(s.count == whole.count);
  CHECK(s.zeros == whole.zeros);
  CHECK(s.min == whole.min);
  CHECK(s.max == whole.max);
  CHECK(s.mean == Approx(whole.mean).margin(1e-12));
  CHECK(s.std == Approx(whole.std));
  CHECK(s.log2_counts == whole.log2_counts);
  CHECK(s.percentiles_exact);
  for (const auto& [p, v] : whole.percentiles) CHECK(s.percentiles.at(p) == Approx(v));

  // Beyond the capacity: a uniform sample, reproducible by seed.
  wrpn::analysis::RangeOptions o;
  o.sample_capacity = 2000;
  o.percentiles = {10.0, 50.0, 90.0};
  wrpn::analysis::RangeAccumulator a(o), b(o);
  const auto big = torch::arange(0, 100000, torch::kFloat) / 100000.0;  // uniform on [0, 1)
  for (const auto& part : big.split(7000)) {
    a.add(part);
    b.add(part);
  }
  const auto sa = a.stats(), sb = b.stats();
  CHECK(sa.count == 100000);
  CHECK_FALSE(sa.percentiles_exact);
  CHECK(sa.sample_size == 2000);
  CHECK(sa.max == Approx(0.99999));  // exact fields stay exact
  CHECK(sa.zeros == 1);
  for (double p : {10.0, 50.0, 90.0}) {
    CHECK(sa.percentiles.at(p) == Approx(p / 100).margin(0.04));
    CHECK(sa.percentiles.at(p) == sb.percentiles.at(p));
  }
  // fp16 and bf16 work.
  CHECK(wrpn::analysis::range_stats(torch::ones({4}, torch::kHalf)).max == 1.0);
  CHECK(wrpn::analysis::range_stats(torch::full({4}, -2.0, torch::kBFloat16)).min == -2.0);
}

TEST_CASE("analysis: zero fraction counts exact zeros", "[analysis]") {
  CHECK(wrpn::analysis::zero_fraction(values({0.0, -0.0, 1e-30, 2.0, 0.0})) == Approx(0.6));
  CHECK(wrpn::analysis::zero_fraction(torch::empty({0})) == 0.0);
  CHECK(wrpn::analysis::zero_fraction(torch::zeros({3, 3})) == 1.0);
  // Non-contiguous views count their own elements.
  const auto t = torch::tensor({{0.0, 1.0}, {0.0, 0.0}}).t();
  CHECK(wrpn::analysis::zero_fraction(t.select(0, 0)) == 1.0);
}

TEST_CASE("analysis: conv MAC sparsity equals explicit loops", "[analysis]") {
  struct Case {
    int64_t cin, cout, k, stride, pad, dil, groups, h;
  };
  for (const Case& c :
       {Case{3, 4, 3, 2, 1, 1, 1, 7}, Case{4, 6, 3, 1, 1, 1, 2, 5}, Case{2, 2, 2, 1, 0, 2, 1, 6},
        Case{4, 4, 1, 2, 0, 1, 4, 5}, Case{1, 3, 5, 3, 2, 1, 1, 9}}) {
    INFO("cin " << c.cin << " cout " << c.cout << " k " << c.k << " stride " << c.stride << " pad "
                << c.pad << " dil " << c.dil << " groups " << c.groups);
    const auto x = sparse_ints({2, c.cin, c.h, c.h}, 11);
    const auto w = sparse_ints({c.cout, c.cin / c.groups, c.k, c.k}, 12);
    const auto got = wrpn::analysis::conv_mac_sparsity(x, w, {c.stride, c.stride}, {c.pad, c.pad},
                                                       {c.dil, c.dil}, c.groups);
    const auto want = ref_conv_macs(x, w, c.stride, c.pad, c.dil, c.groups);
    check_macs(got, want);
    REQUIRE(want.nonzero > 0);
    REQUIRE(want.nonzero < want.nonzero_weight);
    CHECK(got.skipped() == Approx(1.0 - double(want.nonzero) / want.total));
  }
  // The cost report's MAC count: N*Hout*Wout*Cout*(Cin/groups)*kh*kw.
  const auto m = wrpn::analysis::conv_mac_sparsity(
      torch::ones({2, 4, 8, 8}), torch::ones({6, 2, 3, 3}), {2, 2}, {1, 1}, {1, 1}, 2);
  CHECK(m.total == 2 * 4 * 4 * 6 * 2 * 3 * 3);
  CHECK(m.nonzero_weight == m.total);
  CHECK(m.skipped_by_weights() == 0.0);
  // Padding is a zero activation: on a 4x4 output of an 8x8 input with pad 1, the first row and
  // column of windows each touch 3 padded pixels of 9.
  const int64_t padded_window_pixels = (4 * 3 + 4 * 3 - 1) * 2 * 6 * 2;  // per image x channel
  CHECK(m.total - m.nonzero_activation == padded_window_pixels);
  CHECK_THROWS_WITH(
      wrpn::analysis::conv_mac_sparsity(torch::ones({1, 3, 4, 4}), torch::ones({2, 2, 3, 3}),
                                        {1, 1}, {0, 0}, {1, 1}, 1),
      Contains("'groups'"));
}

TEST_CASE("analysis: linear MAC sparsity equals explicit loops", "[analysis]") {
  const auto x = sparse_ints({2, 3, 7}, 21);  // [..., in]: 6 rows
  const auto w = sparse_ints({5, 7}, 22);
  wrpn::analysis::MacSparsity want;
  const auto xr = x.reshape({-1, 7});
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t o = 0; o < 5; ++o)
      for (int64_t i = 0; i < 7; ++i) {
        const bool a = xr[r][i].item<float>() != 0, wt = w[o][i].item<float>() != 0;
        ++want.total;
        want.nonzero += a && wt;
        want.nonzero_weight += wt;
        want.nonzero_activation += a;
      }
  check_macs(wrpn::analysis::linear_mac_sparsity(x, w), want);
  check_macs(wrpn::analysis::linear_mac_sparsity(xr, w), want);
  CHECK_THROWS_WITH(wrpn::analysis::linear_mac_sparsity(torch::ones({2, 6}), w),
                    Contains("'input'"));
  wrpn::analysis::MacSparsity sum = want;
  sum += want;
  CHECK(sum.total == 2 * want.total);
  CHECK(sum.skipped() == Approx(want.skipped()));
}

TEST_CASE("model analysis reports every layer of a small quantized network", "[analysis][nn]") {
  namespace wn = wrpn::nn;
  torch::manual_seed(7);
  wn::QuantConv2d c0(wn::QuantConv2dOptions(1, 4, 3).padding(1).weight_bits(2));
  wn::QuantReLU a0(4);
  wn::QuantConv2d c1(wn::QuantConv2dOptions(4, 6, 3).stride(2).padding(1).groups(2).weight_bits(4));
  wn::QuantReLU a1(2);
  wn::QuantLinear fc(wn::QuantLinearOptions(6 * 4 * 4, 3).weight_bits(32));
  torch::nn::Sequential net(c0, a0, c1, a1, torch::nn::Flatten(), fc);
  net->train();

  const std::vector<torch::Tensor> batches{torch::randn({3, 1, 8, 8}), torch::randn({2, 1, 8, 8})};
  wrpn::analysis::AnalysisOptions opt;
  opt.total_bits = 12;
  const auto r = wrpn::analysis::analyze_model(
      *net, batches, [&](const torch::Tensor& x) { return net->forward(x); }, opt);
  CHECK(net->is_training());  // restored
  CHECK(r.batches == 2);
  CHECK(r.samples == 5);
  REQUIRE(r.layers.size() == 5);
  const std::vector<std::string> names{"0", "1", "2", "3", "5"};
  const std::vector<std::string> kinds{"conv", "act", "conv", "act", "linear"};
  const std::vector<int64_t> bits{2, 4, 4, 2, 32};
  for (size_t i = 0; i < 5; ++i) {
    CHECK(r.layers[i].name == names[i]);
    CHECK(r.layers[i].kind == kinds[i]);
    CHECK(r.layers[i].bits == bits[i]);
    CHECK(r.layers[i].calls == 2);
  }
  CHECK(r.layers[0].quantizer() == "wrpn2");
  CHECK(r.layers[3].quantizer() == "wrpn2");
  CHECK(r.layers[4].quantizer() == "fp32");

  // The same tensors, computed by hand (eval mode; no BatchNorm here anyway).
  torch::NoGradGuard no_grad;
  wrpn::analysis::MacSparsity m0, m1, m2;
  int64_t zeros_a0 = 0, zeros_a1 = 0, n_a0 = 0, n_a1 = 0;
  double a1_max = 0;
  for (const auto& x : batches) {
    const auto y0 = c0->forward(x);
    const auto z0 = wrpn::quantize_activation(y0, 4);
    const auto y1 = c1->forward(z0);
    const auto z1 = wrpn::quantize_activation(y1, 2);
    m0 += wrpn::analysis::conv_mac_sparsity(x, c0->effective_weight(), {1, 1}, {1, 1}, {1, 1}, 1);
    m1 += wrpn::analysis::conv_mac_sparsity(z0, c1->effective_weight(), {2, 2}, {1, 1}, {1, 1}, 2);
    m2 += wrpn::analysis::linear_mac_sparsity(z1.flatten(1), fc->weight);
    zeros_a0 += z0.eq(0).sum().item<int64_t>();
    zeros_a1 += z1.eq(0).sum().item<int64_t>();
    n_a0 += z0.numel();
    n_a1 += z1.numel();
    a1_max = std::max(a1_max, z1.max().item<double>());
  }
  const auto& L = r.layers;
  // Weights: fp32 shadow range; zeros of the 2-bit weight as the quantizer leaves them.
  CHECK(L[0].weight_numel == 36);
  CHECK(L[0].weight.max == c0->weight.max().item<double>());
  CHECK(L[0].weight.min == c0->weight.min().item<double>());
  CHECK(L[0].effective_weight_zero_fraction == Approx(wn::zero_fraction(c0->weight, 2)));
  CHECK(L[2].effective_weight_zero_fraction == Approx(wn::zero_fraction(c1->weight, 4)));
  CHECK(L[4].effective_weight_zero_fraction == Approx(wn::zero_fraction(fc->weight, 32)));
  REQUIRE(wn::zero_fraction(c0->weight, 2) > 0.0);
  // MACs.
  check_macs(L[0].macs, m0);
  check_macs(L[2].macs, m1);
  check_macs(L[4].macs, m2);
  CHECK(L[0].macs.total == 5 * 8 * 8 * 4 * 1 * 9);
  CHECK(L[2].macs.total == 5 * 4 * 4 * 6 * 2 * 9);
  wrpn::analysis::MacSparsity all = m0;
  all += m1;
  all += m2;
  check_macs(r.total_macs(), all);
  // Activations: an act's output, a conv's input.
  CHECK(L[1].activation.count == n_a0);
  CHECK(L[1].activation.zeros == zeros_a0);
  CHECK(L[3].activation.zeros == zeros_a1);
  CHECK(L[2].activation.zeros == zeros_a0);  // conv 2 reads act 1's output
  CHECK(L[4].activation.zeros == zeros_a1);
  CHECK(L[0].activation.count == 5 * 64);
  CHECK(L[3].activation.max == a1_max);
  // Formats: the search on the reported ranges; activations in [0, 1] need no magnitude bit.
  CHECK(L[0].weight_format.format.to_string() ==
        adaption_search(c0->weight, 12, opt.threshold).format.to_string());
  CHECK(L[1].activation_format.format.int_bits() == 1);
  CHECK(L[1].activation_format.format.total_bits == 12);

  // The precision config: every layer fixed, each with its own format.
  const auto cfg = r.fixed_point_config(wrpn::PrecisionConfig::make(4, 4, 1.5));
  CHECK(cfg.scheme == "fixed");
  CHECK(cfg.weight_bits == 12);
  CHECK(cfg.act_bits == 12);
  CHECK(cfg.width == 1.5);
  REQUIRE(cfg.fixed_point.size() == 5);
  CHECK(cfg.fixed_point.at("0").to_string() == L[0].weight_format.format.to_string());
  CHECK(cfg.fixed_point.at("1").to_string() == L[1].activation_format.format.to_string());
  CHECK(cfg.fixed_point.at("5").to_string() == L[4].weight_format.format.to_string());
  CHECK(wrpn::PrecisionConfig::from_json(cfg.to_json()) == cfg);

  // JSON holds every layer with its percentiles.
  const auto j = nlohmann::json::parse(r.to_json());
  REQUIRE(j["layers"].size() == 5);
  CHECK(j["layers"][0]["name"] == "0");
  CHECK(j["layers"][0]["weight_format"]["format"] == L[0].weight_format.format.to_string());
  CHECK(j["layers"][1]["activation"]["percentiles"].contains("99.9"));
  CHECK(j["totals"]["macs"]["total"] == all.total);
  CHECK_FALSE(j["layers"][1].contains("macs"));
}

TEST_CASE("model analysis names a layer's fixed-point format", "[analysis][nn]") {
  namespace wn = wrpn::nn;
  const auto q = wrpn::FixedPointFormat::parse("Q3.5");
  wn::QuantConv2d conv(wn::QuantConv2dOptions(1, 2, 3).weight_bits(8).fixed_point(q));
  wn::QuantReLU act(wn::QuantReLUOptions(8).fixed_point(wrpn::FixedPointFormat::parse("Q2.6")));
  torch::nn::Sequential net(conv, act);
  const auto r = wrpn::analysis::analyze_model(
      *net, {torch::randn({1, 1, 5, 5})}, [&](const torch::Tensor& x) { return net->forward(x); });
  REQUIRE(r.layers.size() == 2);
  CHECK(r.layers[0].quantizer() == "Q3.5");
  CHECK(r.layers[1].quantizer() == "Q2.6");
  // The zeros of the weight as used: the fixed-point one.
  CHECK(r.layers[0].effective_weight_zero_fraction ==
        Approx(wrpn::analysis::zero_fraction(conv->effective_weight())));
}

TEST_CASE("model analysis of a zoo model sees every quantized layer", "[analysis][models]") {
  wrpn::models::ModelSpec spec;
  spec.name = "resnet20";
  spec.in_channels = 1;
  spec.num_classes = 10;
  spec.precision = wrpn::PrecisionConfig::make(2, 2, 1.0);
  torch::manual_seed(1);
  auto model = wrpn::models::create_model(spec);
  wrpn::analysis::ModelAnalyzer analyzer(*model);
  const auto x = torch::randn({2, 1, 32, 32});
  // Layers of another network run under the same observer are not reported.
  wrpn::nn::QuantConv2d stranger(wrpn::nn::QuantConv2dOptions(1, 1, 1));
  analyzer.observe([&] {
    model->forward(x);
    stranger->forward(x);
  });
  const auto r = analyzer.result();
  std::set<std::string> expected, reported;
  for (const auto& item : model->named_modules()) {
    const auto* m = item.value().get();
    if (dynamic_cast<const wrpn::nn::QuantConv2dImpl*>(m) ||
        dynamic_cast<const wrpn::nn::QuantLinearImpl*>(m) ||
        dynamic_cast<const wrpn::nn::QuantReLUImpl*>(m)) {
      expected.insert(item.key());
    }
  }
  for (const auto& l : r.layers) {
    reported.insert(l.name);
    CHECK(l.calls == 1);
    CHECK(l.activation.count > 0);
    if (l.kind == "conv" && l.bits == 2) {
      for (const auto& item : model->named_modules()) {
        if (item.key() != l.name) continue;
        const auto* conv = item.value()->as<wrpn::nn::QuantConv2d>();
        CHECK(l.effective_weight_zero_fraction == Approx(wrpn::nn::zero_fraction(conv->weight, 2)));
      }
    }
  }
  CHECK(expected.size() > 20);
  CHECK(reported == expected);
  CHECK(r.samples == 2);
  const auto cfg = r.fixed_point_config(spec.precision);
  CHECK(cfg.fixed_point.size() == expected.size());
  // The zoo builds the fixed-point model the config describes (it rejects unknown names).
  auto fixed_spec = spec;
  fixed_spec.precision = cfg;
  auto fixed = wrpn::models::create_model(fixed_spec);
  for (const auto& item : fixed->named_modules()) {
    if (const auto* conv = item.value()->as<wrpn::nn::QuantConv2d>()) {
      CHECK(conv->options.fixed_point().to_string() == cfg.fixed_point.at(item.key()).to_string());
    }
  }
  CHECK(fixed->forward(x).sizes() == torch::IntArrayRef({2, 10}));
}
