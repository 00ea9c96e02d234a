// The CUDA code-packing kernels: one thread per block of 8 elements (k bytes), the block
// functions of pack_codes.h shared with the CPU.

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <type_traits>

#include "wrpn/kernels/pack_kernels.h"

namespace wrpn::kernels {
namespace {

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

constexpr int kThreads = 256;

template <typename T>
__global__ void pack_kernel(const T* x, int64_t n, CodeFormat f, uint8_t* out) {
  using A = acc_t<T>;
  const int64_t blocks = (n + 7) / 8;
  const int64_t total = packed_bytes(n, f.bits);
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < blocks;
       b += int64_t{gridDim.x} * blockDim.x) {
    uint32_t c[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int64_t i0 = b * 8;
    const int m = static_cast<int>(n - i0 < 8 ? n - i0 : 8);
    for (int j = 0; j < m; ++j) {
      const A v = static_cast<A>(x[i0 + j]);
      const A r = rint(v * static_cast<A>(f.scale));
      // Signed formats code -0.0 as their most negative value (as on the CPU).
      const bool neg_zero = f.is_signed && v == A(0) && signbit(v);
      c[j] = stored_code(neg_zero ? -(1 << (f.bits - 1)) : static_cast<int32_t>(r), f);
    }
    const int64_t left = total - b * f.bits;
    pack_block8(c, f.bits, out + b * f.bits, static_cast<int>(left < f.bits ? left : f.bits));
  }
}

template <typename T>
__global__ void unpack_kernel(const uint8_t* in, int64_t n, CodeFormat f, T* out) {
  using A = acc_t<T>;
  const int64_t blocks = (n + 7) / 8;
  const int64_t total = packed_bytes(n, f.bits);
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < blocks;
       b += int64_t{gridDim.x} * blockDim.x) {
    uint32_t c[8];
    const int64_t left = total - b * f.bits;
    unpack_block8(in + b * f.bits, f.bits, static_cast<int>(left < f.bits ? left : f.bits), c);
    const int64_t i0 = b * 8;
    const int m = static_cast<int>(n - i0 < 8 ? n - i0 : 8);
    for (int j = 0; j < m; ++j) {
      const int32_t v = code_value(c[j], f);
      const bool neg_zero = f.is_signed && v == -(1 << (f.bits - 1));
      out[i0 + j] = static_cast<T>(neg_zero ? -A(0) : static_cast<A>(v) / static_cast<A>(f.scale));
    }
  }
}

template <typename T>
__global__ void positive_kernel(const T* x, int64_t n, uint8_t* out) {
  const int64_t bytes = (n + 7) / 8;
  for (int64_t b = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; b < bytes;
       b += int64_t{gridDim.x} * blockDim.x) {
    uint32_t v = 0;
    for (int64_t i = b * 8; i < b * 8 + 8 && i < n; ++i) {
      v |= static_cast<uint32_t>(static_cast<float>(x[i]) > 0.0f) << (i - b * 8);
    }
    out[b] = static_cast<uint8_t>(v);
  }
}

int grid_for(int64_t n) {
  const int64_t blocks = (n + 7) / 8;
  const int64_t g = (blocks + kThreads - 1) / kThreads;
  return static_cast<int>(g < 65535 * 8 ? (g > 0 ? g : 1) : 65535 * 8);
}

}  // namespace

void pack_codes_cuda(const at::Tensor& x, const CodeFormat& f, uint8_t* out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream(x.device().index());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "pack_codes_cuda", [&] {
        pack_kernel<scalar_t>
            <<<grid_for(n), kThreads, 0, stream>>>(x.const_data_ptr<scalar_t>(), n, f, out);
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void pack_positive_cuda(const at::Tensor& x, uint8_t* out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream(x.device().index());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "pack_positive_cuda", [&] {
        positive_kernel<scalar_t>
            <<<grid_for(n), kThreads, 0, stream>>>(x.const_data_ptr<scalar_t>(), n, out);
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void unpack_codes_cuda(const uint8_t* in, const CodeFormat& f, const at::Tensor& out) {
  const int64_t n = out.numel();
  if (n == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream(out.device().index());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, out.scalar_type(), "unpack_codes_cuda", [&] {
        unpack_kernel<scalar_t>
            <<<grid_for(n), kThreads, 0, stream>>>(in, n, f, out.mutable_data_ptr<scalar_t>());
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace wrpn::kernels
