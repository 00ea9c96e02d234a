#pragma once
// The fused elementwise part of a low-precision LSTM / GRU step (Low Precision RNNs, Kapur, Mishra,
// Marr, arXiv 1710.07706; the rules in spec.md, "Low-precision wide RNNs"): everything after the
// two matrix products of a step, in one pass, for the CPU loop and the CUDA kernel alike.
//
// Exactness: the gate nonlinearities are evaluated in double (on the CPU with ATen's vectorised
// SLEEF exp / tanh, 1-ulp in double; on CUDA with its double exp / tanh) and rounded to float (the
// correctly rounded float in all but ~2^-29 of cases, whichever libm computes them), every product
// and sum is one float operation in the order of the spec's formulas (never contracted into an FMA:
// the CPU file is compiled with -ffp-contract=off, the CUDA code uses __fmul_rn / __fadd_rn), and
// the hidden state goes through the WRPN quantizer's own arithmetic (quant_math.h). So the fused
// forward gives the bits of the same step written with ATen ops (double sigmoid/tanh cast to
// float), on the CPU and on CUDA.

#include <ATen/core/Tensor.h>

#include <cmath>
#include <cstdint>

#include "wrpn/kernels/quant_math.h"

namespace wrpn::kernels {

/// The hidden-state quantizer: signed k-bit WRPN grid on [-1, 1] (k = 2..16), or none (k = 32).
struct HiddenQuant {
  bool enabled = false;
  float scale = 1.0f;
  float inv = 1.0f;
};

/// k = 2..16: the weight grid (s = 2^(k-1) - 1); any other value: no quantizer (full precision).
inline HiddenQuant hidden_quant(int64_t bits) {
  if (bits < 2 || bits > 16) return {};
  const QuantParams p = weight_params(bits);
  return {true, p.scale, 1.0f / p.scale};
}

/// One float product / sum, never fused with a neighbour.
WRPN_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
WRPN_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
WRPN_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

/// sigmoid(x) = 1 / (1 + exp(-x)) in double, rounded to float.
WRPN_HD float cell_sigmoid(float x) {
  return static_cast<float>(1.0 / (1.0 + ::exp(-static_cast<double>(x))));
}
/// tanh(x) in double, rounded to float.
WRPN_HD float cell_tanh(float x) { return static_cast<float>(::tanh(static_cast<double>(x))); }

/// The hidden state as the layer returns it: Q(h) on the signed grid, or h at full precision.
WRPN_HD float quantize_hidden(float h, const HiddenQuant& q) {
  if (!q.enabled) return h;
  return fake_quant<Division::kLevels, ScalarMath>(h, -1.0f, 1.0f, q.scale, q.inv);
}

/// The straight-through factor of the hidden-state quantizer: 1 where |h| <= 1 (always, for a
/// finite h = o * tanh(c)), 0 for NaN; 1 without a quantizer (nothing to pass through).
WRPN_HD float hidden_pass(float h, const HiddenQuant& q) {
  if (!q.enabled) return 1.0f;
  return (h >= -1.0f && h <= 1.0f) ? 1.0f : 0.0f;
}

// ---- LSTM (gate order i, f, g, o as torch::nn::LSTM) -------------------------------------------
// The CPU loop evaluates the nonlinearities of a whole row at once (vectorised, in double: the
// same values as cell_sigmoid / cell_tanh) and the rest with the functions below; the CUDA kernel
// runs lstm_forward_element per element. Both share lstm_cell, lstm_hidden and lstm_backward_core.
// Row b of a step: xg[b] = x_t W_ih^T + b_ih and hg[b] = h_{t-1} W_hh^T + b_hh, each [4H].
// Saved for the backward: gates = (i, f, g, o) after their nonlinearities [4H], and c_t [H].

/// c_t = f * c_{t-1} + i * g.
WRPN_HD float lstm_cell(float i, float f, float g, float c_prev) {
  return add_rn(mul_rn(f, c_prev), mul_rn(i, g));
}
/// h_t = Q(o * tanh(c_t)), given tc = tanh(c_t).
WRPN_HD float lstm_hidden(float o, float tc, const HiddenQuant& q) {
  return quantize_hidden(mul_rn(o, tc), q);
}

/// Forward of element (b, j): writes the four activated gates, c_t and the (quantized) h_t.
WRPN_HD void lstm_forward_element(const float* xg, const float* hg, const float* c_prev,
                                  float* gates, float* c_out, float* h_out, int64_t b, int64_t j,
                                  int64_t H, const HiddenQuant& q) {
  const int64_t row = b * 4 * H;
  const float i = cell_sigmoid(add_rn(xg[row + j], hg[row + j]));
  const float f = cell_sigmoid(add_rn(xg[row + H + j], hg[row + H + j]));
  const float g = cell_tanh(add_rn(xg[row + 2 * H + j], hg[row + 2 * H + j]));
  const float o = cell_sigmoid(add_rn(xg[row + 3 * H + j], hg[row + 3 * H + j]));
  const float c = lstm_cell(i, f, g, c_prev[b * H + j]);
  gates[row + j] = i;
  gates[row + H + j] = f;
  gates[row + 2 * H + j] = g;
  gates[row + 3 * H + j] = o;
  c_out[b * H + j] = c;
  h_out[b * H + j] = lstm_hidden(o, cell_tanh(c), q);
}

/// Backward of element (b, j). dh = dL/dh_t (the output's gradient plus the recurrence's, either
/// pointer may be null), dc = dL/dc_t on entry and dL/dc_{t-1} on return; writes dL/d(pre-gates)
/// into dgates [4H] (the gradient of both xg and hg).
/// lstm_backward_element given tc = tanh(c_t) of the element.
WRPN_HD void lstm_backward_core(const float* dh_out, const float* dh_rec, const float* gates,
                                float tc, const float* c_prev, float* dc, float* dgates, int64_t b,
                                int64_t j, int64_t H, const HiddenQuant& q) {
  const int64_t row = b * 4 * H;
  const int64_t k = b * H + j;
  const float i = gates[row + j];
  const float f = gates[row + H + j];
  const float g = gates[row + 2 * H + j];
  const float o = gates[row + 3 * H + j];
  float dh = (dh_out ? dh_out[k] : 0.0f) + (dh_rec ? dh_rec[k] : 0.0f);
  dh *= hidden_pass(o * tc, q);
  const float dct = dc[k] + dh * o * (1.0f - tc * tc);
  dgates[row + j] = dct * g * i * (1.0f - i);
  dgates[row + H + j] = dct * c_prev[k] * f * (1.0f - f);
  dgates[row + 2 * H + j] = dct * i * (1.0f - g * g);
  dgates[row + 3 * H + j] = dh * tc * o * (1.0f - o);
  dc[k] = dct * f;
}

WRPN_HD void lstm_backward_element(const float* dh_out, const float* dh_rec, const float* gates,
                                   const float* c_t, const float* c_prev, float* dc, float* dgates,
                                   int64_t b, int64_t j, int64_t H, const HiddenQuant& q) {
  lstm_backward_core(dh_out, dh_rec, gates, cell_tanh(c_t[b * H + j]), c_prev, dc, dgates, b, j, H,
                     q);
}

// ---- GRU (gate order r, z, n as torch::nn::GRU) ------------------------------------------------
// xg[b] = x_t W_ih^T + b_ih and hg[b] = h_{t-1} W_hh^T + b_hh, each [3H];
// r = sigmoid(xr + hr), z = sigmoid(xz + hz), n = tanh(xn + r * hn), h = (1 - z) * n + z * h_{t-1}.
// Saved: gates = (r, z, n, hn) [4H].

WRPN_HD float gru_hidden(float z, float n, float h_prev) {
  return add_rn(mul_rn(sub_rn(1.0f, z), n), mul_rn(z, h_prev));
}

/// The pre-activation of n: xn + r * hn.
WRPN_HD float gru_n_input(float xn, float r, float hn) { return add_rn(xn, mul_rn(r, hn)); }

WRPN_HD void gru_forward_element(const float* xg, const float* hg, const float* h_prev,
                                 float* gates, float* h_out, int64_t b, int64_t j, int64_t H,
                                 const HiddenQuant& q) {
  const int64_t row = b * 3 * H;
  const float r = cell_sigmoid(add_rn(xg[row + j], hg[row + j]));
  const float z = cell_sigmoid(add_rn(xg[row + H + j], hg[row + H + j]));
  const float hn = hg[row + 2 * H + j];
  const float n = cell_tanh(gru_n_input(xg[row + 2 * H + j], r, hn));
  const int64_t s = b * 4 * H;
  gates[s + j] = r;
  gates[s + H + j] = z;
  gates[s + 2 * H + j] = n;
  gates[s + 3 * H + j] = hn;
  h_out[b * H + j] = quantize_hidden(gru_hidden(z, n, h_prev[b * H + j]), q);
}

/// Backward of element (b, j): dxg [3H] (gradient of xg), dhg [3H] (gradient of hg) and
/// dh_direct = dL/dh_{t-1} through the z * h_{t-1} term (the recurrence adds dhg W_hh).
WRPN_HD void gru_backward_element(const float* dh_out, const float* dh_rec, const float* gates,
                                  const float* h_prev, float* dxg, float* dhg, float* dh_direct,
                                  int64_t b, int64_t j, int64_t H, const HiddenQuant& q) {
  const int64_t s = b * 4 * H;
  const int64_t row = b * 3 * H;
  const int64_t k = b * H + j;
  const float r = gates[s + j];
  const float z = gates[s + H + j];
  const float n = gates[s + 2 * H + j];
  const float hn = gates[s + 3 * H + j];
  const float hp = h_prev[k];
  float dh = (dh_out ? dh_out[k] : 0.0f) + (dh_rec ? dh_rec[k] : 0.0f);
  dh *= hidden_pass(gru_hidden(z, n, hp), q);
  const float dn = dh * (1.0f - n * n) * (1.0f - z);
  const float dz = dh * (hp - n) * z * (1.0f - z);
  const float dr = dn * hn * r * (1.0f - r);
  dxg[row + j] = dr;
  dxg[row + H + j] = dz;
  dxg[row + 2 * H + j] = dn;
  dhg[row + j] = dr;
  dhg[row + H + j] = dz;
  dhg[row + 2 * H + j] = dn * r;
  dh_direct[k] = dh * z;
}

}  // namespace wrpn::kernels

// Launchers of one step on contiguous float tensors of one device. wrpn::rnn's pick the CPU loop
// or the CUDA kernel by the tensors' device; wrpn::cuda's are the CUDA kernels behind them
// (kernels/cuda/rnn_cell_cuda.cu). Shapes: B rows, hidden size H; undefined optional tensors are
// zero.
//   lstm_step_forward:  xg, hg [B, 4H]; c_prev [B, H] -> gates [B, 4H], c [B, H], h [B, H].
//   lstm_step_backward: dh_out, dh_rec [B, H] (either may be undefined); dc [B, H] in/out;
//                       -> dgates [B, 4H].
//   gru_step_forward:   xg, hg [B, 3H]; h_prev [B, H] -> gates [B, 4H] (r, z, n, hn), h [B, H].
//   gru_step_backward:  -> dxg, dhg [B, 3H], dh_direct [B, H].
#define WRPN_RNN_STEP_LAUNCHERS                                                                    \
  void lstm_step_forward(const at::Tensor& xg, const at::Tensor& hg, const at::Tensor& c_prev,     \
                         const at::Tensor& gates, const at::Tensor& c, const at::Tensor& h,        \
                         const kernels::HiddenQuant& q);                                           \
  void lstm_step_backward(const at::Tensor& dh_out, const at::Tensor& dh_rec,                      \
                          const at::Tensor& gates, const at::Tensor& c_t,                          \
                          const at::Tensor& c_prev, const at::Tensor& dc,                          \
                          const at::Tensor& dgates, const kernels::HiddenQuant& q);                \
  void gru_step_forward(const at::Tensor& xg, const at::Tensor& hg, const at::Tensor& h_prev,      \
                        const at::Tensor& gates, const at::Tensor& h,                              \
                        const kernels::HiddenQuant& q);                                            \
  void gru_step_backward(const at::Tensor& dh_out, const at::Tensor& dh_rec,                       \
                         const at::Tensor& gates, const at::Tensor& h_prev, const at::Tensor& dxg, \
                         const at::Tensor& dhg, const at::Tensor& dh_direct,                       \
                         const kernels::HiddenQuant& q);

namespace wrpn::rnn {
WRPN_RNN_STEP_LAUNCHERS
}  // namespace wrpn::rnn

#if defined(WRPN_WITH_CUDA)
namespace wrpn::cuda {
WRPN_RNN_STEP_LAUNCHERS
}  // namespace wrpn::cuda
#endif
