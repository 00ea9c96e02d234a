// Fused CUDA quantizer kernels. Each thread owns groups of 8 elements (one mask byte), loads and
// stores them with 16-byte vector accesses when the pointers allow it, and falls back to scalar
// accesses for the ragged tail or misaligned views. 64-bit indexing throughout.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>

#include "wrpn/kernels/quant_math.h"
#include "wrpn/kernels/quantize_cuda.h"

namespace wrpn::cuda {
namespace {

using kernels::kMaskBits;
using kernels::ScalarMath;

constexpr int kThreads = 256;

// Kernel arguments: make<scalar_t>() builds the per-element op for one dtype, dividing as the
// op's division kind says (kernels::output_division, the same route as the CPU kernels).
template <kernels::Division D>
struct FakeQuantArgs {
  static constexpr bool kStochastic = false;
  kernels::QuantParams p;
  template <typename scalar_t>
  __device__ auto make() const {
    return kernels::FakeQuantOp<kernels::output_division<scalar_t>(D)>{p};
  }
};

/// Stochastic rounding: the op's value takes the element's uniform as a second argument.
template <kernels::Division D>
struct StochasticArgs {
  static constexpr bool kStochastic = true;
  kernels::QuantParams p;
  uint64_t seed;
  template <typename scalar_t>
  __device__ auto make() const {
    return kernels::StochasticQuantOp<kernels::output_division<scalar_t>(D)>{p};
  }
};

struct BinaryArgs {
  static constexpr bool kStochastic = false;
  const double* scale;
  template <typename scalar_t>
  __device__ kernels::BinaryOp make() const {
    return kernels::BinaryOp{*scale};
  }
};

/// 8 elements of T moved as 16-byte words (sizeof(T) * 8 is 16, 32 or 64 bytes).
template <typename T>
struct alignas(16) Group {
  T v[kMaskBits];
};

template <typename T>
__device__ __forceinline__ void load_group(Group<T>& g, const T* p) {
  constexpr int kWords = sizeof(Group<T>) / sizeof(uint4);
  const uint4* src = reinterpret_cast<const uint4*>(p);
  uint4* dst = reinterpret_cast<uint4*>(g.v);
#pragma unroll
  for (int k = 0; k < kWords; ++k) dst[k] = __ldg(src + k);
}

template <typename T>
__device__ __forceinline__ void store_group(T* p, const Group<T>& g) {
  constexpr int kWords = sizeof(Group<T>) / sizeof(uint4);
  uint4* dst = reinterpret_cast<uint4*>(p);
  const uint4* src = reinterpret_cast<const uint4*>(g.v);
#pragma unroll
  for (int k = 0; k < kWords; ++k) dst[k] = src[k];
}

template <typename scalar_t, typename Args, bool kWriteMask>
__global__ void __launch_bounds__(kThreads)
    quant_forward(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                  uint8_t* __restrict__ mask, int64_t n, Args args, bool vectorized) {
  using opmath_t = at::opmath_type<scalar_t>;
  const auto op = args.template make<scalar_t>();
  const int64_t groups = (n + kMaskBits - 1) / kMaskBits;
  const int64_t full = n / kMaskBits;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += stride) {
    const int64_t base = g * kMaskBits;
    uint32_t bits = 0;
    float u[kMaskBits];
    if constexpr (Args::kStochastic) {
      // The same (seed, element) -> uniform map as the CPU kernel: two Philox blocks per group.
      kernels::philox_uniforms(args.seed, 2 * g, u);
      kernels::philox_uniforms(args.seed, 2 * g + 1, u + kernels::kUniformsPerBlock);
    }
    auto value = [&](opmath_t v, int j) {
      if constexpr (Args::kStochastic) {
        return op.template value<ScalarMath>(v, static_cast<opmath_t>(u[j]));
      } else {
        return op.template value<ScalarMath>(v);
      }
    };
    if (vectorized && g < full) {
      Group<scalar_t> in, res;
      load_group(in, x + base);
#pragma unroll
      for (int j = 0; j < kMaskBits; ++j) {
        const opmath_t v = static_cast<opmath_t>(in.v[j]);
        res.v[j] = static_cast<scalar_t>(value(v, j));
        bits |= static_cast<uint32_t>(op.template pass<ScalarMath>(v)) << j;
      }
      store_group(out + base, res);
    } else {
      const int count = static_cast<int>(min(static_cast<int64_t>(kMaskBits), n - base));
      for (int j = 0; j < count; ++j) {
        const opmath_t v = static_cast<opmath_t>(x[base + j]);
        out[base + j] = static_cast<scalar_t>(value(v, j));
        bits |= static_cast<uint32_t>(op.template pass<ScalarMath>(v)) << j;
      }
    }
    if (kWriteMask) mask[g] = static_cast<uint8_t>(bits);
  }
}

template <typename U>
__global__ void __launch_bounds__(kThreads)
    masked_select(const U* __restrict__ grad, const uint8_t* __restrict__ mask, U* __restrict__ out,
                  int64_t n, bool vectorized) {
  const int64_t groups = (n + kMaskBits - 1) / kMaskBits;
  const int64_t full = n / kMaskBits;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += stride) {
    const int64_t base = g * kMaskBits;
    const uint32_t bits = __ldg(mask + g);
    if (vectorized && g < full) {
      Group<U> v;
      load_group(v, grad + base);
#pragma unroll
      for (int j = 0; j < kMaskBits; ++j) v.v[j] = ((bits >> j) & 1u) ? v.v[j] : U(0);
      store_group(out + base, v);
    } else {
      const int count = static_cast<int>(min(static_cast<int64_t>(kMaskBits), n - base));
      for (int j = 0; j < count; ++j) out[base + j] = ((bits >> j) & 1u) ? grad[base + j] : U(0);
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

/// Enough blocks to fill the GPU a few times over; the grid-stride loop covers the rest.
int grid_for(int64_t groups) {
  const auto* prop = at::cuda::getCurrentDeviceProperties();
  const int64_t resident = static_cast<int64_t>(prop->multiProcessorCount) *
                           (prop->maxThreadsPerMultiProcessor / kThreads);
  const int64_t wanted = (groups + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, resident * 4)));
}

template <typename Args>
void launch_forward(const at::Tensor& x, const at::Tensor& out, uint8_t* mask, Args args) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int grid = grid_for((n + kMaskBits - 1) / kMaskBits);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "wrpn_quant_cuda", [&] {
        const scalar_t* xp = x.const_data_ptr<scalar_t>();
        scalar_t* op = out.mutable_data_ptr<scalar_t>();
        const bool vec = aligned16(xp) && aligned16(op);
        if (mask != nullptr) {
          quant_forward<scalar_t, Args, true>
              <<<grid, kThreads, 0, stream>>>(xp, op, mask, n, args, vec);
        } else {
          quant_forward<scalar_t, Args, false>
              <<<grid, kThreads, 0, stream>>>(xp, op, mask, n, args, vec);
        }
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

template <typename U>
void launch_masked_select(const at::Tensor& grad, const uint8_t* mask, const at::Tensor& out) {
  const int64_t n = grad.numel();
  const U* g = static_cast<const U*>(grad.const_data_ptr());
  U* o = static_cast<U*>(out.mutable_data_ptr());
  const bool vec = aligned16(g) && aligned16(o);
  const int grid = grid_for((n + kMaskBits - 1) / kMaskBits);
  masked_select<U><<<grid, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(g, mask, o, n, vec);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void fake_quant_forward_kernel(const at::Tensor& x, const at::Tensor& out, uint8_t* mask,
                               kernels::QuantParams p) {
  kernels::with_division(p.division, [&](auto d) {
    launch_forward(x, out, mask, FakeQuantArgs<decltype(d)::value>{p});
  });
}

void binary_quant_forward_kernel(const at::Tensor& x, const at::Tensor& out, uint8_t* mask,
                                 const at::Tensor& scale) {
  TORCH_CHECK(scale.scalar_type() == at::kDouble && scale.device() == x.device(),
              "wrpn: binary scale must be a float64 tensor on ", x.device());
  launch_forward(x, out, mask, BinaryArgs{scale.const_data_ptr<double>()});
}

void stochastic_quant_forward_kernel(const at::Tensor& x, const at::Tensor& out, uint8_t* mask,
                                     kernels::QuantParams p, uint64_t seed) {
  kernels::with_division(p.division, [&](auto d) {
    launch_forward(x, out, mask, StochasticArgs<decltype(d)::value>{p, seed});
  });
}

void masked_grad_backward_kernel(const at::Tensor& grad, const uint8_t* mask,
                                 const at::Tensor& out) {
  if (grad.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(grad.device());
  switch (grad.element_size()) {
    case 2:
      launch_masked_select<uint16_t>(grad, mask, out);
      break;
    case 4:
      launch_masked_select<uint32_t>(grad, mask, out);
      break;
    case 8:
      launch_masked_select<uint64_t>(grad, mask, out);
      break;
    default:
      TORCH_CHECK(false, "wrpn: masked_grad: unsupported element size ", grad.element_size());
  }
}

}  // namespace wrpn::cuda
