#pragma once
// CPU features the dispatchers need that __builtin_cpu_supports cannot tell on every compiler
// (clang 14 does not know "f16c") or at all (AVX-VNNI), read from CPUID.

#include <cpuid.h>

namespace wrpn::kernels {

/// F16C: CPUID leaf 1, ECX bit 29.
inline bool cpu_has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & (1u << 29)) != 0;
}

/// VNNI: AVX512_VNNI (CPUID 7.0, ECX bit 11) or AVX_VNNI (CPUID 7.1, EAX bit 4).
inline bool cpu_has_vnni() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 && (c & (1u << 11)) != 0) return true;
  return __get_cpuid_count(7, 1, &a, &b, &c, &d) != 0 && (a & (1u << 4)) != 0;
}

}  // namespace wrpn::kernels
