#pragma once
/// Exact accounting of CPU tensor memory: while a CpuMemoryCounter lives, every CPU allocation
/// LibTorch makes through c10's CPU allocator is counted by its requested size (live and peak
/// bytes), whatever frees it later. For memory benchmarks and tests: what an autograd graph
/// holds after a forward is live_bytes() after minus before.

#include <cstdint>

namespace c10 {
struct Allocator;
}

namespace wrpn {
namespace util {

class CpuMemoryCounter {
 public:
  /// Installs the counting allocator (one counter at a time; throws if another is alive).
  CpuMemoryCounter();
  /// Restores the allocator that was installed before.
  ~CpuMemoryCounter();
  CpuMemoryCounter(const CpuMemoryCounter&) = delete;
  CpuMemoryCounter& operator=(const CpuMemoryCounter&) = delete;

  /// Bytes allocated through the counting allocator and not yet freed (blocks of an earlier
  /// counter included): use differences.
  int64_t live_bytes() const;
  /// The most live_bytes() reached since construction or the last reset_peak().
  int64_t peak_bytes() const;
  /// Sets the peak to the current live bytes.
  void reset_peak();

 private:
  c10::Allocator* previous_ = nullptr;
};

}  // namespace util
}  // namespace wrpn
