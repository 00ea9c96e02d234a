// CUDA kernels of the fused recurrent steps: one thread per element of a step's [B, H] grid,
// running rnn_cell.h's element functions (the same lines as the CPU loop).

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "wrpn/kernels/rnn_cell.h"

namespace wrpn::cuda {
namespace {

using kernels::HiddenQuant;

constexpr int kThreads = 256;

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

const float* opt_ptr(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

__global__ void lstm_forward_kernel(const float* xg, const float* hg, const float* c_prev,
                                    float* gates, float* c, float* h, int64_t B, int64_t H,
                                    HiddenQuant q) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= B * H) return;
  kernels::lstm_forward_element(xg, hg, c_prev, gates, c, h, e / H, e % H, H, q);
}

__global__ void lstm_backward_kernel(const float* dh_out, const float* dh_rec, const float* gates,
                                     const float* c_t, const float* c_prev, float* dc,
                                     float* dgates, int64_t B, int64_t H, HiddenQuant q) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= B * H) return;
  kernels::lstm_backward_element(dh_out, dh_rec, gates, c_t, c_prev, dc, dgates, e / H, e % H, H,
                                 q);
}

__global__ void gru_forward_kernel(const float* xg, const float* hg, const float* h_prev,
                                   float* gates, float* h, int64_t B, int64_t H, HiddenQuant q) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= B * H) return;
  kernels::gru_forward_element(xg, hg, h_prev, gates, h, e / H, e % H, H, q);
}

__global__ void gru_backward_kernel(const float* dh_out, const float* dh_rec, const float* gates,
                                    const float* h_prev, float* dxg, float* dhg, float* dh_direct,
                                    int64_t B, int64_t H, HiddenQuant q) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= B * H) return;
  kernels::gru_backward_element(dh_out, dh_rec, gates, h_prev, dxg, dhg, dh_direct, e / H, e % H, H,
                                q);
}

}  // namespace

void lstm_step_forward(const at::Tensor& xg, const at::Tensor& hg, const at::Tensor& c_prev,
                       const at::Tensor& gates, const at::Tensor& c, const at::Tensor& h,
                       const HiddenQuant& q) {
  const c10::cuda::CUDAGuard guard(xg.device());
  const int64_t B = c_prev.size(0), H = c_prev.size(1);
  if (B * H == 0) return;
  lstm_forward_kernel<<<blocks_for(B * H), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      xg.data_ptr<float>(), hg.data_ptr<float>(), c_prev.data_ptr<float>(), gates.data_ptr<float>(),
      c.data_ptr<float>(), h.data_ptr<float>(), B, H, q);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void lstm_step_backward(const at::Tensor& dh_out, const at::Tensor& dh_rec, const at::Tensor& gates,
                        const at::Tensor& c_t, const at::Tensor& c_prev, const at::Tensor& dc,
                        const at::Tensor& dgates, const HiddenQuant& q) {
  const c10::cuda::CUDAGuard guard(gates.device());
  const int64_t B = c_t.size(0), H = c_t.size(1);
  if (B * H == 0) return;
  lstm_backward_kernel<<<blocks_for(B * H), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      opt_ptr(dh_out), opt_ptr(dh_rec), gates.data_ptr<float>(), c_t.data_ptr<float>(),
      c_prev.data_ptr<float>(), dc.data_ptr<float>(), dgates.data_ptr<float>(), B, H, q);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void gru_step_forward(const at::Tensor& xg, const at::Tensor& hg, const at::Tensor& h_prev,
                      const at::Tensor& gates, const at::Tensor& h, const HiddenQuant& q) {
  const c10::cuda::CUDAGuard guard(xg.device());
  const int64_t B = h_prev.size(0), H = h_prev.size(1);
  if (B * H == 0) return;
  gru_forward_kernel<<<blocks_for(B * H), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      xg.data_ptr<float>(), hg.data_ptr<float>(), h_prev.data_ptr<float>(), gates.data_ptr<float>(),
      h.data_ptr<float>(), B, H, q);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void gru_step_backward(const at::Tensor& dh_out, const at::Tensor& dh_rec, const at::Tensor& gates,
                       const at::Tensor& h_prev, const at::Tensor& dxg, const at::Tensor& dhg,
                       const at::Tensor& dh_direct, const HiddenQuant& q) {
  const c10::cuda::CUDAGuard guard(gates.device());
  const int64_t B = h_prev.size(0), H = h_prev.size(1);
  if (B * H == 0) return;
  gru_backward_kernel<<<blocks_for(B * H), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      opt_ptr(dh_out), opt_ptr(dh_rec), gates.data_ptr<float>(), h_prev.data_ptr<float>(),
      dxg.data_ptr<float>(), dhg.data_ptr<float>(), dh_direct.data_ptr<float>(), B, H, q);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace wrpn::cuda
