// Fuzz target: the checkpoint reader (container, header, state section) through the public
// calls wrpn_train --resume, wrpn_eval and --teacher make: read_checkpoint, then
// load_checkpoint for small models (building a 64x-wide ResNet-152 from a fuzzed header would
// measure the allocator, not the reader).

#include <wrpn/models/checkpoint.h>

#include "container_input.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string file = wrpn_fuzz::container_from_input(data, size, "WRPNCKPT", 1);
  const std::string path = wrpn_fuzz::write_scratch(
      "x.ckpt", reinterpret_cast<const uint8_t*>(file.data()), file.size());
  wrpn_fuzz::expect_clean([&] {
    const wrpn::models::CheckpointMeta meta = wrpn::models::read_checkpoint(path);
    if (meta.spec.name == "resnet20" && meta.spec.precision.width <= 1 &&
        meta.spec.num_classes <= 100 && meta.spec.in_channels <= 3) {
      wrpn::models::load_checkpoint(path);
    }
  });
  return 0;
}
