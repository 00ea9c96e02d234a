#pragma once
/// The WRPN quantizer ops (Wide Reduced-Precision Networks, arXiv 1709.01134). Each function calls
/// the `wrpn::` op through the LibTorch dispatcher, so C++ and Python (`torch.ops.wrpn.*`) callers
/// get the same checks, kernels (CPU, CUDA, Meta) and autograd.

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>

namespace wrpn {

/// Smallest and largest bit widths the quantizer ops accept. Full precision ("32 bits") is a
/// module setting that skips the quantizer; the ops themselves reject it.
constexpr int64_t kMinBits = 1;
constexpr int64_t kMaxBits = 16;

/// k-bit WRPN weight quantizer: q = round(clamp(w, -1, 1) * s) / s with s = 2^(k-1) - 1
/// (k = 2..16, so k = 2 is ternary); k = 1 is binary, +-mean(|w|) by the sign of w.
/// Straight-through gradient dL/dw = dL/dq * [|w| <= 1]; autograd saves a 1-bit packed mask.
at::Tensor quantize_weight(const at::Tensor& w, int64_t bits);

/// k-bit WRPN activation quantizer (replaces ReLU): q = round(clamp(x, 0, 1) * s) / s with
/// s = 2^k - 1, k = 1..16. Gradient dL/dx = dL/dq * [0 <= x <= 1]; saves a 1-bit packed mask.
at::Tensor quantize_activation(const at::Tensor& x, int64_t bits);

/// Forward with the packed straight-through mask: returns (q, mask), mask a uint8 tensor of
/// ceil(numel / 8) bytes where bit i of byte j is element 8j + i of w in row-major order.
std::tuple<at::Tensor, at::Tensor> quantize_weight_with_mask(const at::Tensor& w, int64_t bits);
std::tuple<at::Tensor, at::Tensor> quantize_activation_with_mask(const at::Tensor& x, int64_t bits);

/// Total widths the fixed-point op accepts (sign bit included). Values are computed in float32,
/// whose 24-bit significand holds every Q(m.f) grid point up to 24 bits exactly.
constexpr int64_t kMinFixedPointBits = 2;
constexpr int64_t kMaxFixedPointBits = 24;

/// ADaPTION fixed point Q(m.f) (Milde et al., arXiv 1711.04713): m = total_bits - frac_bits
/// integer bits with the sign bit inside m, f = frac_bits, q = clamp(round(x * 2^f) / 2^f, -M, M)
/// with M = 2^(m-1) - 2^-f. Rounding is half to even, or with `stochastic` floor(x * 2^f + u),
/// u uniform in [0, 1) from a counter-based Philox stream keyed by one draw of `generator` (a CPU
/// generator; the default one when absent), so a seed reproduces it on any device and thread
/// count. Straight-through gradient dL/dx = dL/dq * [|x| <= M]; autograd saves a packed mask.
at::Tensor quantize_fixed_point(const at::Tensor& x, int64_t total_bits, int64_t frac_bits,
                                bool stochastic = false,
                                std::optional<at::Generator> generator = std::nullopt);

/// quantize_fixed_point with the packed straight-through mask, as quantize_weight_with_mask.
std::tuple<at::Tensor, at::Tensor> quantize_fixed_point_with_mask(
    const at::Tensor& x, int64_t total_bits, int64_t frac_bits, bool stochastic = false,
    std::optional<at::Generator> generator = std::nullopt);

/// M = 2^(m-1) - 2^-f, the largest magnitude of Q(m.f), m = total_bits - frac_bits.
double fixed_point_max(int64_t total_bits, int64_t frac_bits);

/// Backward of both quantizers: grad where the mask bit is set, +0 elsewhere (even where grad is
/// inf or NaN), in one pass. Differentiable in grad, so double backward works.
at::Tensor masked_grad(const at::Tensor& grad, const at::Tensor& mask);

/// Unpacks a packed mask into a bool tensor of `numel` elements (plain ATen ops).
at::Tensor unpack_mask(const at::Tensor& mask, int64_t numel);

/// Packs a bool tensor (any shape, row-major order) into the 8-elements-a-byte mask format.
at::Tensor pack_mask(const at::Tensor& bits);

/// Which CPU kernel build is in use ("AVX512", "AVX2" or "DEFAULT").
std::string cpu_kernel_capability();

/// Forces a CPU kernel build by name, or restores automatic choice with "" (tests, benchmarks).
void set_cpu_kernel_capability(const std::string& name);

}  // namespace wrpn
