// Tests of the file readers against bad files: non-regular files (a directory, a FIFO) are
// refused at once; a large file that is not a checkpoint is refused after its preamble, in
// bounded memory and time; a checkpoint whose checksum is right but whose header fields are
// out of range, or whose state or optimizer sections are garbage, gets one clear line (never a
// backtrace). Containers are rebuilt here by hand from the documented layout (FNV-1a computed
// independently), so the crafted files pass every check but the one under test.

#include <sys/resource.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>
#include <wrpn/wrpn.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "train_test_helpers.h"

namespace {

using Catch::Contains;
using Catch::StartsWith;
using nlohmann::json;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

template <typename T>
T get(const std::string& s, size_t pos) {
  T v;
  std::memcpy(&v, s.data() + pos, sizeof v);
  return v;
}

template <typename T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}

/// The sections of a container file (magic | u32 version | u32 0 | (u64 n | bytes)* | trailer).
std::vector<std::string> sections_of(const std::string& file, size_t count) {
  std::vector<std::string> out;
  size_t pos = 16;
  for (size_t i = 0; i < count; ++i) {
    const uint64_t n = get<uint64_t>(file, pos);
    out.push_back(file.substr(pos + 8, n));
    pos += 8 + n;
  }
  return out;
}

std::string build(const std::string& magic, const std::vector<std::string>& sections) {
  std::string f = magic;
  put<uint32_t>(f, 1);
  put<uint32_t>(f, 0);
  for (const auto& s : sections) {
    put<uint64_t>(f, s.size());
    f += s;
  }
  const uint64_t h = fnv1a(f);
  f += std::string("WRPNEND\0", 8);
  put<uint64_t>(f, h);
  return f;
}

long max_rss_kib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

std::string saved_checkpoint(const std::string& dir) {
  wrpn::models::ModelSpec s;
  s.name = "resnet20";
  s.num_classes = 10;
  s.in_channels = 1;
  s.precision = wrpn::PrecisionConfig::make(4, 4, 0.5);
  const auto m = wrpn::models::create_model(s);
  wrpn::models::CheckpointInfo info;
  info.epoch = 3;
  info.metrics["test_top1"] = 0.5;
  const std::string path = dir + "/model.ckpt";
  wrpn::models::save_checkpoint(path, *m, info);
  return path;
}

}  // namespace

TEST_CASE("readers refuse directories and FIFOs at once, naming what they are",
          "[models][readers]") {
  const std::string dir = wrpn_test::temp_dir("readers_kinds");
  const std::string fifo = dir + "/pipe.ckpt";
  REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
  CHECK_THROWS_WITH(wrpn::models::read_checkpoint(dir), Contains("is a directory"));
  CHECK_THROWS_WITH(wrpn::models::load_checkpoint(fifo), Contains("a FIFO"));
  CHECK_THROWS_WITH(wrpn::models::import_packed(dir), Contains("is a directory"));
  CHECK_THROWS_WITH(wrpn::models::import_packed(fifo), Contains("a FIFO"));
  CHECK_THROWS_WITH(wrpn::fs::read_file(fifo), Contains("a FIFO"));
  CHECK_THROWS_WITH(wrpn::models::read_checkpoint(dir + "/missing.ckpt"),
                    Contains("cannot open") && Contains("missing.ckpt"));
}

TEST_CASE("a large file that is not a checkpoint is refused from its preamble",
          "[models][readers]") {
  const std::string dir = wrpn_test::temp_dir("readers_big");
  const std::string big = dir + "/big.bin";
  {  // 3 GiB, sparse: nothing is written but the size.
    std::ofstream(big) << "not a checkpoint at all";
    REQUIRE(::truncate(big.c_str(), 3LL << 30) == 0);
  }
  const long rss0 = max_rss_kib();
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(wrpn::models::read_checkpoint(big), Contains("is not a wrpn checkpoint"));
  CHECK_THROWS_WITH(wrpn::models::import_packed(big), Contains("is not a wrpn packed export"));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(seconds < 1.0);
  CHECK(max_rss_kib() - rss0 < 64 * 1024);  // far below the 3 GiB a full read would take
  // Right magic, a first section longer than the file: refused before the file is read.
  std::string head = "WRPNCKPT";
  put<uint32_t>(head, 1);
  put<uint32_t>(head, 0);
  put<uint64_t>(head, 1ULL << 40);
  spit(big, head);
  REQUIRE(::truncate(big.c_str(), 3LL << 30) == 0);
  CHECK_THROWS_WITH(wrpn::models::read_checkpoint(big), Contains("first section claims"));
  CHECK(max_rss_kib() - rss0 < 64 * 1024);
  ::unlink(big.c_str());
}

TEST_CASE("a checkpoint with a correct checksum but out-of-range fields is refused",
          "[models][readers]") {
  const std::string dir = wrpn_test::temp_dir("readers_fields");
  const std::string path = saved_checkpoint(dir);
  const std::string file = slurp(path);
  const auto sections = sections_of(file, 3);
  REQUIRE(build("WRPNCKPT", sections) == file);  // the layout is understood
  const json header = json::parse(sections[0]);

  auto with_header = [&](const json& h) {
    const std::string p = dir + "/crafted.ckpt";
    spit(p, build("WRPNCKPT", {h.dump(), sections[1], sections[2]}));
    return p;
  };
  json h = header;
  h["epoch"] = -5;
  CHECK_THROWS_WITH(wrpn::models::read_checkpoint(with_header(h)),
                    Contains("\"epoch\" is -5, outside [0, 1000000]"));
  h = header;
  h["model"]["num_classes"] = 1000000000000LL;
  CHECK_THROWS_WITH(wrpn::models::load_checkpoint(with_header(h)),
                    Contains("num_classes = 1000000000000") && Contains("expected 1..1000000"));
  h = header;
  h["model"]["in_channels"] = 100000;
  CHECK_THROWS_WITH(wrpn::models::load_checkpoint(with_header(h)), Contains("in_channels"));
  h = header;
  h["metrics"]["test_top1"] = "high";
  CHECK_THROWS_WITH(wrpn::models::read_checkpoint(with_header(h)), Contains("not a number"));

  // A garbage state section: one line naming the file and the section, no backtrace.
  const std::string p = dir + "/garbage_state.ckpt";
  spit(p, build("WRPNCKPT", {sections[0], std::string(500, 'x'), sections[2]}));
  try {
    wrpn::models::load_checkpoint(p);
    FAIL("a garbage state section was accepted");
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    CHECK_THAT(msg, Contains("garbage_state.ckpt") && Contains("state section cannot be read"));
    CHECK(msg.find("frame #") == std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
}

TEST_CASE("resume from a last.ckpt with a garbage optimizer state says so", "[train][readers]") {
  const std::string dir = wrpn_test::temp_dir("readers_blob");
  wrpn_test::SmallRun r;
  r.limit_train = 64;
  r.limit_test = 32;
  r.epochs = 2;
  auto o = wrpn_test::small_run(dir, r);
  o.stop_after = 1;
  wrpn::train::fit(o);
  const std::string last = dir + "/last.ckpt";
  const auto sections = sections_of(slurp(last), 3);
  spit(last, build("WRPNCKPT", {sections[0], sections[1], "not an archive"}));
  o.stop_after = 0;
  o.resume = true;
  CHECK_THROWS_WITH(wrpn::train::fit(o),
                    Contains("optimizer state in") && Contains("last.ckpt cannot be read"));
}

TEST_CASE("JSON a user writes: repeated keys and deep nesting are refused in one line",
          "[models][readers][json]") {
  using wrpn::util::parse_json;
  CHECK(parse_json(R"({"a": {"b": 1}, "c": [1, {"b": 2}]})", "x")["c"][1]["b"] == 2);
  // The same key in two different objects is fine; twice in one object is not.
  CHECK_THROWS_WITH(parse_json(R"({"lr": 0.1, "epochs": 3, "lr": 0.2})", "--config 'c.json'"),
                    StartsWith("--config 'c.json': key 'lr' appears twice in one object"));
  CHECK_THROWS_WITH(parse_json(R"({"o": {"k": 1, "k": 1}})", "x"),
                    Contains("key 'k' appears twice"));
  CHECK_THROWS_WITH(wrpn::PrecisionConfig::from_json(R"({"weight_bits": 4, "weight_bits": 2})"),
                    Contains("precision config: key 'weight_bits' appears twice"));
  // 64 levels parse, 65 do not (printing a value 100,000 levels deep would exhaust the stack).
  const auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  CHECK_NOTHROW(parse_json(nested(64), "x"));
  CHECK_THROWS_WITH(parse_json(nested(65), "x"), StartsWith("x: nested deeper than 64 levels"));
  CHECK_THROWS_WITH(parse_json(nested(100000), "x"), StartsWith("x: nested deeper than 64 levels"));
  // Invalid JSON: the parser's message, with the bytes it read shown escaped.
  std::string message;
  try {
    parse_json(std::string("{\"a\": \x01\xff}", 8), "cfg");
  } catch (const c10::Error& e) {
    message = e.what_without_backtrace();
  }
  CHECK_THAT(message, Contains("cfg: not valid JSON ("));
  for (const char c : message) CHECK((static_cast<unsigned char>(c) >= 0x20 && c != 0x7f));
  // Keys and values from the file are escaped and cut in errors.
  CHECK_THROWS_WITH(wrpn::PrecisionConfig::from_json("{\"w\\u001b[2J\": 1}"),
                    Contains("unknown key 'w\\x1b[2J'"));
  CHECK_THROWS_WITH(
      wrpn::PrecisionConfig::from_json("{\"width\": \"" + std::string(10000, 'x') + "\"}"),
      Contains("expected a number, got '\"xxxx") && Contains("(10002 bytes)"));
  // A training config: the same, through TrainOptions.
  wrpn::train::TrainOptions o;
  CHECK_THROWS_WITH(o.update_from_json(json::parse(R"({"bogus\n": 1})")),
                    Contains("unknown training config key 'bogus\\x0a'"));
}

TEST_CASE("printable() shows any bytes as one short printable line", "[models][readers][json]") {
  using wrpn::util::printable;
  CHECK(printable("abc") == "'abc'");
  CHECK(printable("") == "''");
  CHECK(printable(std::string("a\0b\n\t\x7f\x80\xff", 8)) == "'a\\x00b\\x0a\\x09\\x7f\\x80\\xff'");
  CHECK(printable("it's \\") == "'it\\'s \\\\'");
  CHECK(printable(std::string(100, 'q'), 4) == "'qqqq...' (100 bytes)");
  CHECK(printable("qqqq", 4) == "'qqqq'");
}

TEST_CASE("config files and CIFAR-10 batches larger than they can be are refused unread",
          "[models][readers]") {
  const std::string dir = wrpn_test::temp_dir("readers_sizes");
  const std::string cfg = dir + "/huge.json";
  spit(cfg, "{}");
  REQUIRE(::truncate(cfg.c_str(), (int64_t{16} << 20) + 1) == 0);
  CHECK_THROWS_WITH(wrpn::fs::read_file(cfg, "--config 'huge.json'", wrpn::fs::kMaxConfigBytes),
                    StartsWith("--config 'huge.json' is 16777217 bytes, more than the "
                               "16777216 it may be"));
  CHECK(wrpn::fs::read_file(cfg, "", -1).size() == (16u << 20) + 1);
  const std::string batch = dir + "/test_batch.bin";
  spit(batch, "x");
  REQUIRE(::truncate(batch.c_str(), int64_t{3073} * 400000) == 0);  // 1.2 GB, sparse
  const long rss0 = max_rss_kib();
  CHECK_THROWS_WITH(wrpn::data::Cifar10(dir, wrpn::data::Split::Test),
                    Contains("1229200000 bytes, more than the 1073741824 a CIFAR-10 batch file"));
  CHECK(max_rss_kib() - rss0 < 64 * 1024);
  ::unlink(batch.c_str());
  ::unlink(cfg.c_str());
}
