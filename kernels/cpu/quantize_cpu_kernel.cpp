// Fused CPU quantizer kernels, compiled once per CPU_CAPABILITY (see cmake/WrpnCpuKernels.cmake).
// One pass per direction: the forward reads x once and writes q and the packed mask; the backward
// reads grad and the mask once and writes the gradient.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstring>
#include <type_traits>

#include "wrpn/kernels/quant_math.h"
#include "wrpn/kernels/quantize_cpu.h"

// CPU_CAPABILITY names this build's namespace: wrpn::cpu::AVX2::kKernels etc. (quantize_cpu.h).
namespace wrpn::cpu::CPU_CAPABILITY {
namespace {

using kernels::BinaryOp;
using kernels::FakeQuantOp;
using kernels::kMaskBits;
using kernels::QuantParams;
using kernels::ScalarMath;
using kernels::StochasticQuantOp;
using Vec = at::vec::Vectorized<float>;
using VecD = at::vec::Vectorized<double>;

// Work is split in units of 64 elements (8 mask bytes), so threads never share a mask byte
// and every vector width (8, 16, 32 lanes) covers whole mask bytes.
constexpr int64_t kUnit = 64;
constexpr int64_t kGrainUnits = 1024;  // 64K elements per task

// Software prefetch 2 KiB ahead on the loads and (for write) the stores of the vector loops. The
// forward does enough arithmetic per byte that the out-of-order window alone keeps too few misses
// in flight, and every store stream pays read-for-ownership misses; with a cold cache (4M and 16M
// elements, one thread) this took the forward from about 0.7x of a copy's speed to above it,
// and the backward from 1.0x to about 1.1x.
constexpr uintptr_t kPrefetchBytes = 2048;

template <typename T>
inline void prefetch_ahead(const T* p) {
  // Prefetches never fault, so running past the end of the buffer is harmless.
  __builtin_prefetch(
      reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) + kPrefetchBytes));
}

template <typename T>
inline void prefetch_ahead_for_write(T* p) {
  __builtin_prefetch(reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) + kPrefetchBytes), 1);
}

#if defined(CPU_CAPABILITY_AVX512)
/// A comparison result held as bits (AVX-512 mask register contents), lane i in bit i.
/// at::vec's comparisons return all-ones vector lanes that blendv turns back into a mask; on
/// AVX-512 that round trip (vpmovm2d, vpcmpeqd) made the forward about 4x slower than the
/// division-bound loop, so the AVX-512 policy keeps comparisons in mask registers.
struct LaneMask {
  uint32_t bits;
};

template <int kPredicate>
inline uint32_t compare(const Vec& a, const Vec& b) {
  return _mm512_cmp_ps_mask(a, b, kPredicate);
}
template <int kPredicate>
inline uint32_t compare(const VecD& a, const VecD& b) {
  return _mm512_cmp_pd_mask(a, b, kPredicate);
}
/// Lane i from b where bit i of k is set, else from a.
inline Vec select(uint32_t k, const Vec& a, const Vec& b) {
  return _mm512_mask_blend_ps(static_cast<__mmask16>(k), a, b);
}
inline VecD select(uint32_t k, const VecD& a, const VecD& b) {
  return _mm512_mask_blend_pd(static_cast<__mmask8>(k), a, b);
}
#endif

/// Vector policy for the shared templates in kernels/include/wrpn/kernels/quant_math.h.
template <typename VT>
struct VecMath {
  static VT clamp(VT x, VT lo, VT hi) {
    // min(hi, max(lo, x)) on every build: max and min return x when it is NaN, and x when it
    // equals the bound (so -0 stays -0), exactly like ScalarMath::clamp.
    return at::vec::clamp(x, lo, hi);
  }
  static VT round_even(VT x) { return x.round(); }
  static VT floor(VT x) { return x.floor(); }
  static VT add_one_if_ge(VT base, VT a, VT b) { return base + VT::blendv(VT(0), VT(1), a >= b); }
  static VT divide(VT a, VT b) { return a / b; }
  // Division::kLevels avoids vdivps, whose throughput bounded the kernels (fp16/bf16 most), with
  // two FMAs; the baseline build has no FMA instructions and divides.
  template <typename V>
  static constexpr bool fused_fma() {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
    return std::is_same_v<V, Vec>;
#else
    return false;
#endif
  }
#if defined(CPU_CAPABILITY_AVX512)
  static Vec fmsub(const Vec& a, const Vec& b, const Vec& c) { return _mm512_fmsub_ps(a, b, c); }
  static Vec fnmadd(const Vec& a, const Vec& b, const Vec& c) { return _mm512_fnmadd_ps(a, b, c); }
#elif defined(CPU_CAPABILITY_AVX2)
  static Vec fmsub(const Vec& a, const Vec& b, const Vec& c) { return _mm256_fmsub_ps(a, b, c); }
  static Vec fnmadd(const Vec& a, const Vec& b, const Vec& c) { return _mm256_fnmadd_ps(a, b, c); }
#endif
  // in_range: lo <= x <= hi exactly where clamping leaves x unchanged (never for NaN), so one
  // compare against the clamp that the value computes anyway.
#if defined(CPU_CAPABILITY_AVX512)
  static LaneMask in_range(VT x, VT lo, VT hi) {
    return {compare<_CMP_EQ_OQ>(clamp(x, lo, hi), x)};
  }
  static VT sign_select(VT x, VT a) {
    const VT r = select(compare<_CMP_GE_OQ>(x, VT(0)), x, a);
    return select(compare<_CMP_LT_OQ>(x, VT(0)), r, VT(0) - a);
  }
#else
  static VT in_range(VT x, VT lo, VT hi) { return clamp(x, lo, hi) == x; }
  static VT sign_select(VT x, VT a) {
    VT r = VT::blendv(x, a, x >= VT(0));
    return VT::blendv(r, VT(0) - a, x < VT(0));
  }
#endif
};

using FloatMath = VecMath<Vec>;
using DoubleMath = VecMath<VecD>;

#if defined(CPU_CAPABILITY_AVX512)
inline uint32_t lane_bits(LaneMask m) { return m.bits; }
#endif

/// Bit i set where lane i of a comparison result is all-ones.
inline uint32_t lane_bits(const Vec& m) {
#if defined(CPU_CAPABILITY_AVX512)
  return static_cast<uint32_t>(_mm512_movepi32_mask(_mm512_castps_si512(m)));
#elif defined(CPU_CAPABILITY_AVX2)
  return static_cast<uint32_t>(_mm256_movemask_ps(m));
#else
  uint32_t lanes[Vec::size()];
  m.store(lanes);
  uint32_t bits = 0;
  for (int i = 0; i < Vec::size(); ++i) bits |= (lanes[i] != 0 ? 1u : 0u) << i;
  return bits;
#endif
}

inline uint32_t lane_bits(const VecD& m) {
  uint64_t lanes[VecD::size()];
  m.store(lanes);
  uint32_t bits = 0;
  for (int i = 0; i < VecD::size(); ++i) bits |= (lanes[i] != 0 ? 1u : 0u) << i;
  return bits;
}

/// Appends `count` (a multiple of 8 or the final bits) mask bits to the byte stream.
struct MaskWriter {
  uint8_t* p;
  uint64_t acc = 0;
  int nbits = 0;
  void push(uint32_t bits, int count) {
    acc |= static_cast<uint64_t>(bits) << nbits;
    nbits += count;
    while (nbits >= 8) {
      *p++ = static_cast<uint8_t>(acc);
      acc >>= 8;
      nbits -= 8;
    }
  }
  void flush() {
    if (nbits > 0) *p++ = static_cast<uint8_t>(acc);
    acc = 0;
    nbits = 0;
  }
};

// Scalar tail for elements [i, end): computed in float (double for double) like the vector body.
template <typename scalar_t, typename opmath_t, typename Op>
void scalar_tail(const scalar_t* x, scalar_t* out, MaskWriter* mw, int64_t i, int64_t end,
                 const Op& op) {
  uint32_t bits = 0;
  int count = 0;
  for (; i < end; ++i) {
    const opmath_t v = static_cast<opmath_t>(x[i]);
    out[i] = static_cast<scalar_t>(op.template value<ScalarMath>(v));
    bits |= (op.template pass<ScalarMath>(v) ? 1u : 0u) << count;
    if (++count == 8) {
      if (mw) mw->push(bits, 8);
      bits = 0;
      count = 0;
    }
  }
  if (mw && count) mw->push(bits, count);
}

/// Writes the mask bits of elements [i, i + count), i and count multiples of 8.
inline void store_mask_bits(uint8_t* mask, int64_t i, uint64_t bits, int count) {
  for (int b = 0; b < count / kMaskBits; ++b) {
    mask[static_cast<uint64_t>(i) / kMaskBits + b] = static_cast<uint8_t>(bits >> (kMaskBits * b));
  }
}

/// store_mask_bits for the last elements of a tensor: count may end mid-byte.
inline void store_tail_bits(uint8_t* mask, int64_t i, uint64_t bits, int64_t count) {
  for (int64_t b = 0; b * kMaskBits < count; ++b) {
    mask[static_cast<uint64_t>(i) / kMaskBits + b] = static_cast<uint8_t>(bits >> (kMaskBits * b));
  }
}

template <typename Op>
void quant_range(const float* x, float* out, uint8_t* mask, int64_t begin, int64_t end,
                 const Op& op_arg) {
  const Op op = op_arg;  // a local copy stays in registers across the mask stores
  int64_t i = begin;
  if (mask) {
    for (; i + Vec::size() <= end; i += Vec::size()) {
      prefetch_ahead(x + i);
      prefetch_ahead_for_write(out + i);
      const Vec v = Vec::loadu(x + i);
      op.template value<FloatMath>(v).store(out + i);
      store_mask_bits(mask, i, lane_bits(op.template pass<FloatMath>(v)), Vec::size());
    }
  } else {
    for (; i + Vec::size() <= end; i += Vec::size()) {
      prefetch_ahead(x + i);
      prefetch_ahead_for_write(out + i);
      op.template value<FloatMath>(Vec::loadu(x + i)).store(out + i);
    }
  }
  MaskWriter mw{mask ? mask + i / kMaskBits : nullptr};
  scalar_tail<float, float>(x, out, mask ? &mw : nullptr, i, end, op);
  if (mask) mw.flush();
}

template <typename Op>
void quant_range(const double* x, double* out, uint8_t* mask, int64_t begin, int64_t end,
                 const Op& op_arg) {
  const Op op = op_arg;  // a local copy stays in registers across the mask stores
  MaskWriter mw{mask ? mask + begin / kMaskBits : nullptr};
  MaskWriter* mwp = mask ? &mw : nullptr;
  int64_t i = begin;
  for (; i + VecD::size() <= end; i += VecD::size()) {
    const VecD v = VecD::loadu(x + i);
    op.template value<DoubleMath>(v).store(out + i);
    if (mwp) mw.push(lane_bits(op.template pass<DoubleMath>(v)), VecD::size());
  }
  scalar_tail<double, double>(x, out, mwp, i, end, op);
  if (mwp) mw.flush();
}

/// Narrows two float vectors to one fp16/bf16 vector, rounding to nearest even.
struct AtenNarrow {
  template <typename scalar_t>
  static at::vec::Vectorized<scalar_t> narrow(const Vec& a, const Vec& b) {
    return at::vec::convert_from_float<scalar_t>(a, b);
  }
};

#if defined(CPU_CAPABILITY_AVX512)
/// bf16 narrowing in one AVX512-BF16 instruction instead of at::vec's integer sequence, which
/// bounded the bf16 forward. vcvtne2ps2bf16 rounds to nearest even like that sequence and flushes
/// denormals, which the quantizer never outputs (q is 0 or |q| >= 1/65535); a NaN keeps its
/// payload where at::vec writes 0xffff, both NaN.
struct Bf16Narrow {
  template <typename scalar_t>
  __attribute__((target("avx512bf16"))) static at::vec::Vectorized<scalar_t> narrow(const Vec& a,
                                                                                    const Vec& b) {
    return at::vec::Vectorized<scalar_t>(reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(b, a)));
  }
};

bool cpu_has_avx512bf16() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
}
#endif

// fp16 / bf16: widen to two float vectors, compute in fp32, narrow back (spec: "computed in fp32").
template <typename Narrow, typename scalar_t, typename Op>
inline void reduced_range(const scalar_t* x, scalar_t* out, uint8_t* mask, int64_t begin,
                          int64_t end, const Op& op_arg) {
  const Op op = op_arg;  // a local copy stays in registers across the mask stores
  using VecR = at::vec::Vectorized<scalar_t>;
  int64_t i = begin;
  for (; i + VecR::size() <= end; i += VecR::size()) {
    prefetch_ahead(x + i);
    prefetch_ahead_for_write(out + i);
    auto [a, b] = at::vec::convert_to_float<scalar_t>(VecR::loadu(x + i));
    const Vec qa = op.template value<FloatMath>(a);
    const Vec qb = op.template value<FloatMath>(b);
    Narrow::template narrow<scalar_t>(qa, qb).store(out + i);
    if (mask) {
      const uint64_t bits = lane_bits(op.template pass<FloatMath>(a)) |
                            static_cast<uint64_t>(lane_bits(op.template pass<FloatMath>(b)))
                                << Vec::size();
      store_mask_bits(mask, i, bits, VecR::size());
    }
  }
  MaskWriter mw{mask ? mask + i / kMaskBits : nullptr};
  scalar_tail<scalar_t, float>(x, out, mask ? &mw : nullptr, i, end, op);
  if (mask) mw.flush();
}

#if defined(CPU_CAPABILITY_AVX512)
// flatten inlines the loop, and Bf16Narrow::narrow into it, under the avx512bf16 target.
template <typename Op>
__attribute__((target("avx512bf16"), flatten)) void quant_range_bf16_native(
    const at::BFloat16* x, at::BFloat16* out, uint8_t* mask, int64_t begin, int64_t end,
    const Op& op) {
  reduced_range<Bf16Narrow>(x, out, mask, begin, end, op);
}
#endif

template <typename scalar_t, typename Op>
void quant_range(const scalar_t* x, scalar_t* out, uint8_t* mask, int64_t begin, int64_t end,
                 const Op& op) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, at::BFloat16>) {
    if (cpu_has_avx512bf16()) {
      quant_range_bf16_native(x, out, mask, begin, end, op);
      return;
    }
  }
#endif
  reduced_range<AtenNarrow>(x, out, mask, begin, end, op);
}

/// Runs quant_range over [0, numel) in tasks of whole units on the intra-op threads.
template <typename scalar_t, typename Op>
void quant_loop(const at::Tensor& x, const at::Tensor& out, uint8_t* mask, const Op& op) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* outp = out.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, (n + kUnit - 1) / kUnit, kGrainUnits, [&](int64_t ub, int64_t ue) {
    quant_range(xp, outp, mask, ub * kUnit, std::min(ue * kUnit, n), op);
  });
}

void fake_quant_impl(const at::Tensor& x, const at::Tensor& out, uint8_t* mask, QuantParams p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wrpn_quant_cpu", [&] {
    kernels::with_division(kernels::output_division<scalar_t>(p.division), [&](auto d) {
      quant_loop<scalar_t>(x, out, mask, FakeQuantOp<decltype(d)::value>{p});
    });
  });
}

// ---- stochastic rounding ----

/// kernels::philox_uniforms for 16 consecutive Philox blocks (64 elements) at once: the same
/// Philox4x32-10 rounds as at::philox_engine, one block per 32-bit vector lane (one block at a
/// time through at::philox_engine made the stochastic kernel about 10x slower than a copy). The
/// tests check the values against at::philox_engine bit for bit on every CPU build (AVX-512:
/// 16 blocks per vector; AVX2: two vectors of 8; the baseline build: plain loops).
constexpr uint32_t kPhiloxMulA = 0xD2511F53u, kPhiloxMulB = 0xCD9E8D57u;
constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u, kPhiloxKeyB = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;
constexpr int kPhiloxLanes = 16;

/// Writes u[4 * l + j] = uniform of output word j of lane l.
inline void interleave_uniforms(const uint32_t (&c)[4][kPhiloxLanes], float* u) {
  for (int l = 0; l < kPhiloxLanes; ++l) {
    for (int j = 0; j < 4; ++j) u[4 * l + j] = kernels::uniform_from_bits(c[j][l]);
  }
}

#if defined(CPU_CAPABILITY_AVX512)
/// High 32 bits of the 32x32-bit products of every lane with the constant m.
inline __m512i mulhi_u32(__m512i a, __m512i m) {
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  return _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

inline void philox_uniforms_16(uint64_t seed, int64_t first_block, float* u) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  // Block numbers fit in 32 bits for tensors below 2^34 elements; the high word is per lane.
  alignas(64) uint32_t hi[kPhiloxLanes];
  for (int l = 0; l < kPhiloxLanes; ++l) {
    hi[l] = static_cast<uint32_t>((static_cast<uint64_t>(first_block) + l) >> 32);
  }
  __m512i c0 = _mm512_setzero_si512(), c1 = _mm512_setzero_si512();
  __m512i c2 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(first_block)), lane);
  __m512i c3 = _mm512_load_si512(hi);
  const __m512i ma = _mm512_set1_epi32(static_cast<int>(kPhiloxMulA));
  const __m512i mb = _mm512_set1_epi32(static_cast<int>(kPhiloxMulB));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    const __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(mulhi_u32(c2, mb), c1),
                                        _mm512_set1_epi32(static_cast<int>(k0)));
    const __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(mulhi_u32(c0, ma), c3),
                                        _mm512_set1_epi32(static_cast<int>(k1)));
    c1 = _mm512_mullo_epi32(c2, mb);
    c3 = _mm512_mullo_epi32(c0, ma);
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  alignas(64) uint32_t c[4][kPhiloxLanes];
  _mm512_store_si512(c[0], c0);
  _mm512_store_si512(c[1], c1);
  _mm512_store_si512(c[2], c2);
  _mm512_store_si512(c[3], c3);
  interleave_uniforms(c, u);
}
#elif defined(CPU_CAPABILITY_AVX2)
/// High 32 bits of the 32x32-bit products of every lane with the constant m.
inline __m256i mulhi_u32(__m256i a, __m256i m) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  return _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

/// Eight Philox blocks, first_block .. first_block + 7, one per lane.
inline void philox_rounds_8(uint64_t seed, int64_t first_block, uint32_t (&c)[4][kPhiloxLanes],
                            int offset) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  alignas(32) uint32_t hi[8];
  for (int l = 0; l < 8; ++l) {
    hi[l] = static_cast<uint32_t>((static_cast<uint64_t>(first_block) + l) >> 32);
  }
  __m256i c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
  __m256i c2 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(first_block)), lane);
  __m256i c3 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
  const __m256i ma = _mm256_set1_epi32(static_cast<int>(kPhiloxMulA));
  const __m256i mb = _mm256_set1_epi32(static_cast<int>(kPhiloxMulB));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(mulhi_u32(c2, mb), c1),
                                        _mm256_set1_epi32(static_cast<int>(k0)));
    const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(mulhi_u32(c0, ma), c3),
                                        _mm256_set1_epi32(static_cast<int>(k1)));
    c1 = _mm256_mullo_epi32(c2, mb);
    c3 = _mm256_mullo_epi32(c0, ma);
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c[0] + offset), c0);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c[1] + offset), c1);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c[2] + offset), c2);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(c[3] + offset), c3);
}

inline void philox_uniforms_16(uint64_t seed, int64_t first_block, float* u) {
  uint32_t c[4][kPhiloxLanes];
  philox_rounds_8(seed, first_block, c, 0);
  philox_rounds_8(seed, first_block + 8, c, 8);
  interleave_uniforms(c, u);
}
#else
/// Portable form: structure-of-arrays loops.
inline void philox_uniforms_16(uint64_t seed, int64_t first_block, float* u) {
  uint32_t c[4][kPhiloxLanes];
  for (int l = 0; l < kPhiloxLanes; ++l) {
    const uint64_t block = static_cast<uint64_t>(first_block) + static_cast<uint64_t>(l);
    c[0][l] = 0;
    c[1][l] = 0;
    c[2][l] = static_cast<uint32_t>(block);
    c[3][l] = static_cast<uint32_t>(block >> 32);
  }
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < kPhiloxRounds; ++r) {
    for (int l = 0; l < kPhiloxLanes; ++l) {
      const uint64_t p0 = uint64_t{kPhiloxMulA} * c[0][l];
      const uint64_t p1 = uint64_t{kPhiloxMulB} * c[2][l];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c[1][l] ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c[3][l] ^ k1;
      c[1][l] = static_cast<uint32_t>(p1);
      c[3][l] = static_cast<uint32_t>(p0);
      c[0][l] = n0;
      c[2][l] = n2;
    }
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  interleave_uniforms(c, u);
}
#endif

/// Elements [begin, end) of a stochastic-rounding forward, begin a multiple of kUnit. Per unit
/// of 64 elements: draw the 64 uniforms (16 Philox blocks), widen x to float, then one vector
/// pass for value and mask. double is computed in double, element by element.
template <typename scalar_t, typename Op>
void stochastic_range(const scalar_t* x, scalar_t* out, uint8_t* mask, int64_t begin, int64_t end,
                      const Op& op, uint64_t seed) {
  constexpr int64_t kBlocks = kUnit / kernels::kUniformsPerBlock;
  alignas(64) float u[kUnit];
  alignas(64) float xf[kUnit];
  alignas(64) float qf[kUnit];
  for (int64_t i = begin; i < end; i += kUnit) {
    const int64_t count = std::min(kUnit, end - i);
    const int64_t first_block = i / kernels::kUniformsPerBlock;
    static_assert(kBlocks == 16, "philox_uniforms_16 covers one unit");
    philox_uniforms_16(seed, first_block, u);
    if constexpr (std::is_same_v<scalar_t, double>) {
      uint64_t bits = 0;
      for (int64_t j = 0; j < count; ++j) {
        const double v = x[i + j];
        out[i + j] = op.template value<ScalarMath>(v, static_cast<double>(u[j]));
        bits |= static_cast<uint64_t>(op.template pass<ScalarMath>(v)) << j;
      }
      if (mask) store_tail_bits(mask, i, bits, count);
    } else {
      const float* xs = nullptr;
      if constexpr (std::is_same_v<scalar_t, float>) {
        xs = x + i;
      } else {
        for (int64_t j = 0; j < count; ++j) xf[j] = static_cast<float>(x[i + j]);
        xs = xf;
      }
      float* qs = std::is_same_v<scalar_t, float> ? reinterpret_cast<float*>(out + i) : qf;
      uint64_t bits = 0;
      int64_t j = 0;
      for (; j + Vec::size() <= count; j += Vec::size()) {
        const Vec v = Vec::loadu(xs + j);
        op.template value<FloatMath>(v, Vec::loadu(u + j)).store(qs + j);
        bits |= static_cast<uint64_t>(lane_bits(op.template pass<FloatMath>(v))) << j;
      }
      for (; j < count; ++j) {
        qs[j] = op.template value<ScalarMath>(xs[j], u[j]);
        bits |= static_cast<uint64_t>(op.template pass<ScalarMath>(xs[j])) << j;
      }
      if constexpr (!std::is_same_v<scalar_t, float>) {
        for (int64_t k = 0; k < count; ++k) out[i + k] = static_cast<scalar_t>(qf[k]);
      }
      if (mask) store_tail_bits(mask, i, bits, count);
    }
  }
}

void stochastic_quant_impl(const at::Tensor& x, const at::Tensor& out, uint8_t* mask, QuantParams p,
                           uint64_t seed) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const int64_t units = (n + kUnit - 1) / kUnit;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wrpn_sr_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* outp = out.mutable_data_ptr<scalar_t>();
    kernels::with_division(p.division, [&](auto d) {
      const StochasticQuantOp<decltype(d)::value> op{p};
      // Philox makes this compute-bound: smaller tasks than the memory-bound loops.
      at::parallel_for(0, units, kGrainUnits / 4, [&](int64_t ub, int64_t ue) {
        stochastic_range(xp, outp, mask, ub * kUnit, std::min(ue * kUnit, n), op, seed);
      });
    });
  });
}

void binary_quant_impl(const at::Tensor& x, const at::Tensor& out, uint8_t* mask,
                       const at::Tensor& scale) {
  const BinaryOp op{scale.item<double>()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wrpn_binary_cpu",
                                  [&] { quant_loop<scalar_t>(x, out, mask, op); });
}

// ---- backward: out = mask ? grad : 0, on raw element bits (no dtype conversion needed) ----

template <typename U>
void masked_select_scalar(const U* g, const uint8_t* mask, U* out, int64_t begin, int64_t end) {
  // begin is a multiple of 8: a mask byte at a time, branch-free so the compiler vectorises it.
  int64_t i = begin;
  for (; i + kMaskBits <= end; i += kMaskBits) {
    const uint32_t bits = mask[static_cast<uint64_t>(i) / kMaskBits];
    for (int j = 0; j < kMaskBits; ++j) out[i + j] = g[i + j] & (U(0) - U((bits >> j) & 1u));
  }
  for (; i < end; ++i) {
    out[i] = ((mask[i / kMaskBits] >> (i % kMaskBits)) & 1) ? g[i] : U(0);
  }
}

void masked_select_32(const uint32_t* g, const uint8_t* mask, uint32_t* out, int64_t begin,
                      int64_t end) {
  int64_t i = begin;
#if defined(CPU_CAPABILITY_AVX512)
  for (; i + 16 <= end; i += 16) {
    prefetch_ahead(g + i);
    prefetch_ahead_for_write(out + i);
    uint32_t bits = 0;
    std::memcpy(&bits, mask + i / kMaskBits, 2);
    const __m512i v = _mm512_loadu_si512(g + i);
    _mm512_storeu_si512(out + i, _mm512_maskz_mov_epi32(static_cast<__mmask16>(bits), v));
  }
#elif defined(CPU_CAPABILITY_AVX2)
  const __m256i pow2 = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (; i + 8 <= end; i += 8) {
    prefetch_ahead(g + i);
    prefetch_ahead_for_write(out + i);
    const __m256i sel = _mm256_and_si256(_mm256_set1_epi32(mask[i / kMaskBits]), pow2);
    const __m256i keep = _mm256_cmpeq_epi32(sel, pow2);
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_and_si256(v, keep));
  }
#endif
  masked_select_scalar(g, mask, out, i, end);
}

void masked_select_16(const uint16_t* g, const uint8_t* mask, uint16_t* out, int64_t begin,
                      int64_t end) {
  int64_t i = begin;
#if defined(CPU_CAPABILITY_AVX512)
  for (; i + 32 <= end; i += 32) {
    prefetch_ahead(g + i);
    prefetch_ahead_for_write(out + i);
    uint32_t bits = 0;
    std::memcpy(&bits, mask + i / kMaskBits, 4);
    const __m512i v = _mm512_loadu_si512(g + i);
    _mm512_storeu_si512(out + i, _mm512_maskz_mov_epi16(static_cast<__mmask32>(bits), v));
  }
#elif defined(CPU_CAPABILITY_AVX2)
  const __m256i pow2 = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
                                         8192, 16384, static_cast<int16_t>(-32768));
  for (; i + 16 <= end; i += 16) {
    prefetch_ahead(g + i);
    prefetch_ahead_for_write(out + i);
    uint16_t bits = 0;
    std::memcpy(&bits, mask + i / kMaskBits, 2);
    const __m256i sel = _mm256_and_si256(_mm256_set1_epi16(static_cast<int16_t>(bits)), pow2);
    const __m256i keep = _mm256_cmpeq_epi16(sel, pow2);
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_and_si256(v, keep));
  }
#endif
  masked_select_scalar(g, mask, out, i, end);
}

void masked_grad_impl(const at::Tensor& grad, const uint8_t* mask, const at::Tensor& out) {
  const int64_t n = grad.numel();
  if (n == 0) return;
  const int64_t units = (n + kUnit - 1) / kUnit;
  const int64_t esize = grad.element_size();
  const void* g = grad.const_data_ptr();
  void* o = out.mutable_data_ptr();
  at::parallel_for(0, units, kGrainUnits, [&](int64_t ub, int64_t ue) {
    const int64_t b = ub * kUnit, e = std::min(ue * kUnit, n);
    switch (esize) {
      case 2:
        masked_select_16(static_cast<const uint16_t*>(g), mask, static_cast<uint16_t*>(o), b, e);
        break;
      case 4:
        masked_select_32(static_cast<const uint32_t*>(g), mask, static_cast<uint32_t*>(o), b, e);
        break;
      case 8:
        masked_select_scalar(static_cast<const uint64_t*>(g), mask, static_cast<uint64_t*>(o), b,
                             e);
        break;
      default:
        TORCH_CHECK(false, "wrpn: masked_grad: unsupported element size ", esize);
    }
  });
}

}  // namespace

#define WRPN_STR2(x) #x
#define WRPN_STR(x) WRPN_STR2(x)

const kernels::QuantKernels kKernels{WRPN_STR(CPU_CAPABILITY), &fake_quant_impl, &binary_quant_impl,
                                     &stochastic_quant_impl, &masked_grad_impl};

}  // namespace wrpn::cpu::CPU_CAPABILITY
