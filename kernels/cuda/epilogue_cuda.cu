// The CUDA integer-inference epilogue: one thread per element over the shared per-element math
// (wrpn/kernels/epilogue.h), 64-bit indexing, on the current stream.

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include "wrpn/kernels/epilogue.h"

namespace wrpn::kernels {
namespace {

template <bool kAffine, bool kResidual, bool kResidualCodes, typename In>
__global__ void epilogue_kernel(EpilogueArgs p) {
  const int64_t n = p.rows * p.channels;
  const In* in = static_cast<const In*>(p.input);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    epilogue_element<kAffine, kResidual, kResidualCodes>(p, epilogue_input(in[i], p.input_levels),
                                                         i, i % p.channels);
  }
}

template <bool kAffine, bool kResidual, bool kResidualCodes, typename In>
void launch(const EpilogueArgs& p) {
  const int64_t n = p.rows * p.channels;
  constexpr int kThreads = 256;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8);
  epilogue_kernel<kAffine, kResidual, kResidualCodes, In>
      <<<static_cast<unsigned>(blocks), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename In>
void by_residual(const EpilogueArgs& p, bool affine) {
  if (affine) {
    if (!p.residual) return launch<true, false, false, In>(p);
    if (p.residual_is_codes) return launch<true, true, true, In>(p);
    return launch<true, true, false, In>(p);
  }
  if (!p.residual) return launch<false, false, false, In>(p);
  if (p.residual_is_codes) return launch<false, true, true, In>(p);
  return launch<false, true, false, In>(p);
}

}  // namespace

void epilogue_cuda(const EpilogueArgs& p) {
  if (p.rows == 0 || p.channels == 0) return;
  const bool affine = p.scale != nullptr && p.shift != nullptr;
  switch (p.input_type) {
    case EpilogueArgs::Input::kInt32:
      return by_residual<int32_t>(p, affine);
    case EpilogueArgs::Input::kCodes:
      return by_residual<uint8_t>(p, affine);
    case EpilogueArgs::Input::kFloat:
      break;
  }
  by_residual<float>(p, affine);
}

}  // namespace wrpn::kernels
