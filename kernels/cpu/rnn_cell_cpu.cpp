// The fused recurrent steps: the CPU loops over rnn_cell.h's element functions, and the device
// dispatch of the launchers. Compiled with -ffp-contract=off (kernels/CMakeLists.txt): the
// forward's products and sums must stay separate float operations to match the ATen composite.

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include "wrpn/kernels/rnn_cell.h"

namespace wrpn::rnn {
namespace {

using kernels::HiddenQuant;

/// Elements of one step's [B, H] grid per parallel task: the per-element work is a few
/// double-precision exp/tanh calls, so small steps stay on one thread.
constexpr int64_t kGrain = 4096;

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
  for_each_element(B, H, [&](int64_t b, int64_t j) {
    kernels::lstm_forward_element(x, hh, cp, g, co, ho, b, j, H, q);
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
  for_each_element(B, H, [&](int64_t b, int64_t j) {
    kernels::lstm_backward_element(dho, dhr, g, ct, cp, dcp, dg, b, j, H, q);
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
  for_each_element(B, H, [&](int64_t b, int64_t j) {
    kernels::gru_forward_element(x, hh, hp, g, ho, b, j, H, q);
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
