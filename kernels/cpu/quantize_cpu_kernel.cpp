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

#include <cstring>

#include "kernels/common/quant_math.h"
#include "kernels/cpu/quantize_cpu.h"

namespace wrpn::cpu {
inline namespace CPU_CAPABILITY {
namespace {

using kernels::kMaskBits;
using kernels::QuantParams;
using kernels::BinaryOp;
using kernels::FakeQuantOp;
using kernels::ScalarMath;
using Vec = at::vec::Vectorized<float>;
using VecD = at::vec::Vectorized<double>;

// Work is split in units of 64 elements (8 mask bytes), so threads never share a mask byte
// and every vector width (8, 16, 32 lanes) covers whole mask bytes.
constexpr int64_t kUnit = 64;
constexpr int64_t kGrainUnits = 1024;  // 64K elements per task

/// Vector policy for the shared templates in kernels/common/quant_math.h.
template <typename VT>
struct VecMath {
  static VT clamp(VT x, VT lo, VT hi) {
    // blendv keeps x wherever the comparison is false, so NaN passes through unchanged.
    x = VT::blendv(x, lo, x < lo);
    return VT::blendv(x, hi, x > hi);
  }
  static VT round_even(VT x) { return x.round(); }
  static VT in_range(VT x, VT lo, VT hi) { return (x >= lo) & (x <= hi); }
  static VT sign_select(VT x, VT a) {
    VT r = VT::blendv(x, a, x >= VT(0));
    return VT::blendv(r, VT(0) - a, x < VT(0));
  }
};

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

template <typename Op>
void quant_range(const float* x, float* out, uint8_t* mask, int64_t begin, int64_t end,
                 const Op& op) {
  MaskWriter mw{mask ? mask + begin / kMaskBits : nullptr};
  MaskWriter* mwp = mask ? &mw : nullptr;
  int64_t i = begin;
  for (; i + Vec::size() <= end; i += Vec::size()) {
    const Vec v = Vec::loadu(x + i);
    op.template value<VecMath<Vec>>(v).store(out + i);
    if (mwp) mw.push(lane_bits(op.template pass<VecMath<Vec>>(v)), Vec::size());
  }
  scalar_tail<float, float>(x, out, mwp, i, end, op);
  if (mwp) mw.flush();
}

template <typename Op>
void quant_range(const double* x, double* out, uint8_t* mask, int64_t begin, int64_t end,
                 const Op& op) {
  MaskWriter mw{mask ? mask + begin / kMaskBits : nullptr};
  MaskWriter* mwp = mask ? &mw : nullptr;
  int64_t i = begin;
  for (; i + VecD::size() <= end; i += VecD::size()) {
    const VecD v = VecD::loadu(x + i);
    op.template value<VecMath<VecD>>(v).store(out + i);
    if (mwp) mw.push(lane_bits(op.template pass<VecMath<VecD>>(v)), VecD::size());
  }
  scalar_tail<double, double>(x, out, mwp, i, end, op);
  if (mwp) mw.flush();
}

// fp16 / bf16: widen to two float vectors, compute in fp32, narrow back (spec: "computed in fp32").
template <typename scalar_t, typename Op>
void quant_range(const scalar_t* x, scalar_t* out, uint8_t* mask, int64_t begin, int64_t end,
                 const Op& op) {
  using VecR = at::vec::Vectorized<scalar_t>;
  MaskWriter mw{mask ? mask + begin / kMaskBits : nullptr};
  MaskWriter* mwp = mask ? &mw : nullptr;
  int64_t i = begin;
  for (; i + VecR::size() <= end; i += VecR::size()) {
    auto [a, b] = at::vec::convert_to_float<scalar_t>(VecR::loadu(x + i));
    const Vec qa = op.template value<VecMath<Vec>>(a);
    const Vec qb = op.template value<VecMath<Vec>>(b);
    at::vec::convert_from_float<scalar_t>(qa, qb).store(out + i);
    if (mwp) {
      mw.push(lane_bits(op.template pass<VecMath<Vec>>(a)), Vec::size());
      mw.push(lane_bits(op.template pass<VecMath<Vec>>(b)), Vec::size());
    }
  }
  scalar_tail<scalar_t, float>(x, out, mwp, i, end, op);
  if (mwp) mw.flush();
}

template <typename Op>
void quant_loop(const at::Tensor& x, const at::Tensor& out, uint8_t* mask, const Op& op) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const int64_t units = (n + kUnit - 1) / kUnit;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "wrpn_quant_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* op_ = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, units, kGrainUnits, [&](int64_t ub, int64_t ue) {
      quant_range(xp, op_, mask, ub * kUnit, std::min(ue * kUnit, n), op);
    });
  });
}

void fake_quant_impl(const at::Tensor& x, const at::Tensor& out, uint8_t* mask, QuantParams p) {
  quant_loop(x, out, mask, FakeQuantOp{p});
}

void binary_quant_impl(const at::Tensor& x, const at::Tensor& out, uint8_t* mask, double a) {
  quant_loop(x, out, mask, BinaryOp{a});
}

// ---- backward: out = mask ? grad : 0, on raw element bits (no dtype conversion needed) ----

template <typename U>
void masked_select_scalar(const U* g, const uint8_t* mask, U* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    out[i] = ((mask[i / kMaskBits] >> (i % kMaskBits)) & 1) ? g[i] : U(0);
  }
}

void masked_select_32(const uint32_t* g, const uint8_t* mask, uint32_t* out, int64_t begin,
                      int64_t end) {
  int64_t i = begin;
#if defined(CPU_CAPABILITY_AVX512)
  for (; i + 16 <= end; i += 16) {
    uint32_t bits = 0;
    std::memcpy(&bits, mask + i / kMaskBits, 2);
    const __m512i v = _mm512_loadu_si512(g + i);
    _mm512_storeu_si512(out + i, _mm512_maskz_mov_epi32(static_cast<__mmask16>(bits), v));
  }
#elif defined(CPU_CAPABILITY_AVX2)
  const __m256i pow2 = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (; i + 8 <= end; i += 8) {
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
    uint32_t bits = 0;
    std::memcpy(&bits, mask + i / kMaskBits, 4);
    const __m512i v = _mm512_loadu_si512(g + i);
    _mm512_storeu_si512(out + i, _mm512_maskz_mov_epi16(static_cast<__mmask32>(bits), v));
  }
#elif defined(CPU_CAPABILITY_AVX2)
  const __m256i pow2 = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096,
                                         8192, 16384, static_cast<int16_t>(-32768));
  for (; i + 16 <= end; i += 16) {
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

#define WRPN_STR2(x) #x
#define WRPN_STR(x) WRPN_STR2(x)

const QuantKernels kTable{WRPN_STR(CPU_CAPABILITY), &fake_quant_impl, &binary_quant_impl,
                          &masked_grad_impl};

}  // namespace
}  // namespace CPU_CAPABILITY

#define WRPN_TABLE_FN2(cap) kernels_##cap
#define WRPN_TABLE_FN(cap) WRPN_TABLE_FN2(cap)

const QuantKernels& WRPN_TABLE_FN(CPU_CAPABILITY)() { return CPU_CAPABILITY::kTable; }

}  // namespace wrpn::cpu
