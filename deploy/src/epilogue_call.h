#pragma once
// Tensor-level entry to the integer-inference epilogue kernel (wrpn/kernels/epilogue.h):
// checks and allocates, then runs the CPU or CUDA kernel.

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "wrpn/deploy/integer_model.h"

namespace wrpn {
namespace deploy {

/// One epilogue pass over NCHW-shaped (channels-last) or [rows, C] tensors of equal sizes.
struct EpilogueCall {
  /// int32, float or uint8 codes (read as code / input_levels).
  at::Tensor input;
  int64_t input_levels = 0;
  /// Per-channel y = input * scale + shift when both are defined.
  at::Tensor scale, shift;
  /// y += residual: float, or uint8 codes read as code / residual_levels.
  at::Tensor residual;
  int64_t residual_levels = 0;
  /// Outputs: the fp32 value (relu'd when `relu`) and/or codes of `code_levels` (0: none).
  bool want_value = false;
  bool relu = false;
  int64_t code_levels = 0;
};

struct EpilogueResult {
  at::Tensor value;
  at::Tensor codes;
};

EpilogueResult run_epilogue(const EpilogueCall& call);

/// kAuto resolved for `device` (throws for an engine the device cannot run).
Engine resolve_engine(Engine engine, const c10::Device& device);

}  // namespace deploy
}  // namespace wrpn
