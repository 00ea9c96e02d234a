#include "wrpn/src/ops/quantize_common.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "wrpn/ops.h"

namespace wrpn::ops {

const char* op_name(QuantKind kind) {
  return kind == QuantKind::Weight ? "wrpn::quantize_weight" : "wrpn::quantize_activation";
}

void check_quant_args(QuantKind kind, const at::Tensor& x, int64_t bits) {
  const char* name = op_name(kind);
  const char* arg = kind == QuantKind::Weight ? "w" : "x";
  TORCH_CHECK(x.defined(), name, ": argument '", arg, "' is an undefined tensor");
  const auto st = x.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kHalf || st == at::kBFloat16 || st == at::kDouble,
                   name, ": argument '", arg,
                   "' must be a floating-point tensor (float32, float16, bfloat16 or float64), got ",
                   st);
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
  TORCH_CHECK(mask.dim() == 1 && mask.numel() == kernels::mask_bytes(grad.numel()),
              "wrpn::_masked_grad: argument 'mask' must be 1-D with ceil(numel/8) = ",
              kernels::mask_bytes(grad.numel()), " bytes for a grad of ", grad.numel(),
              " elements, got shape ", mask.sizes());
  TORCH_CHECK(mask.device() == grad.device(), "wrpn::_masked_grad: 'grad' is on ", grad.device(),
              " but 'mask' is on ", mask.device(), "; expected the same device");
}

std::tuple<at::Tensor, at::Tensor> quant_forward_meta(QuantKind kind, const at::Tensor& x,
                                                      int64_t bits) {
  check_quant_args(kind, x, bits);
  at::Tensor out = at::empty(x.sizes(), x.options());
  at::Tensor mask = at::empty({kernels::mask_bytes(x.numel())}, x.options().dtype(at::kByte));
  return {out, mask};
}

std::tuple<at::Tensor, at::Tensor> quant_forward(QuantKind kind, const at::Tensor& input,
                                                 int64_t bits, bool with_mask,
                                                 const Backend& backend) {
  check_quant_args(kind, input, bits);
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  at::Tensor mask;
  uint8_t* mask_ptr = nullptr;
  if (with_mask) {
    mask = at::empty({kernels::mask_bytes(x.numel())}, x.options().dtype(at::kByte));
    mask_ptr = mask.mutable_data_ptr<uint8_t>();
  }
  if (x.numel() == 0) return {out, mask};
  if (kind == QuantKind::Weight && bits == 1) {
    // a = mean(|w|), accumulated in float64 in one reduction pass: the same value on every
    // device to within a float64 rounding, so q agrees bit for bit across devices in practice.
    at::Tensor scale = at::linalg_vector_norm(x, 1, c10::nullopt, false, at::kDouble);
    scale.div_(static_cast<double>(x.numel()));
    backend.binary_quant(x, out, mask_ptr, scale);
  } else {
    backend.fake_quant(x, out, mask_ptr,
                       kind == QuantKind::Weight ? kernels::weight_params(bits)
                                                 : kernels::activation_params(bits));
  }
  return {out, mask};
}

at::Tensor masked_grad_forward(const at::Tensor& grad, const at::Tensor& mask,
                               const Backend& backend) {
  check_masked_grad_args(grad, mask);
  const at::Tensor g = grad.contiguous();
  const at::Tensor m = mask.contiguous();
  at::Tensor out = at::empty(g.sizes(), g.options());
  if (g.numel() == 0) return out;
  backend.masked_grad(g, m.const_data_ptr<uint8_t>(), out);
  return out;
}

}  // namespace wrpn::ops
