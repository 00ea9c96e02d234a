// CUDA kernels of the wrpn:: ops (schemas in quantize_ops.cpp). Built only with CUDA.

#include <ATen/ATen.h>
#include <torch/library.h>

#include "quantize_common.h"
#include "wrpn/kernels/quantize_cuda.h"

namespace wrpn::ops {
namespace {

constexpr QuantKernels kCuda{
    "CUDA", &cuda::fake_quant_forward_kernel, &cuda::binary_quant_forward_kernel,
    &cuda::stochastic_quant_forward_kernel, &cuda::masked_grad_backward_kernel};
const QuantKernels& cuda_table() { return kCuda; }

}  // namespace
}  // namespace wrpn::ops

TORCH_LIBRARY_IMPL(wrpn, CUDA, m) {
  wrpn::ops::register_backend_kernels<&wrpn::ops::cuda_table>(m);
}
