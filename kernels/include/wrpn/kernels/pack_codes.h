#pragma once
// Packing of k-bit integer codes (k = 1..16), shared by the CPU and CUDA kernels: element i
// occupies bits [i*k, (i+1)*k) of a little-endian bit stream, so every 8 elements fill exactly
// k bytes and one block of 8 is packed or unpacked independently of the others.

#include <cstdint>

#if defined(__CUDACC__)
#define WRPN_PACK_HD __host__ __device__ __forceinline__
#else
#define WRPN_PACK_HD inline
#endif

namespace wrpn::kernels {

/// Bytes of n elements packed at k bits.
WRPN_PACK_HD constexpr int64_t packed_bytes(int64_t n, int64_t k) { return (n * k + 7) / 8; }

/// Writes the k bytes holding codes c[0..7] (each < 2^k; unused ones 0). `nbytes` (<= k) of them
/// are stored: fewer for the last block of a stream.
WRPN_PACK_HD void pack_block8(const uint32_t* c, int k, uint8_t* out, int nbytes) {
  // 8 codes of up to 16 bits: 128 bits, in two 64-bit halves.
  uint64_t lo = 0, hi = 0;
  for (int j = 0; j < 8; ++j) {
    const int at = j * k;
    const uint64_t v = c[j];
    if (at < 64) {
      lo |= v << at;
      if (at + k > 64) hi |= v >> (64 - at);
    } else {
      hi |= v << (at - 64);
    }
  }
  for (int b = 0; b < nbytes; ++b) {
    out[b] = static_cast<uint8_t>(b < 8 ? (lo >> (8 * b)) : (hi >> (8 * (b - 8))));
  }
}

/// Reads codes c[0..7] from the `nbytes` bytes of a block (missing bytes read as 0).
WRPN_PACK_HD void unpack_block8(const uint8_t* in, int k, int nbytes, uint32_t* c) {
  uint64_t lo = 0, hi = 0;
  for (int b = 0; b < nbytes; ++b) {
    if (b < 8) {
      lo |= static_cast<uint64_t>(in[b]) << (8 * b);
    } else {
      hi |= static_cast<uint64_t>(in[b]) << (8 * (b - 8));
    }
  }
  const uint64_t mask = (uint64_t{1} << k) - 1;
  for (int j = 0; j < 8; ++j) {
    const int at = j * k;
    uint64_t v;
    if (at < 64) {
      v = lo >> at;
      if (at + k > 64) v |= hi << (64 - at);
    } else {
      v = hi >> (at - 64);
    }
    c[j] = static_cast<uint32_t>(v & mask);
  }
}

/// How a quantizer's output maps to its integer code: code = round(x * scale), stored in `bits`
/// bits (two's complement when `is_signed`); x = code / scale, the true division. A signed
/// format's most negative code (outside its symmetric grid) stands for -0.0.
struct CodeFormat {
  int bits = 0;
  float scale = 1.0f;
  bool is_signed = false;
};

/// The signed value of a stored code.
WRPN_PACK_HD int32_t code_value(uint32_t stored, const CodeFormat& f) {
  if (!f.is_signed) return static_cast<int32_t>(stored);
  const uint32_t sign = uint32_t{1} << (f.bits - 1);
  return static_cast<int32_t>(stored ^ sign) - static_cast<int32_t>(sign);
}

/// The stored bits of a signed code value.
WRPN_PACK_HD uint32_t stored_code(int32_t value, const CodeFormat& f) {
  return static_cast<uint32_t>(value) & ((uint32_t{1} << f.bits) - 1);
}

}  // namespace wrpn::kernels
