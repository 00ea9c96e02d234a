#pragma once
/// The WRPN activation quantizer as a module: it takes a ReLU's place in a network.

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

#include "wrpn/nn/quantizer.h"

namespace wrpn {
namespace nn {

/// Options for QuantReLU.
struct QuantReLUOptions {
  /// The WRPN quantizer at `bits`: 1..16 (clamp to [0, 1], 2^bits levels), or 32 for a ReLU.
  /* implicit */ QuantReLUOptions(int64_t bits = 4);
  /* implicit */ QuantReLUOptions(Quantizer quantizer);

  /// The activation quantizer: WRPN k-bit, full precision (plain ReLU), or relu followed by
  /// ADaPTION fixed point. reset() resolves a default fixed-point split.
  TORCH_ARG(Quantizer, quantizer);
  /// Full precision only: save for the backward a 1-bit mask of where the output is positive
  /// instead of the float output (the same gradient; NaN inputs get 0 instead of grad). For a
  /// ReLU whose output no consumer saves (it feeds activation quantizers and convs that save
  /// codes): a model builder sets it, off by default.
  TORCH_ARG(bool, save_mask) = false;
  /// Whether save_mask takes effect (wrpn::nn::set_pack_saved_inputs switches it with the convs).
  TORCH_ARG(bool, pack_saved) = true;

 public:  // (TORCH_ARG leaves the section private)
  /// Shorthands for the quantizer's fields: the bits, and the fixed-point format (its
  /// total_bits must equal the bits; frac_bits -1 takes the activation default).
  QuantReLUOptions& bits(int64_t bits) {
    quantizer_.bits = bits;
    return *this;
  }
  int64_t bits() const { return quantizer_.bits; }
  QuantReLUOptions& fixed_point(const FixedPointFormat& format) {
    quantizer_.fixed_point = format;
    return *this;
  }
  const FixedPointFormat& fixed_point() const { return quantizer_.fixed_point; }
};

/// wrpn::quantize_activation(x, bits) (straight-through gradient inside [0, 1]), or
/// torch::relu at 32 bits. No parameters or buffers.
class QuantReLUImpl : public torch::nn::Cloneable<QuantReLUImpl> {
 public:
  explicit QuantReLUImpl(QuantReLUOptions options = {});

  /// Checks the bits.
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  torch::Tensor forward(const torch::Tensor& x);

  QuantReLUOptions options;
};

/// Holder of a QuantReLUImpl.
TORCH_MODULE(QuantReLU);

}  // namespace nn
}  // namespace wrpn
