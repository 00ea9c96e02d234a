#pragma once
/// ADaPTION fixed point across a whole model: sets each wrpn::nn layer's fixed-point option
/// from a PrecisionConfig (scheme "fixed" and per-layer Q(m.f) entries).

#include <torch/nn/module.h>

#include "wrpn/precision.h"

namespace wrpn {
namespace nn {

/// For every QuantConv2d / QuantLinear (weight role) and QuantReLU (activation role) in
/// `model`, by module name: config.fixed_point_for(name, role, the layer's bits). Layers whose
/// format is disabled go back to the WRPN quantizer (or fp32). The zoo calls this on every model
/// it builds; call it yourself on a hand-built model. Throws if a format's total bits differ
/// from the layer's bits.
void apply_fixed_point(torch::nn::Module& model, const PrecisionConfig& config);

}  // namespace nn
}  // namespace wrpn
