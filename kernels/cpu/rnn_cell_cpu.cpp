// The fused recurrent steps: the CPU loops over rnn_cell.h's arithmetic, and the device dispatch
// of the launchers. A step goes row by row (one batch element): the row's pre-activations are
// summed, its gate nonlinearities evaluated in one vectorised call per gate block (the capability
// build of rnn_act_cpu_kernel.cpp in use), then the cell update and the hidden-state quantizer.
// Compiled with -ffp-contract=off (kernels/CMakeLists.txt): the forward's products and sums must
// stay separate float operations to match the ATen composite.

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "wrpn/kernels/quantize_cpu.h"
#include "wrpn/kernels/rnn_cell.h"

namespace wrpn::cpu {
#define WRPN_RNN_ACT_DECL(CAP)               \
  namespace CAP {                            \
  void sigmoid_inplace(float* x, int64_t n); \
  void tanh_inplace(float* x, int64_t n);    \
  }
WRPN_RNN_ACT_DECL(DEFAULT)
WRPN_RNN_ACT_DECL(AVX2)
WRPN_RNN_ACT_DECL(AVX512)
#undef WRPN_RNN_ACT_DECL
}  // namespace wrpn::cpu

namespace wrpn::rnn {
namespace {

using kernels::HiddenQuant;

/// Elements of one step's [B, H] grid per parallel task, so small steps stay on one thread.
constexpr int64_t kGrain = 4096;

struct Activations {
  void (*sigmoid)(float*, int64_t);
  void (*tanh)(float*, int64_t);
};

/// The capability build of the kernel table in use (ATEN_CPU_CAPABILITY, the CPU, or
/// wrpn::set_cpu_kernel_capability), looked up per step.
Activations activations() {
  return cpu::for_table_in_use(
      Activations{cpu::DEFAULT::sigmoid_inplace, cpu::DEFAULT::tanh_inplace},
      Activations{cpu::AVX2::sigmoid_inplace, cpu::AVX2::tanh_inplace},
      Activations{cpu::AVX512::sigmoid_inplace, cpu::AVX512::tanh_inplace});
}

/// f(begin, end) over the rows of a step, split into parallel tasks of about kGrain elements.
template <typename F>
void for_row_ranges(int64_t B, int64_t H, F&& f) {
  at::parallel_for(0, B, std::max<int64_t>(1, kGrain / std::max<int64_t>(H, 1)), f);
}

/// f(b) for every row b of a step.
template <typename F>
void for_each_row(int64_t B, int64_t H, F&& f) {
  for_row_ranges(B, H, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) f(b);
  });
}

template <typename F>
void for_each_element(int64_t B, int64_t H, F&& f) {
  at::parallel_for(0, B * H, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) f(e / H, e % H);
  });
}

const float* opt_ptr(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

bool on_cuda(const at::Tensor& t) { return t.is_cuda(); }

void require_cuda_build() {
#if !defined(WRPN_WITH_CUDA)
  TORCH_CHECK(false, "wrpn was built without CUDA: the fused recurrent cell runs on the CPU only");
#endif
}

}  // namespace

void lstm_step_forward(const at::Tensor& xg, const at::Tensor& hg, const at::Tensor& c_prev,
                       const at::Tensor& gates, const at::Tensor& c, const at::Tensor& h,
                       const HiddenQuant& q) {
  if (on_cuda(xg)) {
    require_cuda_build();
#if defined(WRPN_WITH_CUDA)
    cuda::lstm_step_forward(xg, hg, c_prev, gates, c, h, q);
#endif
    return;
  }
  const int64_t B = c_prev.size(0), H = c_prev.size(1);
  const float* x = xg.data_ptr<float>();
  const float* hh = hg.data_ptr<float>();
  const float* cp = c_prev.data_ptr<float>();
  float* g = gates.data_ptr<float>();
  float* co = c.data_ptr<float>();
  float* ho = h.data_ptr<float>();
  const Activations act = activations();
  for_each_row(B, H, [&](int64_t b) {
    float* gr = g + b * 4 * H;
    const float* xr = x + b * 4 * H;
    const float* hr = hh + b * 4 * H;
    for (int64_t k = 0; k < 4 * H; ++k) gr[k] = kernels::add_rn(xr[k], hr[k]);
    act.sigmoid(gr, 2 * H);      // i, f
    act.tanh(gr + 2 * H, H);     // g
    act.sigmoid(gr + 3 * H, H);  // o
    float* cr = co + b * H;
    float* hrow = ho + b * H;
    for (int64_t j = 0; j < H; ++j) {
      cr[j] = kernels::lstm_cell(gr[j], gr[H + j], gr[2 * H + j], cp[b * H + j]);
      hrow[j] = cr[j];
    }
    act.tanh(hrow, H);
    for (int64_t j = 0; j < H; ++j) hrow[j] = kernels::lstm_hidden(gr[3 * H + j], hrow[j], q);
  });
}

void lstm_step_backward(const at::Tensor& dh_out, const at::Tensor& dh_rec, const at::Tensor& gates,
                        const at::Tensor& c_t, const at::Tensor& c_prev, const at::Tensor& dc,
                        const at::Tensor& dgates, const HiddenQuant& q) {
  if (on_cuda(gates)) {
    require_cuda_build();
#if defined(WRPN_WITH_CUDA)
    cuda::lstm_step_backward(dh_out, dh_rec, gates, c_t, c_prev, dc, dgates, q);
#endif
    return;
  }
  const int64_t B = c_t.size(0), H = c_t.size(1);
  const float* dho = opt_ptr(dh_out);
  const float* dhr = opt_ptr(dh_rec);
  const float* g = gates.data_ptr<float>();
  const float* ct = c_t.data_ptr<float>();
  const float* cp = c_prev.data_ptr<float>();
  float* dcp = dc.data_ptr<float>();
  float* dg = dgates.data_ptr<float>();
  const Activations act = activations();
  for_row_ranges(B, H, [&](int64_t begin, int64_t end) {
    std::vector<float> tc(static_cast<size_t>(H));  // tanh(c_t) of a row
    for (int64_t b = begin; b < end; ++b) {
      std::memcpy(tc.data(), ct + b * H, static_cast<size_t>(H) * sizeof(float));
      act.tanh(tc.data(), H);
      for (int64_t j = 0; j < H; ++j)
        kernels::lstm_backward_core(dho, dhr, g, tc[static_cast<size_t>(j)], cp, dcp, dg, b, j, H,
                                    q);
    }
  });
}

void gru_step_forward(const at::Tensor& xg, const at::Tensor& hg, const at::Tensor& h_prev,
                      const at::Tensor& gates, const at::Tensor& h, const HiddenQuant& q) {
  if (on_cuda(xg)) {
    require_cuda_build();
#if defined(WRPN_WITH_CUDA)
    cuda::gru_step_forward(xg, hg, h_prev, gates, h, q);
#endif
    return;
  }
  const int64_t B = h_prev.size(0), H = h_prev.size(1);
  const float* x = xg.data_ptr<float>();
  const float* hh = hg.data_ptr<float>();
  const float* hp = h_prev.data_ptr<float>();
  float* g = gates.data_ptr<float>();
  float* ho = h.data_ptr<float>();
  const Activations act = activations();
  for_each_row(B, H, [&](int64_t b) {
    float* gs = g + b * 4 * H;  // r, z, n, hn
    const float* xr = x + b * 3 * H;
    const float* hr = hh + b * 3 * H;
    for (int64_t k = 0; k < 2 * H; ++k) gs[k] = kernels::add_rn(xr[k], hr[k]);
    act.sigmoid(gs, 2 * H);  // r, z
    for (int64_t j = 0; j < H; ++j) {
      const float hn = hr[2 * H + j];
      gs[3 * H + j] = hn;
      gs[2 * H + j] = kernels::gru_n_input(xr[2 * H + j], gs[j], hn);
    }
    act.tanh(gs + 2 * H, H);  // n
    for (int64_t j = 0; j < H; ++j)
      ho[b * H + j] =
          kernels::quantize_hidden(kernels::gru_hidden(gs[H + j], gs[2 * H + j], hp[b * H + j]), q);
  });
}

void gru_step_backward(const at::Tensor& dh_out, const at::Tensor& dh_rec, const at::Tensor& gates,
                       const at::Tensor& h_prev, const at::Tensor& dxg, const at::Tensor& dhg,
                       const at::Tensor& dh_direct, const HiddenQuant& q) {
  if (on_cuda(gates)) {
    require_cuda_build();
#if defined(WRPN_WITH_CUDA)
    cuda::gru_step_backward(dh_out, dh_rec, gates, h_prev, dxg, dhg, dh_direct, q);
#endif
    return;
  }
  const int64_t B = h_prev.size(0), H = h_prev.size(1);
  const float* dho = opt_ptr(dh_out);
  const float* dhr = opt_ptr(dh_rec);
  const float* g = gates.data_ptr<float>();
  const float* hp = h_prev.data_ptr<float>();
  float* dx = dxg.data_ptr<float>();
  float* dh = dhg.data_ptr<float>();
  float* dd = dh_direct.data_ptr<float>();
  for_each_element(B, H, [&](int64_t b, int64_t j) {
    kernels::gru_backward_element(dho, dhr, g, hp, dx, dh, dd, b, j, H, q);
  });
}

}  // namespace wrpn::rnn
