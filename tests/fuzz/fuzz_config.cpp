// Fuzz target: the JSON a user writes: a precision config (--precision-config), training options
// (--config, a run's options.json) and a model spec (a checkpoint header's "model"), each parsed
// and validated from the same input text.

#include <wrpn/models/classifier.h>
#include <wrpn/precision.h>
#include <wrpn/train/options.h>
#include <wrpn/util/text.h>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  wrpn_fuzz::expect_clean([&] { wrpn::PrecisionConfig::from_json(text); });
  wrpn_fuzz::expect_clean([&] {
    wrpn::train::TrainOptions o;
    o.update_from_json(wrpn::util::parse_json(text, "training config"));
    o.validate();
  });
  wrpn_fuzz::expect_clean([&] { wrpn::models::ModelSpec::from_json(text); });
  return 0;
}
