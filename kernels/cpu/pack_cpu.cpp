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
template <typename T>
bool chunk_codes(const T* x, int m, acc_t<T> s, int32_t lo, int32_t hi, uint32_t* c,
                 uint32_t mask) {
  using A = acc_t<T>;
  A r[kChunk];
  for (int j = 0; j < m; ++j) r[j] = (static_cast<A>(x[j]) * s + kRoundMagic<A>)-kRoundMagic<A>;
  int bad = 0;
  for (int j = 0; j < m; ++j) {
    // NaN fails the range test; the rebuilt value must be x bit for bit.
    const bool in_range = r[j] >= static_cast<A>(lo) && r[j] <= static_cast<A>(hi);
    const A rr = in_range ? r[j] : A(0);
    const T back = static_cast<T>(rr / s);
    bad |= static_cast<int>(!in_range) | static_cast<int>(bits_of(back) != bits_of(x[j]));
    c[j] = static_cast<uint32_t>(static_cast<int32_t>(rr)) & mask;
  }
  for (int j = m; j < kChunk; ++j) c[j] = 0;
  return bad == 0;
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
        ok = chunk_codes(px + i0, m, s, lo, hi, c, mask);
        for (int b = 0; b < (m + 7) / 8; ++b) {
          const int64_t at = (i0 / 8 + b) * k;
          pack_block8(c + 8 * b, k, out + at, static_cast<int>(std::min<int64_t>(k, total - at)));
        }
      }
      if (!ok) exact.store(false, std::memory_order_relaxed);
    });
  });
  return exact.load();
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
            for (int b = 0; b < (m + 7) / 8; ++b) {
              const int64_t at = (i0 / 8 + b) * k;
              unpack_block8(in + at, k, static_cast<int>(std::min<int64_t>(k, total - at)),
                            c + 8 * b);
            }
            for (int j = 0; j < m; ++j) {
              po[i0 + j] = static_cast<scalar_t>(static_cast<A>(code_value(c[j], f)) / s);
            }
          }
        });
      });
}

}  // namespace wrpn::kernels
