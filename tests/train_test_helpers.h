#pragma once
// Helpers shared by the trainer tests (test_train.cpp, test_distill.cpp). Include after
// LibTorch and Catch2 (Catch2's CHECK must replace c10's).

#include <unistd.h>
#include <wrpn/precision.h>
#include <wrpn/train/trainer.h>
#include <wrpn/train/utils.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace wrpn_test {

/// data/digits of the source tree (fetched by scripts/setup.sh); REQUIREs that it exists.
inline std::string digits_root() {
  const char* src = std::getenv("WRPN_SOURCE_DIR");
  const std::string root = std::string(src ? src : ".") + "/data/digits";
  INFO("the digits data is fetched by scripts/setup.sh (scripts/fetch_data.sh)");
  REQUIRE(wrpn::train::path_exists(root + "/digits.csv.gz"));
  return root;
}

/// A fresh directory /tmp/wrpn_<tag>_XXXXXX.
inline std::string temp_dir(const std::string& tag) {
  std::string t = "/tmp/wrpn_" + tag + "_XXXXXX";
  REQUIRE(::mkdtemp(t.data()) != nullptr);
  return t;
}

/// A few seconds of CPU training: a 4-bit ResNet-20 of the given width on the first digits.
struct SmallRun {
  double width = 1.0;
  int64_t limit_train = 192;
  int64_t limit_test = 96;
  int64_t epochs = 3;
  uint64_t seed = 7;
};

inline wrpn::train::TrainOptions small_run(const std::string& dir, const SmallRun& r = {}) {
  wrpn::train::TrainOptions o;
  o.model = "resnet20";
  o.precision = wrpn::PrecisionConfig::make(4, 4, r.width);
  o.data_root = digits_root();
  o.limit_train = r.limit_train;
  o.limit_test = r.limit_test;
  o.batch_size = 32;
  o.epochs = r.epochs;
  o.schedule.warmup_epochs = 0;
  o.schedule.base_lr = 0.05;
  o.threads = 1;
  o.device = "cpu";
  o.run_dir = dir;
  o.quiet = true;
  o.seed = r.seed;
  return o;
}

/// The JSON objects of a JSON-lines file.
inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> rows;
  std::string line;
  while (std::getline(in, line)) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

}  // namespace wrpn_test
