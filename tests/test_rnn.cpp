// Tests of wrpn::nn::QuantLSTM / QuantGRU and the fused recurrent cell (spec.md, "Low-precision
// wide RNNs"): the forward bit for bit against the same network written in plain ATen ops, the
// gradients of backprop through time against that composite's autograd, fp32 layers against
// torch::nn::LSTM / GRU, state dicts in and out of LibTorch's layers, the zero fraction of the
// scaled weight quantizer, and bad arguments.

#include <torch/torch.h>
#include <wrpn/wrpn.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "quant_reference.h"

namespace {

using Catch::Contains;
using torch::Tensor;

// ---- the composite reference, from spec.md ------------------------------------------------------

/// round(clamp(v, -1, 1) * s) / s, s = 2^(k-1) - 1, with the straight-through gradient `mask`.
Tensor ref_signed_quant(const Tensor& v, int64_t bits, const Tensor& mask) {
  if (bits == 32) return v;
  const double s = std::pow(2.0, bits - 1) - 1;
  const Tensor q = (torch::round(v.clamp(-1, 1) * s) / s).detach();
  return q + (v - v.detach()) * mask;
}

/// a * Q_k(W / a); gradient [|W| <= a].
Tensor ref_weight(const Tensor& w, double a, int64_t bits) {
  if (bits == 32) return w;
  const Tensor v = w / a;
  const Tensor mask = v.abs().le(1).to(torch::kFloat).detach();
  return ref_signed_quant(v, bits, mask) * a;
}

/// The hidden state's quantizer (mask [|h| <= 1]).
Tensor ref_hidden(const Tensor& h, int64_t bits) {
  return ref_signed_quant(h, bits, h.abs().le(1).to(torch::kFloat).detach());
}

/// sigmoid and tanh as the fused cell computes them: in double, rounded to float.
Tensor ref_sigmoid(const Tensor& x) { return x.to(torch::kDouble).sigmoid().to(torch::kFloat); }
Tensor ref_tanh(const Tensor& x) { return x.to(torch::kDouble).tanh().to(torch::kFloat); }

struct Dims {
  int64_t in, hidden, layers;
};

Tensor param(torch::nn::Module& m, const std::string& name) {
  const auto params = m.named_parameters(false);
  const Tensor* p = params.find(name);
  return p ? *p : Tensor();
}

/// Layer l's input projection as the module computes it: x reshaped to [T*B, in], one GEMM.
Tensor ref_projection(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t T = x.size(0), B = x.size(1);
  return torch::linear(x.reshape({T * B, x.size(2)}), w, b).view({T, B, -1});
}

/// The LSTM of spec.md on [T, B, in]; h0, c0 [L, B, H]. Returns (output, h_n, c_n).
std::tuple<Tensor, Tensor, Tensor> ref_lstm(torch::nn::Module& m, const Tensor& x_in,
                                            const Tensor& h0, const Tensor& c0, int64_t layers,
                                            double a, int64_t wbits, int64_t hbits) {
  Tensor x = x_in;
  std::vector<Tensor> hn, cn;
  for (int64_t l = 0; l < layers; ++l) {
    const std::string s = "_l" + std::to_string(l);
    const Tensor w_ih = ref_weight(param(m, "weight_ih" + s), a, wbits);
    const Tensor w_hh = ref_weight(param(m, "weight_hh" + s), a, wbits);
    const Tensor xp = ref_projection(x, w_ih, param(m, "bias_ih" + s));
    Tensor h = h0[l], c = c0[l];
    std::vector<Tensor> outs;
    for (int64_t t = 0; t < x.size(0); ++t) {
      const Tensor pre = xp[t] + torch::linear(h, w_hh, param(m, "bias_hh" + s));
      const auto g = pre.chunk(4, 1);
      const Tensor i = ref_sigmoid(g[0]), f = ref_sigmoid(g[1]), gg = ref_tanh(g[2]),
                   o = ref_sigmoid(g[3]);
      c = f * c + i * gg;
      h = ref_hidden(o * ref_tanh(c), hbits);
      outs.push_back(h);
    }
    x = torch::stack(outs);
    hn.push_back(h);
    cn.push_back(c);
  }
  return {x, torch::stack(hn), torch::stack(cn)};
}

/// The GRU of spec.md: n = tanh(xn + r * hn), h = (1 - z) * n + z * h_prev.
std::tuple<Tensor, Tensor> ref_gru(torch::nn::Module& m, const Tensor& x_in, const Tensor& h0,
                                   int64_t layers, double a, int64_t wbits, int64_t hbits) {
  Tensor x = x_in;
  std::vector<Tensor> hn;
  for (int64_t l = 0; l < layers; ++l) {
    const std::string s = "_l" + std::to_string(l);
    const Tensor w_ih = ref_weight(param(m, "weight_ih" + s), a, wbits);
    const Tensor w_hh = ref_weight(param(m, "weight_hh" + s), a, wbits);
    const Tensor xp = ref_projection(x, w_ih, param(m, "bias_ih" + s));
    Tensor h = h0[l];
    std::vector<Tensor> outs;
    for (int64_t t = 0; t < x.size(0); ++t) {
      const Tensor hg = torch::linear(h, w_hh, param(m, "bias_hh" + s));
      const auto xs = xp[t].chunk(3, 1);
      const auto hs = hg.chunk(3, 1);
      const Tensor r = ref_sigmoid(xs[0] + hs[0]);
      const Tensor z = ref_sigmoid(xs[1] + hs[1]);
      const Tensor n = ref_tanh(xs[2] + r * hs[2]);
      h = ref_hidden((1 - z) * n + z * h, hbits);
      outs.push_back(h);
    }
    x = torch::stack(outs);
    hn.push_back(h);
  }
  return {x, torch::stack(hn)};
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.sizes() == b.sizes() && torch::equal(a, b);
}

void check_close(const Tensor& a, const Tensor& b, const std::string& what) {
  INFO(what << ": max |diff| " << (a - b).abs().max().item<double>() << ", max |ref| "
            << b.abs().max().item<double>());
  REQUIRE(a.sizes() == b.sizes());
  CHECK(torch::allclose(a, b, 1e-4, 1e-5));
}

/// Every parameter's and input's gradient of sum(out * wo) + sum(hn * wh) [+ sum(cn * wc)].
std::vector<Tensor> grads_of(const std::vector<Tensor>& outs, const std::vector<Tensor>& inputs,
                             uint64_t seed) {
  torch::manual_seed(seed);
  Tensor loss = torch::zeros({});
  for (const auto& o : outs) loss = loss + (o * torch::randn(o.sizes())).sum();
  return torch::autograd::grad({loss}, inputs, {}, /*retain_graph=*/false, false,
                               /*allow_unused=*/true);
}

std::vector<Tensor> param_list(torch::nn::Module& m) {
  std::vector<Tensor> out;
  for (const auto& p : m.named_parameters(false)) out.push_back(p.value());
  return out;
}

// ---- LSTM ---------------------------------------------------------------------------------------

struct LstmCase {
  int64_t in, hidden, layers, T, B;
  int64_t wbits, hbits;
  bool with_state, batch_first, bias;
};

std::ostream& operator<<(std::ostream& os, const LstmCase& k) {
  return os << "in " << k.in << " H " << k.hidden << " L " << k.layers << " T " << k.T << " B "
            << k.B << " bits " << k.wbits << "/" << k.hbits << " state " << k.with_state
            << " batch_first " << k.batch_first << " bias " << k.bias;
}

/// QuantLSTMOptions / QuantGRUOptions for a case.
template <typename Options>
Options case_options(const LstmCase& k) {
  return Options(k.in, k.hidden)
      .num_layers(k.layers)
      .weight_bits(k.wbits)
      .hidden_bits(k.hbits)
      .batch_first(k.batch_first)
      .bias(k.bias);
}

void run_lstm_case(const LstmCase& k) {
  INFO("LSTM " << k);
  torch::manual_seed(7 + k.hidden + k.wbits);
  wrpn::nn::QuantLSTM m(case_options<wrpn::nn::QuantLSTMOptions>(k));
  const double a = m->weight_scale();
  Tensor x = torch::randn({k.T, k.B, k.in}).requires_grad_(true);
  Tensor h0 = (torch::rand({k.layers, k.B, k.hidden}) * 2 - 1).requires_grad_(true);
  Tensor c0 = torch::randn({k.layers, k.B, k.hidden}).requires_grad_(true);
  const Tensor x_in = k.batch_first ? x.transpose(0, 1) : x;
  Tensor out, hn, cn;
  if (k.with_state) {
    auto res = m->forward(x_in, std::make_tuple(h0, c0));
    out = std::get<0>(res);
    std::tie(hn, cn) = std::get<1>(res);
  } else {
    auto res = m->forward(x_in);
    out = std::get<0>(res);
    std::tie(hn, cn) = std::get<1>(res);
  }
  if (k.batch_first) out = out.transpose(0, 1);
  const Tensor h_start = k.with_state ? h0 : torch::zeros_like(h0);
  const Tensor c_start = k.with_state ? c0 : torch::zeros_like(c0);
  auto [r_out, r_hn, r_cn] = ref_lstm(*m, x, h_start, c_start, k.layers, a, k.wbits, k.hbits);
  CHECK(bit_equal(out, r_out));
  CHECK(bit_equal(hn, r_hn));
  CHECK(bit_equal(cn, r_cn));

  std::vector<Tensor> inputs = param_list(*m);
  inputs.push_back(x);
  if (k.with_state) {
    inputs.push_back(h0);
    inputs.push_back(c0);
  }
  const auto g = grads_of({out, hn, cn}, inputs, 11);
  const auto rg = grads_of({r_out, r_hn, r_cn}, inputs, 11);
  for (size_t i = 0; i < g.size(); ++i) {
    REQUIRE(g[i].defined());
    REQUIRE(rg[i].defined());
    check_close(g[i], rg[i], "gradient " + std::to_string(i));
  }
}

TEST_CASE("QuantLSTM forward is bit-exact and BPTT gradients match the ATen composite", "[rnn]") {
  const std::vector<LstmCase> cases = {
      {5, 7, 1, 6, 3, 4, 4, false, false, true},  {5, 7, 1, 6, 3, 4, 4, true, false, true},
      {3, 9, 2, 5, 2, 2, 2, true, false, true},   {3, 9, 2, 5, 2, 2, 2, false, true, true},
      {4, 6, 2, 4, 1, 8, 3, true, true, false},   {6, 5, 1, 7, 4, 16, 16, true, false, true},
      {6, 5, 1, 1, 2, 3, 32, true, false, true},  {2, 11, 1, 3, 5, 32, 4, false, false, true},
      {4, 8, 2, 5, 3, 32, 32, true, false, true}, {1, 1, 1, 4, 1, 4, 4, true, false, true},
  };
  for (const auto& k : cases) run_lstm_case(k);
}

TEST_CASE("QuantLSTM at every bit width 2..16 matches the composite", "[rnn]") {
  for (int64_t bits = 2; bits <= 16; ++bits) {
    run_lstm_case({3, 6, 1, 4, 2, bits, bits, true, false, true});
  }
}

// ---- GRU ----------------------------------------------------------------------------------------

void run_gru_case(const LstmCase& k) {
  INFO("GRU " << k);
  torch::manual_seed(3 + k.hidden + k.hbits);
  wrpn::nn::QuantGRU m(case_options<wrpn::nn::QuantGRUOptions>(k));
  const double a = m->weight_scale();
  Tensor x = torch::randn({k.T, k.B, k.in}).requires_grad_(true);
  Tensor h0 = (torch::rand({k.layers, k.B, k.hidden}) * 2 - 1).requires_grad_(true);
  const Tensor x_in = k.batch_first ? x.transpose(0, 1) : x;
  auto [out, hn] = k.with_state ? m->forward(x_in, h0) : m->forward(x_in);
  if (k.batch_first) out = out.transpose(0, 1);
  auto [r_out, r_hn] =
      ref_gru(*m, x, k.with_state ? h0 : torch::zeros_like(h0), k.layers, a, k.wbits, k.hbits);
  CHECK(bit_equal(out, r_out));
  CHECK(bit_equal(hn, r_hn));
  std::vector<Tensor> inputs = param_list(*m);
  inputs.push_back(x);
  if (k.with_state) inputs.push_back(h0);
  const auto g = grads_of({out, hn}, inputs, 5);
  const auto rg = grads_of({r_out, r_hn}, inputs, 5);
  for (size_t i = 0; i < g.size(); ++i) {
    REQUIRE(g[i].defined());
    check_close(g[i], rg[i], "gradient " + std::to_string(i));
  }
}

TEST_CASE("QuantGRU forward is bit-exact and BPTT gradients match the ATen composite", "[rnn]") {
  const std::vector<LstmCase> cases = {
      {5, 7, 1, 6, 3, 4, 4, false, false, true},  {5, 7, 1, 6, 3, 4, 4, true, false, true},
      {3, 9, 2, 5, 2, 2, 2, true, true, true},    {4, 6, 2, 4, 1, 8, 3, false, false, false},
      {6, 5, 1, 1, 2, 16, 32, true, false, true}, {4, 8, 2, 5, 3, 32, 32, true, false, true},
      {1, 1, 1, 3, 1, 2, 2, true, false, true},
  };
  for (const auto& k : cases) run_gru_case(k);
  for (int64_t bits = 2; bits <= 16; bits += 3) {
    run_gru_case({3, 6, 1, 4, 2, bits, bits, true, false, true});
  }
}

TEST_CASE("the fused cell is bit-exact on every CPU kernel build, across vector chunks and tails",
          "[rnn][cpu]") {
  // H = 300: each gate block spans two 256-element chunks of the vectorised nonlinearities and
  // ends in a partial vector; H = 37 and 1: tails only.
  const wrpn_test::CapabilityReset reset;
  for (const auto& cap : wrpn_test::supported_capabilities()) {
    wrpn::set_cpu_kernel_capability(cap);
    INFO("capability " << cap);
    run_lstm_case({3, 300, 1, 2, 2, 4, 4, true, false, true});
    run_lstm_case({2, 37, 2, 3, 3, 2, 2, true, false, true});
    run_gru_case({3, 300, 1, 2, 2, 4, 4, true, false, true});
    run_gru_case({1, 1, 1, 3, 2, 3, 32, false, false, true});
  }
}

// ---- against LibTorch's layers ------------------------------------------------------------------

template <typename Src, typename Dst>
void copy_params(Src& src, Dst& dst) {
  const torch::NoGradGuard no_grad;
  auto to = dst.named_parameters(false);
  for (const auto& p : src.named_parameters(false)) {
    Tensor* d = to.find(p.key());
    REQUIRE(d != nullptr);
    d->copy_(p.value());
  }
}

std::set<std::string> names(torch::nn::Module& m) {
  std::set<std::string> out;
  for (const auto& p : m.named_parameters(false)) out.insert(p.key());
  return out;
}

TEST_CASE("fp32 QuantLSTM equals torch::nn::LSTM with the same parameters", "[rnn]") {
  torch::manual_seed(1);
  torch::nn::LSTM ref(torch::nn::LSTMOptions(5, 8).num_layers(2));
  wrpn::nn::QuantLSTM m(
      wrpn::nn::QuantLSTMOptions(5, 8).num_layers(2).weight_bits(32).hidden_bits(32));
  CHECK(names(*ref) == names(*m));
  for (const auto& p : ref->named_parameters(false)) {
    CHECK(p.value().sizes() == m->named_parameters(false)[p.key()].sizes());
  }
  copy_params(*ref, *m);
  const Tensor x = torch::randn({6, 3, 5});
  const Tensor h0 = torch::randn({2, 3, 8}) * 0.5, c0 = torch::randn({2, 3, 8});
  auto [y, st] = m->forward(x, std::make_tuple(h0, c0));
  auto [ry, rst] = ref->forward(x, std::make_tuple(h0, c0));
  check_close(y, ry, "output");
  check_close(std::get<0>(st), std::get<0>(rst), "h_n");
  check_close(std::get<1>(st), std::get<1>(rst), "c_n");

  // Unbatched input [T, in] (LibTorch's C++ LSTM takes 3-D input only): a batch of one.
  auto [yu, stu] = m->forward(x.select(1, 0));
  auto [ryu, rstu] = ref->forward(x.select(1, 0).unsqueeze(1));
  CHECK(yu.sizes() == torch::IntArrayRef({6, 8}));
  CHECK(std::get<0>(stu).sizes() == torch::IntArrayRef({2, 8}));
  check_close(yu, ryu.squeeze(1), "unbatched output");
  check_close(std::get<1>(stu), std::get<1>(rstu).squeeze(1), "unbatched c_n");

  // And back: a QuantLSTM's parameters load into torch::nn::LSTM.
  torch::nn::LSTM back(torch::nn::LSTMOptions(5, 8).num_layers(2));
  copy_params(*m, *back);
  check_close(std::get<0>(back->forward(x)), std::get<0>(m->forward(x)), "round trip");
}

TEST_CASE("fp32 QuantGRU equals torch::nn::GRU with the same parameters", "[rnn]") {
  torch::manual_seed(2);
  torch::nn::GRU ref(torch::nn::GRUOptions(4, 6).num_layers(2).batch_first(true));
  wrpn::nn::QuantGRU m(
      wrpn::nn::QuantGRUOptions(4, 6).num_layers(2).batch_first(true).weight_bits(32).hidden_bits(
          32));
  CHECK(names(*ref) == names(*m));
  copy_params(*ref, *m);
  const Tensor x = torch::randn({3, 5, 4});
  const Tensor h0 = torch::randn({2, 3, 6}) * 0.5;
  auto [y, hn] = m->forward(x, h0);
  auto [ry, rhn] = ref->forward(x, h0);
  check_close(y, ry, "output");
  check_close(hn, rhn, "h_n");
}

TEST_CASE("QuantLSTM's state dict saves and loads with the weight scale", "[rnn]") {
  torch::manual_seed(4);
  wrpn::nn::QuantLSTM m(wrpn::nn::QuantLSTMOptions(3, 5).weight_scale(0.25).num_layers(2));
  CHECK(m->weight_scale() == Approx(0.25));
  std::stringstream buf;
  torch::save(m, buf);
  wrpn::nn::QuantLSTM n(wrpn::nn::QuantLSTMOptions(3, 5).num_layers(2));
  CHECK(n->weight_scale() == Approx(1.0 / std::sqrt(5.0)));
  torch::load(n, buf);
  CHECK(n->weight_scale() == Approx(0.25));
  const Tensor x = torch::randn({4, 2, 3});
  CHECK(bit_equal(std::get<0>(m->forward(x)), std::get<0>(n->forward(x))));
  // clone() keeps parameters and buffers.
  auto c = std::dynamic_pointer_cast<wrpn::nn::QuantLSTMImpl>(m->clone());
  REQUIRE(c);
  CHECK(bit_equal(std::get<0>(c->forward(x)), std::get<0>(m->forward(x))));
}

// ---- the pitfall: how much of each weight matrix quantizes to zero -----------------------------

TEST_CASE("the scaled weight quantizer fills the grid at initialisation", "[rnn]") {
  torch::manual_seed(9);
  wrpn::nn::QuantLSTM m4(wrpn::nn::QuantLSTMOptions(256, 256).weight_bits(4));
  for (const auto& [name, frac] : m4->weight_zero_fractions()) {
    INFO(name);
    CHECK(frac == Approx(1.0 / 14.0).margin(0.01));
  }
  wrpn::nn::QuantGRU m2(wrpn::nn::QuantGRUOptions(256, 256).weight_bits(2));
  const auto f2 = m2->weight_zero_fractions();
  CHECK(f2.size() == 2);
  for (const auto& [name, frac] : f2) CHECK(frac == Approx(0.5).margin(0.02));
  // Without the scale (a = 1, the WRPN quantizer as is), nearly everything is zero.
  wrpn::nn::QuantLSTM m1(wrpn::nn::QuantLSTMOptions(256, 256).weight_bits(4));
  {
    const torch::NoGradGuard no_grad;
    m1->named_buffers(false)["weight_scale"].fill_(1.0);
  }
  for (const auto& [name, frac] : m1->weight_zero_fractions()) CHECK(frac > 0.9);
  // The effective weight is a * Q(W / a): at most 2^(k-1) - 1 = 7 distinct magnitudes.
  const Tensor q = m4->effective_weight("weight_hh_l0");
  CHECK(std::get<0>(torch::_unique(q.abs())).numel() <= 8);
  CHECK(q.abs().max().item<double>() <= m4->weight_scale() * (1 + 1e-6));
  CHECK_THROWS_WITH(m4->effective_weight("bias_ih_l0"), Contains("no weight matrix"));
  CHECK_THROWS_WITH(m4->effective_weight("weight_ih_l1"), Contains("no weight matrix"));
}

TEST_CASE("quantize_scaled_weight passes gradients where |W| <= a", "[rnn]") {
  const Tensor w = torch::tensor({-0.5f, -0.2f, 0.0f, 0.11f, 0.19f, 0.3f}).requires_grad_(true);
  const Tensor a = torch::tensor(0.2f);
  const Tensor q = wrpn::nn::quantize_scaled_weight(w, a, 2);
  // 2 bits: s = 1, values a * round(clamp(w / a, -1, 1)).
  CHECK(bit_equal(q.detach(), torch::tensor({-0.2f, -0.2f, 0.0f, 0.2f, 0.2f, 0.2f})));
  q.sum().backward();
  CHECK(bit_equal(w.grad(), torch::tensor({0.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f})));
  CHECK(wrpn::nn::quantize_scaled_weight(w, a, 32).data_ptr() == w.data_ptr());
  CHECK_THROWS_WITH(wrpn::nn::quantize_scaled_weight(w, a, 1), Contains("2..16 or 32"));
}

TEST_CASE("the hidden state the layer returns lies on the k-bit grid", "[rnn]") {
  torch::manual_seed(12);
  wrpn::nn::QuantLSTM m(wrpn::nn::QuantLSTMOptions(4, 16).hidden_bits(3));
  const Tensor y = std::get<0>(m->forward(torch::randn({5, 2, 4}) * 3));
  const Tensor codes = y * 3;  // s = 2^(3-1) - 1 = 3
  CHECK(torch::equal(codes, torch::round(codes)));
  CHECK(y.abs().max().item<double>() <= 1.0);
}

TEST_CASE("dropout between layers acts in training mode only", "[rnn]") {
  torch::manual_seed(13);
  wrpn::nn::QuantLSTM m(wrpn::nn::QuantLSTMOptions(3, 6).num_layers(2).dropout(0.5));
  const Tensor x = torch::randn({4, 2, 3});
  m->eval();
  const Tensor e1 = std::get<0>(m->forward(x)), e2 = std::get<0>(m->forward(x));
  CHECK(bit_equal(e1, e2));
  m->train();
  torch::manual_seed(1);
  const Tensor t1 = std::get<0>(m->forward(x));
  torch::manual_seed(2);
  const Tensor t2 = std::get<0>(m->forward(x));
  CHECK_FALSE(torch::equal(t1, t2));
}

// ---- bad arguments ------------------------------------------------------------------------------

TEST_CASE("QuantLSTM and QuantGRU refuse bad options and inputs", "[rnn]") {
  using wrpn::nn::QuantLSTMOptions;
  CHECK_THROWS_WITH(wrpn::nn::QuantLSTM(QuantLSTMOptions(3, 4).weight_bits(1)),
                    Contains("weight_bits must be 2..16 or 32"));
  CHECK_THROWS_WITH(wrpn::nn::QuantLSTM(QuantLSTMOptions(3, 4).hidden_bits(17)),
                    Contains("hidden_bits must be 2..16 or 32"));
  CHECK_THROWS_WITH(wrpn::nn::QuantLSTM(QuantLSTMOptions(0, 4)), Contains("must be > 0"));
  CHECK_THROWS_WITH(wrpn::nn::QuantLSTM(QuantLSTMOptions(3, -1)), Contains("must be > 0"));
  CHECK_THROWS_WITH(wrpn::nn::QuantLSTM(QuantLSTMOptions(3, 4).num_layers(0)),
                    Contains("num_layers must be >= 1"));
  CHECK_THROWS_WITH(wrpn::nn::QuantLSTM(QuantLSTMOptions(3, 4).dropout(1.0)),
                    Contains("dropout must be in [0, 1)"));
  CHECK_THROWS_WITH(wrpn::nn::QuantLSTM(QuantLSTMOptions(3, 4).weight_scale(0.0)),
                    Contains("weight_scale must be finite and > 0"));
  CHECK_THROWS_WITH(wrpn::nn::QuantGRU(wrpn::nn::QuantGRUOptions(3, 4).hidden_bits(0)),
                    Contains("hidden_bits must be 2..16 or 32"));

  wrpn::nn::QuantLSTM m(QuantLSTMOptions(3, 4).num_layers(2));
  CHECK_THROWS_WITH(m->forward(torch::randn({5, 2, 7})), Contains("expected input_size 3"));
  CHECK_THROWS_WITH(m->forward(torch::randn({5})), Contains("input must be [T, B, 3]"));
  CHECK_THROWS_WITH(m->forward(torch::randn({5, 2, 3}, torch::kDouble)),
                    Contains("input must be float32"));
  CHECK_THROWS_WITH(m->forward(torch::randn({0, 2, 3})), Contains("the sequence is empty"));
  CHECK_THROWS_WITH(m->forward(torch::randn({5, 2, 3}),
                               std::make_tuple(torch::zeros({1, 2, 4}), torch::zeros({2, 2, 4}))),
                    Contains("h_0 must be [2, 2, 4]"));
  CHECK_THROWS_WITH(m->forward(torch::randn({5, 2, 3}),
                               std::make_tuple(torch::zeros({2, 2, 4}), torch::zeros({2, 3, 4}))),
                    Contains("c_0 must be [2, 2, 4]"));
  wrpn::nn::QuantGRU g(wrpn::nn::QuantGRUOptions(3, 4));
  CHECK_THROWS_WITH(g->forward(torch::randn({5, 2, 3}), torch::zeros({1, 2, 5})),
                    Contains("h_0 must be [1, 2, 4]"));

  // The layer ops themselves.
  const Tensor w = torch::randn({16, 4});
  CHECK_THROWS_WITH(wrpn::nn::quant_lstm_layer(torch::randn({3, 2, 15}), w, {},
                                               torch::zeros({2, 4}), torch::zeros({2, 4}), 4),
                    Contains("xp has 15 features, expected 4 * H = 16"));
  CHECK_THROWS_WITH(wrpn::nn::quant_lstm_layer(torch::randn({3, 2, 16}), torch::randn({15, 4}), {},
                                               torch::zeros({2, 4}), torch::zeros({2, 4}), 4),
                    Contains("w_hh must be [4H, H]"));
  CHECK_THROWS_WITH(wrpn::nn::quant_lstm_layer(torch::randn({3, 2, 16}), w, {},
                                               torch::zeros({3, 4}), torch::zeros({3, 4}), 4),
                    Contains("h0 must be [2, 4]"));
  CHECK_THROWS_WITH(wrpn::nn::quant_lstm_layer(torch::randn({3, 2, 16}), w, {},
                                               torch::zeros({2, 4}), torch::zeros({2, 4}), 1),
                    Contains("hidden_bits must be 2..16 or 32"));
  CHECK_THROWS_WITH(wrpn::nn::quant_lstm_layer(torch::randn({3, 2, 16}), w, torch::zeros({12}),
                                               torch::zeros({2, 4}), torch::zeros({2, 4}), 4),
                    Contains("b_hh must be [16]"));
  CHECK_THROWS_WITH(wrpn::nn::quant_gru_layer(torch::randn({3, 2, 12}), torch::randn({12, 4}), {},
                                              torch::zeros({2, 4}, torch::kDouble), 4),
                    Contains("computes in float32"));
}

// ---- CUDA against the CPU -----------------------------------------------------------------------

TEST_CASE("the fused cell on CUDA gives the CPU's bits", "[rnn][cuda]") {
  if (!torch::cuda::is_available()) {
    std::printf("WRPN_SKIP: no CUDA device\n");
    return;
  }
  for (int64_t bits : {2, 4, 32}) {
    torch::manual_seed(21 + bits);
    wrpn::nn::QuantLSTM m(wrpn::nn::QuantLSTMOptions(7, 33).num_layers(2).hidden_bits(bits));
    wrpn::nn::QuantGRU g(wrpn::nn::QuantGRUOptions(7, 33).hidden_bits(bits));
    // CPU and CUDA GEMMs round differently: feed both cells the same projections.
    const Tensor xp = torch::randn({6, 5, 4 * 33});
    const Tensor w = m->effective_weight("weight_hh_l0").detach();
    const Tensor b = m->named_parameters(false)["bias_hh_l0"].detach();
    const Tensor h0 = torch::zeros({5, 33}), c0 = torch::randn({5, 33});
    // One step, so that the hidden projection is of h0 = 0 (bias only: exact on both devices).
    const auto [h_cpu, c_cpu] = wrpn::nn::quant_lstm_layer(xp.slice(0, 0, 1), w, b, h0, c0, bits);
    const auto [h_gpu, c_gpu] = wrpn::nn::quant_lstm_layer(xp.slice(0, 0, 1).cuda(), w.cuda(),
                                                           b.cuda(), h0.cuda(), c0.cuda(), bits);
    CHECK(bit_equal(h_cpu, h_gpu.cpu()));
    CHECK(bit_equal(c_cpu, c_gpu.cpu()));
    const Tensor xg = torch::randn({1, 5, 3 * 33});
    const Tensor wg = g->effective_weight("weight_hh_l0").detach();
    const Tensor bg = g->named_parameters(false)["bias_hh_l0"].detach();
    CHECK(bit_equal(
        wrpn::nn::quant_gru_layer(xg, wg, bg, h0, bits),
        wrpn::nn::quant_gru_layer(xg.cuda(), wg.cuda(), bg.cuda(), h0.cuda(), bits).cpu()));
    // Whole modules: equal up to the GEMMs' rounding.
    const Tensor x = torch::randn({6, 5, 7});
    const Tensor y_cpu = std::get<0>(m->forward(x));
    m->to(torch::kCUDA);
    const Tensor y_gpu = std::get<0>(m->forward(x.cuda())).cpu();
    const double step = bits == 32 ? 1e-4 : 2.0 / ((1 << (bits - 1)) - 1);
    CHECK((y_cpu - y_gpu).abs().max().item<double>() <= step + 1e-5);
  }
}

}  // namespace
