#include "packed_layers.h"

#include <torch/autograd.h>
#include <torch/torch.h>
#include <wrpn/kernels/pack_kernels.h>
#include <wrpn/nn/saved_codes.h>
#include <wrpn/ops.h>

#include <optional>

namespace wrpn::nn::detail {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

/// The last codes packed on this thread, by the tensor they came from: a block's first conv and
/// its projection shortcut read the same activation, and its codes are then saved once.
struct LastCodes {
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> x{
      c10::intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>()};
  uint32_t version = 0;
  Quantizer q{};
  c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> bytes{
      c10::intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>()};
  PackedCodes meta{};
};
thread_local LastCodes g_last;

std::optional<PackedCodes> codes_of(const Tensor& x, const Quantizer& q) {
  if (g_last.q == q && g_last.version == x._version()) {
    const auto xi = g_last.x.lock();
    if (xi.get() == x.unsafeGetTensorImpl()) {
      if (auto b = g_last.bytes.lock()) {
        PackedCodes p = g_last.meta;
        p.bytes = Tensor(std::move(b));
        return p;
      }
    }
  }
  auto p = pack_codes(x, q);
  if (!p) return std::nullopt;
  g_last.x =
      c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(x.getIntrusivePtr());
  g_last.version = x._version();
  g_last.q = q;
  g_last.bytes = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(
      p->bytes.getIntrusivePtr());
  g_last.meta = *p;
  g_last.meta.bytes = Tensor();
  return p;
}

void save_codes(AutogradContext* ctx, const PackedCodes& p, const std::string& key = "") {
  ctx->saved_data[key + "codes"] = p.bytes;
  ctx->saved_data[key + "bits"] = p.bits;
  ctx->saved_data[key + "scale"] = p.scale;
  ctx->saved_data[key + "signed"] = p.is_signed;
  ctx->saved_data[key + "sizes"] = p.sizes;
  ctx->saved_data[key + "dtype"] = static_cast<int64_t>(p.dtype);
}

PackedCodes load_codes(AutogradContext* ctx, const std::string& key) {
  PackedCodes p;
  p.bytes = ctx->saved_data[key + "codes"].toTensor();
  p.bits = ctx->saved_data[key + "bits"].toInt();
  p.scale = ctx->saved_data[key + "scale"].toDouble();
  p.is_signed = ctx->saved_data[key + "signed"].toBool();
  p.sizes = ctx->saved_data[key + "sizes"].toIntVector();
  p.dtype = static_cast<at::ScalarType>(ctx->saved_data[key + "dtype"].toInt());
  return p;
}

/// The quantized weight: saved as its codes when it has them (k bits instead of 32), else as
/// the tensor itself.
void save_weight(AutogradContext* ctx, const Tensor& w, const std::optional<PackedCodes>& codes,
                 std::vector<Tensor> others) {
  ctx->saved_data["w_packed"] = codes.has_value();
  if (codes) {
    save_codes(ctx, *codes, "w_");
    others.insert(others.begin(), Tensor());
  } else {
    others.insert(others.begin(), w);
  }
  ctx->save_for_backward(others);
}

Tensor saved_weight(AutogradContext* ctx, const Tensor& saved) {
  return ctx->saved_data["w_packed"].toBool() ? unpack_codes(load_codes(ctx, "w_")) : saved;
}

void save_conv(AutogradContext* ctx, const ConvArgs& c) {
  ctx->saved_data["stride"] = c.stride;
  ctx->saved_data["padding"] = c.padding;
  ctx->saved_data["dilation"] = c.dilation;
  ctx->saved_data["groups"] = c.groups;
}

ConvArgs load_conv(AutogradContext* ctx) {
  return {ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
          ctx->saved_data["dilation"].toIntVector(), ctx->saved_data["groups"].toInt()};
}

Tensor conv_forward(const Tensor& x, const Tensor& w, const Tensor& b, const ConvArgs& c) {
  return at::conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups);
}

/// at::convolution_backward as autograd's own convolution node calls it.
std::tuple<Tensor, Tensor, Tensor> conv_backward(const Tensor& grad, const Tensor& x,
                                                 const Tensor& w,
                                                 const std::optional<std::vector<int64_t>>& bias,
                                                 const ConvArgs& c, std::array<bool, 3> mask) {
  return at::convolution_backward(grad, x, w, bias ? at::OptionalIntArrayRef(*bias) : std::nullopt,
                                  c.stride, c.padding, c.dilation, /*transposed=*/false, {0, 0},
                                  c.groups, mask);
}

Tensor rebuilt_input(AutogradContext* ctx) {
  TORCH_CHECK(!torch::GradMode::is_enabled(),
              "wrpn: a layer that saved its input as packed codes cannot be differentiated twice "
              "(create_graph); turn packing off with wrpn::nn::set_pack_saved_inputs(model, "
              "false) or --no-packed-activations");
  return unpack_codes(load_codes(ctx, ""));
}

struct CodesConv2d : public torch::autograd::Function<CodesConv2d> {
  // The bias is optional: LibTorch's custom functions take no undefined tensor as an input.
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w,
                        const std::optional<Tensor>& b, const PackedCodes& codes,
                        const std::optional<PackedCodes>& w_codes, const ConvArgs& conv) {
    save_codes(ctx, codes);
    save_weight(ctx, w, w_codes, {});
    save_conv(ctx, conv);
    ctx->saved_data["bias"] = b.has_value();
    if (b) ctx->saved_data["bias_sizes"] = b->sizes().vec();
    return conv_forward(x, w, b ? *b : Tensor(), conv);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor x = rebuilt_input(ctx);
    const Tensor w = saved_weight(ctx, ctx->get_saved_variables()[0]);
    std::optional<std::vector<int64_t>> bias_sizes;
    if (ctx->saved_data["bias"].toBool()) bias_sizes = ctx->saved_data["bias_sizes"].toIntVector();
    // needs_input_grad counts the tensor inputs given: there is no index 2 without a bias.
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      bias_sizes.has_value() && ctx->needs_input_grad(2)};
    auto [gx, gw, gb] = conv_backward(grads[0], x, w, bias_sizes, load_conv(ctx), mask);
    return {gx, gw, gb, Tensor(), Tensor(), Tensor()};
  }
};

struct CodesLinear : public torch::autograd::Function<CodesLinear> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w,
                        const std::optional<Tensor>& b, const PackedCodes& codes) {
    save_codes(ctx, codes);
    ctx->save_for_backward({w, b ? *b : Tensor()});
    return at::linear(x, w, b ? *b : Tensor());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor x0 = rebuilt_input(ctx);
    const auto saved = ctx->get_saved_variables();
    // A linear layer's backward is a handful of matrix products: rebuild autograd's own graph
    // of at::linear on the rebuilt input (one small extra forward) and let it run.
    torch::AutoGradMode on(true);
    const Tensor x = x0.requires_grad_(ctx->needs_input_grad(0));
    const Tensor w = saved[0].detach().requires_grad_(ctx->needs_input_grad(1));
    const Tensor b =
        saved[1].defined() ? saved[1].detach().requires_grad_(ctx->needs_input_grad(2)) : Tensor();
    const Tensor out = at::linear(x, w, b);
    std::vector<Tensor> inputs;
    std::vector<int> slot;
    const Tensor* all[3] = {&x, &w, &b};
    for (int i = 0; i < 3; ++i) {
      if (all[i]->defined() && all[i]->requires_grad()) {
        inputs.push_back(*all[i]);
        slot.push_back(i);
      }
    }
    variable_list out_grads(4);
    if (!inputs.empty()) {
      const auto g = torch::autograd::grad({out}, inputs, {grads[0]}, /*retain_graph=*/false,
                                           /*create_graph=*/false, /*allow_unused=*/true);
      for (size_t k = 0; k < slot.size(); ++k) out_grads[slot[k]] = g[k];
    }
    return out_grads;
  }
};

/// The BatchNorm a fused conv+BN updates: its buffers and constants (not autograd inputs).
struct BnState {
  Tensor running_mean, running_var;
  double momentum = 0.1, eps = 1e-5;
};

struct ConvBnRecompute : public torch::autograd::Function<ConvBnRecompute> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w, const Tensor& gamma,
                        const Tensor& beta, const PackedCodes& codes,
                        const std::optional<PackedCodes>& w_codes, const ConvArgs& conv,
                        const BnState& bn) {
    save_codes(ctx, codes);
    save_weight(ctx, w, w_codes, {gamma});
    save_conv(ctx, conv);
    ctx->saved_data["eps"] = bn.eps;
    ctx->saved_data["running_mean"] = bn.running_mean;
    ctx->saved_data["running_var"] = bn.running_var;
    const Tensor y = conv_forward(x, w, Tensor(), conv);
    auto [out, mean, invstd] = at::native_batch_norm(y, gamma, beta, bn.running_mean,
                                                     bn.running_var, true, bn.momentum, bn.eps);
    ctx->saved_data["mean"] = mean;
    ctx->saved_data["invstd"] = invstd;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor x = rebuilt_input(ctx);
    const auto saved = ctx->get_saved_variables();
    const Tensor w = saved_weight(ctx, saved[0]);
    const Tensor& gamma = saved[1];
    const ConvArgs conv = load_conv(ctx);
    // The conv output, recomputed bit for bit from the rebuilt input.
    const Tensor y = conv_forward(x, w, Tensor(), conv);
    auto [gy, ggamma, gbeta] = at::native_batch_norm_backward(
        grads[0], y, gamma, ctx->saved_data["running_mean"].toTensor(),
        ctx->saved_data["running_var"].toTensor(), ctx->saved_data["mean"].toTensor(),
        ctx->saved_data["invstd"].toTensor(), true, ctx->saved_data["eps"].toDouble(),
        {true, ctx->needs_input_grad(2), ctx->needs_input_grad(3)});
    auto [gx, gw, gb] = conv_backward(gy, x, w, std::nullopt, conv,
                                      {ctx->needs_input_grad(0), ctx->needs_input_grad(1), false});
    return {gx, gw, ggamma, gbeta, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

struct MaskedRelu : public torch::autograd::Function<MaskedRelu> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x) {
    Tensor out = at::relu(x).contiguous();
    Tensor mask = torch::empty({(out.numel() + 7) / 8}, out.options().dtype(torch::kUInt8));
    if (out.is_cuda()) {
#ifdef WRPN_WITH_CUDA
      kernels::pack_positive_cuda(out, mask.mutable_data_ptr<uint8_t>());
#else
      TORCH_CHECK(false, "this build of wrpn has no CUDA kernels");
#endif
    } else {
      kernels::pack_positive_cpu(out, mask.mutable_data_ptr<uint8_t>());
    }
    ctx->save_for_backward({mask});
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // relu's own backward is grad where out > 0, else +0: the mask's.
    return {wrpn::masked_grad(grads[0], ctx->get_saved_variables()[0])};
  }
};

}  // namespace

Tensor relu_saving_mask(const Tensor& x) { return MaskedRelu::apply(x); }

Tensor conv_bn_saving_codes(const Tensor& x, const Tensor& w, const ConvArgs& conv,
                            const Quantizer& input, const Quantizer& weight,
                            torch::nn::BatchNorm2dImpl& bn) {
  const auto& o = bn.options;
  if (!bn.is_training() || !o.affine() || !o.track_running_stats() || !o.momentum().has_value()) {
    return {};
  }
  const auto codes = codes_of(x, input);
  if (!codes) return {};
  // As BatchNormImplBase::forward: count the batch, then normalise with batch statistics.
  if (bn.num_batches_tracked.defined()) {
    torch::NoGradGuard no_grad;
    bn.num_batches_tracked += 1;
  }
  const BnState state{bn.running_mean, bn.running_var, *o.momentum(), o.eps()};
  return ConvBnRecompute::apply(x, w, bn.weight, bn.bias, *codes,
                                pack_codes(w, weight, LayerRole::kWeight), conv, state);
}

bool records_graph(const Tensor& x, const Tensor& w, const Tensor& b) {
  return torch::GradMode::is_enabled() &&
         (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
}

Tensor conv2d_saving_codes(const Tensor& x, const Tensor& w, const Tensor& b, const ConvArgs& conv,
                           const Quantizer& input, const Quantizer& weight) {
  const auto codes = codes_of(x, input);
  if (!codes) return {};
  return CodesConv2d::apply(x, w, b.defined() ? std::optional<Tensor>(b) : std::nullopt, *codes,
                            pack_codes(w, weight, LayerRole::kWeight), conv);
}

Tensor linear_saving_codes(const Tensor& x, const Tensor& w, const Tensor& b,
                           const Quantizer& input) {
  const auto codes = codes_of(x, input);
  if (!codes) return {};
  return CodesLinear::apply(x, w, b.defined() ? std::optional<Tensor>(b) : std::nullopt, *codes);
}

}  // namespace wrpn::nn::detail
