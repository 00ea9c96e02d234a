#pragma once
// Device-independent halves of the quantizer ops: argument checks, allocation and the quantizer
// parameters (division kind included). Each backend (CPU in quantize_ops.cpp, CUDA in
// quantize_cuda_ops.cpp) registers them with its kernel table.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "wrpn/kernels/quant_kernels.h"

namespace wrpn::ops {

enum class QuantKind { Weight, Activation };

using kernels::QuantKernels;

const char* op_name(QuantKind kind);

/// Throws a c10::Error naming the op, the argument and the allowed values.
void check_quant_args(QuantKind kind, const at::Tensor& x, int64_t bits);
void check_masked_grad_args(const at::Tensor& grad, const at::Tensor& mask);

/// Shape-only results (Meta kernels).
std::tuple<at::Tensor, at::Tensor> quant_forward_meta(QuantKind kind, const at::Tensor& x,
                                                      int64_t bits);

/// q and (when with_mask) the packed mask.
std::tuple<at::Tensor, at::Tensor> quant_forward(QuantKind kind, const at::Tensor& x, int64_t bits,
                                                 bool with_mask, const QuantKernels& table);
/// Fixed point: argument checks (the bits alone, or everything), and q plus (when with_mask)
/// the packed mask.
void check_fixed_point_bits(int64_t total_bits, int64_t frac_bits);
void check_fixed_point_args(const at::Tensor& x, int64_t total_bits, int64_t frac_bits,
                            const std::optional<at::Generator>& generator);
std::tuple<at::Tensor, at::Tensor> fixed_point_forward_meta(
    const at::Tensor& x, int64_t total_bits, int64_t frac_bits,
    const std::optional<at::Generator>& generator);
std::tuple<at::Tensor, at::Tensor> fixed_point_forward(
    const at::Tensor& x, int64_t total_bits, int64_t frac_bits, bool stochastic,
    const std::optional<at::Generator>& generator, bool with_mask, const QuantKernels& table);

at::Tensor masked_grad_forward(const at::Tensor& grad, const at::Tensor& mask,
                               const QuantKernels& table);

/// Registers the device kernels of every wrpn:: op for one backend (its TORCH_LIBRARY_IMPL
/// block calls this): the same argument handling for every device, then the kernel of the
/// table that Table() returns (chosen per call: the CPU's can be switched at run time).
template <const QuantKernels& (*Table)()>
void register_backend_kernels(torch::Library& m) {
  using at::Tensor;
  using OptGenerator = std::optional<at::Generator>;
  m.impl("quantize_weight", [](const Tensor& w, int64_t bits) {
    return std::get<0>(quant_forward(QuantKind::Weight, w, bits, false, Table()));
  });
  m.impl("quantize_activation", [](const Tensor& x, int64_t bits) {
    return std::get<0>(quant_forward(QuantKind::Activation, x, bits, false, Table()));
  });
  m.impl("_quantize_weight_forward", [](const Tensor& w, int64_t bits) {
    return quant_forward(QuantKind::Weight, w, bits, true, Table());
  });
  m.impl("_quantize_activation_forward", [](const Tensor& x, int64_t bits) {
    return quant_forward(QuantKind::Activation, x, bits, true, Table());
  });
  m.impl("_masked_grad", [](const Tensor& grad, const Tensor& mask) {
    return masked_grad_forward(grad, mask, Table());
  });
  m.impl("quantize_fixed_point", [](const Tensor& x, int64_t total_bits, int64_t frac_bits,
                                    bool stochastic, OptGenerator gen) {
    return std::get<0>(
        fixed_point_forward(x, total_bits, frac_bits, stochastic, gen, false, Table()));
  });
  m.impl("_quantize_fixed_point_forward", [](const Tensor& x, int64_t total_bits, int64_t frac_bits,
                                             bool stochastic, OptGenerator gen) {
    return fixed_point_forward(x, total_bits, frac_bits, stochastic, gen, true, Table());
  });
}

}  // namespace wrpn::ops
