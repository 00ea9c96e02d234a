// IntegerConv2d: the exact integer convolution of WRPN codes on oneDNN's int8 convolution or on
// im2col + at::_int_mm, and the epilogue that follows it.

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/torch.h>
#include <wrpn/kernels/cpu_features.h>

#include <algorithm>
#include <mutex>

#include "epilogue_call.h"
#include "wrpn/deploy/integer_model.h"

namespace wrpn {
namespace deploy {

std::string to_string(Engine engine) {
  switch (engine) {
    case Engine::kAuto:
      return "auto";
    case Engine::kOneDnn:
      return "onednn";
    case Engine::kGemm:
      return "gemm";
    case Engine::kFloat:
      return "float";
  }
  return "?";
}

Engine parse_engine(const std::string& text) {
  for (Engine e : {Engine::kAuto, Engine::kOneDnn, Engine::kGemm, Engine::kFloat}) {
    if (text == to_string(e)) return e;
  }
  TORCH_CHECK(false, "unknown inference engine \"", text,
              "\": expected auto, onednn, gemm or float");
  return Engine::kAuto;
}

namespace {

bool onednn_ops_present() {
  static const bool present = [] {
    auto& d = c10::Dispatcher::singleton();
    return at::hasMKLDNN() && d.findSchema({"onednn::qconv2d_pointwise", ""}).has_value() &&
           d.findSchema({"onednn::qconv_prepack", ""}).has_value();
  }();
  return present;
}

c10::OperatorHandle onednn_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

/// The convolution every forward calls, looked up once (not per call on the hot path).
const c10::OperatorHandle& qconv_op() {
  static const c10::OperatorHandle op = onednn_op("onednn::qconv2d_pointwise");
  return op;
}

std::vector<int64_t> expand2(std::vector<int64_t> v, const char* what) {
  if (v.size() == 1) v.push_back(v[0]);
  TORCH_CHECK(v.size() == 2, "IntegerConv2d: ", what, " takes 1 or 2 values, got ", v.size());
  return v;
}

/// Rounds n up to a multiple of m.
int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace

bool engine_available(Engine engine, const c10::Device& device) {
  switch (engine) {
    case Engine::kAuto:
    case Engine::kFloat:
      return device.is_cpu() || device.is_cuda();
    case Engine::kOneDnn:
      return device.is_cpu() && onednn_ops_present();
    case Engine::kGemm:
      return device.is_cpu() || device.is_cuda();
  }
  return false;
}

/// The largest weight code whose products with uint8 codes, added in pairs, fit in int16.
constexpr int64_t kMaxCodeWithoutVnni = 64;

/// kAuto resolved for a device: oneDNN on CPU when present, the GEMM engine otherwise.
Engine resolve_engine(Engine engine, const c10::Device& device) {
  TORCH_CHECK(device.is_cpu() || device.is_cuda(), "integer inference runs on CPU or CUDA, not ",
              device);
  if (engine == Engine::kAuto) {
    return device.is_cpu() && onednn_ops_present() ? Engine::kOneDnn : Engine::kGemm;
  }
  TORCH_CHECK(engine_available(engine, device), "inference engine ", to_string(engine),
              " cannot run on ", device,
              engine == Engine::kOneDnn
                  ? " (oneDNN's int8 convolution is CPU-only and needs a LibTorch built with "
                    "oneDNN; use gemm)"
                  : "");
  return engine;
}

IntegerConv2d::IntegerConv2d(const torch::Tensor& weight_codes, const torch::Tensor& scale,
                             const torch::Tensor& shift, std::vector<int64_t> stride,
                             std::vector<int64_t> padding, std::vector<int64_t> dilation,
                             int64_t groups, const DeployOptions& options)
    : device_(options.device()),
      groups_(groups),
      stride_(expand2(std::move(stride), "stride")),
      padding_(expand2(std::move(padding), "padding")),
      dilation_(expand2(std::move(dilation), "dilation")) {
  TORCH_CHECK(weight_codes.defined() && weight_codes.dim() == 4 &&
                  weight_codes.scalar_type() == torch::kChar,
              "IntegerConv2d: weight_codes must be int8 [O, I/groups, kh, kw], got ",
              weight_codes.defined() ? weight_codes.toString() : std::string("undefined"), " ",
              weight_codes.defined() ? weight_codes.sizes() : torch::IntArrayRef{});
  out_channels_ = weight_codes.size(0);
  kh_ = weight_codes.size(2);
  kw_ = weight_codes.size(3);
  TORCH_CHECK(groups >= 1 && out_channels_ % groups == 0,
              "IntegerConv2d: groups must be >= 1 and divide the output channels (", out_channels_,
              "), got ", groups);
  in_channels_ = weight_codes.size(1) * groups;
  for (const auto* t : {&scale, &shift}) {
    TORCH_CHECK(t->defined() && t->dim() == 1 && t->numel() == out_channels_ &&
                    t->scalar_type() == torch::kFloat,
                "IntegerConv2d: scale and shift must be float [", out_channels_, "]");
  }
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK(stride_[i] >= 1 && padding_[i] >= 0 && dilation_[i] >= 1,
                "IntegerConv2d: stride and dilation must be >= 1 and padding >= 0");
  }
  const torch::Tensor w_cpu = weight_codes.to(torch::kCPU);
  const int64_t w_max =
      w_cpu.numel() == 0 ? 0 : w_cpu.to(torch::kShort).abs().max().item<int64_t>();
  TORCH_CHECK(w_max <= 127,
              "IntegerConv2d: weight codes must lie in -127..127 (the symmetric WRPN grid)");
  engine_ = resolve_engine(options.engine(), device_);
  TORCH_CHECK(engine_ != Engine::kFloat, "IntegerConv2d: the float engine has no integer conv");
  static const bool vnni = kernels::cpu_has_vnni();
  if (engine_ == Engine::kOneDnn && groups == 1 && !vnni && w_max > kMaxCodeWithoutVnni) {
    // Without VNNI oneDNN's u8 x s8 kernels add pairs of products in saturating int16: uint8
    // codes up to 255 times weight codes above 64 can overflow it. Such layers (8-bit weights)
    // take the exact GEMM engine instead.
    engine_ = Engine::kGemm;
  }
  const torch::Tensor sc = scale.to(torch::kCPU).contiguous();
  signed_scale_ = sc.to(device_);
  scale_abs_ = sc.abs().to(device_);
  shift_ = shift.to(torch::kCPU).contiguous().to(device_);
  if (engine_ == Engine::kOneDnn) {
    // oneDNN takes non-negative per-channel scales: a negative one flips its channel's codes.
    const torch::Tensor sign = torch::where(sc < 0, -1, 1).to(torch::kChar).view({-1, 1, 1, 1});
    const torch::Tensor w = (w_cpu * sign).to(torch::kChar).contiguous();
    torch::jit::Stack st{w,        scale_abs_, 1.0,     int64_t{0},   stride_,
                         padding_, dilation_,  groups_, c10::IValue()};
    onednn_op("onednn::qconv_prepack").callBoxed(&st);
    packed_ = st.at(0).toTensor();
    zero_points_ = torch::zeros({out_channels_}, torch::kLong);
  } else {
    TORCH_CHECK(groups_ == 1, "IntegerConv2d: the gemm engine takes groups = 1 only, got ",
                groups_);
    const int64_t k = kh_ * kw_ * in_channels_;
    // Rows in (kh, kw, I) order, the order of the im2col columns; padded to multiples of 8 as
    // _int_mm's CUDA kernel requires.
    torch::Tensor m = w_cpu.permute({0, 2, 3, 1}).reshape({out_channels_, k});
    compensation_ = (m.to(torch::kInt) * 128).sum(1).to(torch::kInt);
    m = torch::constant_pad_nd(
        m, {0, round_up(k, 8) - k, 0, round_up(out_channels_, 8) - out_channels_});
    w_mat_ = m.contiguous().to(device_);
    compensation_ = compensation_.to(device_);
  }
}

const std::pair<torch::Tensor, torch::Tensor>& IntegerConv2d::scaled_for(int64_t levels) const {
  std::lock_guard<std::mutex> lock(cache_->mutex);
  auto it = cache_->by_levels.find(levels);
  if (it == cache_->by_levels.end()) {
    const float l = static_cast<float>(levels);
    it = cache_->by_levels.emplace(levels, std::make_pair(scale_abs_ * l, shift_ * l)).first;
  }
  return it->second;
}

int64_t IntegerConv2d::weight_bytes() const {
  return out_channels_ * (in_channels_ / groups_) * kh_ * kw_ + 2 * out_channels_ * 4;
}

void IntegerConv2d::check_input(const torch::Tensor& codes) const {
  TORCH_CHECK(codes.defined() && codes.dim() == 4 && codes.scalar_type() == torch::kByte,
              "IntegerConv2d: expected uint8 codes [N, ", in_channels_, ", H, W], got ",
              codes.defined() ? codes.toString() : std::string("undefined"), " ",
              codes.defined() ? codes.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(codes.size(1) == in_channels_, "IntegerConv2d: expected ", in_channels_,
              " input channels, got ", codes.size(1));
  TORCH_CHECK(codes.device() == device_, "IntegerConv2d: codes are on ", codes.device(),
              ", the weights on ", device_);
}

std::vector<int64_t> IntegerConv2d::out_size(const torch::Tensor& codes) const {
  std::vector<int64_t> s{codes.size(0), out_channels_, 0, 0};
  const int64_t k[2] = {kh_, kw_};
  for (int i = 0; i < 2; ++i) {
    const int64_t extent = dilation_[i] * (k[i] - 1) + 1;
    const int64_t padded = codes.size(2 + i) + 2 * padding_[i];
    TORCH_CHECK(padded >= extent, "IntegerConv2d: input ", codes.sizes(),
                " is smaller than the kernel");
    s[2 + i] = (padded - extent) / stride_[i] + 1;
  }
  return s;
}

torch::Tensor IntegerConv2d::gemm_accumulate(const torch::Tensor& codes) const {
  using torch::indexing::Slice;
  const auto out = out_size(codes);
  const int64_t n = codes.size(0), c = in_channels_;
  // code - 128 as int8 (XOR of the top bit), so 8-bit activations fit _int_mm's int8 input;
  // padding holds code 0, i.e. -128. The shift is undone by adding 128 * sum of the weights.
  torch::Tensor x = codes.contiguous(at::MemoryFormat::ChannelsLast)
                        .permute({0, 2, 3, 1})
                        .bitwise_xor(128)
                        .view(torch::kChar);
  x = torch::constant_pad_nd(x, {0, 0, padding_[1], padding_[1], padding_[0], padding_[0]}, -128);
  const int64_t eh = dilation_[0] * (kh_ - 1) + 1, ew = dilation_[1] * (kw_ - 1) + 1;
  x = x.unfold(1, eh, stride_[0]).unfold(2, ew, stride_[1]);  // [N, Ho, Wo, C, eh, ew]
  if (dilation_[0] > 1) x = x.slice(4, 0, eh, dilation_[0]);
  if (dilation_[1] > 1) x = x.slice(5, 0, ew, dilation_[1]);
  const int64_t rows = n * out[2] * out[3], k = kh_ * kw_ * c;
  torch::Tensor cols = x.permute({0, 1, 2, 4, 5, 3}).reshape({rows, k});
  const int64_t k_pad = w_mat_.size(1);
  // _int_mm's CUDA kernel wants more than 16 rows and K a multiple of 8.
  const int64_t rows_pad = device_.is_cuda() ? std::max<int64_t>(rows, 17) : rows;
  if (k_pad != k || rows_pad != rows) {
    cols = torch::constant_pad_nd(cols, {0, k_pad - k, 0, rows_pad - rows}, 0);
  }
  torch::Tensor acc = at::_int_mm(cols.contiguous(), w_mat_.t());
  acc = acc.index({Slice(0, rows), Slice(0, out_channels_)}).add(compensation_);
  return acc.view({n, out[2], out[3], out_channels_}).permute({0, 3, 1, 2});
}

torch::Tensor IntegerConv2d::run_onednn(const torch::Tensor& codes, const torch::Tensor& scale,
                                        const torch::Tensor& shift, const c10::IValue& out_dtype,
                                        const char* attr,
                                        c10::List<std::optional<c10::Scalar>> scalars) const {
  // Input scale 1 and zero points 0: the accumulator is the exact integer sum; the output scale
  // is 1 too (the levels are folded into scale and shift by the caller when it wants codes).
  torch::jit::Stack st{codes.contiguous(at::MemoryFormat::ChannelsLast),
                       1.0,
                       int64_t{0},
                       packed_,
                       scale,
                       zero_points_,
                       shift,
                       stride_,
                       padding_,
                       dilation_,
                       groups_,
                       1.0,
                       int64_t{0},
                       out_dtype,
                       std::string(attr),
                       std::move(scalars),
                       std::string("")};
  qconv_op().callBoxed(&st);
  return st.at(0).toTensor();
}

torch::Tensor IntegerConv2d::forward_codes(const torch::Tensor& codes, int64_t out_levels) const {
  check_input(codes);
  TORCH_CHECK(out_levels >= 1 && out_levels <= 255,
              "IntegerConv2d: out_levels must be 1..255, got ", out_levels);
  if (engine_ == Engine::kOneDnn) {
    // oneDNN divides by the output scale in fp32, and 1/L is not a float: 0.5 / fl(1/7) rounds
    // to 3, not to 4. So the conv computes y * L (scale and shift times L, exact for the
    // powers-of-two-minus-one levels up to 2^8 - 1 only up to fp32 rounding, like any fp32
    // product), clamped to [0, L] with output scale 1.
    const auto& scaled = scaled_for(out_levels);
    c10::List<std::optional<c10::Scalar>> bounds;
    bounds.push_back(c10::Scalar(0.0));
    bounds.push_back(c10::Scalar(static_cast<double>(out_levels)));
    return run_onednn(codes, scaled.first, scaled.second, c10::IValue(), "hardtanh", bounds);
  }
  EpilogueCall e;
  e.input = gemm_accumulate(codes);
  e.scale = signed_scale_;
  e.shift = shift_;
  e.code_levels = out_levels;
  return run_epilogue(e).codes;
}

torch::Tensor IntegerConv2d::forward_float(const torch::Tensor& codes, bool relu) const {
  check_input(codes);
  if (engine_ == Engine::kOneDnn) {
    return run_onednn(codes, scale_abs_, shift_, c10::IValue(c10::ScalarType::Float),
                      relu ? "relu" : "none", c10::List<std::optional<c10::Scalar>>());
  }
  EpilogueCall e;
  e.input = gemm_accumulate(codes);
  e.scale = signed_scale_;
  e.shift = shift_;
  e.want_value = true;
  e.relu = relu;
  return run_epilogue(e).value;
}

}  // namespace deploy
}  // namespace wrpn
