#pragma once
/// The WRPN activation quantizer as a module: it takes a ReLU's place in a network.

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

#include "wrpn/precision.h"

namespace wrpn {
namespace nn {

/// Options for QuantReLU.
struct QuantReLUOptions {
  /* implicit */ QuantReLUOptions(int64_t bits = 4);

  /// Activation bits: 1..16 (clamp to [0, 1], 2^bits levels), or 32 for a plain ReLU.
  TORCH_ARG(int64_t, bits);
  /// When enabled: relu, then ADaPTION fixed point Q(m.f) (total_bits must equal bits;
  /// frac_bits -1 takes the activation default, default_fixed_point()).
  TORCH_ARG(FixedPointFormat, fixed_point) = {};
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
