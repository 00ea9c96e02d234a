#pragma once
/// Saved activations as packed k-bit codes (spec.md, "Packed saved activations"): a quantized
/// conv or FC whose input is a WRPN activation quantizer's output (k = 1..16 bits) or a
/// fixed-point one (Q(m.f) with m + f <= 16) saves for its backward the integer codes of that
/// input, k bits an element, instead of the float tensor; the backward rebuilds the input bit
/// for bit, so every gradient is unchanged. QuantConv2d and QuantLinear do this by default
/// (options pack_saved_input, or set_pack_saved_inputs() on a whole model).

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "wrpn/nn/quantizer.h"

namespace wrpn {
namespace nn {

/// A tensor of a quantizer's output as packed codes: element i in bits [i*k, (i+1)*k) of a
/// little-endian bit stream (the packed export's order), code = round(x * scale), two's
/// complement when signed (fixed point); x = code / scale.
struct PackedCodes {
  torch::Tensor bytes;  ///< uint8, ceil(numel * bits / 8) bytes, on the tensor's device
  int64_t bits = 0;
  double scale = 1.0;
  bool is_signed = false;
  std::vector<int64_t> sizes;
  at::ScalarType dtype = at::kFloat;

  int64_t numel() const;
};

/// Whether `q`'s outputs can be saved as codes: WRPN at 1..16 bits, fixed point up to 16 bits.
/// In the weight role: WRPN at 2..16 bits (signed codes, s = 2^(k-1) - 1), fixed point up to 16.
bool can_pack(const Quantizer& q, LayerRole role = LayerRole::kActivation);

/// The codes of `x`, an output of `q` (any shape, float/double/half/bfloat16, CPU or CUDA).
/// nullopt when `q` cannot pack or, on the CPU, when some element of `x` is not exactly on
/// q's grid (checked in the same pass): such a tensor is saved as it is. On CUDA the grid is
/// not checked: pack only a quantizer's own output.
/// `role` kWeight packs a weight quantizer's output (the convs save their quantized weight so).
std::optional<PackedCodes> pack_codes(const torch::Tensor& x, const Quantizer& q,
                                      LayerRole role = LayerRole::kActivation);

/// The tensor `p` was packed from, bit for bit (contiguous).
torch::Tensor unpack_codes(const PackedCodes& p);

/// Turns packing of saved inputs on or off in every QuantConv2d and QuantLinear of `module` (and
/// the 1-bit masks of the ReLUs a model builder marked).
void set_pack_saved_inputs(torch::nn::Module& module, bool on);

/// Turns QuantConv2dOptions::recompute_bn_input on or off in every QuantConv2d of `module`.
void set_recompute_bn_inputs(torch::nn::Module& module, bool on);

}  // namespace nn
}  // namespace wrpn
