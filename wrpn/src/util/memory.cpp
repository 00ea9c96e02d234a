#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>
#include <wrpn/util/memory.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace wrpn {
namespace util {
namespace {

std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};
std::atomic<bool> g_installed{false};

/// Each block starts with a 64-byte header holding its size, so the deleter needs no context
/// and the data stays 64-byte aligned.
constexpr size_t kHeader = 64;

void counted_free(void* data) {
  if (data == nullptr) return;
  char* block = static_cast<char*>(data) - kHeader;
  int64_t n = 0;
  std::memcpy(&n, block, sizeof n);
  g_live.fetch_sub(n, std::memory_order_relaxed);
  std::free(block);
}

struct CountingAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    void* block = nullptr;
    if (posix_memalign(&block, kHeader, nbytes + kHeader) != 0 || block == nullptr) {
      TORCH_CHECK(false, "CpuMemoryCounter: out of memory allocating ", nbytes, " bytes");
    }
    const auto n = static_cast<int64_t>(nbytes);
    std::memcpy(block, &n, sizeof n);
    const int64_t live = g_live.fetch_add(n, std::memory_order_relaxed) + n;
    int64_t peak = g_peak.load(std::memory_order_relaxed);
    while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
    }
    void* data = static_cast<char*>(block) + kHeader;
    return {data, data, &counted_free, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &counted_free; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

CountingAllocator g_allocator;

}  // namespace

CpuMemoryCounter::CpuMemoryCounter() {
  TORCH_CHECK(!g_installed.exchange(true), "CpuMemoryCounter: another counter is installed");
  previous_ = c10::GetCPUAllocator();
  g_peak.store(g_live.load());
  c10::SetCPUAllocator(&g_allocator, /*priority=*/255);
}

CpuMemoryCounter::~CpuMemoryCounter() {
  c10::SetCPUAllocator(previous_, /*priority=*/255);
  g_installed.store(false);
}

int64_t CpuMemoryCounter::live_bytes() const { return g_live.load(); }
int64_t CpuMemoryCounter::peak_bytes() const { return g_peak.load(); }
void CpuMemoryCounter::reset_peak() { g_peak.store(g_live.load()); }

}  // namespace util
}  // namespace wrpn
