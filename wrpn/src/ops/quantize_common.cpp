#include "quantize_common.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <mutex>

#include "wrpn/ops.h"

namespace wrpn::ops {

namespace {
/// The value tensor for x and, when with_mask, its packed mask (with a pointer to its bytes).
std::tuple<at::Tensor, at::Tensor, uint8_t*> allocate_outputs(const at::Tensor& x, bool with_mask) {
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (!with_mask) return {out, at::Tensor(), nullptr};
  at::Tensor mask = at::empty({kernels::mask_bytes(x.numel())}, x.options().dtype(at::kByte));
  uint8_t* ptr = mask.mutable_data_ptr<uint8_t>();
  return {out, mask, ptr};
}

/// Throws unless `x` is a defined float32, float16, bfloat16 or float64 tensor.
void check_float_input(const char* op, const char* arg, const at::Tensor& x) {
  TORCH_CHECK(x.defined(), op, ": argument '", arg, "' is an undefined tensor");
  const auto st = x.scalar_type();
  TORCH_CHECK_TYPE(
      st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble, op,
      ": argument '", arg,
      "' must be a floating-point tensor (float32, float16, bfloat16 or float64), got ", st);
}

/// Bytes of the packed mask of x, symbolically (the same as kernels::mask_bytes).
c10::SymInt sym_mask_bytes(const at::Tensor& x) {
  return (x.sym_numel() + (kernels::kMaskBits - 1)) / kernels::kMaskBits;
}

/// Shape-only value and mask (Meta kernels). Sizes stay symbolic, so torch.compile with
/// dynamic shapes and torch.export can trace the ops.
std::tuple<at::Tensor, at::Tensor> meta_outputs(const at::Tensor& x) {
  return {at::empty_symint(x.sym_sizes(), x.options()),
          at::empty_symint({sym_mask_bytes(x)}, x.options().dtype(at::kByte))};
}
}  // namespace

const char* op_name(QuantKind kind) {
  return kind == QuantKind::Weight ? "wrpn::quantize_weight" : "wrpn::quantize_activation";
}

void check_quant_args(QuantKind kind, const at::Tensor& x, int64_t bits) {
  const char* name = op_name(kind);
  check_float_input(name, kind == QuantKind::Weight ? "w" : "x", x);
  TORCH_CHECK_VALUE(bits >= kMinBits && bits <= kMaxBits, name, ": argument 'bits' must be in [",
                    kMinBits, ", ", kMaxBits, "], got ", bits,
                    kind == QuantKind::Weight ? " (1 = binary, 2 = ternary; " : " (",
                    "full precision is a module setting, bits = 32, that skips the quantizer)");
}

void check_masked_grad_args(const at::Tensor& grad, const at::Tensor& mask) {
  TORCH_CHECK(grad.defined(), "wrpn::_masked_grad: argument 'grad' is an undefined tensor");
  TORCH_CHECK(mask.defined(), "wrpn::_masked_grad: argument 'mask' is an undefined tensor");
  TORCH_CHECK_TYPE(at::isFloatingType(grad.scalar_type()),
                   "wrpn::_masked_grad: argument 'grad' must be a floating-point tensor, got ",
                   grad.scalar_type());
  TORCH_CHECK_TYPE(mask.scalar_type() == at::kByte,
                   "wrpn::_masked_grad: argument 'mask' must be a uint8 packed mask, got ",
                   mask.scalar_type());
  TORCH_CHECK(mask.dim() == 1, "wrpn::_masked_grad: argument 'mask' must be 1-D, got shape ",
              mask.sym_sizes());
  TORCH_SYM_CHECK(
      mask.sym_numel().sym_eq(sym_mask_bytes(grad)),
      "wrpn::_masked_grad: argument 'mask' must hold ceil(numel/8) = ", sym_mask_bytes(grad),
      " bytes for a grad of ", grad.sym_numel(), " elements, got shape ", mask.sym_sizes());
  TORCH_CHECK(mask.device() == grad.device(), "wrpn::_masked_grad: 'grad' is on ", grad.device(),
              " but 'mask' is on ", mask.device(), "; expected the same device");
}

std::tuple<at::Tensor, at::Tensor> quant_forward_meta(QuantKind kind, const at::Tensor& x,
                                                      int64_t bits) {
  check_quant_args(kind, x, bits);
  return meta_outputs(x);
}

std::tuple<at::Tensor, at::Tensor> quant_forward(QuantKind kind, const at::Tensor& input,
                                                 int64_t bits, bool with_mask,
                                                 const QuantKernels& table) {
  check_quant_args(kind, input, bits);
  const at::Tensor x = input.contiguous();
  auto [out, mask, mask_ptr] = allocate_outputs(x, with_mask);
  if (x.numel() == 0) return {out, mask};
  if (kind == QuantKind::Weight && bits == 1) {
    // a = mean(|w|), accumulated in float64 in one reduction pass: the same value on every
    // device to within a float64 rounding, so q agrees bit for bit across devices in practice.
    at::Tensor scale = at::linalg_vector_norm(x, 1, c10::nullopt, false, at::kDouble);
    scale.div_(static_cast<double>(x.numel()));
    table.binary_quant(x, out, mask_ptr, scale);
  } else {
    table.fake_quant(x, out, mask_ptr,
                     kind == QuantKind::Weight ? kernels::weight_params(bits)
                                               : kernels::activation_params(bits));
  }
  return {out, mask};
}

namespace {
constexpr const char* kFixedName = "wrpn::quantize_fixed_point";

/// The 64-bit Philox key of one stochastic call: the next draw of a CPU generator (the default
/// one unless given), whatever the tensor's device. So torch.manual_seed / at::manual_seed make
/// stochastic rounding reproducible, and CPU and CUDA give the same values for the same seed.
uint64_t draw_seed(const std::optional<at::Generator>& generator) {
  at::Generator g = generator.has_value() && generator->defined()
                        ? *generator
                        : at::detail::getDefaultCPUGenerator();
  auto* impl = g.get<at::CPUGeneratorImpl>();
  std::lock_guard<std::mutex> lock(g.mutex());
  return impl->random64();
}
}  // namespace

void check_fixed_point_bits(int64_t total_bits, int64_t frac_bits) {
  TORCH_CHECK_VALUE(total_bits >= kMinFixedPointBits && total_bits <= kMaxFixedPointBits,
                    kFixedName, ": argument 'total_bits' must be in [", kMinFixedPointBits, ", ",
                    kMaxFixedPointBits,
                    "] (sign bit included; values are computed in float32), got ", total_bits);
  TORCH_CHECK_VALUE(frac_bits >= 0 && frac_bits <= total_bits - 1, kFixedName,
                    ": argument 'frac_bits' must be in [0, total_bits - 1] = [0, ", total_bits - 1,
                    "] (at least the sign bit is integer), got ", frac_bits);
}

void check_fixed_point_args(const at::Tensor& x, int64_t total_bits, int64_t frac_bits,
                            const std::optional<at::Generator>& generator) {
  check_float_input(kFixedName, "x", x);
  check_fixed_point_bits(total_bits, frac_bits);
  if (generator.has_value() && generator->defined()) {
    TORCH_CHECK_VALUE(generator->device().is_cpu(), kFixedName,
                      ": argument 'generator' must be a CPU generator (it only seeds the "
                      "counter-based draws, which run on x's device), got one on ",
                      generator->device());
  }
}

std::tuple<at::Tensor, at::Tensor> fixed_point_forward_meta(
    const at::Tensor& x, int64_t total_bits, int64_t frac_bits,
    const std::optional<at::Generator>& generator) {
  check_fixed_point_args(x, total_bits, frac_bits, generator);
  return meta_outputs(x);
}

std::tuple<at::Tensor, at::Tensor> fixed_point_forward(
    const at::Tensor& input, int64_t total_bits, int64_t frac_bits, bool stochastic,
    const std::optional<at::Generator>& generator, bool with_mask, const QuantKernels& table) {
  check_fixed_point_args(input, total_bits, frac_bits, generator);
  const at::Tensor x = input.contiguous();
  auto [out, mask, mask_ptr] = allocate_outputs(x, with_mask);
  const auto p = kernels::fixed_point_params(total_bits, frac_bits);
  if (stochastic) {
    // Draw even for an empty tensor, so the generator's stream does not depend on sizes.
    const uint64_t seed = draw_seed(generator);
    if (x.numel() > 0) table.stochastic_quant(x, out, mask_ptr, p, seed);
  } else if (x.numel() > 0) {
    table.fake_quant(x, out, mask_ptr, p);
  }
  return {out, mask};
}

at::Tensor masked_grad_forward(const at::Tensor& grad, const at::Tensor& mask,
                               const QuantKernels& table) {
  check_masked_grad_args(grad, mask);
  const at::Tensor g = grad.contiguous();
  const at::Tensor m = mask.contiguous();
  at::Tensor out = at::empty(g.sizes(), g.options());
  if (g.numel() == 0) return out;
  table.masked_grad(g, m.const_data_ptr<uint8_t>(), out);
  return out;
}

}  // namespace wrpn::ops
