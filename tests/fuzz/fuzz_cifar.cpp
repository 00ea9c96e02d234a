// Fuzz target: the CIFAR-10 binary records (test_batch.bin) and the class-name file beside them:
// the first input byte says how many of the following bytes are batches.meta.txt (0 = none).

#include <wrpn/data/in_memory.h>

#include <algorithm>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t meta = std::min<size_t>(data[0], size - 1);
  const std::string dir = wrpn_fuzz::scratch_dir();
  ::unlink((dir + "/batches.meta.txt").c_str());
  if (meta > 0) wrpn_fuzz::write_scratch("batches.meta.txt", data + 1, meta);
  wrpn_fuzz::write_scratch("test_batch.bin", data + 1 + meta, size - 1 - meta);
  wrpn_fuzz::expect_clean([&] { wrpn::data::Cifar10(dir, wrpn::data::Split::Test); });
  return 0;
}
