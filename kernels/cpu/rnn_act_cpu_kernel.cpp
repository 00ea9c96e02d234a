// The gate nonlinearities of the fused recurrent cell, compiled once per CPU_CAPABILITY: sigmoid
// and tanh of float arrays evaluated in double (rnn_cell.h's cell_sigmoid / cell_tanh) with ATen's
// vectorised double exp / tanh (SLEEF, 1-ulp), in chunks through a stack buffer. Compiled with
// -ffp-contract=off (kernels/CMakeLists.txt) like the rest of the cell.

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

namespace wrpn::cpu::CPU_CAPABILITY {
namespace {

using Vec = at::vec::Vectorized<double>;
constexpr int64_t kChunk = 256;

template <typename F>
void apply_double(float* x, int64_t n, F&& f) {
  alignas(64) double buf[kChunk];
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t m = std::min(kChunk, n - start);
    float* p = x + start;
    for (int64_t k = 0; k < m; ++k) buf[k] = static_cast<double>(p[k]);
    int64_t k = 0;
    for (; k + Vec::size() <= m; k += Vec::size()) f(Vec::loadu(buf + k)).store(buf + k);
    if (k < m) f(Vec::loadu(buf + k, m - k)).store(buf + k, m - k);
    for (k = 0; k < m; ++k) p[k] = static_cast<float>(buf[k]);
  }
}

}  // namespace

/// x[k] = float(1 / (1 + exp(-double(x[k])))).
void sigmoid_inplace(float* x, int64_t n) {
  const Vec one(1.0);
  apply_double(x, n, [&](Vec v) { return one / (one + v.neg().exp()); });
}

/// x[k] = float(tanh(double(x[k]))).
void tanh_inplace(float* x, int64_t n) {
  apply_double(x, n, [](Vec v) { return v.tanh(); });
}

}  // namespace wrpn::cpu::CPU_CAPABILITY
