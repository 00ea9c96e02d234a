#pragma once
/// Weight initialisation for quantized layers, and the zero fraction it leaves.
///
/// WRPN weights have no scale: at k bits |w| < 1/(2(2^(k-1)-1)) rounds to zero (1/14 at 4 bits,
/// 1/2 at 2 bits), and He initialisation (std sqrt(2/fan_out)) puts most weights of a wide layer
/// in that band. BatchNorm follows every quantized conv, so the forward pass does not depend on a
/// conv's weight scale and a wider draw is as legitimate as He's. kQuantAware, the default, keeps
/// He's normal shape but never draws narrower than one quantization step 1/(2^(k-1)-1),
/// truncated to the quantizer's range [-1, 1] so that no weight starts where the
/// straight-through gradient is zero. 1-bit weights (+-mean|w|) have no zero band and fp32
/// layers keep their usual draw. A wider start lowers plain SGD's effective step (about
/// lr/|w|^2 behind BatchNorm): matched_lr_multiplier() compensates. The README reports the zero
/// fractions each init leaves and how the defaults train.

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <map>
#include <string>

namespace wrpn {
namespace nn {

/// How a quantized conv or FC draws its fp32 shadow weights.
enum class WeightInit {
  /// The default: the fp32 layer's usual draw (He normal, fan_out, for convs as in torchvision's
  /// ResNet; torch::nn::Linear's for FCs); at 2..16 bits, when that draw is narrower than one
  /// quantization step, a normal with std one step truncated to [-1, 1] instead.
  kQuantAware,
  /// He normal, fan_out mode, gain sqrt(2): torchvision's ResNet conv init, whatever the bits.
  kHe,
  /// What torch::nn::Conv2d and Linear do: kaiming_uniform_ with a = sqrt(5).
  kTorchDefault,
};

/// "quant_aware", "he" or "torch_default".
std::string to_string(WeightInit init);

/// Parses the names to_string() writes; throws c10::Error listing them otherwise.
WeightInit weight_init_from_string(const std::string& name);

/// Fills `weight` in place (no autograd) for a layer quantized at `bits` (32: fp32).
/// `is_conv` picks the fp32 draw kQuantAware starts from.
void init_weight_(at::Tensor& weight, WeightInit init, int64_t bits, bool is_conv);

/// The standard deviation of the values init_weight_ draws for a weight of `sizes` (analytic:
/// the fp32 draw's std, or for kQuantAware's truncated normal the std after truncation).
double init_std(at::IntArrayRef sizes, WeightInit init, int64_t bits, bool is_conv);

/// The learning-rate multiplier that gives a quantized layer the SGD dynamics of its fp32 twin:
/// (init_std at `bits` / init_std at 32 bits)^2. Behind a BatchNorm, SGD's effective step on a
/// weight is about lr / |w|^2, so a draw c times wider needs c^2 times the lr (and the weight
/// decay divided by c^2) to move alike. 1 for He and for quant_aware at 3..16 bits where the fp32
/// draw is already wide enough; about 20-170 for 2-bit quant_aware ResNet convs.
double matched_lr_multiplier(at::IntArrayRef sizes, WeightInit init, int64_t bits, bool is_conv);

/// Fits trained fp32 weights to the WRPN weight quantizer of each QuantConv2d in `model`
/// (2..16-bit WRPN weights; fixed-point and fp32 convs are left alone): where std(w) is below the
/// quantizer's step 1/(2^(bits-1) - 1), multiplies w by step / std(w) and clamps it to [-1, 1],
/// the spread kQuantAware draws. Without it an fp32 ResNet's weights (std ~0.1) fall almost
/// entirely into the 2-bit zero band |w| < 1/2 and a quantized fine-tune starts from zeros.
/// Valid because a BatchNorm follows every conv of the zoo: in training, batch statistics make
/// the output independent of a conv's weight scale (running statistics adapt as training runs).
/// Returns the factor applied, by module name (layers left alone are not listed).
std::map<std::string, double> fit_weights_to_quantizer_(torch::nn::Module& model);

/// Fraction of `weight`'s elements the `bits`-bit weight quantizer maps to zero (for 32 bits,
/// the fraction of exact zeros). 0 for an empty tensor.
double zero_fraction(const at::Tensor& weight, int64_t bits);

}  // namespace nn
}  // namespace wrpn
