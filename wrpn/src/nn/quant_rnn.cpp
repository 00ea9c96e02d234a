// wrpn::nn::QuantLSTM and QuantGRU: the layer loop, the scaled weight quantizer, and one autograd
// node per layer whose forward runs the fused step (wrpn/kernels/rnn_cell.h) after each hidden
// projection and whose backward runs backprop through time with the fused step backward.

#include "wrpn/nn/quant_rnn.h"

#include <torch/autograd.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/init.h>

#include <cmath>
#include <sstream>

#include "wrpn/kernels/rnn_cell.h"
#include "wrpn/ops.h"

namespace wrpn {
namespace nn {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

QuantLSTMOptions::QuantLSTMOptions(int64_t input_size, int64_t hidden_size)
    : input_size_(input_size), hidden_size_(hidden_size) {}
QuantGRUOptions::QuantGRUOptions(int64_t input_size, int64_t hidden_size)
    : input_size_(input_size), hidden_size_(hidden_size) {}

namespace {

bool valid_rnn_bits(int64_t bits) {
  return bits == kRnnFullPrecisionBits || (bits >= 2 && bits <= 16);
}

void check_bits(const char* layer, const char* what, int64_t bits) {
  TORCH_CHECK(valid_rnn_bits(bits), layer, ": ", what,
              " must be 2..16 or 32 (full precision), got ", bits);
}

/// Checks one layer call's shared arguments; returns (T, B, H).
std::tuple<int64_t, int64_t, int64_t> check_layer(const char* op, const Tensor& xp,
                                                  const Tensor& w_hh, const Tensor& b_hh,
                                                  const Tensor& h0, int64_t gates,
                                                  int64_t hidden_bits) {
  check_bits(op, "hidden_bits", hidden_bits);
  TORCH_CHECK(xp.dim() == 3, op, ": xp must be [T, B, ", gates, "H], got ", xp.sizes());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) == gates * w_hh.size(1) && w_hh.size(1) > 0, op,
              ": w_hh must be [", gates, "H, H] with H > 0, got ", w_hh.sizes());
  const int64_t T = xp.size(0), B = xp.size(1), H = w_hh.size(1);
  TORCH_CHECK(T > 0, op, ": the sequence is empty (T = 0)");
  TORCH_CHECK(xp.size(2) == gates * H, op, ": xp has ", xp.size(2), " features, expected ", gates,
              " * H = ", gates * H);
  TORCH_CHECK(!b_hh.defined() || (b_hh.dim() == 1 && b_hh.size(0) == gates * H), op,
              ": b_hh must be [", gates * H, "], got ", b_hh.sizes());
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H, op, ": h0 must be [", B, ", ", H,
              "], got ", h0.sizes());
  for (const Tensor* t : {&xp, &w_hh, &h0}) {
    TORCH_CHECK(t->scalar_type() == torch::kFloat, op,
                ": the fused recurrent cell computes in float32, got ", t->scalar_type());
    TORCH_CHECK(t->device() == xp.device(), op, ": all tensors must be on ", xp.device(),
                ", got one on ", t->device());
  }
  TORCH_CHECK(xp.is_cpu() || xp.is_cuda(), op, ": CPU or CUDA tensors expected, got ", xp.device());
  TORCH_CHECK(
      !b_hh.defined() || (b_hh.scalar_type() == torch::kFloat && b_hh.device() == xp.device()), op,
      ": b_hh must be float32 on ", xp.device());
  return {T, B, H};
}

/// h W_hh^T + b_hh. Each step's h is a tensor of its own (not a row block of the output): BLAS
/// GEMMs may round differently with the operands' alignment, and a fresh allocation is what a
/// step written with ATen ops multiplies.
Tensor hidden_projection(const Tensor& h, const Tensor& w_hh, const std::optional<Tensor>& b_hh) {
  return at::linear(h, w_hh, b_hh);
}

/// An undefined tensor as nullopt: autograd::Function::apply takes no undefined Tensor input.
std::optional<Tensor> optional_tensor(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

Tensor step_or_undefined(const Tensor& t, int64_t step) { return t.defined() ? t[step] : Tensor(); }

class LstmLayerFunction : public torch::autograd::Function<LstmLayerFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& xp_in, const Tensor& w_hh,
                               const std::optional<Tensor>& b_hh_opt, const Tensor& h0_in,
                               const Tensor& c0_in, int64_t hidden_bits) {
    const Tensor b_hh = b_hh_opt.value_or(Tensor());
    const auto [T, B, H] =
        check_layer("quant_lstm_layer", xp_in, w_hh, b_hh, h0_in, 4, hidden_bits);
    TORCH_CHECK(c0_in.sizes() == h0_in.sizes() && c0_in.scalar_type() == torch::kFloat &&
                    c0_in.device() == xp_in.device(),
                "quant_lstm_layer: c0 must be a float32 [", B, ", ", H, "] tensor on ",
                xp_in.device(), ", got ", c0_in.sizes());
    const at::NoGradGuard no_grad;
    const Tensor xp = xp_in.contiguous();
    const Tensor h0 = h0_in.contiguous(), c0 = c0_in.contiguous();
    const auto q = kernels::hidden_quant(hidden_bits);
    Tensor gates = at::empty({T, B, 4 * H}, xp.options());
    Tensor cs = at::empty({T, B, H}, xp.options());
    std::vector<Tensor> steps;
    steps.reserve(static_cast<size_t>(T));
    Tensor h = h0, c = c0;
    for (int64_t t = 0; t < T; ++t) {
      const Tensor hg = hidden_projection(h, w_hh, b_hh).contiguous();
      const Tensor c_t = cs[t];
      const Tensor h_t = at::empty({B, H}, xp.options());
      rnn::lstm_step_forward(xp[t], hg, c, gates[t], c_t, h_t, q);
      steps.push_back(h_t);
      h = h_t;
      c = c_t;
    }
    const Tensor hs = at::stack(steps);
    Tensor c_n = cs[T - 1].clone();
    ctx->save_for_backward({w_hh, gates, cs, h0, c0, hs});
    ctx->saved_data["bits"] = hidden_bits;
    ctx->saved_data["has_bias"] = b_hh.defined();
    return {hs, c_n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &w_hh = saved[0], &gates = saved[1], &cs = saved[2], &h0 = saved[3],
                 &c0 = saved[4], &hs = saved[5];
    const auto q = kernels::hidden_quant(ctx->saved_data["bits"].toInt());
    const int64_t T = cs.size(0), B = cs.size(1), H = cs.size(2);
    const Tensor g_hs = grads[0].defined() ? grads[0].contiguous() : Tensor();
    Tensor dc =
        grads[1].defined() ? grads[1].contiguous().clone() : at::zeros({B, H}, cs.options());
    Tensor dgates = at::empty({T, B, 4 * H}, cs.options());
    Tensor dh_rec;
    for (int64_t t = T - 1; t >= 0; --t) {
      const Tensor dg_t = dgates[t];
      rnn::lstm_step_backward(step_or_undefined(g_hs, t), dh_rec, gates[t], cs[t],
                              t > 0 ? cs[t - 1] : c0, dc, dg_t, q);
      dh_rec = at::mm(dg_t, w_hh);
    }
    const Tensor h_prev = at::cat({h0.unsqueeze(0), hs.slice(0, 0, T - 1)}, 0);
    const Tensor flat = dgates.view({T * B, 4 * H});
    Tensor d_w = at::mm(flat.t(), h_prev.view({T * B, H}));
    Tensor d_b = ctx->saved_data["has_bias"].toBool() ? flat.sum(0) : Tensor();
    return {dgates, d_w, d_b, dh_rec, dc, Tensor()};
  }
};

class GruLayerFunction : public torch::autograd::Function<GruLayerFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& xp_in, const Tensor& w_hh,
                               const std::optional<Tensor>& b_hh_opt, const Tensor& h0_in,
                               int64_t hidden_bits) {
    const Tensor b_hh = b_hh_opt.value_or(Tensor());
    const auto [T, B, H] = check_layer("quant_gru_layer", xp_in, w_hh, b_hh, h0_in, 3, hidden_bits);
    const at::NoGradGuard no_grad;
    const Tensor xp = xp_in.contiguous();
    const Tensor h0 = h0_in.contiguous();
    const auto q = kernels::hidden_quant(hidden_bits);
    Tensor gates = at::empty({T, B, 4 * H}, xp.options());
    std::vector<Tensor> steps;
    steps.reserve(static_cast<size_t>(T));
    Tensor h = h0;
    for (int64_t t = 0; t < T; ++t) {
      const Tensor hg = hidden_projection(h, w_hh, b_hh).contiguous();
      const Tensor h_t = at::empty({B, H}, xp.options());
      rnn::gru_step_forward(xp[t], hg, h, gates[t], h_t, q);
      steps.push_back(h_t);
      h = h_t;
    }
    const Tensor hs = at::stack(steps);
    ctx->save_for_backward({w_hh, gates, h0, hs});
    ctx->saved_data["bits"] = hidden_bits;
    ctx->saved_data["has_bias"] = b_hh.defined();
    return {hs};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &w_hh = saved[0], &gates = saved[1], &h0 = saved[2], &hs = saved[3];
    const auto q = kernels::hidden_quant(ctx->saved_data["bits"].toInt());
    const int64_t T = hs.size(0), B = hs.size(1), H = hs.size(2);
    const Tensor g_hs = grads[0].defined() ? grads[0].contiguous() : Tensor();
    Tensor dxg = at::empty({T, B, 3 * H}, hs.options());
    Tensor dhg = at::empty({T, B, 3 * H}, hs.options());
    Tensor dh_direct = at::empty({B, H}, hs.options());
    Tensor dh_rec;
    for (int64_t t = T - 1; t >= 0; --t) {
      const Tensor dhg_t = dhg[t];
      rnn::gru_step_backward(step_or_undefined(g_hs, t), dh_rec, gates[t], t > 0 ? hs[t - 1] : h0,
                             dxg[t], dhg_t, dh_direct, q);
      dh_rec = at::addmm(dh_direct, dhg_t, w_hh);
    }
    const Tensor h_prev = at::cat({h0.unsqueeze(0), hs.slice(0, 0, T - 1)}, 0);
    const Tensor flat = dhg.view({T * B, 3 * H});
    Tensor d_w = at::mm(flat.t(), h_prev.view({T * B, H}));
    Tensor d_b = ctx->saved_data["has_bias"].toBool() ? flat.sum(0) : Tensor();
    return {dxg, d_w, d_b, dh_rec, Tensor()};
  }
};

}  // namespace

// The hidden states are an output of the node and saved with save_for_backward, which stores
// an output without its grad_fn (no reference cycle); autograd's version counter refuses a
// backward after the caller modified them in place.

std::tuple<Tensor, Tensor> quant_lstm_layer(const Tensor& xp, const Tensor& w_hh,
                                            const Tensor& b_hh, const Tensor& h0, const Tensor& c0,
                                            int64_t hidden_bits) {
  auto out = LstmLayerFunction::apply(xp, w_hh, optional_tensor(b_hh), h0, c0, hidden_bits);
  return {out[0], out[1]};
}

Tensor quant_gru_layer(const Tensor& xp, const Tensor& w_hh, const Tensor& b_hh, const Tensor& h0,
                       int64_t hidden_bits) {
  return GruLayerFunction::apply(xp, w_hh, optional_tensor(b_hh), h0, hidden_bits)[0];
}

Tensor quantize_scaled_weight(const Tensor& w, const Tensor& scale, int64_t bits) {
  TORCH_CHECK(bits == kRnnFullPrecisionBits || (bits >= 2 && bits <= 16),
              "quantize_scaled_weight: bits must be 2..16 or 32 (full precision), got ", bits);
  if (bits == kRnnFullPrecisionBits) return w;
  return wrpn::quantize_weight(w / scale, bits) * scale;
}

namespace {

// ---- what QuantLSTM and QuantGRU share ----------------------------------------------------------

template <typename Options>
void check_options(const char* layer, const Options& o) {
  TORCH_CHECK(o.input_size() > 0 && o.hidden_size() > 0, layer, ": input_size (", o.input_size(),
              ") and hidden_size (", o.hidden_size(), ") must be > 0");
  TORCH_CHECK(o.num_layers() >= 1, layer, ": num_layers must be >= 1, got ", o.num_layers());
  TORCH_CHECK(o.dropout() >= 0.0 && o.dropout() < 1.0, layer, ": dropout must be in [0, 1), got ",
              o.dropout());
  check_bits(layer, "weight_bits", o.weight_bits());
  check_bits(layer, "hidden_bits", o.hidden_bits());
  if (o.weight_scale()) {
    TORCH_CHECK(std::isfinite(*o.weight_scale()) && *o.weight_scale() > 0.0, layer,
                ": weight_scale must be finite and > 0, got ", *o.weight_scale());
  }
}

template <typename Options>
double default_scale(const Options& o) {
  return o.weight_scale() ? *o.weight_scale()
                          : 1.0 / std::sqrt(static_cast<double>(o.hidden_size()));
}

template <typename Impl>
void register_rnn(Impl& m, const char* layer, int64_t gates) {
  const auto& o = m.options;
  check_options(layer, o);
  const int64_t H = o.hidden_size();
  for (int64_t l = 0; l < o.num_layers(); ++l) {
    const std::string s = "_l" + std::to_string(l);
    const int64_t in = l == 0 ? o.input_size() : H;
    m.register_parameter("weight_ih" + s, torch::empty({gates * H, in}));
    m.register_parameter("weight_hh" + s, torch::empty({gates * H, H}));
    if (o.bias()) {
      m.register_parameter("bias_ih" + s, torch::empty({gates * H}));
      m.register_parameter("bias_hh" + s, torch::empty({gates * H}));
    }
  }
  m.register_buffer("weight_scale", torch::tensor(default_scale(o), torch::kFloat));
}

template <typename Impl>
void reset_rnn_parameters(Impl& m) {
  const torch::NoGradGuard no_grad;
  const double a = default_scale(m.options);
  const double bias_bound = 1.0 / std::sqrt(static_cast<double>(m.options.hidden_size()));
  m.named_buffers(false)["weight_scale"].fill_(a);
  for (auto& p : m.named_parameters(false)) {
    const bool is_bias = p.key().rfind("bias", 0) == 0;
    const double bound = is_bias ? bias_bound : a;
    p.value().uniform_(-bound, bound);
  }
}

template <typename Impl>
Tensor effective(const Impl& m, const std::string& name) {
  // Copies, not pointers into the temporary dicts named_parameters() and named_buffers() return.
  const auto params = m.named_parameters(false);
  const Tensor* w = params.find(name);
  TORCH_CHECK(w != nullptr && name.rfind("weight_", 0) == 0, "no weight matrix named \"", name,
              "\" (expected weight_ih_l<k> or weight_hh_l<k>, k < ", m.options.num_layers(), ")");
  const auto buffers = m.named_buffers(false);
  const Tensor* scale = buffers.find("weight_scale");
  return quantize_scaled_weight(*w, *scale, m.options.weight_bits());
}

template <typename Impl>
std::map<std::string, double> zero_fractions(const Impl& m) {
  const torch::NoGradGuard no_grad;
  std::map<std::string, double> out;
  for (const auto& p : m.named_parameters(false)) {
    if (p.key().rfind("weight_", 0) != 0) continue;
    const Tensor q = effective(m, p.key());
    out[p.key()] = q.numel() == 0 ? 0.0 : q.eq(0).to(torch::kDouble).mean().item<double>();
  }
  return out;
}

template <typename Options>
void print_rnn(std::ostream& stream, const char* name, const Options& o, double scale) {
  stream << "wrpn::nn::" << name << "(input_size=" << o.input_size()
         << ", hidden_size=" << o.hidden_size();
  if (o.num_layers() != 1) stream << ", num_layers=" << o.num_layers();
  if (!o.bias()) stream << ", bias=false";
  if (o.batch_first()) stream << ", batch_first=true";
  if (o.dropout() > 0.0) stream << ", dropout=" << o.dropout();
  stream << ", weight_bits=" << o.weight_bits() << ", hidden_bits=" << o.hidden_bits()
         << ", weight_scale=" << scale << ")";
}

/// The input as [T, B, in] and whether it was unbatched.
template <typename Options>
std::pair<Tensor, bool> sequence_major(const char* layer, const Tensor& input, const Options& o,
                                       const Tensor& weight) {
  TORCH_CHECK(input.defined(), layer, ": the input is undefined");
  TORCH_CHECK(input.dim() == 3 || input.dim() == 2, layer, ": input must be [T, B, ",
              o.input_size(), "] (", o.batch_first() ? "[B, T, " : "", "batch_first) or [T, ",
              o.input_size(), "] unbatched, got ", input.sizes());
  TORCH_CHECK(input.size(-1) == o.input_size(), layer, ": input has ", input.size(-1),
              " features, expected input_size ", o.input_size());
  TORCH_CHECK(input.scalar_type() == torch::kFloat, layer, ": input must be float32, got ",
              input.scalar_type());
  TORCH_CHECK(input.device() == weight.device(), layer, ": input is on ", input.device(),
              " but the weights are on ", weight.device());
  Tensor x =
      input.dim() == 2 ? input.unsqueeze(1) : (o.batch_first() ? input.transpose(0, 1) : input);
  TORCH_CHECK(x.size(0) > 0, layer, ": the sequence is empty (T = 0)");
  TORCH_CHECK(x.size(1) > 0, layer, ": the batch is empty (B = 0)");
  return {x, input.dim() == 2};
}

/// An initial state [L, B, H] (or [L, H] unbatched), or zeros.
template <typename Options>
Tensor initial_state(const char* layer, const char* what, const Tensor& given, const Options& o,
                     int64_t B, bool unbatched, const Tensor& like) {
  const int64_t L = o.num_layers(), H = o.hidden_size();
  if (!given.defined()) return at::zeros({L, B, H}, like.options());
  const bool ok = unbatched ? (given.dim() == 2 && given.size(0) == L && given.size(1) == H)
                            : (given.dim() == 3 && given.size(0) == L && given.size(1) == B &&
                               given.size(2) == H);
  TORCH_CHECK(ok, layer, ": ", what, " must be [", L, ", ",
              unbatched ? "" : std::to_string(B) + ", ", H, "] (num_layers, ",
              unbatched ? "" : "batch, ", "hidden_size), got ", given.sizes());
  TORCH_CHECK(given.scalar_type() == torch::kFloat && given.device() == like.device(), layer, ": ",
              what, " must be float32 on ", like.device());
  return unbatched ? given.unsqueeze(1) : given;
}

template <typename Options>
Tensor layer_output(const Tensor& seq_major, const Options& o, bool unbatched) {
  if (unbatched) return seq_major.squeeze(1);
  return o.batch_first() ? seq_major.transpose(0, 1) : seq_major;
}

template <typename Impl>
Tensor param_or_undefined(const Impl& m, const std::string& name) {
  const auto params = m.named_parameters(false);
  const Tensor* p = params.find(name);
  return p ? *p : Tensor();
}

/// Runs the layer stack: layer(l, x [T, B, in], W_ih_q, b_ih, W_hh_q, b_hh) -> [T, B, H].
template <typename Impl, typename LayerFn>
Tensor run_layers(Impl& m, const Tensor& x_seq, LayerFn&& layer) {
  const auto& o = m.options;
  const Tensor scale = m.named_buffers(false)["weight_scale"];
  Tensor x = x_seq;
  for (int64_t l = 0; l < o.num_layers(); ++l) {
    const std::string s = "_l" + std::to_string(l);
    const Tensor w_ih =
        quantize_scaled_weight(m.named_parameters(false)["weight_ih" + s], scale, o.weight_bits());
    const Tensor w_hh =
        quantize_scaled_weight(m.named_parameters(false)["weight_hh" + s], scale, o.weight_bits());
    const int64_t T = x.size(0), B = x.size(1);
    const Tensor xp =
        at::linear(x.reshape({T * B, x.size(2)}), w_ih, param_or_undefined(m, "bias_ih" + s))
            .view({T, B, -1});
    x = layer(l, xp, w_hh, param_or_undefined(m, "bias_hh" + s));
    if (o.dropout() > 0.0 && m.is_training() && l + 1 < o.num_layers()) {
      x = torch::dropout(x, o.dropout(), /*train=*/true);
    }
  }
  return x;
}

}  // namespace

// ---- QuantLSTM ----------------------------------------------------------------------------------

QuantLSTMImpl::QuantLSTMImpl(QuantLSTMOptions options_) : options(std::move(options_)) {
  QuantLSTMImpl::reset();
}

void QuantLSTMImpl::reset() {
  register_rnn(*this, "QuantLSTM", 4);
  reset_parameters();
}

void QuantLSTMImpl::reset_parameters() { reset_rnn_parameters(*this); }

void QuantLSTMImpl::pretty_print(std::ostream& stream) const {
  print_rnn(stream, "QuantLSTM", options, weight_scale());
}

double QuantLSTMImpl::weight_scale() const {
  return named_buffers(false)["weight_scale"].item<double>();
}

Tensor QuantLSTMImpl::effective_weight(const std::string& name) const {
  return effective(*this, name);
}

std::map<std::string, double> QuantLSTMImpl::weight_zero_fractions() const {
  return zero_fractions(*this);
}

std::tuple<Tensor, std::tuple<Tensor, Tensor>> QuantLSTMImpl::forward(
    const Tensor& input, torch::optional<std::tuple<Tensor, Tensor>> hx) {
  const Tensor w0 = named_parameters(false)["weight_ih_l0"];
  auto [x, unbatched] = sequence_major("QuantLSTM", input, options, w0);
  const int64_t B = x.size(1);
  const Tensor h0 = initial_state("QuantLSTM", "h_0", hx ? std::get<0>(*hx) : Tensor(), options, B,
                                  unbatched, w0);
  const Tensor c0 = initial_state("QuantLSTM", "c_0", hx ? std::get<1>(*hx) : Tensor(), options, B,
                                  unbatched, w0);
  std::vector<Tensor> h_n, c_n;
  const Tensor out = run_layers(
      *this, x, [&](int64_t l, const Tensor& xp, const Tensor& w_hh, const Tensor& b_hh) {
        auto [hs, c_last] = quant_lstm_layer(xp, w_hh, b_hh, h0[l], c0[l], options.hidden_bits());
        h_n.push_back(hs[hs.size(0) - 1]);
        c_n.push_back(c_last);
        return hs;
      });
  Tensor h_stack = torch::stack(h_n), c_stack = torch::stack(c_n);
  if (unbatched) {
    h_stack = h_stack.squeeze(1);
    c_stack = c_stack.squeeze(1);
  }
  return {layer_output(out, options, unbatched), {h_stack, c_stack}};
}

// ---- QuantGRU -----------------------------------------------------------------------------------

QuantGRUImpl::QuantGRUImpl(QuantGRUOptions options_) : options(std::move(options_)) {
  QuantGRUImpl::reset();
}

void QuantGRUImpl::reset() {
  register_rnn(*this, "QuantGRU", 3);
  reset_parameters();
}

void QuantGRUImpl::reset_parameters() { reset_rnn_parameters(*this); }

void QuantGRUImpl::pretty_print(std::ostream& stream) const {
  print_rnn(stream, "QuantGRU", options, weight_scale());
}

double QuantGRUImpl::weight_scale() const {
  return named_buffers(false)["weight_scale"].item<double>();
}

Tensor QuantGRUImpl::effective_weight(const std::string& name) const {
  return effective(*this, name);
}

std::map<std::string, double> QuantGRUImpl::weight_zero_fractions() const {
  return zero_fractions(*this);
}

std::tuple<Tensor, Tensor> QuantGRUImpl::forward(const Tensor& input, Tensor hx) {
  const Tensor w0 = named_parameters(false)["weight_ih_l0"];
  auto [x, unbatched] = sequence_major("QuantGRU", input, options, w0);
  const Tensor h0 = initial_state("QuantGRU", "h_0", hx, options, x.size(1), unbatched, w0);
  std::vector<Tensor> h_n;
  const Tensor out = run_layers(
      *this, x, [&](int64_t l, const Tensor& xp, const Tensor& w_hh, const Tensor& b_hh) {
        Tensor hs = quant_gru_layer(xp, w_hh, b_hh, h0[l], options.hidden_bits());
        h_n.push_back(hs[hs.size(0) - 1]);
        return hs;
      });
  Tensor h_stack = torch::stack(h_n);
  if (unbatched) h_stack = h_stack.squeeze(1);
  return {layer_output(out, options, unbatched), h_stack};
}

}  // namespace nn
}  // namespace wrpn
