// Fuzz target: the JPEG / PNG path of image folders: the header check (image_size, what
// ImageCheck::Header runs on every file) and the decoder (decode_image).

#include <wrpn/data/image.h>

#include <vector>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  wrpn_fuzz::expect_clean([&] { wrpn::data::image_size(bytes, "fuzz input"); });
  wrpn_fuzz::expect_clean([&] {
    const torch::Tensor image = wrpn::data::decode_image(bytes, "fuzz input");
    if (image.dim() != 3 || image.size(2) != 3 || image.scalar_type() != torch::kUInt8) {
      wrpn_fuzz::defect("decode_image returned a tensor that is not uint8 [H, W, 3]", "");
    }
  });
  return 0;
}
