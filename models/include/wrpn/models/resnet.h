#pragma once
/// Width-multiplied, quantized ResNets: ImageNet ResNet-18/34/50 (7x7 stride-2 stem and 3x3
/// max-pool, torchvision's layout and parameter names), the same with a small-input stem
/// ("resnet18_small" etc.: one 3x3 stride-1 conv and no max-pool, the ResNet-18/34 commonly
/// trained on 32x32 CIFAR images; otherwise identical, so the parameter count differs only by
/// the stem conv) and CIFAR ResNet-20/32/56 (3x3 stem, 16/32/64 channels, parameter-free
/// "option A" shortcuts, as in "Deep Residual Learning for Image Recognition", arXiv 1512.03385).
///
/// Where the quantizers sit (PrecisionConfig decides the bits):
///  - the stem conv reads the image unquantized when fp32_first_layer (the default); otherwise a
///    QuantReLU "input_act" quantizes the image first (so feed inputs in [0, 1], e.g. pixels/255,
///    which 8 bits represent exactly);
///  - inside each block a QuantReLU replaces every ReLU between convs ("act1", "act2");
///  - after each residual addition ("act_out"): with quantized_residual = false (the default)
///    a plain ReLU, and each block's "act_in" quantizes the block input for its convs and its
///    projection shortcut while the identity shortcut carries the fp32 sum; with
///    quantized_residual = true, a quantizer, so blocks exchange k-bit activations and the
///    stem's "act1" quantizes the stem output too;
///  - the last block's "act_out" quantizes only when the FC is quantized (fp32_last_layer false);
///    the FC then reads the average of k-bit values, i.e. a sum of k-bit codes whose constant
///    1/(H*W) folds into its scale.
/// So every quantized conv reads a k-bit activation. Module names follow torchvision
/// ("layer2.0.downsample.0"), so overrides and state dicts use them.

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>

#include <cstdint>
#include <string>
#include <vector>

#include "wrpn/models/classifier.h"
#include "wrpn/nn/quant_conv.h"
#include "wrpn/nn/quant_linear.h"
#include "wrpn/nn/quant_relu.h"

namespace wrpn {
namespace models {

/// The shape of a ResNet: stem, block type and blocks per stage.
struct ResNetArch {
  /// kImageNet: 7x7 stride-2 conv, 3x3 stride-2 max-pool, stages of 64..512 channels.
  /// kSmall: 3x3 stride-1 conv, no max-pool, stages of 64..512 channels (for 28..64-pixel
  /// inputs). kCifar: 3x3 stride-1 conv, stages of 16/32/64 channels, zero-padding shortcuts.
  enum class Stem { kImageNet, kSmall, kCifar };
  enum class Block { kBasic, kBottleneck };
  Stem stem = Stem::kImageNet;
  Block block = Block::kBasic;
  /// Blocks per stage: 4 stages of 64/128/256/512 base channels for the ImageNet and small stems,
  /// 3 stages of 16/32/64 for CIFAR.
  std::vector<int64_t> blocks;
};

/// The architecture of a zoo ResNet: "resnet18", "resnet34", "resnet50", the same with "_small"
/// (small-input stem), "resnet20", "resnet32" or "resnet56"; throws c10::Error otherwise.
ResNetArch resnet_arch(const std::string& name);

/// The construction arguments of a block (private to the zoo's builder).
namespace detail {
struct BlockArgs;
class QuantizerResolver;
}  // namespace detail

/// A residual block (BasicBlock or Bottleneck) with torchvision's module names, the stride on
/// the 3x3 conv. Built only by ResNetImpl; its layers are public so that tools which lower a
/// trained model (wrpn/deploy) read the same structure that forward() runs.
class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(const detail::BlockArgs& a, const PrecisionConfig& p, nn::WeightInit init,
                    detail::QuantizerResolver& quantizers);

  torch::Tensor forward(torch::Tensor x);

  /// The quantizer of the block output (act_out's).
  const nn::Quantizer& out_quantizer() const { return act_out->options.quantizer(); }
  /// The parameter-free shortcut of CIFAR ResNets: x[:, :, ::subsample, ::subsample] padded with
  /// pad_lo zero channels before and pad_hi after. subsample 1 and no padding: the identity
  /// (when there is no downsample projection).
  int64_t shortcut_subsample() const { return subsample_; }
  int64_t shortcut_pad_lo() const { return pad_lo_; }
  int64_t shortcut_pad_hi() const { return pad_hi_; }

  /// act_in: the block input's quantizer in fp32-residual mode (empty otherwise).
  nn::QuantReLU act_in{nullptr}, act1{nullptr}, act2{nullptr}, act_out{nullptr};
  /// conv3/bn3/act2: bottlenecks only.
  nn::QuantConv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  /// The projection shortcut (QuantConv2d, BatchNorm2d), or empty.
  torch::nn::Sequential downsample{nullptr};

 private:
  int64_t subsample_ = 1, pad_lo_ = 0, pad_hi_ = 0;
};
TORCH_MODULE(ResidualBlock);

/// A ResNet at any width and bits (see the file comment for where activations are quantized).
class ResNetImpl : public ClassifierImpl {
 public:
  /// `spec` must be validated with num_classes resolved; create_model() does both.
  ResNetImpl(ModelSpec spec, ResNetArch arch);

  torch::Tensor forward(torch::Tensor x) override;

  const ResNetArch& arch() const { return arch_; }

  /// Quantizes the image when the first layer is quantized; empty otherwise.
  nn::QuantReLU input_act{nullptr};
  nn::QuantConv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  nn::QuantReLU act1{nullptr};
  /// layer1..layer4 (3 for CIFAR), each a Sequential of residual blocks.
  std::vector<torch::nn::Sequential> stages;
  nn::QuantLinear fc{nullptr};

 private:
  ResNetArch arch_;
};

TORCH_MODULE(ResNet);

}  // namespace models
}  // namespace wrpn
