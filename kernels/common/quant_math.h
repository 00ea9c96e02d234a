#pragma once
// Per-element WRPN arithmetic shared by the CPU and CUDA kernels (spec.md, "Quantizers").
//
// Every function is a template over a math policy `M` and a value type `V`, so the same lines run
// as scalar float/double code (CUDA threads, CPU tails: ScalarMath) and as at::vec::Vectorized
// code (CPU bodies: VecMath in kernels/cpu). That is what lets CPU tests cover the CUDA arithmetic.

#include <cmath>
#include <cstdint>

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

/// Parameters of the clamp-and-round quantizer q = round(clamp(x, lo, hi) * scale) / scale.
struct QuantParams {
  float lo;
  float hi;
  float scale;
};

/// Weights, k = 2..16: clamp to [-1, 1], s = 2^(k-1) - 1 (one sign bit, k-1 magnitude bits).
inline QuantParams weight_params(int64_t bits) {
  return {-1.0f, 1.0f, static_cast<float>((int64_t{1} << (bits - 1)) - 1)};
}

/// Activations, k = 1..16: clamp to [0, 1], s = 2^k - 1.
inline QuantParams activation_params(int64_t bits) {
  return {0.0f, 1.0f, static_cast<float>((int64_t{1} << bits) - 1)};
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
  template <typename T>
  WRPN_HD static T divide(T a, T b) {
    return a / b;
  }
  template <typename T>
  WRPN_HD static bool in_range(T x, T lo, T hi) {
    return x >= lo && x <= hi;  // false for NaN and +-inf
  }
  template <typename T>
  WRPN_HD static T sign_select(T x, T a) {
    return x >= T(0) ? a : (x < T(0) ? -a : x);  // NaN stays NaN
  }
};

/// q = round_half_even(clamp(x, lo, hi) * scale) / scale. A true division, not a multiply by
/// the reciprocal: that is what makes q bit-identical to the ATen composite and across devices.
/// M::divide may take another route only where it returns the same bits as the division.
template <typename M, typename V>
WRPN_HD V fake_quant(V x, V lo, V hi, V scale) {
  return M::divide(M::round_even(M::clamp(x, lo, hi) * scale), scale);
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
struct FakeQuantOp {
  QuantParams p;
  template <typename M, typename V>
  WRPN_HD V value(V x) const {
    return fake_quant<M>(x, V(p.lo), V(p.hi), V(p.scale));
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

}  // namespace wrpn::kernels
