// Schemas of the wrpn:: ops and their CPU, Meta and Autograd kernels. CUDA kernels are
// registered in quantize_cuda_ops.cpp when the library is built with CUDA.

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "quantize_common.h"
#include "wrpn/kernels/quantize_cpu.h"
#include "wrpn/ops.h"

namespace wrpn {
namespace ops {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using OptGenerator = std::optional<at::Generator>;

// ---- Meta ----

Tensor quantize_weight_meta(const Tensor& w, int64_t bits) {
  return std::get<0>(quant_forward_meta(QuantKind::Weight, w, bits));
}
Tensor quantize_activation_meta(const Tensor& x, int64_t bits) {
  return std::get<0>(quant_forward_meta(QuantKind::Activation, x, bits));
}
std::tuple<Tensor, Tensor> quantize_weight_forward_meta(const Tensor& w, int64_t bits) {
  return quant_forward_meta(QuantKind::Weight, w, bits);
}
std::tuple<Tensor, Tensor> quantize_activation_forward_meta(const Tensor& x, int64_t bits) {
  return quant_forward_meta(QuantKind::Activation, x, bits);
}
Tensor quantize_fixed_point_meta(const Tensor& x, int64_t total_bits, int64_t frac_bits,
                                 bool /*stochastic*/, OptGenerator gen) {
  return std::get<0>(fixed_point_forward_meta(x, total_bits, frac_bits, gen));
}
std::tuple<Tensor, Tensor> quantize_fixed_point_forward_meta(const Tensor& x, int64_t total_bits,
                                                             int64_t frac_bits, bool /*stochastic*/,
                                                             OptGenerator gen) {
  return fixed_point_forward_meta(x, total_bits, frac_bits, gen);
}
Tensor masked_grad_meta(const Tensor& grad, const Tensor& mask) {
  check_masked_grad_args(grad, mask);
  return at::empty_symint(grad.sym_sizes(), grad.options());
}

// ---- Autograd ----

Tensor call_masked_grad(const Tensor& grad, const Tensor& mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("wrpn::_masked_grad", "")
                       .typed<Tensor(const Tensor&, const Tensor&)>();
  return op.call(grad, mask);
}

/// d(masked_grad)/d(grad) is the same mask, which gives double backward.
class MaskedGradFunction : public torch::autograd::Function<MaskedGradFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& grad, const Tensor& mask) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({mask});
    return call_masked_grad(grad, mask);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor mask = ctx->get_saved_variables()[0];
    if (!grads[0].defined()) return {Tensor(), Tensor()};
    return {MaskedGradFunction::apply(grads[0], mask), Tensor()};
  }
};

/// Straight-through quantizer: saves only the packed mask (numel/8 bytes), never the input.
class QuantizeFunction : public torch::autograd::Function<QuantizeFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, int64_t bits, bool weight) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, mask] =
        weight ? quantize_weight_with_mask(x, bits) : quantize_activation_with_mask(x, bits);
    ctx->save_for_backward({mask});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor mask = ctx->get_saved_variables()[0];
    if (!grads[0].defined()) return {Tensor(), Tensor(), Tensor()};
    return {MaskedGradFunction::apply(grads[0], mask), Tensor(), Tensor()};
  }
};

/// Fixed point with a straight-through gradient inside [-M, M]; saves only the packed mask.
class FixedPointFunction : public torch::autograd::Function<FixedPointFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, int64_t total_bits,
                        int64_t frac_bits, bool stochastic, OptGenerator gen) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, mask] = quantize_fixed_point_with_mask(x, total_bits, frac_bits, stochastic, gen);
    ctx->save_for_backward({mask});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor mask = ctx->get_saved_variables()[0];
    variable_list result(5);
    if (grads[0].defined()) result[0] = MaskedGradFunction::apply(grads[0], mask);
    return result;
  }
};

bool needs_grad(const Tensor& x) { return at::GradMode::is_enabled() && x.requires_grad(); }

Tensor quantize_fixed_point_autograd(const Tensor& x, int64_t total_bits, int64_t frac_bits,
                                     bool stochastic, OptGenerator gen) {
  check_fixed_point_args(x, total_bits, frac_bits, gen);
  if (needs_grad(x)) return FixedPointFunction::apply(x, total_bits, frac_bits, stochastic, gen);
  at::AutoDispatchBelowADInplaceOrView guard;
  return quantize_fixed_point(x, total_bits, frac_bits, stochastic, gen);
}

Tensor quantize_weight_autograd(const Tensor& w, int64_t bits) {
  check_quant_args(QuantKind::Weight, w, bits);
  if (needs_grad(w)) return QuantizeFunction::apply(w, bits, true);
  at::AutoDispatchBelowADInplaceOrView guard;
  return quantize_weight(w, bits);
}

Tensor quantize_activation_autograd(const Tensor& x, int64_t bits) {
  check_quant_args(QuantKind::Activation, x, bits);
  if (needs_grad(x)) return QuantizeFunction::apply(x, bits, false);
  at::AutoDispatchBelowADInplaceOrView guard;
  return quantize_activation(x, bits);
}

Tensor masked_grad_autograd(const Tensor& grad, const Tensor& mask) {
  check_masked_grad_args(grad, mask);
  if (needs_grad(grad)) return MaskedGradFunction::apply(grad, mask);
  at::AutoDispatchBelowADInplaceOrView guard;
  return call_masked_grad(grad, mask);
}

}  // namespace
}  // namespace ops

TORCH_LIBRARY(wrpn, m) {
  m.def("quantize_weight(Tensor w, int bits) -> Tensor");
  m.def("quantize_activation(Tensor x, int bits) -> Tensor");
  m.def("_quantize_weight_forward(Tensor w, int bits) -> (Tensor, Tensor)");
  m.def("_quantize_activation_forward(Tensor x, int bits) -> (Tensor, Tensor)");
  m.def("_masked_grad(Tensor grad, Tensor mask) -> Tensor");
  m.def(
      "quantize_fixed_point(Tensor x, int total_bits, int frac_bits, bool stochastic=False, "
      "Generator? generator=None) -> Tensor");
  m.def(
      "_quantize_fixed_point_forward(Tensor x, int total_bits, int frac_bits, "
      "bool stochastic=False, Generator? generator=None) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(wrpn, CPU, m) { ops::register_backend_kernels<&cpu::kernel_table>(m); }

TORCH_LIBRARY_IMPL(wrpn, Meta, m) {
  m.impl("quantize_weight", &ops::quantize_weight_meta);
  m.impl("quantize_activation", &ops::quantize_activation_meta);
  m.impl("_quantize_weight_forward", &ops::quantize_weight_forward_meta);
  m.impl("_quantize_activation_forward", &ops::quantize_activation_forward_meta);
  m.impl("_masked_grad", &ops::masked_grad_meta);
  m.impl("quantize_fixed_point", &ops::quantize_fixed_point_meta);
  m.impl("_quantize_fixed_point_forward", &ops::quantize_fixed_point_forward_meta);
}

TORCH_LIBRARY_IMPL(wrpn, Autograd, m) {
  m.impl("quantize_weight", &ops::quantize_weight_autograd);
  m.impl("quantize_activation", &ops::quantize_activation_autograd);
  m.impl("_masked_grad", &ops::masked_grad_autograd);
  m.impl("quantize_fixed_point", &ops::quantize_fixed_point_autograd);
}

// ---- public C++ API: through the dispatcher ----

at::Tensor quantize_weight(const at::Tensor& w, int64_t bits) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("wrpn::quantize_weight", "")
                       .typed<at::Tensor(const at::Tensor&, int64_t)>();
  return op.call(w, bits);
}

at::Tensor quantize_activation(const at::Tensor& x, int64_t bits) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("wrpn::quantize_activation", "")
                       .typed<at::Tensor(const at::Tensor&, int64_t)>();
  return op.call(x, bits);
}

std::tuple<at::Tensor, at::Tensor> quantize_weight_with_mask(const at::Tensor& w, int64_t bits) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("wrpn::_quantize_weight_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t)>();
  // An undefined tensor has no dispatch key, so the op's own check would never run.
  TORCH_CHECK(w.defined(), "wrpn::quantize_weight: argument 'w' is an undefined tensor");
  return op.call(w, bits);
}

std::tuple<at::Tensor, at::Tensor> quantize_activation_with_mask(const at::Tensor& x,
                                                                 int64_t bits) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("wrpn::_quantize_activation_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t)>();
  TORCH_CHECK(x.defined(), "wrpn::quantize_activation: argument 'x' is an undefined tensor");
  return op.call(x, bits);
}

at::Tensor masked_grad(const at::Tensor& grad, const at::Tensor& mask) {
  return ops::call_masked_grad(grad, mask);
}

at::Tensor quantize_fixed_point(const at::Tensor& x, int64_t total_bits, int64_t frac_bits,
                                bool stochastic, std::optional<at::Generator> generator) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("wrpn::quantize_fixed_point", "")
                       .typed<at::Tensor(const at::Tensor&, int64_t, int64_t, bool,
                                         std::optional<at::Generator>)>();
  TORCH_CHECK(x.defined(), "wrpn::quantize_fixed_point: argument 'x' is an undefined tensor");
  return op.call(x, total_bits, frac_bits, stochastic, std::move(generator));
}

std::tuple<at::Tensor, at::Tensor> quantize_fixed_point_with_mask(
    const at::Tensor& x, int64_t total_bits, int64_t frac_bits, bool stochastic,
    std::optional<at::Generator> generator) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("wrpn::_quantize_fixed_point_forward", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, int64_t, bool,
                                                    std::optional<at::Generator>)>();
  TORCH_CHECK(x.defined(), "wrpn::quantize_fixed_point: argument 'x' is an undefined tensor");
  return op.call(x, total_bits, frac_bits, stochastic, std::move(generator));
}

double fixed_point_max(int64_t total_bits, int64_t frac_bits) {
  ops::check_fixed_point_bits(total_bits, frac_bits);
  return static_cast<double>(kernels::fixed_point_params(total_bits, frac_bits).hi);
}

at::Tensor unpack_mask(const at::Tensor& mask, int64_t numel) {
  TORCH_CHECK(mask.scalar_type() == at::kByte, "wrpn::unpack_mask: 'mask' must be uint8, got ",
              mask.scalar_type());
  TORCH_CHECK(numel >= 0 && mask.numel() == kernels::mask_bytes(numel),
              "wrpn::unpack_mask: a mask of ", mask.numel(), " bytes cannot hold ", numel,
              " elements (expected ceil(numel/8) bytes)");
  const at::Tensor shifts = at::arange(8, mask.options());
  const at::Tensor bits = mask.reshape({-1, 1}).bitwise_right_shift(shifts).bitwise_and(1);
  return bits.reshape({-1}).narrow(0, 0, numel).to(at::kBool);
}

at::Tensor pack_mask(const at::Tensor& bits) {
  TORCH_CHECK(bits.scalar_type() == at::kBool, "wrpn::pack_mask: 'bits' must be bool, got ",
              bits.scalar_type());
  const int64_t n = bits.numel();
  const int64_t nbytes = kernels::mask_bytes(n);
  at::Tensor flat = at::zeros({nbytes * 8}, bits.options().dtype(at::kByte));
  flat.narrow(0, 0, n).copy_(bits.reshape({-1}));
  const at::Tensor weights =
      at::bitwise_left_shift(at::ones({8}, flat.options()), at::arange(8, flat.options()));
  return flat.reshape({nbytes, 8}).mul(weights).sum(1, false, at::kByte);
}

std::string cpu_kernel_capability() { return cpu::kernel_table().name; }

void set_cpu_kernel_capability(const std::string& name) { cpu::force_capability(name); }

}  // namespace wrpn
