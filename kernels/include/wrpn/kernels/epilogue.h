#pragma once
// The integer-inference epilogue: what follows a convolution's accumulator in a deployed WRPN
// model (BatchNorm folded into a per-channel scale and shift, the residual addition, the ReLU and
// the next activation quantizer's codes), one pass over a [rows, channels] tensor whose channel
// index is innermost (NHWC). The per-element math lives here once for the CPU and CUDA kernels.

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define WRPN_EPI_HD __host__ __device__ __forceinline__
#else
#define WRPN_EPI_HD inline
#endif

namespace wrpn::kernels {

/// Pointers and sizes of one epilogue call (device pointers for the CUDA kernel). Every tensor
/// is dense [rows, channels], channel innermost.
struct EpilogueArgs {
  int64_t rows = 0;
  int64_t channels = 0;
  /// The accumulator: int32 (an integer GEMM's exact sums), float (a conv's float output) or
  /// uint8 codes, read as code / input_levels.
  enum class Input : uint8_t { kFloat, kInt32, kCodes };
  const void* input = nullptr;
  Input input_type = Input::kFloat;
  float input_levels = 1.0f;
  /// y = input * scale[c] + shift[c] (one fused multiply-add) when both are set, else y = input.
  const float* scale = nullptr;
  const float* shift = nullptr;
  /// y += residual: float values, or uint8 codes read as code / residual_levels.
  const void* residual = nullptr;
  bool residual_is_codes = false;
  float residual_levels = 1.0f;
  /// value_out = relu ? relu(y) : y (nullable).
  float* value_out = nullptr;
  bool relu = false;
  /// codes_out = round_half_even(clamp(y, 0, 1) * code_levels), NaN -> 0 (nullable).
  uint8_t* codes_out = nullptr;
  float code_levels = 1.0f;
};

/// Adding and subtracting 1.5 * 2^23 rounds 0 <= v < 2^22 half to even (no reassociation: the
/// library is never built with -ffast-math).
constexpr float kEpilogueRoundMagic = 12582912.0f;

/// y for element (row, c) before the residual: the scaled accumulator.
WRPN_EPI_HD float epilogue_affine(float a, float scale, float shift) {
  return fmaf(a, scale, shift);
}

/// The activation quantizer's code of y: round(clamp(y, 0, 1) * levels), NaN -> 0.
WRPN_EPI_HD uint8_t epilogue_code(float y, float levels) {
  const float c = y > 0.0f ? (y < 1.0f ? y : 1.0f) : 0.0f;
  return static_cast<uint8_t>((c * levels + kEpilogueRoundMagic) - kEpilogueRoundMagic);
}

/// The input element as a float: int32 and float as they are, codes divided by their levels
/// (a true division, as the activation quantizer divides).
WRPN_EPI_HD float epilogue_input(float a, float) { return a; }
WRPN_EPI_HD float epilogue_input(int32_t a, float) { return static_cast<float>(a); }
WRPN_EPI_HD float epilogue_input(uint8_t a, float levels) { return static_cast<float>(a) / levels; }

/// ReLU that keeps NaN (as torch::relu does).
WRPN_EPI_HD float epilogue_relu(float y) { return y < 0.0f ? 0.0f : y; }

/// One element: every step of EpilogueArgs for input value `a` at flat index i, channel c.
template <bool kAffine, bool kResidual, bool kResidualCodes>
WRPN_EPI_HD void epilogue_element(const EpilogueArgs& p, float a, int64_t i, int64_t c) {
  float y = a;
  if constexpr (kAffine) y = epilogue_affine(a, p.scale[c], p.shift[c]);
  if constexpr (kResidual) {
    if constexpr (kResidualCodes) {
      y = y + static_cast<float>(static_cast<const uint8_t*>(p.residual)[i]) / p.residual_levels;
    } else {
      y = y + static_cast<const float*>(p.residual)[i];
    }
  }
  if (p.value_out) p.value_out[i] = p.relu ? epilogue_relu(y) : y;
  if (p.codes_out) p.codes_out[i] = epilogue_code(y, p.code_levels);
}

/// Runs the epilogue on the CPU (the build for this CPU's instruction set, parallel over rows).
void epilogue_cpu(const EpilogueArgs& args);
#ifdef WRPN_WITH_CUDA
/// The same on the current CUDA stream (device pointers).
void epilogue_cuda(const EpilogueArgs& args);
#endif

}  // namespace wrpn::kernels
