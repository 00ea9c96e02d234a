#pragma once
// Per-element WRPN arithmetic shared by the CPU and CUDA kernels (WRPN, arXiv 1709.01134).
//
// Every function is a template over a math policy `M` and a value type `V`, so the same lines run
// as scalar float/double code (CUDA threads, CPU tails: ScalarMath) and as at::vec::Vectorized
// code (CPU bodies: VecMath in kernels/cpu). That is what lets CPU tests cover the CUDA arithmetic.

#include <ATen/core/PhiloxRNGEngine.h>
#include <c10/util/BFloat16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define WRPN_HD __host__ __device__ __forceinline__
#else
#define WRPN_HD inline
#endif

namespace wrpn::kernels {

/// Elements covered by one byte of a packed mask (bit i of byte j is element 8*j + i).
constexpr int64_t kMaskBits = 8;

/// Number of bytes of the packed mask of an n-element tensor.
WRPN_HD constexpr int64_t mask_bytes(int64_t n) { return (n + kMaskBits - 1) / kMaskBits; }

/// How a quantizer divides the rounded value r by its scale s. The op chooses it once from the
/// quantizer (bits or fixed-point format); the CPU and CUDA kernels both follow it, and each
/// route returns the bits of the true division r / s over the values its quantizer divides.
enum class Division : uint8_t {
  /// A level count s = 2^m - 1, m = 1..16, and an integer |r| <= s, +-0 or NaN (WRPN weights and
  /// activations): q0 = r * (1/s) plus one FMA correction step (Markstein's), the same bits as
  /// r / s over that whole domain, signed zeros and NaN payloads included (checked exhaustively
  /// in fp32). fp64, and code without hardware FMA, divide.
  kLevels,
  /// A power of two s = 2^f, f <= 24 (fixed point): r * (1/s), exact because r is an integer,
  /// +-0 or NaN and the quotient a normal float or zero.
  kReciprocal,
};

/// Parameters of the clamp-and-round quantizer q = round(clamp(x, lo, hi) * scale) / scale.
struct QuantParams {
  float lo;
  float hi;
  float scale;
  Division division;
};

/// Weights, k = 2..16: clamp to [-1, 1], s = 2^(k-1) - 1 (one sign bit, k-1 magnitude bits).
inline QuantParams weight_params(int64_t bits) {
  return {-1.0f, 1.0f, static_cast<float>((int64_t{1} << (bits - 1)) - 1), Division::kLevels};
}

/// Activations, k = 1..16: clamp to [0, 1], s = 2^k - 1.
inline QuantParams activation_params(int64_t bits) {
  return {0.0f, 1.0f, static_cast<float>((int64_t{1} << bits) - 1), Division::kLevels};
}

/// ADaPTION fixed point Q(m.f), m = total_bits - frac_bits with the sign bit inside m:
/// clamp to [-M, M], M = 2^(m-1) - 2^-f, scale 2^f. M is a multiple of 2^-f, so clamping before
/// rounding gives the same value as the spec's round-then-clamp, and dividing by 2^f is exact.
/// total_bits <= 24 keeps M exact in float.
inline QuantParams fixed_point_params(int64_t total_bits, int64_t frac_bits) {
  const double step = std::ldexp(1.0, -static_cast<int>(frac_bits));
  const double max = std::ldexp(1.0, static_cast<int>(total_bits - frac_bits - 1)) - step;
  return {static_cast<float>(-max), static_cast<float>(max),
          static_cast<float>(std::ldexp(1.0, static_cast<int>(frac_bits))), Division::kReciprocal};
}

/// The route for outputs of type T. For bf16 outputs r * (1/s) rounds to the same bf16 as r / s
/// for every r and s of Division::kLevels (checked exhaustively, as was every bf16 input through
/// the op), so the correction step is skipped there.
template <typename T>
constexpr Division output_division(Division d) {
  return d == Division::kLevels && std::is_same_v<T, c10::BFloat16> ? Division::kReciprocal : d;
}

/// Calls f(std::integral_constant<Division, d>{}): turns the op's division kind into a template
/// argument once per call, outside the element loops.
template <typename F>
decltype(auto) with_division(Division d, F&& f) {
  if (d == Division::kReciprocal) {
    return f(std::integral_constant<Division, Division::kReciprocal>{});
  }
  return f(std::integral_constant<Division, Division::kLevels>{});
}

/// Scalar policy: plain float/double arithmetic with NaN-propagating clamp and
/// round-half-to-even (rint under the default rounding mode; cvt.rni on the GPU).
struct ScalarMath {
  template <typename T>
  WRPN_HD static T clamp(T x, T lo, T hi) {
    // Comparisons with NaN are false, so NaN passes through unchanged.
    return x < lo ? lo : (x > hi ? hi : x);
  }
  WRPN_HD static float round_even(float x) { return rintf(x); }
  WRPN_HD static double round_even(double x) { return rint(x); }
  WRPN_HD static float floor(float x) { return floorf(x); }
  WRPN_HD static double floor(double x) { return ::floor(x); }
  template <typename T>
  WRPN_HD static T add_one_if_ge(T base, T a, T b) {
    // Always an addition, so -0 becomes +0 as in the spec's floor(x * 2^f + u).
    return base + (a >= b ? T(1) : T(0));
  }
  template <typename T>
  WRPN_HD static T divide(T a, T b) {
    return a / b;
  }
  /// Whether fmsub/fnmadd are fused (one rounding) for T: Division::kLevels needs them.
  template <typename T>
  WRPN_HD static constexpr bool fused_fma() {
    return std::is_same_v<T, float>;
  }
  /// a * b - c and -(a * b) + c with one rounding. fnmadd negates b, never a: a is an FMA's
  /// result here, and GCC folds a negated FMA into another FMA with the wrong sign of zero.
  WRPN_HD static float fmsub(float a, float b, float c) { return fmaf(a, b, -c); }
  WRPN_HD static float fnmadd(float a, float b, float c) { return fmaf(a, -b, c); }
  template <typename T>
  WRPN_HD static bool in_range(T x, T lo, T hi) {
    return x >= lo && x <= hi;  // false for NaN and +-inf
  }
  template <typename T>
  WRPN_HD static T sign_select(T x, T a) {
    return x >= T(0) ? a : (x < T(0) ? -a : x);  // NaN stays NaN
  }
};

/// r / s by the route D (see Division), inv = 1/s rounded to float. Every route gives the bits of
/// the true division: that is what makes q bit-identical to the ATen composite and across devices.
template <Division D, typename M, typename V>
WRPN_HD V divide_by_scale(V r, V s, V inv) {
  if constexpr (D == Division::kReciprocal) {
    return r * inv;
  } else if constexpr (M::template fused_fma<V>()) {
    const V q0 = r * inv;
    return M::fnmadd(M::fmsub(q0, s, r), inv, q0);
  } else {
    return M::divide(r, s);
  }
}

/// q = round_half_even(clamp(x, lo, hi) * scale) / scale.
template <Division D, typename M, typename V>
WRPN_HD V fake_quant(V x, V lo, V hi, V scale, V inv) {
  return divide_by_scale<D, M>(M::round_even(M::clamp(x, lo, hi) * scale), scale, inv);
}

/// Stochastic rounding: floor(y + u) / scale with y = clamp(x, lo, hi) * scale and u uniform in
/// [0, 1), computed as floor(y) + [u >= 1 - (y - floor(y))] (base + 0 or base + 1: NaN stays
/// NaN). That is floor(y + u) in exact arithmetic without the rounding of the sum y + u (at 2^15
/// a float sum drops u's low bits and can even round up past the clamp bound). Clamping first
/// gives the spec's clamp(floor(x * scale + u) / scale, lo, hi) because lo and hi lie on the grid.
template <Division D, typename M, typename V>
WRPN_HD V stochastic_quant(V x, V u, V lo, V hi, V scale, V inv) {
  const V y = M::clamp(x, lo, hi) * scale;
  const V down = M::floor(y);
  return divide_by_scale<D, M>(M::add_one_if_ge(down, u, V(1) - (y - down)), scale, inv);
}

/// Straight-through mask: true where the gradient passes, lo <= x <= hi.
template <typename M, typename V>
WRPN_HD auto ste_pass(V x, V lo, V hi) {
  return M::in_range(x, lo, hi);
}

/// Binary weights (k = 1): +a where x >= 0, -a where x < 0, NaN stays NaN.
template <typename M, typename V>
WRPN_HD V binary_quant(V x, V a) {
  return M::sign_select(x, a);
}

}  // namespace wrpn::kernels

namespace wrpn::kernels {

/// The clamp-and-round quantizer as a (value, straight-through pass) pair of functions,
/// generic over the math policy: the CPU and CUDA kernels are loops around these two calls.
/// D is p.division (see with_division).
template <Division D>
struct FakeQuantOp {
  QuantParams p;
  float inv = 1.0f / p.scale;
  template <typename M, typename V>
  WRPN_HD V value(V x) const {
    return fake_quant<D, M>(x, V(p.lo), V(p.hi), V(p.scale), V(inv));
  }
  template <typename M, typename V>
  WRPN_HD auto pass(V x) const {
    return ste_pass<M>(x, V(p.lo), V(p.hi));
  }
};

/// Binary weights: value +-a, gradient passes where -1 <= x <= 1.
struct BinaryOp {
  double a;
  template <typename M, typename V>
  WRPN_HD V value(V x) const {
    return binary_quant<M>(x, V(a));
  }
  template <typename M, typename V>
  WRPN_HD auto pass(V x) const {
    return ste_pass<M>(x, V(-1), V(1));
  }
};

/// Stochastic rounding onto the grid of `p`: the uniform u of element i comes from the caller.
template <Division D>
struct StochasticQuantOp {
  QuantParams p;
  float inv = 1.0f / p.scale;
  template <typename M, typename V>
  WRPN_HD V value(V x, V u) const {
    return stochastic_quant<D, M>(x, u, V(p.lo), V(p.hi), V(p.scale), V(inv));
  }
  template <typename M, typename V>
  WRPN_HD auto pass(V x) const {
    return ste_pass<M>(x, V(p.lo), V(p.hi));
  }
};

/// Elements that share one Philox4x32-10 block: element i draws output i % 4 of the block with
/// counter (subsequence) i / 4 under the 64-bit key `seed`. The draw depends only on (seed, i),
/// so CPU and CUDA, any thread count and any launch shape give the same values.
constexpr int64_t kUniformsPerBlock = 4;

/// A uniform float in [0, 1) from the top 24 bits of a 32-bit draw (exact in float).
WRPN_HD float uniform_from_bits(uint32_t r) {
  return static_cast<float>(r >> 8) * (1.0f / 16777216.0f);
}

/// The four uniforms of elements 4 * block .. 4 * block + 3.
WRPN_HD void philox_uniforms(uint64_t seed, int64_t block, float u[kUniformsPerBlock]) {
  at::philox_engine engine(seed, static_cast<uint64_t>(block), 0);
  for (int j = 0; j < kUniformsPerBlock; ++j) u[j] = uniform_from_bits(engine());
}

}  // namespace wrpn::kernels
