// The CPU integer-inference epilogue, compiled once per CPU_CAPABILITY. Rows go in chunks of a
// few thousand elements through one branch-free loop per step (convert, affine, residual, value,
// codes) over a stack buffer, so each loop vectorises; the per-element arithmetic is the shared
// one of wrpn/kernels/epilogue.h.

#include <ATen/Parallel.h>

#include <algorithm>

#include "wrpn/kernels/epilogue.h"

namespace wrpn::cpu::CPU_CAPABILITY {
namespace {

using kernels::EpilogueArgs;

constexpr int64_t kChunk = 4096;  // elements per buffer (16 KiB of floats)

template <typename In>
void convert(const In* __restrict in, float levels, float* __restrict y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = kernels::epilogue_input(in[j], levels);
}

void affine_row(float* __restrict y, const float* __restrict scale, const float* __restrict shift,
                int64_t c) {
  for (int64_t j = 0; j < c; ++j) y[j] = kernels::epilogue_affine(y[j], scale[j], shift[j]);
}

void add_values(float* __restrict y, const float* __restrict r, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = y[j] + r[j];
}

void add_codes(float* __restrict y, const uint8_t* __restrict r, float levels, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] = y[j] + static_cast<float>(r[j]) / levels;
}

void store_values(const float* __restrict y, float* __restrict out, bool relu, int64_t n) {
  if (relu) {
    for (int64_t j = 0; j < n; ++j) out[j] = kernels::epilogue_relu(y[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) out[j] = y[j];
  }
}

void store_codes(const float* __restrict y, uint8_t* __restrict out, float levels, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = kernels::epilogue_code(y[j], levels);
}

}  // namespace

void epilogue(const EpilogueArgs& p) {
  const int64_t C = p.channels;
  const bool affine = p.scale != nullptr && p.shift != nullptr;
  // Whole rows per chunk (one row when a row alone exceeds the buffer: then it is split).
  const int64_t rows_per_chunk = std::max<int64_t>(1, kChunk / C);
  const int64_t chunks = (p.rows + rows_per_chunk - 1) / rows_per_chunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    alignas(64) float y[kChunk];
    for (int64_t ch = c0; ch < c1; ++ch) {
      const int64_t r0 = ch * rows_per_chunk, r1 = std::min(p.rows, r0 + rows_per_chunk);
      const int64_t begin = r0 * C, end = r1 * C;
      for (int64_t b = begin; b < end; b += kChunk) {
        const int64_t n = std::min(kChunk, end - b);
        switch (p.input_type) {
          case EpilogueArgs::Input::kInt32:
            convert(static_cast<const int32_t*>(p.input) + b, p.input_levels, y, n);
            break;
          case EpilogueArgs::Input::kCodes:
            convert(static_cast<const uint8_t*>(p.input) + b, p.input_levels, y, n);
            break;
          case EpilogueArgs::Input::kFloat:
            convert(static_cast<const float*>(p.input) + b, p.input_levels, y, n);
            break;
        }
        if (affine) {
          // b is a multiple of C unless one row spans several buffers.
          for (int64_t j = 0; j < n;) {
            const int64_t c = (b + j) % C;
            const int64_t len = std::min(C - c, n - j);
            affine_row(y + j, p.scale + c, p.shift + c, len);
            j += len;
          }
        }
        if (p.residual) {
          if (p.residual_is_codes) {
            add_codes(y, static_cast<const uint8_t*>(p.residual) + b, p.residual_levels, n);
          } else {
            add_values(y, static_cast<const float*>(p.residual) + b, n);
          }
        }
        if (p.value_out) store_values(y, p.value_out + b, p.relu, n);
        if (p.codes_out) store_codes(y, p.codes_out + b, p.code_levels, n);
      }
    }
  });
}

}  // namespace wrpn::cpu::CPU_CAPABILITY
