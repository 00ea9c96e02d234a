// The CPU code-packing kernels. Elements go in chunks of 64 through branch-free loops the
// compiler vectorises (scale, round, rebuild, compare), then 8 at a time into k bytes.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>

#include "wrpn/kernels/pack_kernels.h"

namespace wrpn::kernels {
namespace {

/// fp64 for double, fp32 for the others (as the quantizers compute).
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;
/// The unsigned integer of T's bits.
template <typename T>
using bits_t = std::conditional_t<sizeof(T) == 8, uint64_t,
                                  std::conditional_t<sizeof(T) == 4, uint32_t, uint16_t>>;

constexpr int kChunk = 64;             // elements per chunk: 8 blocks of 8
constexpr int64_t kGrainChunks = 256;  // chunks per parallel task
/// Adding and subtracting 1.5 * 2^23 (2^52) rounds |y| < 2^22 (2^51) half to even.
template <typename A>
constexpr A kRoundMagic = std::is_same_v<A, double> ? A(6755399441055744.0) : A(12582912.0f);

template <typename T>
bits_t<T> bits_of(T v) {
  bits_t<T> b;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}

/// One chunk of m <= 64 elements: codes into c, whether every element was on the grid.
/// Branch-free: an out-of-range or NaN value selects a bound, whose rebuilt value then differs.
template <typename T>
bool chunk_codes(const T* x, int m, acc_t<T> s, int32_t lo, int32_t hi, uint32_t* c, uint32_t mask,
                 bool is_signed) {
  using A = acc_t<T>;
  using B = bits_t<T>;
  // Signed formats keep their most negative code, unused by the symmetric grids, for -0.0 (a
  // weight quantizer gives -0.0 to small negative weights).
  const int32_t vlo = is_signed ? lo + 1 : lo;
  const A flo = static_cast<A>(vlo), fhi = static_cast<A>(hi);
  const B sign = B{1} << (8 * sizeof(T) - 1);
  B bad = 0;
  for (int j = 0; j < m; ++j) {
    const A v = static_cast<A>(x[j]);
    A r = (v * s + kRoundMagic<A>)-kRoundMagic<A>;
    r = r > flo ? r : flo;  // NaN selects the bound
    r = r < fhi ? r : fhi;
    const T back = static_cast<T>(r / s);
    B bb, bx;
    std::memcpy(&bb, &back, sizeof(T));
    std::memcpy(&bx, &x[j], sizeof(T));
    const bool neg_zero = is_signed && bx == sign;
    bad |= neg_zero ? B{0} : (bb ^ bx);
    const int32_t code = neg_zero ? lo : static_cast<int32_t>(r);
    c[j] = static_cast<uint32_t>(code) & mask;
  }
  for (int j = m; j < kChunk; ++j) c[j] = 0;
  return bad == 0;
}

/// k = 1, 2, 4: 8 / k codes a byte (codes past m are 0 in the chunk).
template <int K>
void pack_small(const uint32_t* c, int m, uint8_t* out) {
  constexpr int per = 8 / K;
  const int bytes = (m + per - 1) / per;
  for (int b = 0; b < bytes; ++b) {
    uint32_t v = 0;
    for (int j = 0; j < per; ++j) v |= c[b * per + j] << (j * K);
    out[b] = static_cast<uint8_t>(v);
  }
}

/// Packs m codes (a chunk, m a multiple of 8 except at the end) at k bits into out, which holds
/// `nbytes` bytes from the chunk's first: loops the compiler vectorises for k = 1, 2, 4, 8, 16.
void pack_chunk(const uint32_t* c, int m, int k, uint8_t* out, int64_t nbytes) {
  if (k == 1) {
    pack_small<1>(c, m, out);
  } else if (k == 2) {
    pack_small<2>(c, m, out);
  } else if (k == 4) {
    pack_small<4>(c, m, out);
  } else if (k == 8) {
    for (int j = 0; j < m; ++j) out[j] = static_cast<uint8_t>(c[j]);
  } else if (k == 16) {
    for (int j = 0; j < m; ++j) {
      out[2 * j] = static_cast<uint8_t>(c[j]);
      out[2 * j + 1] = static_cast<uint8_t>(c[j] >> 8);
    }
  } else {
    for (int b = 0; b < (m + 7) / 8; ++b) {
      const int64_t at = int64_t{b} * k;
      pack_block8(c + 8 * b, k, out + at, static_cast<int>(std::min<int64_t>(k, nbytes - at)));
    }
  }
}

template <int K>
void unpack_small(const uint8_t* in, int m, uint32_t* c) {
  constexpr int per = 8 / K;
  constexpr uint32_t mask = (1u << K) - 1;
  for (int j = 0; j < m; ++j) c[j] = (static_cast<uint32_t>(in[j / per]) >> ((j % per) * K)) & mask;
}

/// The inverse: m codes from the chunk's bytes.
void unpack_chunk(const uint8_t* in, int m, int k, uint32_t* c, int64_t nbytes) {
  if (k == 1) {
    unpack_small<1>(in, m, c);
  } else if (k == 2) {
    unpack_small<2>(in, m, c);
  } else if (k == 4) {
    unpack_small<4>(in, m, c);
  } else if (k == 8) {
    for (int j = 0; j < m; ++j) c[j] = in[j];
  } else if (k == 16) {
    for (int j = 0; j < m; ++j) c[j] = in[2 * j] | (static_cast<uint32_t>(in[2 * j + 1]) << 8);
  } else {
    for (int b = 0; b < (m + 7) / 8; ++b) {
      const int64_t at = int64_t{b} * k;
      unpack_block8(in + at, k, static_cast<int>(std::min<int64_t>(k, nbytes - at)), c + 8 * b);
    }
  }
}

}  // namespace

bool pack_codes_cpu(const at::Tensor& x, const CodeFormat& f, uint8_t* out) {
  const int64_t n = x.numel();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int64_t total = packed_bytes(n, f.bits);
  const int32_t lo = f.is_signed ? -(1 << (f.bits - 1)) : 0;
  const int32_t hi = f.is_signed ? (1 << (f.bits - 1)) - 1 : (1 << f.bits) - 1;
  const uint32_t mask = (uint32_t{1} << f.bits) - 1;
  const int k = f.bits;
  std::atomic<bool> exact{true};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pack_codes_cpu", [&] {
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const auto s = static_cast<acc_t<scalar_t>>(f.scale);
    at::parallel_for(0, chunks, kGrainChunks, [&](int64_t c0, int64_t c1) {
      bool ok = true;
      uint32_t c[kChunk];
      for (int64_t ch = c0; ch < c1 && ok; ++ch) {
        const int64_t i0 = ch * kChunk;
        const int m = static_cast<int>(std::min<int64_t>(kChunk, n - i0));
        ok = chunk_codes(px + i0, m, s, lo, hi, c, mask, f.is_signed);
        const int64_t at = i0 / 8 * k;
        pack_chunk(c, m, k, out + at, total - at);
      }
      if (!ok) exact.store(false, std::memory_order_relaxed);
    });
  });
  return exact.load();
}

void pack_positive_cpu(const at::Tensor& x, uint8_t* out) {
  const int64_t n = x.numel();
  const int64_t bytes = (n + 7) / 8;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "pack_positive_cpu", [&] {
        const scalar_t* px = x.const_data_ptr<scalar_t>();
        at::parallel_for(0, bytes, kGrainChunks * 8, [&](int64_t b0, int64_t b1) {
          const int64_t full_end = std::min(b1, n / 8);
          for (int64_t b = b0; b < full_end; ++b) {
            const scalar_t* p = px + b * 8;
            uint32_t v = 0;
            for (int j = 0; j < 8; ++j)
              v |= static_cast<uint32_t>(static_cast<float>(p[j]) > 0.0f) << j;
            out[b] = static_cast<uint8_t>(v);
          }
          for (int64_t b = std::max(b0, full_end); b < b1; ++b) {
            uint32_t v = 0;
            for (int64_t i = b * 8; i < std::min(n, b * 8 + 8); ++i) {
              v |= static_cast<uint32_t>(static_cast<float>(px[i]) > 0.0f) << (i - b * 8);
            }
            out[b] = static_cast<uint8_t>(v);
          }
        });
      });
}

void unpack_codes_cpu(const uint8_t* in, const CodeFormat& f, const at::Tensor& out) {
  const int64_t n = out.numel();
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const int64_t total = packed_bytes(n, f.bits);
  const int k = f.bits;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, out.scalar_type(), "unpack_codes_cpu", [&] {
        using A = acc_t<scalar_t>;
        scalar_t* po = out.mutable_data_ptr<scalar_t>();
        const A s = static_cast<A>(f.scale);
        at::parallel_for(0, chunks, kGrainChunks, [&](int64_t c0, int64_t c1) {
          uint32_t c[kChunk];
          for (int64_t ch = c0; ch < c1; ++ch) {
            const int64_t i0 = ch * kChunk;
            const int m = static_cast<int>(std::min<int64_t>(kChunk, n - i0));
            const int64_t at = i0 / 8 * k;
            unpack_chunk(in + at, m, k, c, total - at);
            if (f.is_signed) {
              const int32_t lo = -(1 << (f.bits - 1));  // -0.0 (see chunk_codes)
              for (int j = 0; j < m; ++j) {
                const int32_t v = code_value(c[j], f);
                po[i0 + j] = static_cast<scalar_t>(v == lo ? -A(0) : static_cast<A>(v) / s);
              }
            } else {
              for (int j = 0; j < m; ++j) {
                po[i0 + j] = static_cast<scalar_t>(static_cast<A>(static_cast<int32_t>(c[j])) / s);
              }
            }
          }
        });
      });
}

}  // namespace wrpn::kernels
