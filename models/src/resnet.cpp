// The zoo's ResNets (see wrpn/models/resnet.h for where the quantizers sit).

#include "wrpn/models/resnet.h"

#include <torch/torch.h>

#include "quantizer_resolver.h"

namespace wrpn {
namespace models {

ResNetArch resnet_arch(const std::string& name) {
  using S = ResNetArch::Stem;
  using B = ResNetArch::Block;
  if (name == "resnet18") return {S::kImageNet, B::kBasic, {2, 2, 2, 2}};
  if (name == "resnet34") return {S::kImageNet, B::kBasic, {3, 4, 6, 3}};
  if (name == "resnet50") return {S::kImageNet, B::kBottleneck, {3, 4, 6, 3}};
  if (name == "resnet18_small") return {S::kSmall, B::kBasic, {2, 2, 2, 2}};
  if (name == "resnet34_small") return {S::kSmall, B::kBasic, {3, 4, 6, 3}};
  if (name == "resnet50_small") return {S::kSmall, B::kBottleneck, {3, 4, 6, 3}};
  if (name == "resnet20") return {S::kCifar, B::kBasic, {3, 3, 3}};
  if (name == "resnet32") return {S::kCifar, B::kBasic, {5, 5, 5}};
  if (name == "resnet56") return {S::kCifar, B::kBasic, {9, 9, 9}};
  TORCH_CHECK(false, "unknown ResNet \"", name,
              "\": expected resnet18, resnet34, resnet50 (each also with _small), resnet20, "
              "resnet32 or resnet56");
  return {};
}

using nn::QuantConv2d;
using nn::QuantConv2dOptions;
using nn::QuantReLU;

namespace detail {
/// How one residual block is built.
struct BlockArgs {
  std::string name;  // e.g. "layer2.0", for precision overrides
  bool bottleneck = false;
  bool cifar = false;  // parameter-free zero-padding shortcut instead of a projection
  int64_t in_channels = 0;
  int64_t planes = 0;        // channels of the inner convs
  int64_t out_channels = 0;  // planes for basic blocks, 4x for bottlenecks
  int64_t stride = 1;
  nn::Quantizer stream;  // the quantizer of the block input
  bool last = false;     // the block that feeds the classifier
};
}  // namespace detail

ResidualBlockImpl::ResidualBlockImpl(const detail::BlockArgs& a, const PrecisionConfig& p,
                                     nn::WeightInit init, detail::QuantizerResolver& quantizers) {
  const std::string prefix = a.name + ".";
  nn::Quantizer conv_in = a.stream;
  if (!p.quantized_residual) {
    act_in =
        register_module("act_in", QuantReLU(quantizers.activation(prefix + "act_in", p.act_bits)));
    conv_in = act_in->options.quantizer();
  }
  auto conv = [&](const std::string& n, int64_t in, int64_t out, int64_t k, int64_t stride,
                  const nn::Quantizer& input) {
    return QuantConv2d(QuantConv2dOptions(in, out, k)
                           .stride(stride)
                           .padding(k / 2)
                           .bias(false)
                           .weight_quantizer(quantizers.weight(prefix + n, p.weight_bits))
                           .input_quantizer(input)
                           .init(init));
  };
  auto act = [&](const std::string& n) {
    return register_module(n, QuantReLU(quantizers.activation(prefix + n, p.act_bits)));
  };
  if (a.bottleneck) {
    conv1 = register_module("conv1", conv("conv1", a.in_channels, a.planes, 1, 1, conv_in));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(a.planes));
    act1 = act("act1");
    conv2 = register_module(
        "conv2", conv("conv2", a.planes, a.planes, 3, a.stride, act1->options.quantizer()));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(a.planes));
    act2 = act("act2");
    conv3 = register_module(
        "conv3", conv("conv3", a.planes, a.out_channels, 1, 1, act2->options.quantizer()));
    bn3 = register_module("bn3", torch::nn::BatchNorm2d(a.out_channels));
  } else {
    conv1 = register_module("conv1", conv("conv1", a.in_channels, a.planes, 3, a.stride, conv_in));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(a.planes));
    act1 = act("act1");
    conv2 = register_module(
        "conv2", conv("conv2", a.planes, a.out_channels, 3, 1, act1->options.quantizer()));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(a.out_channels));
  }
  if (a.stride != 1 || a.in_channels != a.out_channels) {
    if (a.cifar) {
      pad_lo_ = (a.out_channels - a.in_channels) / 2;
      pad_hi_ = a.out_channels - a.in_channels - pad_lo_;
      TORCH_CHECK(pad_lo_ >= 0 && pad_hi_ >= 0, a.name, ": a zero-padding shortcut cannot go ",
                  "from ", a.in_channels, " to ", a.out_channels, " channels");
      subsample_ = a.stride;
    } else {
      downsample = register_module(
          "downsample", torch::nn::Sequential(conv("downsample.0", a.in_channels, a.out_channels, 1,
                                                   a.stride, conv_in),
                                              torch::nn::BatchNorm2d(a.out_channels)));
    }
  }
  const int64_t out_default = a.last ? (p.fp32_last_layer ? kFullPrecisionBits : p.act_bits)
                                     : (p.quantized_residual ? p.act_bits : kFullPrecisionBits);
  act_out =
      register_module("act_out", QuantReLU(quantizers.activation(prefix + "act_out", out_default)));
  // An fp32 block output that only quantizers read (the next block's act_in, or the head's
  // pooling when the last layer is quantized) needs no float copy for its ReLU's backward.
  act_out->options.save_mask(!p.quantized_residual && p.act_bits < kFullPrecisionBits);
}

torch::Tensor ResidualBlockImpl::forward(torch::Tensor x) {
  const torch::Tensor xq = act_in ? act_in(x) : x;
  torch::Tensor out = act1(conv1->forward_bn(xq, *bn1));
  if (conv3) {
    out = conv3->forward_bn(act2(conv2->forward_bn(out, *bn2)), *bn3);
  } else {
    out = conv2->forward_bn(out, *bn2);
  }
  torch::Tensor shortcut = x;
  if (downsample) {
    shortcut = downsample->forward(xq);
  } else if (subsample_ > 1 || pad_lo_ > 0 || pad_hi_ > 0) {
    using torch::indexing::None;
    using torch::indexing::Slice;
    shortcut =
        x.index({Slice(), Slice(), Slice(None, None, subsample_), Slice(None, None, subsample_)});
    shortcut = torch::constant_pad_nd(shortcut, {0, 0, 0, 0, pad_lo_, pad_hi_});
  }
  return act_out(out + shortcut);
}

ResNetImpl::ResNetImpl(ModelSpec spec, ResNetArch arch)
    : ClassifierImpl(std::move(spec)), arch_(std::move(arch)) {
  const PrecisionConfig& p = spec_.precision;
  const bool imagenet = arch_.stem == ResNetArch::Stem::kImageNet;
  const bool cifar = arch_.stem == ResNetArch::Stem::kCifar;
  const bool bottleneck = arch_.block == ResNetArch::Block::kBottleneck;
  const std::vector<int64_t> base =
      cifar ? std::vector<int64_t>{16, 32, 64} : std::vector<int64_t>{64, 128, 256, 512};
  TORCH_CHECK(arch_.blocks.size() == base.size(), spec_.name, ": expected ", base.size(),
              " stages, got ", arch_.blocks.size());
  detail::QuantizerResolver quantizers(p);

  nn::Quantizer image;
  if (!p.fp32_first_layer) {
    input_act =
        register_module("input_act", QuantReLU(quantizers.activation("input_act", p.act_bits)));
    image = input_act->options.quantizer();
  }
  const int64_t stem = p.channels(base[0]);
  conv1 = register_module(
      "conv1",
      QuantConv2d(QuantConv2dOptions(spec_.in_channels, stem, imagenet ? 7 : 3)
                      .stride(imagenet ? 2 : 1)
                      .padding(imagenet ? 3 : 1)
                      .bias(false)
                      .weight_quantizer(quantizers.weight(
                          "conv1", p.fp32_first_layer ? kFullPrecisionBits : p.weight_bits))
                      .input_quantizer(image)
                      .init(spec_.init)));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(stem));
  act1 =
      register_module("act1", QuantReLU(quantizers.activation(
                                  "act1", p.quantized_residual ? p.act_bits : kFullPrecisionBits)));
  // Read by layer1's quantizers only (no max-pool, which would save it anyway).
  act1->options.save_mask(!p.quantized_residual && p.act_bits < kFullPrecisionBits && !imagenet);

  int64_t channels = stem;
  nn::Quantizer stream = act1->options.quantizer();
  for (size_t s = 0; s < base.size(); ++s) {
    torch::nn::Sequential stage;
    for (int64_t b = 0; b < arch_.blocks[s]; ++b) {
      detail::BlockArgs a;
      a.name = "layer" + std::to_string(s + 1) + "." + std::to_string(b);
      a.bottleneck = bottleneck;
      a.cifar = cifar;
      a.in_channels = channels;
      a.planes = p.channels(base[s]);
      a.out_channels = bottleneck ? p.channels(base[s] * 4) : a.planes;
      a.stride = (s > 0 && b == 0) ? 2 : 1;
      a.stream = stream;
      a.last = s + 1 == base.size() && b + 1 == arch_.blocks[s];
      ResidualBlock block(a, p, spec_.init, quantizers);
      stream = block->out_quantizer();
      channels = a.out_channels;
      stage->push_back(block);
    }
    stages.push_back(register_module("layer" + std::to_string(s + 1), stage));
  }
  fc = register_module(
      "fc", nn::QuantLinear(nn::QuantLinearOptions(channels, spec_.num_classes)
                                .weight_quantizer(quantizers.weight(
                                    "fc", p.fp32_last_layer ? kFullPrecisionBits : p.weight_bits))
                                .input_quantizer(stream)
                                // Its input is the average-pooled activation, off the grid.
                                .pack_saved_input(false)
                                .init(spec_.init)));
  quantizers.check_overrides(spec_.name);
}

torch::Tensor ResNetImpl::forward(torch::Tensor x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == spec_.in_channels, spec_.name, ": expected input [N, ",
              spec_.in_channels, ", H, W], got ", x.sizes());
  if (input_act) x = input_act(x);
  x = act1(bn1(conv1(x)));
  if (arch_.stem == ResNetArch::Stem::kImageNet) {
    x = torch::max_pool2d(x, /*kernel_size=*/3, /*stride=*/2, /*padding=*/1);
  }
  for (auto& stage : stages) x = stage->forward(x);
  x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  return fc(x);
}

}  // namespace models
}  // namespace wrpn
