#pragma once
// Independent references for the quantizer tests. The values are spec.md's formulas written as
// plain ATen composites (clamp, mul, round, div in fp32 for fp16/bf16, then cast back); the masks
// are unpacked and packed by byte loops of their own. Nothing here computes with wrpn (the
// helpers at the end only call it, and CapabilityReset only selects its kernel build).

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/PhiloxRNGEngine.h>
#include <torch/torch.h>
#include <wrpn/ops.h>

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace wrpn_test {

inline const std::vector<at::ScalarType>& float_dtypes() {
  static const std::vector<at::ScalarType> kAll = {at::kFloat, at::kHalf, at::kBFloat16,
                                                   at::kDouble};
  return kAll;
}

/// The type the spec computes in: fp32 for fp16/bf16/fp32, fp64 for fp64.
inline at::ScalarType opmath(at::ScalarType st) {
  return st == at::kDouble ? at::kDouble : at::kFloat;
}

/// 1 + eps is the next value above 1 in the dtype.
inline double dtype_eps(at::ScalarType st) {
  switch (st) {
    case at::kHalf:
      return std::ldexp(1.0, -10);
    case at::kBFloat16:
      return std::ldexp(1.0, -7);
    case at::kDouble:
      return std::ldexp(1.0, -52);
    default:
      return std::ldexp(1.0, -23);
  }
}

/// Smallest positive (subnormal) value of the dtype.
inline double dtype_denorm_min(at::ScalarType st) {
  switch (st) {
    case at::kHalf:
      return std::ldexp(1.0, -24);
    case at::kBFloat16:
      return std::ldexp(1.0, -133);
    case at::kDouble:
      return std::ldexp(1.0, -1074);
    default:
      return std::ldexp(1.0, -149);
  }
}

inline double weight_scale(int64_t bits) { return std::ldexp(1.0, static_cast<int>(bits) - 1) - 1; }
inline double activation_scale(int64_t bits) { return std::ldexp(1.0, static_cast<int>(bits)) - 1; }

/// round_half_even(clamp(x, lo, hi) * s) / s in the spec's math type, cast back to x's dtype.
/// The divisor is a full tensor, so no backend can turn the division into a reciprocal multiply.
inline at::Tensor ref_fake_quant(const at::Tensor& x, double lo, double hi, double s) {
  const at::Tensor v = x.to(opmath(x.scalar_type()));
  const at::Tensor scale = at::full_like(v, s);
  return at::clamp(v, lo, hi).mul(scale).round().div(scale).to(x.scalar_type());
}

/// Binary weights: +a where w >= 0, -a where w < 0 (NaN stays NaN), a = mean(|w|) summed in
/// float64 and rounded once to the math type.
inline at::Tensor ref_binary(const at::Tensor& w) {
  const at::Tensor v = w.to(opmath(w.scalar_type()));
  if (w.numel() == 0) return w.clone();
  const double a = w.to(at::kDouble).abs().sum().item<double>() / static_cast<double>(w.numel());
  const at::Tensor pos = at::full_like(v, a);
  const at::Tensor neg = pos.neg();
  return at::where(v >= 0, pos, at::where(v < 0, neg, v)).to(w.scalar_type());
}

inline at::Tensor ref_quantize_weight(const at::Tensor& w, int64_t bits) {
  return bits == 1 ? ref_binary(w) : ref_fake_quant(w, -1.0, 1.0, weight_scale(bits));
}

inline at::Tensor ref_quantize_activation(const at::Tensor& x, int64_t bits) {
  return ref_fake_quant(x, 0.0, 1.0, activation_scale(bits));
}

/// Straight-through masks as bool tensors of the input's shape (false for NaN and +-inf).
inline at::Tensor ref_weight_pass(const at::Tensor& w) { return (w >= -1) & (w <= 1); }
inline at::Tensor ref_activation_pass(const at::Tensor& x) { return (x >= 0) & (x <= 1); }

/// grad where pass is true, +0 elsewhere.
inline at::Tensor ref_masked_grad(const at::Tensor& grad, const at::Tensor& pass) {
  return at::where(pass.reshape(grad.sizes()).to(grad.device()), grad, at::zeros_like(grad));
}

inline at::ScalarType same_size_int(int64_t bytes) {
  switch (bytes) {
    case 1:
      return at::kByte;
    case 2:
      return at::kShort;
    case 4:
      return at::kInt;
    default:
      return at::kLong;
  }
}

/// "" when got and want have the same dtype, shape and element bits (NaN matches any NaN);
/// otherwise a description of the first difference.
inline std::string bit_mismatch(const at::Tensor& got, const at::Tensor& want) {
  std::ostringstream os;
  if (!got.defined() || !want.defined()) return "undefined tensor";
  if (got.scalar_type() != want.scalar_type()) {
    os << "dtype " << got.scalar_type() << ", expected " << want.scalar_type();
    return os.str();
  }
  if (got.sizes() != want.sizes()) {
    os << "shape " << got.sizes() << ", expected " << want.sizes();
    return os.str();
  }
  if (got.numel() == 0) return "";
  const at::Tensor a = got.cpu().contiguous().reshape({-1});
  const at::Tensor b = want.cpu().contiguous().reshape({-1});
  const at::ScalarType it = same_size_int(a.element_size());
  const at::Tensor ai = a.scalar_type() == at::kBool ? a.to(at::kByte) : a.view(it);
  const at::Tensor bi = b.scalar_type() == at::kBool ? b.to(at::kByte) : b.view(it);
  at::Tensor ok = ai.eq(bi);
  if (ok.all().item<bool>()) return "";
  if (at::isFloatingType(a.scalar_type())) {
    const at::Tensor an = a.isnan();
    ok = an.eq(b.isnan()).logical_and(an.logical_or(ok));
  }
  const at::Tensor bad = ok.logical_not();
  const int64_t nbad = bad.sum().item<int64_t>();
  if (nbad == 0) return "";
  const int64_t i = bad.nonzero()[0][0].item<int64_t>();
  const uint64_t keep =
      a.element_size() == 8 ? ~uint64_t{0} : ((uint64_t{1} << (8 * a.element_size())) - 1);
  os << std::setprecision(17) << nbad << " of " << a.numel()
     << " elements differ; first at flat index " << i << ": got " << a[i].item<double>()
     << " (bits 0x" << std::hex << (static_cast<uint64_t>(ai[i].item<int64_t>()) & keep) << std::dec
     << "), expected " << b[i].item<double>() << " (bits 0x" << std::hex
     << (static_cast<uint64_t>(bi[i].item<int64_t>()) & keep) << ")";
  return os.str();
}

/// "" when `mask` is a 1-D uint8 tensor of ceil(n/8) bytes whose bit i of byte j equals element
/// 8j+i of `pass` (row-major), with the unused high bits of the last byte zero.
inline std::string mask_mismatch(const at::Tensor& mask, const at::Tensor& pass) {
  std::ostringstream os;
  const int64_t n = pass.numel();
  if (mask.scalar_type() != at::kByte) {
    os << "mask dtype " << mask.scalar_type() << ", expected uint8";
    return os.str();
  }
  if (mask.dim() != 1 || mask.size(0) != (n + 7) / 8) {
    os << "mask shape " << mask.sizes() << ", expected [" << (n + 7) / 8 << "]";
    return os.str();
  }
  const at::Tensor m = mask.cpu().contiguous();
  const at::Tensor p = pass.cpu().contiguous().reshape({-1}).to(at::kBool);
  const uint8_t* mb = m.data_ptr<uint8_t>();
  const bool* pb = p.data_ptr<bool>();
  for (int64_t i = 0; i < n; ++i) {
    const bool bit = ((mb[i / 8] >> (i % 8)) & 1) != 0;
    if (bit != pb[i]) {
      os << "mask bit of element " << i << " (byte " << i / 8 << ", bit " << i % 8 << ") is " << bit
         << ", expected " << pb[i];
      return os.str();
    }
  }
  if (n % 8 != 0 && (mb[n / 8] >> (n % 8)) != 0) {
    os << "unused bits of the last mask byte are not zero: 0x" << std::hex << int{mb[n / 8]};
    return os.str();
  }
  return "";
}

/// Packs a bool tensor (row-major) 8 elements a byte, bit i of byte j = element 8j+i.
inline at::Tensor pack_loop(const at::Tensor& bits) {
  const at::Tensor p = bits.cpu().contiguous().reshape({-1});
  const int64_t n = p.numel();
  at::Tensor out = at::zeros({(n + 7) / 8}, at::kByte);
  const bool* pb = p.data_ptr<bool>();
  uint8_t* ob = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (pb[i]) ob[i / 8] = static_cast<uint8_t>(ob[i / 8] | (1u << (i % 8)));
  }
  return out;
}

/// Allocates and frees blocks the size of an op's outputs for `x` (values, mask), filled with a
/// value no quantizer produces and with 0xFF, so that the next allocations, which usually reuse
/// these blocks, hold poison rather than an earlier, correct result where an op forgets to write.
inline void poison_output_memory(const at::Tensor& x) {
  at::Tensor values = at::empty(x.sizes(), x.options()).fill_(-1234.5);
  at::Tensor mask = at::empty({(x.numel() + 7) / 8}, x.options().dtype(at::kByte)).fill_(0xFF);
}

/// Kinds of random input.
enum class Values {
  /// Normal and uniform values, near-ties of small scales, and special points (bounds and their
  /// neighbours, +-0, subnormals, +-inf, NaN, huge values).
  kFull,
  /// Multiples of 2^-12 below 8 in magnitude, so sum(|w|) is exact in float64 in any order and
  /// the binary scale mean(|w|) is the same number on every device; no NaN or inf.
  kBinary,
};

/// n values of dtype `st`, deterministic in `seed`.
inline at::Tensor make_input(int64_t n, at::ScalarType st, uint64_t seed,
                             Values kind = Values::kFull) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const double eps = dtype_eps(st);
  at::Tensor v;
  std::vector<double> specials = {0.0, -0.0, 1.0, -1.0, 1.0 + eps, -1.0 - eps, 0.5, -0.5};
  if (kind == Values::kBinary) {
    v = at::randn({n}, gen, f64).mul(1.5).clamp(-7.5, 7.5).mul(4096).round().div(4096);
  } else {
    const at::Tensor normal = at::randn({n}, gen, f64);
    const at::Tensor wide = at::rand({n}, gen, f64).mul(4.0).sub(1.5);
    const at::Tensor scales = torch::tensor({1.0, 3.0, 7.0, 15.0, 31.0, 127.0}, f64);
    const at::Tensor s = scales.index_select(0, at::randint(0, 6, {n}, gen, f64.dtype(at::kLong)));
    const at::Tensor near_tie = at::randint(-20, 20, {n}, gen, f64).add(0.5).div(s);
    const at::Tensor pick = at::randint(0, 3, {n}, gen, f64.dtype(at::kLong));
    v = at::where(pick == 0, normal, at::where(pick == 1, wide, near_tie));
    const double inf = std::numeric_limits<double>::infinity();
    const std::vector<double> more = {
        std::nan(""),          inf,           -inf,           1e30, -1e30, dtype_denorm_min(st),
        -dtype_denorm_min(st), 1.0 - eps / 2, -1.0 + eps / 2, 1.5,  2.5};
    specials.insert(specials.end(), more.begin(), more.end());
  }
  const auto ns = static_cast<int64_t>(specials.size());
  const at::Tensor table = torch::tensor(specials, f64);
  const at::Tensor which = at::randint(0, ns, {n}, gen, f64.dtype(at::kLong));
  const at::Tensor replace = at::rand({n}, gen, f64) < 0.05;
  return at::where(replace, table.index_select(0, which), v).to(st);
}

/// Restores automatic CPU kernel choice on scope exit.
struct CapabilityReset {
  ~CapabilityReset() { wrpn::set_cpu_kernel_capability(""); }
};

/// Restores LibTorch's intra-op thread count on scope exit.
struct ThreadCountReset {
  int saved = at::get_num_threads();
  ~ThreadCountReset() { at::set_num_threads(saved); }
};

/// The CPU kernel builds this machine can run (DEFAULT always).
inline std::vector<std::string> supported_capabilities() {
  CapabilityReset reset;
  std::vector<std::string> out;
  for (const char* name : {"DEFAULT", "AVX2", "AVX512"}) {
    try {
      wrpn::set_cpu_kernel_capability(name);
      out.emplace_back(name);
    } catch (const c10::Error&) {
    }
  }
  return out;
}

/// Fixed point Q(m.f), m = total - frac (spec.md, "ADaPTION fixed point"), as written there:
/// clamp(round(x * 2^f) / 2^f, -M, M), M = 2^(m-1) - 2^-f, in the spec's math type.
inline at::Tensor ref_fixed_point(const at::Tensor& x, int64_t total, int64_t frac) {
  const double s = std::ldexp(1.0, static_cast<int>(frac));
  const double m = std::ldexp(1.0, static_cast<int>(total - frac - 1)) - 1.0 / s;
  const at::Tensor xm = x.to(opmath(x.scalar_type()));
  return xm.mul(s).round().div(s).clamp(-m, m).to(x.scalar_type());
}

/// Stochastic fixed point as the spec writes it, clamp(floor(x * 2^f + u) / 2^f, -M, M), with
/// u_i the i-th uniform of the documented stream: the op's Philox key is the next random64() of
/// a CPU generator seeded `seed`; element i takes output i % 4 of block (counter) i / 4, top 24
/// bits, times 2^-24.
inline at::Tensor ref_stochastic_fixed_point(const at::Tensor& x, int64_t total, int64_t frac,
                                             uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const uint64_t key = gen.get<at::CPUGeneratorImpl>()->random64();
  const int64_t n = x.numel();
  std::vector<float> u(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i += 4) {
    at::philox_engine engine(key, static_cast<uint64_t>(i / 4), 0);
    for (int64_t j = 0; j < 4; ++j) {
      const uint32_t r = engine();
      if (i + j < n) u[static_cast<size_t>(i + j)] = static_cast<float>(r >> 8) / 16777216.0f;
    }
  }
  const double s = std::ldexp(1.0, static_cast<int>(frac));
  const double m = std::ldexp(1.0, static_cast<int>(total - frac - 1)) - 1.0 / s;
  // In float64, where x * 2^f + u is exact for the inputs the tests use (a float sum would drop
  // u's low bits).
  const at::Tensor ut =
      torch::from_blob(u.data(), {n}, at::kFloat).to(at::kDouble).reshape(x.sizes());
  const at::Tensor xm = x.to(at::kDouble);
  return xm.mul(s).add(ut).floor().div(s).clamp(-m, m).to(x.scalar_type());
}

/// Incoming gradients: normal values with +-0, +-inf and NaN sprinkled in.
inline at::Tensor make_grad(at::IntArrayRef sizes, at::ScalarType st, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const double inf = std::numeric_limits<double>::infinity();
  const at::Tensor table = torch::tensor({0.0, -0.0, inf, -inf, std::nan("")}, f64);
  const at::Tensor g = at::randn(sizes, gen, f64);
  const at::Tensor which = at::randint(0, 5, sizes, gen, f64.dtype(at::kLong));
  const at::Tensor replace = at::rand(sizes, gen, f64) < 0.1;
  return at::where(replace, table.index_select(0, which.reshape({-1})).reshape(sizes), g).to(st);
}

// The op under test and its reference, chosen by `weight` (quantize_weight or
// quantize_activation), shared by the CPU and CUDA suites.
inline const char* op_label(bool weight) {
  return weight ? "quantize_weight" : "quantize_activation";
}

inline at::Tensor forward(bool weight, const at::Tensor& x, int64_t bits) {
  return weight ? wrpn::quantize_weight(x, bits) : wrpn::quantize_activation(x, bits);
}

inline std::tuple<at::Tensor, at::Tensor> forward_with_mask(bool weight, const at::Tensor& x,
                                                            int64_t bits) {
  return weight ? wrpn::quantize_weight_with_mask(x, bits)
                : wrpn::quantize_activation_with_mask(x, bits);
}

inline at::Tensor reference(bool weight, const at::Tensor& x, int64_t bits) {
  return weight ? wrpn_test::ref_quantize_weight(x, bits)
                : wrpn_test::ref_quantize_activation(x, bits);
}

inline at::Tensor reference_pass(bool weight, const at::Tensor& x) {
  return weight ? wrpn_test::ref_weight_pass(x) : wrpn_test::ref_activation_pass(x);
}

inline Values values_for(bool weight, int64_t bits) {
  return weight && bits == 1 ? Values::kBinary : Values::kFull;
}

}  // namespace wrpn_test
