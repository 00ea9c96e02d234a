#include <wrpn/kernels/pack_kernels.h>
#include <wrpn/nn/quant_conv.h>
#include <wrpn/nn/quant_linear.h>
#include <wrpn/nn/quant_relu.h>
#include <wrpn/nn/saved_codes.h>

#include <cmath>

namespace wrpn {
namespace nn {
namespace {

std::optional<kernels::CodeFormat> code_format(const Quantizer& q, LayerRole role) {
  switch (q.kind()) {
    case Quantizer::Kind::kWrpn:
      if (role == LayerRole::kWeight) {
        // round(clamp(w, -1, 1) * s) / s, s = 2^(k-1) - 1; binary weights (k = 1) are +-mean|w|.
        if (q.bits < 2 || q.bits > 16) return std::nullopt;
        return kernels::CodeFormat{static_cast<int>(q.bits),
                                   static_cast<float>((int64_t{1} << (q.bits - 1)) - 1), true};
      }
      if (q.bits >= 1 && q.bits <= 16) {
        return kernels::CodeFormat{static_cast<int>(q.bits),
                                   static_cast<float>((int64_t{1} << q.bits) - 1), false};
      }
      return std::nullopt;
    case Quantizer::Kind::kFixedPoint:
      if (q.fixed_point.total_bits <= 16 && q.fixed_point.frac_bits >= 0 &&
          q.fixed_point.frac_bits <= 24) {
        return kernels::CodeFormat{static_cast<int>(q.fixed_point.total_bits),
                                   std::ldexp(1.0f, static_cast<int>(q.fixed_point.frac_bits)),
                                   true};
      }
      return std::nullopt;
    case Quantizer::Kind::kFullPrecision:
      break;
  }
  return std::nullopt;
}

kernels::CodeFormat format_of(const PackedCodes& p) {
  return {static_cast<int>(p.bits), static_cast<float>(p.scale), p.is_signed};
}

}  // namespace

int64_t PackedCodes::numel() const {
  int64_t n = 1;
  for (const int64_t s : sizes) n *= s;
  return n;
}

bool can_pack(const Quantizer& q, LayerRole role) { return code_format(q, role).has_value(); }

std::optional<PackedCodes> pack_codes(const torch::Tensor& x, const Quantizer& q, LayerRole role) {
  const auto f = code_format(q, role);
  if (!f || !x.defined()) return std::nullopt;
  const auto dt = x.scalar_type();
  TORCH_CHECK_VALUE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
                    "pack_codes: expected a floating-point tensor, got ", dt);
  const auto xc = x.contiguous();
  PackedCodes p;
  p.bits = f->bits;
  p.scale = f->scale;
  p.is_signed = f->is_signed;
  p.sizes = x.sizes().vec();
  p.dtype = dt;
  p.bytes =
      torch::empty({kernels::packed_bytes(x.numel(), f->bits)}, x.options().dtype(torch::kUInt8));
  if (x.is_cuda()) {
#ifdef WRPN_WITH_CUDA
    kernels::pack_codes_cuda(xc, *f, p.bytes.mutable_data_ptr<uint8_t>());
    return p;
#else
    TORCH_CHECK(false, "pack_codes: this build of wrpn has no CUDA kernels");
#endif
  }
  TORCH_CHECK_VALUE(x.device().is_cpu(), "pack_codes: expected a CPU or CUDA tensor, got ",
                    x.device());
  if (!kernels::pack_codes_cpu(xc, *f, p.bytes.mutable_data_ptr<uint8_t>())) return std::nullopt;
  return p;
}

torch::Tensor unpack_codes(const PackedCodes& p) {
  TORCH_CHECK_VALUE(p.bytes.defined() && p.bytes.scalar_type() == torch::kUInt8 &&
                        p.bytes.numel() == kernels::packed_bytes(p.numel(), p.bits),
                    "unpack_codes: expected ", kernels::packed_bytes(p.numel(), p.bits),
                    " packed bytes for ", p.numel(), " elements at ", p.bits, " bits");
  auto out = torch::empty(p.sizes, p.bytes.options().dtype(p.dtype));
  const auto f = format_of(p);
  const auto bytes = p.bytes.contiguous();
  if (out.is_cuda()) {
#ifdef WRPN_WITH_CUDA
    kernels::unpack_codes_cuda(bytes.const_data_ptr<uint8_t>(), f, out);
    return out;
#else
    TORCH_CHECK(false, "unpack_codes: this build of wrpn has no CUDA kernels");
#endif
  }
  kernels::unpack_codes_cpu(bytes.const_data_ptr<uint8_t>(), f, out);
  return out;
}

void set_pack_saved_inputs(torch::nn::Module& module, bool on) {
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (auto* c = m->as<QuantConv2dImpl>()) c->options.pack_saved_input(on);
    if (auto* l = m->as<QuantLinearImpl>()) l->options.pack_saved_input(on);
    if (auto* r = m->as<QuantReLUImpl>()) r->options.pack_saved(on);
  }
}

void set_recompute_bn_inputs(torch::nn::Module& module, bool on) {
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (auto* c = m->as<QuantConv2dImpl>()) c->options.recompute_bn_input(on);
  }
}

}  // namespace nn
}  // namespace wrpn
