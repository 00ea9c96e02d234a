// wrpn::nn modules: QuantConv2d, QuantLinear, QuantReLU, their initialisation, and the forward
// observers the cost report and the analysis read.

#include <torch/nn/functional/activation.h>
#include <torch/nn/init.h>
#include <torch/torch.h>

#include <cmath>

#include "packed_layers.h"
#include "wrpn/nn/init.h"
#include "wrpn/nn/layers.h"
#include "wrpn/nn/observer.h"
#include "wrpn/nn/quant_conv.h"
#include "wrpn/nn/quant_linear.h"
#include "wrpn/nn/quant_relu.h"
#include "wrpn/nn/saved_codes.h"
#include "wrpn/ops.h"

namespace wrpn {
namespace nn {

// ---- initialisation ----

std::string to_string(WeightInit init) {
  switch (init) {
    case WeightInit::kQuantAware:
      return "quant_aware";
    case WeightInit::kHe:
      return "he";
    case WeightInit::kTorchDefault:
      return "torch_default";
  }
  TORCH_CHECK(false, "unknown WeightInit value ", static_cast<int>(init));
}

WeightInit weight_init_from_string(const std::string& name) {
  for (auto init : {WeightInit::kQuantAware, WeightInit::kHe, WeightInit::kTorchDefault}) {
    if (to_string(init) == name) return init;
  }
  TORCH_CHECK(false, "unknown weight init \"", name,
              "\": expected quant_aware, he or torch_default");
}

namespace {

void he_normal_(at::Tensor& w) {
  torch::nn::init::kaiming_normal_(w, /*a=*/0.0, torch::kFanOut, torch::kReLU);
}

void torch_default_(at::Tensor& w) { torch::nn::init::kaiming_uniform_(w, /*a=*/std::sqrt(5.0)); }

/// One quantization step of k-bit WRPN weights (k = 2..16): 1 / (2^(k-1) - 1).
double weight_step(int64_t bits) {
  return 1.0 / static_cast<double>((int64_t{1} << (bits - 1)) - 1);
}

double fp32_std_of_fans(int64_t fan_in, int64_t fan_out, bool he) {
  if (he) return std::sqrt(2.0 / static_cast<double>(fan_out));
  // kaiming_uniform_(a = sqrt(5)): bound = sqrt(6 / ((1 + a^2) fan_in)) = 1 / sqrt(fan_in).
  return 1.0 / std::sqrt(3.0 * static_cast<double>(fan_in));
}

/// The std of the draw `he_normal_` or `torch_default_` makes.
double fp32_std(const at::Tensor& w, bool he) {
  auto [fan_in, fan_out] = torch::nn::init::_calculate_fan_in_and_fan_out(w);
  return fp32_std_of_fans(fan_in, fan_out, he);
}

/// The std of N(0, std^2) truncated to [-bound, bound].
double truncated_normal_std(double std, double bound) {
  const double a = bound / std;
  const double pdf = std::exp(-0.5 * a * a) / std::sqrt(2.0 * M_PI);
  const double mass = std::erf(a / std::sqrt(2.0));  // P(|z| <= a)
  return std * std::sqrt(1.0 - 2.0 * a * pdf / mass);
}

/// N(0, std^2) restricted to [-bound, bound], by inverting the normal CDF on the clipped range
/// (torch.nn.init.trunc_normal_'s method).
void truncated_normal_(at::Tensor& w, double std, double bound) {
  auto cdf = [](double z) { return 0.5 * (1.0 + std::erf(z / std::sqrt(2.0))); };
  const double lo = cdf(-bound / std), hi = cdf(bound / std);
  w.uniform_(2.0 * lo - 1.0, 2.0 * hi - 1.0).erfinv_().mul_(std * std::sqrt(2.0));
  w.clamp_(-bound, bound);
}

}  // namespace

void init_weight_(at::Tensor& weight, WeightInit init, int64_t bits, bool is_conv) {
  check_bits(bits, "weight bits");
  torch::NoGradGuard no_grad;
  if (weight.numel() == 0) return;
  switch (init) {
    case WeightInit::kHe:
      he_normal_(weight);
      return;
    case WeightInit::kTorchDefault:
      torch_default_(weight);
      return;
    case WeightInit::kQuantAware: {
      is_conv ? he_normal_(weight) : torch_default_(weight);
      if (bits < 2 || bits == kFullPrecisionBits) return;
      const double step = weight_step(bits);
      if (fp32_std(weight, is_conv) >= step) return;
      truncated_normal_(weight, step, 1.0);
      return;
    }
  }
  TORCH_CHECK(false, "unknown WeightInit value ", static_cast<int>(init));
}

double init_std(at::IntArrayRef sizes, WeightInit init, int64_t bits, bool is_conv) {
  check_bits(bits, "weight bits");
  TORCH_CHECK(sizes.size() >= 2, "init_std: a weight has at least 2 dimensions, got ", sizes);
  int64_t receptive = 1;
  for (size_t i = 2; i < sizes.size(); ++i) receptive *= sizes[i];
  const int64_t fan_in = sizes[1] * receptive, fan_out = sizes[0] * receptive;
  switch (init) {
    case WeightInit::kHe:
      return fp32_std_of_fans(fan_in, fan_out, true);
    case WeightInit::kTorchDefault:
      return fp32_std_of_fans(fan_in, fan_out, false);
    case WeightInit::kQuantAware: {
      const double fp32 = fp32_std_of_fans(fan_in, fan_out, is_conv);
      if (bits < 2 || bits == kFullPrecisionBits) return fp32;
      const double step = weight_step(bits);
      return fp32 >= step ? fp32 : truncated_normal_std(step, 1.0);
    }
  }
  TORCH_CHECK(false, "unknown WeightInit value ", static_cast<int>(init));
}

double matched_lr_multiplier(at::IntArrayRef sizes, WeightInit init, int64_t bits, bool is_conv) {
  const double ratio =
      init_std(sizes, init, bits, is_conv) / init_std(sizes, init, kFullPrecisionBits, is_conv);
  return ratio * ratio;
}

std::map<std::string, double> fit_weights_to_quantizer_(torch::nn::Module& model) {
  torch::NoGradGuard no_grad;
  std::map<std::string, double> factors;
  for_each_quantized_layer(model, [&](const std::string& name, const QuantizedLayer& layer) {
    if (layer.kind != LayerKind::kConv2d) return;
    const Quantizer& q = layer.quantizer();
    if (q.kind() != Quantizer::Kind::kWrpn || q.bits < 2) return;
    at::Tensor w = layer.weight();
    if (w.numel() < 2) return;
    const double step = weight_step(q.bits);
    const double std = w.std().item<double>();
    if (!(std > 0.0) || std >= step) return;
    const double factor = step / std;
    w.mul_(factor).clamp_(-1.0, 1.0);
    factors[name] = factor;
  });
  return factors;
}

double zero_fraction(const at::Tensor& weight, int64_t bits) {
  check_bits(bits, "weight bits");
  if (weight.numel() == 0) return 0.0;
  torch::NoGradGuard no_grad;
  const auto q = bits == kFullPrecisionBits ? weight : quantize_weight(weight, bits);
  return q.eq(0).sum().item<double>() / static_cast<double>(q.numel());
}

// ---- observers ----

namespace {
thread_local ForwardObserver* active_observer = nullptr;
}  // namespace

ForwardObserver::ForwardObserver(Callback fn) : fn_(std::move(fn)), previous_(active_observer) {
  TORCH_CHECK(fn_, "ForwardObserver: the callback is empty");
  active_observer = this;
}

ForwardObserver::~ForwardObserver() { active_observer = previous_; }

void notify_observers(const LayerCall& call) {
  for (ForwardObserver* o = active_observer; o != nullptr; o = o->previous_) o->fn_(call);
}

namespace {
/// Reports one forward call to the observers (the cost report and the analysis are observers).
void report(const torch::nn::Module* module, const at::Tensor& input, const at::Tensor& weight,
            const at::Tensor& output) {
  if (active_observer != nullptr) notify_observers({module, input, weight, output});
}
}  // namespace

namespace {

/// Resolves a conv's or FC's quantizers and checks their bits.
template <typename Options>
void resolve_quantizers(Options& o, const char* module) {
  o.weight_quantizer(o.weight_quantizer().resolved(LayerRole::kWeight, module));
  check_bits(o.input_bits(), std::string(module) + " input_bits");
  o.input_quantizer(o.input_quantizer().resolved(LayerRole::kActivation, module));
}

void init_bias_(at::Tensor& bias, const at::Tensor& weight) {
  if (!bias.defined()) return;
  torch::NoGradGuard no_grad;
  auto [fan_in, fan_out] = torch::nn::init::_calculate_fan_in_and_fan_out(weight);
  const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
  bias.uniform_(-bound, bound);
}

}  // namespace

// ---- QuantConv2d ----

QuantConv2dOptions::QuantConv2dOptions(int64_t in_channels, int64_t out_channels,
                                       torch::ExpandingArray<2> kernel_size)
    : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}

QuantConv2dImpl::QuantConv2dImpl(QuantConv2dOptions options) : options(std::move(options)) {
  reset();
}

void QuantConv2dImpl::reset() {
  const auto& o = options;
  TORCH_CHECK(o.in_channels() > 0 && o.out_channels() > 0 && o.groups() > 0,
              "QuantConv2d: in_channels (", o.in_channels(), "), out_channels (", o.out_channels(),
              ") and groups (", o.groups(), ") must be positive");
  TORCH_CHECK(o.in_channels() % o.groups() == 0 && o.out_channels() % o.groups() == 0,
              "QuantConv2d: in_channels (", o.in_channels(), ") and out_channels (",
              o.out_channels(), ") must be divisible by groups (", o.groups(), ")");
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK((*o.kernel_size())[i] > 0 && (*o.stride())[i] > 0 && (*o.dilation())[i] > 0 &&
                    (*o.padding())[i] >= 0,
                "QuantConv2d: kernel_size ", o.kernel_size(), ", stride ", o.stride(),
                " and dilation ", o.dilation(), " must be positive, padding ", o.padding(),
                " non-negative");
  }
  resolve_quantizers(options, "QuantConv2d");
  weight =
      register_parameter("weight", torch::empty({o.out_channels(), o.in_channels() / o.groups(),
                                                 (*o.kernel_size())[0], (*o.kernel_size())[1]}));
  if (o.bias()) {
    bias = register_parameter("bias", torch::empty({o.out_channels()}));
  } else {
    bias = register_parameter("bias", torch::Tensor(), /*requires_grad=*/false);
  }
  reset_parameters();
}

void QuantConv2dImpl::reset_parameters() {
  init_weight_(weight, options.init(), options.weight_bits(), /*is_conv=*/true);
  init_bias_(bias, weight);
}

void QuantConv2dImpl::pretty_print(std::ostream& stream) const {
  const auto& o = options;
  stream << "wrpn::nn::QuantConv2d(" << o.in_channels() << ", " << o.out_channels()
         << ", kernel_size=" << o.kernel_size() << ", stride=" << o.stride();
  if (*o.padding() != *torch::ExpandingArray<2>(0)) stream << ", padding=" << o.padding();
  if (*o.dilation() != *torch::ExpandingArray<2>(1)) stream << ", dilation=" << o.dilation();
  if (o.groups() != 1) stream << ", groups=" << o.groups();
  if (!o.bias()) stream << ", bias=false";
  stream << ", weight_bits=" << o.weight_bits();
  if (o.fixed_point().enabled()) stream << " (" << o.fixed_point().to_string() << ")";
  if (o.input_bits() != kFullPrecisionBits) stream << ", input_bits=" << o.input_bits();
  stream << ")";
}

torch::Tensor QuantConv2dImpl::effective_weight() const {
  return options.weight_quantizer().quantize_weight(weight, is_training());
}

namespace {

detail::ConvArgs conv_args(const QuantConv2dOptions& o) {
  return {at::IntArrayRef(o.stride()).vec(), at::IntArrayRef(o.padding()).vec(),
          at::IntArrayRef(o.dilation()).vec(), o.groups()};
}

/// Whether this forward may save x as codes: packing on, a 4-D input from a packable quantizer,
/// and a graph being recorded.
bool packs_input(const QuantConv2dImpl& m, const torch::Tensor& x, const torch::Tensor& w) {
  return m.options.pack_saved_input() && x.dim() == 4 && can_pack(m.options.input_quantizer()) &&
         detail::records_graph(x, w, m.bias);
}

/// conv2d(x, w, bias) of `m` with its quantized weight `w`, saving codes where it can.
torch::Tensor conv_out(QuantConv2dImpl& m, const torch::Tensor& x, const torch::Tensor& w) {
  const auto& o = m.options;
  torch::Tensor out;
  if (packs_input(m, x, w)) {
    out = detail::conv2d_saving_codes(x, w, m.bias, conv_args(o), o.input_quantizer(),
                                      o.weight_quantizer());
  }
  if (!out.defined()) {
    out = torch::conv2d(x, w, m.bias, o.stride(), o.padding(), o.dilation(), o.groups());
  }
  report(&m, x, w, out);
  return out;
}

}  // namespace

torch::Tensor QuantConv2dImpl::forward(const torch::Tensor& x) {
  return conv_out(*this, x, effective_weight());
}

torch::Tensor QuantConv2dImpl::forward_bn(const torch::Tensor& x, torch::nn::BatchNorm2dImpl& bn) {
  const auto w = effective_weight();
  if (options.recompute_bn_input() && !bias.defined() && packs_input(*this, x, w)) {
    auto out = detail::conv_bn_saving_codes(x, w, conv_args(options), options.input_quantizer(),
                                            options.weight_quantizer(), bn);
    if (out.defined()) {
      report(this, x, w, out);
      return out;
    }
  }
  return bn.forward(conv_out(*this, x, w));
}

// ---- QuantLinear ----

QuantLinearOptions::QuantLinearOptions(int64_t in_features, int64_t out_features)
    : in_features_(in_features), out_features_(out_features) {}

QuantLinearImpl::QuantLinearImpl(QuantLinearOptions options) : options(std::move(options)) {
  reset();
}

void QuantLinearImpl::reset() {
  TORCH_CHECK(options.in_features() > 0 && options.out_features() > 0, "QuantLinear: in_features (",
              options.in_features(), ") and out_features (", options.out_features(),
              ") must be positive");
  resolve_quantizers(options, "QuantLinear");
  weight =
      register_parameter("weight", torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty({options.out_features()}));
  } else {
    bias = register_parameter("bias", torch::Tensor(), /*requires_grad=*/false);
  }
  reset_parameters();
}

void QuantLinearImpl::reset_parameters() {
  init_weight_(weight, options.init(), options.weight_bits(), /*is_conv=*/false);
  init_bias_(bias, weight);
}

void QuantLinearImpl::pretty_print(std::ostream& stream) const {
  stream << "wrpn::nn::QuantLinear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features();
  if (!options.bias()) stream << ", bias=false";
  stream << ", weight_bits=" << options.weight_bits();
  if (options.fixed_point().enabled()) stream << " (" << options.fixed_point().to_string() << ")";
  if (options.input_bits() != kFullPrecisionBits) {
    stream << ", input_bits=" << options.input_bits();
  }
  stream << ")";
}

torch::Tensor QuantLinearImpl::effective_weight() const {
  return options.weight_quantizer().quantize_weight(weight, is_training());
}

torch::Tensor QuantLinearImpl::forward(const torch::Tensor& x) {
  const auto w = effective_weight();
  torch::Tensor out;
  if (options.pack_saved_input() && can_pack(options.input_quantizer()) &&
      detail::records_graph(x, w, bias)) {
    out = detail::linear_saving_codes(x, w, bias, options.input_quantizer());
  }
  if (!out.defined()) out = torch::linear(x, w, bias);
  report(this, x, w, out);
  return out;
}

// ---- QuantReLU ----

QuantReLUOptions::QuantReLUOptions(int64_t bits) : quantizer_(Quantizer::wrpn(bits)) {}

QuantReLUOptions::QuantReLUOptions(Quantizer quantizer) : quantizer_(std::move(quantizer)) {}

QuantReLUImpl::QuantReLUImpl(QuantReLUOptions options) : options(std::move(options)) { reset(); }

void QuantReLUImpl::reset() {
  options.quantizer(options.quantizer().resolved(LayerRole::kActivation, "QuantReLU"));
}

void QuantReLUImpl::pretty_print(std::ostream& stream) const {
  stream << "wrpn::nn::QuantReLU(bits=" << options.bits();
  if (options.fixed_point().enabled()) stream << ", " << options.fixed_point().to_string();
  stream << ")";
}

torch::Tensor QuantReLUImpl::forward(const torch::Tensor& x) {
  torch::Tensor out;
  if (options.save_mask() && options.pack_saved() && options.quantizer().is_full_precision() &&
      detail::records_graph(x, x, torch::Tensor())) {
    out = detail::relu_saving_mask(x);
  } else {
    out = options.quantizer().quantize_activation(x, is_training());
  }
  report(this, x, torch::Tensor(), out);
  return out;
}

}  // namespace nn
}  // namespace wrpn
