#pragma once
/// Integer inference: a trained WRPN model lowered onto integer kernels. WRPN's grids are exact
/// small integers (weights -(2^(k-1)-1)..2^(k-1)-1, activations 0..2^k-1), so a conv between
/// k-bit activations and k-bit weights (k <= 8) is an exact int8 x uint8 -> int32 product; the
/// BatchNorm that follows folds into a per-channel scale and shift, and the next activation
/// quantizer becomes the requantization into the next layer's uint8 codes (Wide Reduced-Precision
/// Networks, arXiv 1709.01134).
///
/// What runs where:
///  - every quantized conv whose input is a WRPN activation of 1..8 bits and whose weights are
///    WRPN weights of 1..8 bits (1: binary, +-mean|w|) runs on an integer engine: oneDNN's int8
///    convolution (kOneDnn, CPU; the requantization, clamp included, fused into it) or im2col +
///    at::_int_mm (kGemm, CPU and CUDA; the requantization in wrpn's own epilogue kernel);
///  - anything else runs in fp32 as the fake-quantized model does: fp32 first and last layers,
///    layers of more than 8 bits, ADaPTION fixed-point layers, and convs that read an fp32
///    value (LayerPlan says which and why);
///  - residual additions and the ReLU after them are done in fp32 on the dequantized values,
///    fused with the next quantizer into one pass; the classifier reads the average-pooled fp32
///    values.
/// The answers are the fake-quantized model's up to fp32 summation order: an activation whose
/// scaled value lies within rounding error of a half step may land on the neighbouring code.

#include <ATen/core/List.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>
#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "wrpn/models/classifier.h"

namespace torch {
namespace nn {
class BatchNorm2dImpl;
}
}  // namespace torch

namespace wrpn {
namespace deploy {

/// The integer engine of the quantized convs.
enum class Engine {
  /// kOneDnn on CPU when this LibTorch has oneDNN, kGemm otherwise (CUDA).
  kAuto,
  /// oneDNN's int8 convolution through LibTorch's dispatcher (onednn::qconv2d_pointwise), the
  /// weights prepacked once; CPU only.
  kOneDnn,
  /// im2col and at::_int_mm (int8 x int8 -> int32; activation codes shifted by -128 and the
  /// shift compensated exactly), then wrpn's epilogue kernel; CPU and CUDA.
  kGemm,
  /// No integer kernels: every layer in fp32, as the fake-quantized model computes (the
  /// baseline, and what a model without integer layers gets).
  kFloat,
};

/// "auto", "onednn", "gemm", "float".
std::string to_string(Engine engine);
/// Parses to_string()'s names; throws c10::Error naming the text and the accepted names.
Engine parse_engine(const std::string& text);
/// Whether `engine` can run on `device` with this LibTorch build.
bool engine_available(Engine engine, const c10::Device& device);

struct DeployOptions {
  TORCH_ARG(Engine, engine) = Engine::kAuto;
  /// Where the deployed model runs (its weights are moved there).
  TORCH_ARG(c10::Device, device) = c10::Device(c10::kCPU);
};

/// BatchNorm in eval mode as y = x * scale + shift per channel: scale = gamma / sqrt(var + eps),
/// shift = beta - mean * scale (+ conv_bias * scale when the conv before it has a bias). fp32
/// [C] on the CPU, computed as LibTorch's eval-mode batch_norm computes them.
struct FoldedBatchNorm {
  torch::Tensor scale;
  torch::Tensor shift;
};
FoldedBatchNorm fold_batch_norm(const torch::nn::BatchNorm2dImpl& bn,
                                const torch::Tensor& conv_bias = {});

/// One integer convolution: uint8 activation codes in, the exact int32 accumulator
/// A = sum(codes * weight_codes) per output, then y = A * scale[o] + shift[o] (fp32) out, either
/// as fp32 (optionally through a ReLU) or requantized into uint8 codes
/// round_half_even(clamp(y, 0, 1) * out_levels). Tensors are NCHW-shaped and channels-last in
/// memory (inputs in another layout are converted). The building block of IntegerModel.
class IntegerConv2d {
 public:
  IntegerConv2d() = default;
  /// weight_codes: int8 [O, I / groups, kh, kw] of magnitude <= 127; scale, shift: float [O]
  /// (a negative scale is allowed: the weight codes of that channel are negated inside).
  /// kGemm takes groups 1 only. Throws c10::Error naming a bad argument.
  IntegerConv2d(const torch::Tensor& weight_codes, const torch::Tensor& scale,
                const torch::Tensor& shift, std::vector<int64_t> stride,
                std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups,
                const DeployOptions& options);

  /// codes: uint8 [N, I, H, W]. Returns uint8 codes [N, O, Ho, Wo] of out_levels (1..255).
  torch::Tensor forward_codes(const torch::Tensor& codes, int64_t out_levels) const;
  /// codes: uint8 [N, I, H, W]. Returns y (or relu(y)) as float [N, O, Ho, Wo].
  torch::Tensor forward_float(const torch::Tensor& codes, bool relu = false) const;

  Engine engine() const { return engine_; }
  int64_t out_channels() const { return out_channels_; }
  int64_t in_channels() const { return in_channels_; }
  /// Bytes held: one a weight, plus the scale and shift.
  int64_t weight_bytes() const;

 private:
  torch::Tensor gemm_accumulate(const torch::Tensor& codes) const;
  /// kOneDnn: onednn::qconv2d_pointwise on the codes with these per-channel scale and shift.
  torch::Tensor run_onednn(const torch::Tensor& codes, const torch::Tensor& scale,
                           const torch::Tensor& shift, const c10::IValue& out_dtype,
                           const char* attr, c10::List<std::optional<c10::Scalar>> scalars) const;
  std::vector<int64_t> out_size(const torch::Tensor& codes) const;
  void check_input(const torch::Tensor& codes) const;
  /// kOneDnn: scale and shift times `levels` (cached per level count).
  const std::pair<torch::Tensor, torch::Tensor>& scaled_for(int64_t levels) const;

  Engine engine_ = Engine::kFloat;
  c10::Device device_ = c10::Device(c10::kCPU);
  int64_t out_channels_ = 0, in_channels_ = 0, kh_ = 1, kw_ = 1, groups_ = 1;
  std::vector<int64_t> stride_, padding_, dilation_;
  torch::Tensor scale_abs_, shift_, signed_scale_;
  // kOneDnn: the prepacked weight and its per-channel zero points (all 0).
  torch::Tensor packed_, zero_points_;
  // kGemm: int8 [O_pad, K_pad] rows in (kh, kw, I) order, and 128 * sum of each row.
  torch::Tensor w_mat_, compensation_;
  struct ScaledCache {
    std::mutex mutex;
    std::map<int64_t, std::pair<torch::Tensor, torch::Tensor>> by_levels;
  };
  std::shared_ptr<ScaledCache> cache_ = std::make_shared<ScaledCache>();
};

/// How one conv or FC of the source model is run.
struct LayerPlan {
  /// Module name in the source model ("layer2.0.conv1", "fc").
  std::string name;
  /// True: integer kernels; false: fp32.
  bool integer = false;
  /// Why a layer runs in fp32 ("fp32 weights", "16-bit weights (integer kernels take 1..8)",
  /// "reads an fp32 input", ...); empty for integer layers.
  std::string reason;
  int64_t weight_bits = 32;
  int64_t input_bits = 32;
};

/// An inference-only model lowered from a trained zoo ResNet. Copies share the prepacked
/// weights; forward() may be called from several threads at once.
class IntegerModel {
 public:
  IntegerModel();

  /// Logits [N, num_classes] of images [N, in_channels, H, W] (float32, on the model's device).
  torch::Tensor forward(const torch::Tensor& images) const;

  /// forward() that also returns the fp32 value after the stem ("stem") and after each block
  /// ("layer1.0", ...), to find where a deployed model departs from its source.
  torch::Tensor forward_traced(const torch::Tensor& images,
                               std::vector<std::pair<std::string, torch::Tensor>>* trace) const;

  /// Engine in use (kAuto resolved).
  Engine engine() const;
  c10::Device device() const;
  const models::ModelSpec& spec() const;
  /// One entry per conv and FC, in forward order.
  const std::vector<LayerPlan>& layers() const;
  int64_t integer_layers() const;
  int64_t float_layers() const;
  /// Bytes of the deployed weights: int8 codes (one byte a weight) plus per-channel scales and
  /// shifts for the integer layers, fp32 weights and folded BatchNorms for the others.
  int64_t weight_bytes() const;
  /// Bytes of the source model's parameters and buffers as fp32 (what an fp32 deployment holds).
  int64_t fp32_weight_bytes() const;
  /// A few lines for a program to print: engine, integer and fp32 layers with reasons, bytes.
  std::string summary() const;

  struct Impl;

 private:
  explicit IntegerModel(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
  friend IntegerModel deploy(const models::ClassifierImpl& model, const DeployOptions& options);
};

/// Lowers a trained zoo ResNet (create_model(), load_checkpoint() or models::import_packed())
/// onto integer kernels; BatchNorm uses its running statistics whatever the model's mode.
/// Throws c10::Error for a model that is not a zoo ResNet, or an engine that cannot run on the
/// device.
IntegerModel deploy(const models::ClassifierImpl& model, const DeployOptions& options = {});

/// models::import_packed(path), then deploy().
IntegerModel deploy_packed(const std::string& path, const DeployOptions& options = {});

}  // namespace deploy
}  // namespace wrpn
