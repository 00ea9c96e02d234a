// Fuzz target: the packed-export reader (import_packed), limited to small models like
// fuzz_checkpoint: an input whose header names another model is only run through the checks
// before the model is built.

#include <wrpn/models/classifier.h>
#include <wrpn/models/packed.h>
#include <wrpn/util/text.h>

#include "container.h"
#include "container_input.h"
#include "fuzz_common.h"

namespace {

// Whether import_packed would build a small model from this file (false when it would refuse
// the file before building one, too: then it is run).
bool builds_large_model(const std::string& file) {
  try {
    const auto sections =
        wrpn::models::detail::parse_container(file, "WRPNPACK", 1, 2, "packed export");
    const auto header = wrpn::util::parse_json(sections[0], "header");
    const auto spec = wrpn::models::ModelSpec::from_json(header.at("model").dump());
    return !(spec.name == "resnet20" && spec.precision.width <= 1 && spec.num_classes <= 100 &&
             spec.in_channels <= 3);
  } catch (...) {
    return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string file = wrpn_fuzz::container_from_input(data, size, "WRPNPACK", 1);
  if (builds_large_model(file)) return 0;
  const std::string path = wrpn_fuzz::write_scratch(
      "x.wrpnpack", reinterpret_cast<const uint8_t*>(file.data()), file.size());
  wrpn_fuzz::expect_clean([&] { wrpn::models::import_packed(path); });
  return 0;
}
