// Chooses the CPU kernel table for the running machine.

#include <ATen/Version.h>
#include <c10/util/Exception.h>

#include <atomic>

#include "wrpn/kernels/cpu_features.h"
#include "wrpn/kernels/quantize_cpu.h"

namespace wrpn::cpu {
namespace {

using kernels::QuantKernels;

bool cpu_has(const std::string& name) {
  if (name == "DEFAULT") return true;
  if (name == "AVX2") {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           kernels::cpu_has_f16c();
  }
  if (name == "AVX512") {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma") && kernels::cpu_has_f16c();
  }
  return false;
}

const QuantKernels* table_for(const std::string& name) {
  if (name == "AVX512") return &AVX512::kKernels;
  if (name == "AVX2") return &AVX2::kKernels;
  if (name == "DEFAULT") return &DEFAULT::kKernels;
  return nullptr;
}

const QuantKernels* automatic() {
  // at::get_cpu_capability() honours ATEN_CPU_CAPABILITY; re-check the CPU ourselves because
  // our AVX-512 build needs BW/VL/DQ as well.
  std::string cap = at::get_cpu_capability();
  if (cap.rfind("AVX512", 0) == 0) cap = "AVX512";
  if (!table_for(cap) || !cpu_has(cap)) cap = cpu_has("AVX2") ? "AVX2" : "DEFAULT";
  if (cap == "AVX512" && !cpu_has("AVX512")) cap = "AVX2";
  return table_for(cap);
}

std::atomic<const QuantKernels*> forced{nullptr};

}  // namespace

const QuantKernels& kernel_table() {
  if (const QuantKernels* f = forced.load(std::memory_order_acquire)) return *f;
  static const QuantKernels* chosen = automatic();
  return *chosen;
}

void force_capability(const std::string& name) {
  if (name.empty()) {
    forced.store(nullptr, std::memory_order_release);
    return;
  }
  const QuantKernels* t = table_for(name);
  TORCH_CHECK(t != nullptr, "wrpn: unknown CPU capability '", name,
              "' (expected DEFAULT, AVX2, AVX512 or an empty string for automatic)");
  TORCH_CHECK(cpu_has(name), "wrpn: this CPU does not support the ", name, " kernels");
  forced.store(t, std::memory_order_release);
}

}  // namespace wrpn::cpu
