// Fuzz target: the digits CSV reader (plain or gzip-compressed, as wrpn::data::Digits reads
// data/digits/digits.csv.gz), both splits.

#include <wrpn/data/in_memory.h>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = wrpn_fuzz::write_scratch("digits.csv.gz", data, size);
  for (const auto split : {wrpn::data::Split::Train, wrpn::data::Split::Test}) {
    wrpn_fuzz::expect_clean([&] { wrpn::data::Digits(path, split); });
  }
  return 0;
}
