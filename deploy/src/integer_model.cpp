// Lowering a trained zoo ResNet onto integer kernels (see wrpn/deploy/integer_model.h), and the
// deployed model's forward pass.

#include "wrpn/deploy/integer_model.h"

#include <fmt/format.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/torch.h>

#include <sstream>

#include "epilogue_call.h"
#include "wrpn/models/packed.h"
#include "wrpn/models/resnet.h"
#include "wrpn/nn/quantizer.h"

namespace wrpn {
namespace deploy {
namespace {

using nn::Quantizer;
using torch::Tensor;

constexpr int64_t kMaxIntegerBits = 8;

/// Code levels 2^k - 1 of an activation quantizer the integer kernels take (WRPN, 1..8 bits);
/// 0 for any other.
int64_t act_levels(const Quantizer& q) {
  if (q.kind() != Quantizer::Kind::kWrpn || q.bits > kMaxIntegerBits) return 0;
  return (int64_t{1} << q.bits) - 1;
}

bool integer_weights(const Quantizer& q) {
  return q.kind() == Quantizer::Kind::kWrpn && q.bits <= kMaxIntegerBits;
}

std::string describe(const Quantizer& q, const char* what) {
  switch (q.kind()) {
    case Quantizer::Kind::kFullPrecision:
      return fmt::format("fp32 {}", what);
    case Quantizer::Kind::kFixedPoint:
      return fmt::format("fixed-point {} {}", q.to_string(), what);
    case Quantizer::Kind::kWrpn:
      break;
  }
  return fmt::format("{}-bit {} (integer kernels take 1..{} bits)", q.bits, what, kMaxIntegerBits);
}

/// The stream between layers: an fp32 value, or codes whose value is code / levels, and
/// possibly the codes of the quantizer that the next conv applies to the value.
struct Act {
  Tensor value;
  Tensor codes;
  int64_t levels = 0;
  bool is_codes = false;
};

Tensor value_of(const Act& a) {
  if (!a.is_codes) return a.value;
  EpilogueCall e;
  e.input = a.codes;
  e.input_levels = a.levels;
  e.want_value = true;
  return run_epilogue(e).value;
}

/// Codes of the activation quantizer with `levels` applied to the stream.
Tensor codes_of(const Act& a, int64_t levels) {
  if (a.codes.defined() && a.levels == levels) return a.codes;
  TORCH_INTERNAL_ASSERT(!a.is_codes, "integer inference: a stream of ", a.levels,
                        "-level codes met a conv built for ", levels, " levels");
  EpilogueCall e;
  e.input = a.value;
  e.code_levels = levels;
  return run_epilogue(e).codes;
}

/// One conv and the BatchNorm after it (none for a bare conv), lowered.
struct ConvBn {
  std::string name;
  bool integer = false;
  int64_t in_levels = 0;
  IntegerConv2d conv;
  // fp32: the fake-quantized model's own computation on dequantized weights.
  Tensor weight, bias;
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups = 1;
  Tensor bn_weight, bn_bias, bn_mean, bn_var;
  double bn_eps = 1e-5;
  bool has_bn = false;

  Tensor float_forward(const Tensor& x) const {
    Tensor y = at::conv2d(x, weight, bias, stride, padding, dilation, groups);
    if (!has_bn) return y;
    return at::batch_norm(y, bn_weight, bn_bias, bn_mean, bn_var, /*training=*/false, 0.0, bn_eps,
                          /*cudnn_enabled=*/true);
  }

  /// bn(conv(x)) in fp32.
  Tensor forward_float(const Act& in) const {
    if (integer) return conv.forward_float(codes_of(in, in_levels));
    return float_forward(value_of(in));
  }

  /// act(bn(conv(x))): codes when act takes integer kernels, else the fp32 value.
  Act forward_act(const Act& in, const Quantizer& act) const {
    const int64_t levels = act_levels(act);
    Act out;
    if (levels > 0) {
      out.levels = levels;
      out.is_codes = true;
      if (integer) {
        out.codes = conv.forward_codes(codes_of(in, in_levels), levels);
      } else {
        EpilogueCall e;
        e.input = float_forward(value_of(in));
        e.code_levels = levels;
        out.codes = run_epilogue(e).codes;
      }
      return out;
    }
    out.value = act.quantize_activation(forward_float(in), /*training=*/false);
    return out;
  }
};

struct Block {
  std::string name;
  bool has_act_in = false;
  Quantizer act_in;
  ConvBn c1, c2, c3;
  bool bottleneck = false;
  Quantizer act1, act2, act_out;
  bool has_down = false;
  ConvBn down;
  int64_t subsample = 1, pad_lo = 0, pad_hi = 0;
};

/// act(y + residual) as the next layers need it: codes of a quantized act, or the fp32 value
/// plus the codes of the next conv's input quantizer (next_levels, 0 for none).
Act activate(const Tensor& y, const Tensor& residual, int64_t residual_levels, const Quantizer& act,
             int64_t next_levels) {
  EpilogueCall e;
  e.input = y;
  e.residual = residual;
  e.residual_levels = residual_levels;
  Act out;
  const int64_t levels = act_levels(act);
  if (levels > 0) {
    e.code_levels = levels;
    out.codes = run_epilogue(e).codes;
    out.levels = levels;
    out.is_codes = true;
    return out;
  }
  e.want_value = true;
  if (act.is_full_precision()) {
    e.relu = true;
    e.code_levels = next_levels;
    EpilogueResult r = run_epilogue(e);
    out.value = r.value;
    out.codes = r.codes;
    out.levels = next_levels;
    return out;
  }
  out.value = act.quantize_activation(run_epilogue(e).value, /*training=*/false);
  if (next_levels > 0) {
    out.codes = codes_of(out, next_levels);
    out.levels = next_levels;
  }
  return out;
}

std::vector<int64_t> to_vec(torch::ExpandingArray<2> a) { return {(*a)[0], (*a)[1]}; }

}  // namespace

FoldedBatchNorm fold_batch_norm(const torch::nn::BatchNorm2dImpl& bn, const Tensor& conv_bias) {
  TORCH_CHECK(bn.running_mean.defined() && bn.running_var.defined(),
              "fold_batch_norm: the BatchNorm has no running statistics (track_running_stats)");
  const auto f32 = [](const Tensor& t) { return t.detach().to(torch::kCPU, torch::kFloat); };
  const int64_t c = bn.running_mean.numel();
  const Tensor gamma = bn.weight.defined() ? f32(bn.weight) : torch::ones({c});
  const Tensor beta = bn.bias.defined() ? f32(bn.bias) : torch::zeros({c});
  FoldedBatchNorm out;
  out.scale = gamma / torch::sqrt(f32(bn.running_var) + bn.options.eps());
  out.shift = beta - f32(bn.running_mean) * out.scale;
  if (conv_bias.defined()) {
    TORCH_CHECK(conv_bias.numel() == c, "fold_batch_norm: conv bias has ", conv_bias.numel(),
                " channels, the BatchNorm ", c);
    out.shift = out.shift + f32(conv_bias) * out.scale;
  }
  return out;
}

struct IntegerModel::Impl {
  models::ModelSpec spec;
  Engine engine = Engine::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
  bool has_input_act = false;
  Quantizer input_act;
  ConvBn stem;
  bool maxpool = false;
  Quantizer act1;
  std::vector<Block> blocks;
  Tensor fc_weight, fc_bias;
  std::vector<LayerPlan> layers;
  int64_t weight_bytes = 0, fp32_bytes = 0;

  /// Lowers conv (+ bn) reading an input of quantizer `in`.
  ConvBn lower(const std::string& name, const nn::QuantConv2dImpl& conv,
               const torch::nn::BatchNorm2dImpl* bn, const Quantizer& in) {
    ConvBn c;
    c.name = name;
    const Quantizer& wq = conv.options.weight_quantizer();
    const auto& o = conv.options;
    c.stride = to_vec(o.stride());
    c.padding = to_vec(o.padding());
    c.dilation = to_vec(o.dilation());
    c.groups = o.groups();
    const int64_t out_ch = o.out_channels();
    LayerPlan plan;
    plan.name = name;
    plan.weight_bits = wq.bits;
    plan.input_bits = in.bits;
    const Tensor w = conv.weight.detach().to(torch::kCPU, torch::kFloat);
    const Tensor b =
        conv.bias.defined() ? conv.bias.detach().to(torch::kCPU, torch::kFloat) : Tensor();
    Tensor alpha = torch::ones({out_ch}), shift = b.defined() ? b : torch::zeros({out_ch});
    if (bn) {
      c.has_bn = true;
      c.bn_eps = bn->options.eps();
      c.bn_mean = bn->running_mean.detach().to(torch::kCPU, torch::kFloat);
      c.bn_var = bn->running_var.detach().to(torch::kCPU, torch::kFloat);
      c.bn_weight = bn->weight.defined() ? bn->weight.detach().to(torch::kCPU, torch::kFloat)
                                         : torch::ones({out_ch});
      c.bn_bias = bn->bias.defined() ? bn->bias.detach().to(torch::kCPU, torch::kFloat)
                                     : torch::zeros({out_ch});
      const FoldedBatchNorm f = fold_batch_norm(*bn, b);
      alpha = f.scale;
      shift = f.shift;
    }
    c.in_levels = act_levels(in);
    c.integer = engine != Engine::kFloat && c.in_levels > 0 && integer_weights(wq);
    if (c.integer) {
      // Codes n and the step of one code: w_q = n * step.
      const Tensor wqv = wq.quantize_weight(w, /*training=*/false);
      Tensor codes;
      double step = 0.0;
      if (wq.bits == 1) {
        step = wqv.abs().max().item<double>();
        codes = torch::where(wqv >= 0, 1, -1).to(torch::kChar);
      } else {
        const double s = static_cast<double>((int64_t{1} << (wq.bits - 1)) - 1);
        codes = torch::round(wqv * s).to(torch::kChar);
        step = 1.0 / s;
      }
      // A = sum(input codes * codes) is conv / (step / in_levels).
      const Tensor scale =
          (alpha.to(torch::kDouble) * (step / static_cast<double>(c.in_levels))).to(torch::kFloat);
      c.conv = IntegerConv2d(codes, scale, shift.contiguous(), c.stride, c.padding, c.dilation,
                             c.groups, DeployOptions().engine(engine).device(device));
      plan.integer = true;
      weight_bytes += c.conv.weight_bytes();
    } else {
      c.weight = wq.quantize_weight(w, /*training=*/false).to(device);
      if (b.defined()) c.bias = b.to(device);
      for (Tensor* t : {&c.bn_weight, &c.bn_bias, &c.bn_mean, &c.bn_var}) {
        if (t->defined()) *t = t->to(device);
      }
      plan.reason = engine == Engine::kFloat ? "the float engine"
                    : !integer_weights(wq)   ? describe(wq, "weights")
                                             : "reads " + describe(in, "activations");
      weight_bytes += w.numel() * 4 + 2 * out_ch * 4;
    }
    fp32_bytes += w.numel() * 4 + 2 * out_ch * 4;
    layers.push_back(plan);
    return c;
  }

  Act stem_forward(const Tensor& x) const {
    Act in;
    if (has_input_act) {
      const int64_t levels = act_levels(input_act);
      if (levels > 0) {
        EpilogueCall e;
        e.input = x;
        e.code_levels = levels;
        in.codes = run_epilogue(e).codes;
        in.levels = levels;
        in.is_codes = true;
      } else {
        in.value = input_act.quantize_activation(x, /*training=*/false);
      }
    } else {
      in.value = x;
    }
    Tensor y = stem.forward_float(in);
    // A monotone quantizer commutes with the max-pool: pool first, quantize the smaller tensor.
    if (maxpool) y = torch::max_pool2d(y, /*kernel_size=*/3, /*stride=*/2, /*padding=*/1);
    return activate(y, Tensor(), 0, act1, next_levels(0));
  }

  /// Levels of the codes that block b's convs read from its input, when its act_in makes them.
  int64_t next_levels(size_t b) const {
    if (b >= blocks.size() || !blocks[b].has_act_in) return 0;
    return act_levels(blocks[b].act_in);
  }

  Act block_forward(size_t index, const Act& x) const {
    const Block& b = blocks[index];
    Act xq = x;  // what the convs read
    if (b.has_act_in) {
      const int64_t levels = act_levels(b.act_in);
      xq = Act();
      if (levels > 0) {
        xq.codes = codes_of(x, levels);
        xq.levels = levels;
        xq.is_codes = true;
      } else {
        xq.value = b.act_in.quantize_activation(value_of(x), /*training=*/false);
      }
    }
    Tensor y;
    const Act h1 = b.c1.forward_act(xq, b.act1);
    if (b.bottleneck) {
      y = b.c3.forward_float(b.c2.forward_act(h1, b.act2));
    } else {
      y = b.c2.forward_float(h1);
    }
    Tensor shortcut;
    int64_t shortcut_levels = 0;
    if (b.has_down) {
      shortcut = b.down.forward_float(xq);
    } else {
      shortcut = x.is_codes ? x.codes : x.value;
      shortcut_levels = x.is_codes ? x.levels : 0;
      if (b.subsample > 1) {
        shortcut = shortcut.slice(2, 0, shortcut.size(2), b.subsample)
                       .slice(3, 0, shortcut.size(3), b.subsample);
      }
      if (b.pad_lo > 0 || b.pad_hi > 0) {
        shortcut = torch::constant_pad_nd(shortcut, {0, 0, 0, 0, b.pad_lo, b.pad_hi});
      }
    }
    return activate(y, shortcut, shortcut_levels, b.act_out, next_levels(index + 1));
  }

  Tensor forward(const Tensor& images,
                 std::vector<std::pair<std::string, Tensor>>* trace = nullptr) const {
    TORCH_CHECK(images.defined() && images.dim() == 4 && images.size(1) == spec.in_channels,
                "integer ", spec.name, ": expected images [N, ", spec.in_channels, ", H, W], got ",
                images.defined() ? images.sizes() : torch::IntArrayRef{});
    TORCH_CHECK(images.scalar_type() == torch::kFloat, "integer ", spec.name,
                ": expected float32 images, got ", images.scalar_type());
    TORCH_CHECK(images.device() == device, "integer ", spec.name, ": the images are on ",
                images.device(), ", the model on ", device);
    const torch::NoGradGuard no_grad;
    Act x = stem_forward(images.contiguous(at::MemoryFormat::ChannelsLast));
    if (trace) trace->emplace_back("stem", value_of(x));
    for (size_t b = 0; b < blocks.size(); ++b) {
      x = block_forward(b, x);
      if (trace) trace->emplace_back(blocks[b].name, value_of(x));
    }
    const Tensor pooled = torch::adaptive_avg_pool2d(value_of(x), {1, 1}).flatten(1);
    return torch::linear(pooled, fc_weight, fc_bias);
  }
};

IntegerModel::IntegerModel() = default;
IntegerModel::IntegerModel(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

namespace {
const IntegerModel::Impl& checked(const std::shared_ptr<const IntegerModel::Impl>& impl) {
  TORCH_CHECK(impl, "IntegerModel: empty (build one with wrpn::deploy::deploy)");
  return *impl;
}
}  // namespace

torch::Tensor IntegerModel::forward(const torch::Tensor& images) const {
  return checked(impl_).forward(images);
}
torch::Tensor IntegerModel::forward_traced(
    const torch::Tensor& images, std::vector<std::pair<std::string, torch::Tensor>>* trace) const {
  return checked(impl_).forward(images, trace);
}
Engine IntegerModel::engine() const { return checked(impl_).engine; }
c10::Device IntegerModel::device() const { return checked(impl_).device; }
const models::ModelSpec& IntegerModel::spec() const { return checked(impl_).spec; }
const std::vector<LayerPlan>& IntegerModel::layers() const { return checked(impl_).layers; }
int64_t IntegerModel::integer_layers() const {
  int64_t n = 0;
  for (const auto& l : layers()) n += l.integer ? 1 : 0;
  return n;
}
int64_t IntegerModel::float_layers() const {
  return static_cast<int64_t>(layers().size()) - integer_layers();
}
int64_t IntegerModel::weight_bytes() const { return checked(impl_).weight_bytes; }
int64_t IntegerModel::fp32_weight_bytes() const { return checked(impl_).fp32_bytes; }

std::string IntegerModel::summary() const {
  const Impl& m = checked(impl_);
  std::ostringstream s;
  s << fmt::format(
      "{} on {} ({} engine): {} integer layers, {} fp32 layers; weights {:.1f} KiB "
      "({:.3f}x the fp32 model's {:.1f} KiB)\n",
      m.spec.name, m.device.str(), to_string(m.engine), integer_layers(), float_layers(),
      m.weight_bytes / 1024.0,
      static_cast<double>(m.weight_bytes) / static_cast<double>(m.fp32_bytes),
      m.fp32_bytes / 1024.0);
  for (const auto& l : m.layers) {
    if (!l.integer) s << "  fp32: " << l.name << " (" << l.reason << ")\n";
  }
  return s.str();
}

IntegerModel deploy(const models::ClassifierImpl& model, const DeployOptions& options) {
  const auto* resnet = dynamic_cast<const models::ResNetImpl*>(&model);
  TORCH_CHECK(resnet != nullptr, "wrpn::deploy: integer inference supports the zoo's ResNets; \"",
              model.spec().name, "\" is not one");
  auto m = std::make_shared<IntegerModel::Impl>();
  m->spec = model.spec();
  m->device = options.device();
  m->engine = options.engine() == Engine::kFloat
                  ? Engine::kFloat
                  : resolve_engine(options.engine(), options.device());
  TORCH_CHECK(options.device().is_cpu() || options.device().is_cuda(),
              "wrpn::deploy: integer inference runs on CPU or CUDA, not ", options.device());

  Quantizer stream = Quantizer::full_precision();
  if (resnet->input_act) {
    m->has_input_act = true;
    m->input_act = resnet->input_act->options.quantizer();
    stream = m->input_act;
  }
  m->stem = m->lower("conv1", *resnet->conv1, resnet->bn1.get(), stream);
  m->maxpool = resnet->arch().stem == models::ResNetArch::Stem::kImageNet;
  m->act1 = resnet->act1->options.quantizer();
  stream = m->act1;
  for (size_t s = 0; s < resnet->stages.size(); ++s) {
    int64_t index = 0;
    for (const auto& child : *resnet->stages[s]) {
      const auto block = std::dynamic_pointer_cast<models::ResidualBlockImpl>(child.ptr());
      TORCH_CHECK(block, "wrpn::deploy: layer", s + 1,
                  " holds a module that is not a ResNet block");
      Block b;
      b.name = fmt::format("layer{}.{}", s + 1, index++);
      const std::string p = b.name + ".";
      Quantizer in = stream;
      if (block->act_in) {
        b.has_act_in = true;
        b.act_in = block->act_in->options.quantizer();
        in = b.act_in;
      }
      b.act1 = block->act1->options.quantizer();
      b.c1 = m->lower(p + "conv1", *block->conv1, block->bn1.get(), in);
      if (block->conv3) {
        b.bottleneck = true;
        b.act2 = block->act2->options.quantizer();
        b.c2 = m->lower(p + "conv2", *block->conv2, block->bn2.get(), b.act1);
        b.c3 = m->lower(p + "conv3", *block->conv3, block->bn3.get(), b.act2);
      } else {
        b.c2 = m->lower(p + "conv2", *block->conv2, block->bn2.get(), b.act1);
      }
      if (block->downsample) {
        const auto conv = std::dynamic_pointer_cast<nn::QuantConv2dImpl>(block->downsample->ptr(0));
        const auto bn =
            std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(block->downsample->ptr(1));
        TORCH_CHECK(conv && bn, "wrpn::deploy: ", b.name,
                    ".downsample is not a conv and a BatchNorm");
        b.has_down = true;
        b.down = m->lower(p + "downsample.0", *conv, bn.get(), in);
      }
      b.subsample = block->shortcut_subsample();
      b.pad_lo = block->shortcut_pad_lo();
      b.pad_hi = block->shortcut_pad_hi();
      b.act_out = block->act_out->options.quantizer();
      stream = b.act_out;
      m->blocks.push_back(std::move(b));
    }
  }
  const auto& fc = *resnet->fc;
  m->fc_weight = fc.options.weight_quantizer()
                     .quantize_weight(fc.weight.detach().to(torch::kFloat), false)
                     .to(m->device);
  if (fc.bias.defined()) m->fc_bias = fc.bias.detach().to(m->device, torch::kFloat);
  LayerPlan fc_plan;
  fc_plan.name = "fc";
  fc_plan.weight_bits = fc.options.weight_quantizer().bits;
  fc_plan.input_bits = stream.bits;
  fc_plan.reason = "the classifier runs in fp32 on the average-pooled values";
  m->layers.push_back(fc_plan);
  const int64_t fc_bytes = (fc.weight.numel() + (fc.bias.defined() ? fc.bias.numel() : 0)) * 4;
  m->weight_bytes += fc_bytes;
  m->fp32_bytes += fc_bytes;
  return IntegerModel(std::move(m));
}

IntegerModel deploy_packed(const std::string& path, const DeployOptions& options) {
  const models::Classifier model = models::import_packed(path);
  return deploy(*model, options);
}

}  // namespace deploy
}  // namespace wrpn
