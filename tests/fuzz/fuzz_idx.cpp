// Fuzz target: the IDX reader (MNIST, Fashion-MNIST), plain or gzip-compressed, with and
// without an expected number of dimensions.

#include <wrpn/data/idx.h>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = wrpn_fuzz::write_scratch("x-idx3-ubyte.gz", data, size);
  for (const int64_t dims : {0, 1, 3}) {
    wrpn_fuzz::expect_clean([&] { wrpn::data::read_idx(path, dims); });
  }
  return 0;
}
