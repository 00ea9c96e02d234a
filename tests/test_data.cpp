// wrpn::data: the dataset readers on small files the tests write (and corrupt), the fixed
// stratified digits split, the seeded augmentations, the codecs on real camera JPEGs, and loading
// through torch::data::make_data_loader with worker threads.

#include <c10/util/Exception.h>
#include <ftw.h>
#include <sys/stat.h>
#include <torch/data.h>
#include <unistd.h>
#include <wrpn/data.h>

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

// The few path operations the tests need, on POSIX calls: std::filesystem calls can bind to the
// broken copies that PyTorch wheels' libtorch.so exports (pytorch/pytorch#133437).
namespace fs {

class path {
 public:
  path(std::string p) : p_(std::move(p)) {}
  path(const char* p) : p_(p) {}
  path operator/(const std::string& name) const {
    return p_.empty() || p_.back() == '/' ? p_ + name : p_ + "/" + name;
  }
  const std::string& string() const { return p_; }
  const char* c_str() const { return p_.c_str(); }
  std::string filename() const { return p_.substr(p_.find_last_of('/') + 1); }
  path parent_path() const {
    const size_t slash = p_.find_last_of('/');
    return slash == std::string::npos ? std::string() : p_.substr(0, slash);
  }

 private:
  std::string p_;
};

void create_directories(const path& dir) {
  const std::string& p = dir.string();
  for (size_t pos = 1; pos <= p.size(); ++pos) {
    if (pos == p.size() || p[pos] == '/') ::mkdir(p.substr(0, pos).c_str(), 0755);
  }
}

void remove_all(const path& dir) {
  ::nftw(
      dir.c_str(),
      [](const char* p, const struct stat*, int, struct FTW*) {
        ::remove(p);
        return 0;
      },
      16, FTW_DEPTH | FTW_PHYS);
}

void remove(const path& file) { ::remove(file.c_str()); }

bool is_regular_file(const path& file) {
  struct stat st;
  return ::stat(file.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace fs
using Catch::Matchers::Contains;
using wrpn::data::DatasetError;
using wrpn::data::DatasetOptions;
using wrpn::data::Split;

namespace {

// A scratch directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/wrpn_data_test_XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_ = "";
};

void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

uint32_t crc32(const std::string& data) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put_le(std::string& out, uint32_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// A gzip file made by hand from "stored" deflate blocks, independent of zlib's compressor.
std::string gzip_stored(const std::string& data) {
  std::string out = {'\x1f', '\x8b', 8, 0, 0, 0, 0, 0, 0, '\xff'};
  size_t pos = 0;
  do {
    const size_t len = std::min<size_t>(65535, data.size() - pos);
    out.push_back(pos + len == data.size() ? 1 : 0);
    put_le(out, static_cast<uint32_t>(len), 2);
    put_le(out, static_cast<uint32_t>(~len & 0xffff), 2);
    out.append(data, pos, len);
    pos += len;
  } while (pos < data.size());
  put_le(out, crc32(data), 4);
  put_le(out, static_cast<uint32_t>(data.size()), 4);
  return out;
}

// One digits-format line: 64 pixels then the label.
std::string digits_line(const std::array<int, 64>& pixels, int label) {
  std::string line;
  for (int v : pixels) line += std::to_string(v) + ",";
  return line + std::to_string(label) + "\n";
}

std::array<int, 64> digit_pixels(int seed) {
  std::array<int, 64> p{};
  for (int i = 0; i < 64; ++i) p[i] = (seed * 7 + i * 3) % 17;
  return p;
}

// PyTorch's bilinear upsampling with half-pixel centres, written out for one 8x8 plane.
std::vector<float> bilinear_8_to_32(const std::array<int, 64>& p) {
  std::vector<float> out(32 * 32);
  auto coord = [](int d, int64_t& i0, int64_t& i1, float& w) {
    float s = std::max(0.f, (d + 0.5f) * 0.25f - 0.5f);
    i0 = static_cast<int64_t>(s);
    i1 = std::min<int64_t>(i0 + 1, 7);
    w = s - static_cast<float>(i0);
  };
  for (int y = 0; y < 32; ++y) {
    for (int x = 0; x < 32; ++x) {
      int64_t y0, y1, x0, x1;
      float wy, wx;
      coord(y, y0, y1, wy);
      coord(x, x0, x1, wx);
      auto v = [&](int64_t yy, int64_t xx) { return p[yy * 8 + xx] / 16.f; };
      out[y * 32 + x] = (1 - wy) * ((1 - wx) * v(y0, x0) + wx * v(y0, x1)) +
                        wy * ((1 - wx) * v(y1, x0) + wx * v(y1, x1));
    }
  }
  return out;
}

// A uint8 [H, W, 3] test pattern.
torch::Tensor pattern(int64_t h, int64_t w, int seed) {
  auto y = torch::arange(h).view({h, 1, 1});
  auto x = torch::arange(w).view({1, w, 1});
  auto c = torch::arange(3).view({1, 1, 3});
  return ((y * 5 + x * 3 + c * 60 + seed * 17) % 256).to(torch::kUInt8);
}

torch::Tensor solid(int64_t h, int64_t w, std::array<int, 3> rgb) {
  auto t = torch::empty({h, w, 3}, torch::kUInt8);
  for (int c = 0; c < 3; ++c) t.select(2, c).fill_(rgb[c]);
  return t;
}

std::string repo_file(const std::string& relative) {
  const char* root = std::getenv("WRPN_SOURCE_DIR");
  INFO("WRPN_SOURCE_DIR is not set: run the tests through ctest");
  REQUIRE(root != nullptr);
  const std::string path = (fs::path(root) / relative).string();
  INFO(path << " is missing: run scripts/fetch_data.sh (scripts/setup.sh runs it) to fetch the "
               "data from Debian's python3-sklearn");
  REQUIRE(fs::is_regular_file(path));
  return path;
}

// Collects c10 warnings (TORCH_WARN) issued on this thread.
class WarningCapture : public c10::WarningHandler {
 public:
  WarningCapture() : guard_(this) {}
  void process(const c10::Warning& warning) override { messages.push_back(warning.msg()); }
  bool any_contains(const std::string& text) const {
    return std::any_of(messages.begin(), messages.end(),
                       [&](const std::string& m) { return m.find(text) != std::string::npos; });
  }
  std::vector<std::string> messages;

 private:
  c10::WarningUtils::WarningHandlerGuard guard_;
};

// In a build without the codecs the image tests are reported as skipped.
bool skip_without_codecs() {
  if (wrpn::data::image_codecs_available()) return false;
  std::printf("WRPN_SKIP: libwrpn was built without JPEG/PNG support\n");
  return true;
}

// Every example of `dataset` (a copy: it shares the data and the epoch) through make_data_loader
// (batches of 16, `workers` threads), in order.
template <typename Dataset>
std::pair<torch::Tensor, torch::Tensor> load_all(Dataset dataset, size_t workers) {
  auto loader = torch::data::make_data_loader<torch::data::samplers::SequentialSampler>(
      dataset.map(torch::data::transforms::Stack<>()),
      torch::data::DataLoaderOptions().batch_size(16).workers(workers));
  std::vector<torch::Tensor> images, labels;
  for (auto& batch : *loader) {
    images.push_back(batch.data);
    labels.push_back(batch.target);
  }
  return {torch::cat(images), torch::cat(labels)};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Split

TEST_CASE("data: split names parse and print", "[data]") {
  CHECK(std::string(wrpn::data::split_name(Split::Train)) == "train");
  CHECK(std::string(wrpn::data::split_name(Split::Test)) == "test");
  CHECK(wrpn::data::parse_split("train") == Split::Train);
  CHECK(wrpn::data::parse_split("test") == Split::Test);
  CHECK(wrpn::data::parse_split("val") == Split::Test);
  CHECK_THROWS_AS(wrpn::data::parse_split("validation"), std::invalid_argument);
}

TEST_CASE("data: stratified_split sends every 5th sample of each class, in file order, to test",
          "[data]") {
  //                             0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15 16
  const std::vector<int64_t> labels = {0, 1, 0, 0, 2, 0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0};
  // Class 0 occurs at 0 2 3 5 7 10 12 13 14 15 16: its 5th is 7, its 10th 15. Class 1 at
  // 1 6 8 9 11: its 5th is 11. Class 2 has one sample. With every = 2: the 2nd, 4th, ... of each.
  const auto test = wrpn::data::stratified_split(labels, Split::Test);
  CHECK(test == std::vector<int64_t>({7, 11, 15}));
  const auto train = wrpn::data::stratified_split(labels, Split::Train);
  CHECK(train.size() + test.size() == labels.size());
  std::set<int64_t> all(train.begin(), train.end());
  all.insert(test.begin(), test.end());
  CHECK(all.size() == labels.size());
  CHECK(std::is_sorted(train.begin(), train.end()));

  CHECK(wrpn::data::stratified_split(labels, Split::Test, 2) ==
        std::vector<int64_t>({2, 5, 6, 9, 10, 13, 15}));
  CHECK(wrpn::data::stratified_split({}, Split::Train).empty());
  CHECK_THROWS_AS(wrpn::data::stratified_split({0, -1}, Split::Train), std::invalid_argument);
  CHECK_THROWS_AS(wrpn::data::stratified_split(labels, Split::Train, 1), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Digits on files written here

TEST_CASE("data: Digits reads a digits-format CSV, gzip or plain, and upscales to 32x32",
          "[data]") {
  TempDir dir;
  std::string csv;
  std::vector<int> labels;
  for (int i = 0; i < 23; ++i) {
    labels.push_back((i * 3) % 4);
    csv += digits_line(digit_pixels(i), labels.back());
  }
  const bool gz = GENERATE(true, false);
  const std::string path = dir / (gz ? "digits.csv.gz" : "digits.csv");
  write_bytes(path, gz ? gzip_stored(csv) : csv);

  wrpn::data::Digits train(dir.path().string(), Split::Train, DatasetOptions().normalize(false));
  wrpn::data::Digits test(path, Split::Test, DatasetOptions().normalize(false));
  std::vector<int64_t> labels64(labels.begin(), labels.end());
  CHECK(train.rows() == wrpn::data::stratified_split(labels64, Split::Train));
  CHECK(test.rows() == wrpn::data::stratified_split(labels64, Split::Test));
  REQUIRE(train.size().value() + test.size().value() == 23);
  CHECK(train.num_classes() == 10);
  CHECK(train.channels() == 1);
  CHECK(train.class_names()[7] == "7");

  for (size_t i = 0; i < test.size().value(); ++i) {
    auto ex = test.get(i);
    const int64_t row = test.rows()[i];
    REQUIRE(ex.data.sizes() == torch::IntArrayRef({1, 32, 32}));
    REQUIRE(ex.data.scalar_type() == torch::kFloat);
    REQUIRE(ex.target.dim() == 0);
    REQUIRE(ex.target.scalar_type() == torch::kLong);
    CHECK(ex.target.item<int64_t>() == labels[row]);
    const auto expected = bilinear_8_to_32(digit_pixels(static_cast<int>(row)));
    const auto ref = torch::tensor(expected).view({1, 32, 32});
    CHECK(torch::allclose(ex.data, ref, 1e-5, 1e-6));
  }
}

TEST_CASE("data: Digits normalises with the documented constants", "[data]") {
  TempDir dir;
  std::string csv;
  for (int i = 0; i < 10; ++i) csv += digits_line(digit_pixels(i), i % 10);
  write_bytes(dir / "digits.csv", csv);
  wrpn::data::Digits raw(dir.path().string(), Split::Train, DatasetOptions().normalize(false));
  wrpn::data::Digits norm(dir.path().string(), Split::Train);
  CHECK(torch::allclose(
      norm.tensors().images,
      (raw.tensors().images - wrpn::data::Digits::kMean) / wrpn::data::Digits::kStd, 1e-5, 1e-5));
  REQUIRE(norm.tensors().fill.size() == 1);
  CHECK(norm.tensors().fill[0] == Approx(-wrpn::data::Digits::kMean / wrpn::data::Digits::kStd));
  CHECK(raw.tensors().fill == std::vector<double>{0.0});
}

TEST_CASE("data: Digits: a missing or corrupt file names the file and how to fetch it", "[data]") {
  TempDir dir;
  SECTION("missing") {
    CHECK_THROWS_WITH(
        wrpn::data::Digits(dir.path().string(), Split::Train),
        Contains((dir.path() / "digits.csv.gz").string()) && Contains("scripts/fetch_data.sh"));
  }
  SECTION("wrong number of values") {
    write_bytes(dir / "digits.csv",
                digits_line(digit_pixels(0), 1) + "1,2,3\n" + digits_line(digit_pixels(1), 2));
    CHECK_THROWS_WITH(wrpn::data::Digits(dir.path().string(), Split::Train),
                      Contains(dir / "digits.csv") && Contains("line 2") &&
                          Contains("expected 65") && Contains("found 3"));
  }
  SECTION("too many values") {
    std::string line = digits_line(digit_pixels(0), 1);
    line.insert(line.size() - 1, ",3");
    write_bytes(dir / "digits.csv", line);
    CHECK_THROWS_WITH(wrpn::data::Digits(dir.path().string(), Split::Train),
                      Contains("line 1") && Contains("found more"));
  }
  SECTION("pixel out of range") {
    auto p = digit_pixels(0);
    p[10] = 17;
    write_bytes(dir / "digits.csv", digits_line(p, 1));
    CHECK_THROWS_WITH(wrpn::data::Digits(dir.path().string(), Split::Train),
                      Contains("pixel 11") && Contains("0..16"));
  }
  SECTION("not a number") {
    std::string line = digits_line(digit_pixels(0), 1);
    line[0] = 'x';
    write_bytes(dir / "digits.csv", line);
    CHECK_THROWS_WITH(wrpn::data::Digits(dir.path().string(), Split::Train),
                      Contains("pixel 1") && Contains("'x"));
  }
  SECTION("bad label") {
    write_bytes(dir / "digits.csv", digits_line(digit_pixels(0), 10));
    CHECK_THROWS_WITH(wrpn::data::Digits(dir.path().string(), Split::Train),
                      Contains("label is '10'"));
  }
  SECTION("empty") {
    write_bytes(dir / "digits.csv.gz", gzip_stored(""));
    CHECK_THROWS_WITH(wrpn::data::Digits(dir.path().string(), Split::Train),
                      Contains("no digits") && Contains("fetch_data.sh"));
  }
  SECTION("control bytes and binary garbage are shown escaped, never raw") {
    std::string line = digits_line(digit_pixels(0), 1);
    line.replace(0, 1, std::string("\x1b[2J\xff\x01", 6));
    write_bytes(dir / "digits.csv", line);
    std::string message;
    try {
      wrpn::data::Digits(dir.path().string(), Split::Train);
    } catch (const wrpn::data::DatasetError& e) {
      message = e.what();
    }
    CHECK_THAT(message, Contains("pixel 1 is '\\x1b[2J\\xff\\x01'"));
    for (const char c : message) CHECK((static_cast<unsigned char>(c) >= 0x20 && c != 0x7f));
    // A long garbage field is cut, and its length said.
    write_bytes(dir / "digits.csv", std::string(5000, 'z') + "," + line);
    CHECK_THROWS_WITH(wrpn::data::Digits(dir.path().string(), Split::Train),
                      Contains("...' (5000 bytes)"));
  }
  SECTION("too few digits for a test split") {
    std::string csv;
    for (int i = 0; i < 4; ++i) csv += digits_line(digit_pixels(i), i);  // 1 of each class
    write_bytes(dir / "digits.csv", csv);
    CHECK_NOTHROW(wrpn::data::Digits(dir.path().string(), Split::Train));
    CHECK_THROWS_WITH(wrpn::data::Digits(dir.path().string(), Split::Test),
                      Contains("4 digits leave none for the test split"));
  }
  SECTION("a decompressed size past the limit is refused while reading") {
    write_bytes(dir / "digits.csv.gz", gzip_stored(std::string(80 << 20, '0')));
    CHECK_THROWS_WITH(wrpn::data::Digits(dir.path().string(), Split::Train),
                      Contains("more than 67108864 bytes of data"));
  }
  SECTION("truncated gzip") {
    std::string gz = gzip_stored(digits_line(digit_pixels(0), 1) + digits_line(digit_pixels(1), 2));
    write_bytes(dir / "digits.csv.gz", gz.substr(0, gz.size() - 30));
    CHECK_THROWS_WITH(wrpn::data::Digits(dir.path().string(), Split::Train),
                      Contains(dir / "digits.csv.gz") && Contains("corrupt or truncated") &&
                          Contains("fetch_data.sh"));
  }
  SECTION("bad gzip checksum") {
    std::string gz = gzip_stored(digits_line(digit_pixels(0), 1));
    gz[gz.size() - 6] ^= 0x55;
    write_bytes(dir / "digits.csv.gz", gz);
    CHECK_THROWS_AS(wrpn::data::Digits(dir.path().string(), Split::Train), DatasetError);
  }
  SECTION("a stray binary file") {
    write_bytes(dir / "digits.csv", std::string("\x89PNG\r\n\x1a\n\0\0\0", 11));
    CHECK_THROWS_AS(wrpn::data::Digits(dir.path().string(), Split::Train), DatasetError);
  }
}

// ---------------------------------------------------------------------------------------------
// Digits, the real file

TEST_CASE("data: Digits: the real file gives the documented fixed stratified split", "[data]") {
  const std::string path = repo_file("data/digits/digits.csv.gz");
  wrpn::data::Digits train(path, Split::Train);
  wrpn::data::Digits test(path, Split::Test);
  CHECK(train.size().value() == 1442);
  CHECK(test.size().value() == 355);

  const std::array<int64_t, 10> train_per_class = {143, 146, 142, 147, 145,
                                                   146, 145, 144, 140, 144};
  const std::array<int64_t, 10> test_per_class = {35, 36, 35, 36, 36, 36, 36, 35, 34, 36};
  const auto train_counts = torch::bincount(train.tensors().labels, {}, 10);
  const auto test_counts = torch::bincount(test.tensors().labels, {}, 10);
  for (int c = 0; c < 10; ++c) {
    INFO("class " << c);
    CHECK(train_counts[c].item<int64_t>() == train_per_class[c]);
    CHECK(test_counts[c].item<int64_t>() == test_per_class[c]);
    const double total = static_cast<double>(train_per_class[c] + test_per_class[c]);
    CHECK(test_per_class[c] == static_cast<int64_t>(total / 5));
  }

  // Fixed: the same rows every time, and these ones.
  const auto& rows = test.rows();
  CHECK(std::vector<int64_t>(rows.begin(), rows.begin() + 12) ==
        std::vector<int64_t>({33, 36, 37, 40, 44, 47, 51, 58, 59, 64, 78, 84}));
  CHECK(rows.back() == 1795);
  int64_t sum = 0;
  for (int64_t r : rows) sum += r;
  CHECK(sum == 322086);
  CHECK(wrpn::data::Digits(path, Split::Test).rows() == rows);
  std::set<int64_t> all(train.rows().begin(), train.rows().end());
  all.insert(rows.begin(), rows.end());
  CHECK(all.size() == 1797);

  // kMean / kStd are the training split's statistics.
  const auto& x = train.tensors().images;
  CHECK(x.sizes() == torch::IntArrayRef({1442, 1, 32, 32}));
  CHECK(std::abs(x.mean().item<double>()) < 1e-3);
  CHECK(std::abs(x.std(/*unbiased=*/false).item<double>() - 1.0) < 1e-3);
}

// ---------------------------------------------------------------------------------------------
// Augmentation

TEST_CASE("data: random_crop_flip is one of the padded crops, flipped or not", "[data]") {
  auto images = torch::rand({6, 2, 7, 9});
  const int64_t pad = GENERATE(2, 12);  // 12 is larger than the image
  const std::vector<double> fill = {-1.5, 2.5};
  std::vector<uint64_t> seeds;
  for (int i = 0; i < 6; ++i) seeds.push_back(wrpn::data::sample_seed(3, 1, i));
  const auto out = wrpn::data::random_crop_flip(images, pad, true, fill, seeds);
  REQUIRE(out.sizes() == images.sizes());
  int flipped = 0;
  for (int64_t n = 0; n < 6; ++n) {
    std::vector<torch::Tensor> planes;
    for (int c = 0; c < 2; ++c) {
      planes.push_back(torch::constant_pad_nd(images[n][c], {pad, pad, pad, pad}, fill[c]));
    }
    const auto padded = torch::stack(planes);
    int matches = 0;
    for (int64_t dy = 0; dy <= 2 * pad; ++dy) {
      for (int64_t dx = 0; dx <= 2 * pad; ++dx) {
        const auto crop = padded.narrow(1, dy, 7).narrow(2, dx, 9);
        if (torch::equal(out[n], crop)) ++matches;
        if (torch::equal(out[n], crop.flip({2}))) ++matches, ++flipped;
      }
    }
    CHECK(matches >= 1);
  }
  if (pad == 2) {
    CHECK(flipped > 0);
    CHECK(flipped < 6);
  }

  // Padding 0 without flips is the identity; a single [C, H, W] image works too.
  CHECK(torch::equal(wrpn::data::random_crop_flip(images, 0, false, fill, seeds), images));
  CHECK(torch::equal(wrpn::data::random_crop_flip(images[2], pad, true, fill, {seeds[2]}), out[2]));
  CHECK_THROWS(wrpn::data::random_crop_flip(images, pad, true, fill, {1, 2}));
  CHECK_THROWS(wrpn::data::random_crop_flip(images.to(torch::kDouble), pad, true, fill, seeds));
}

TEST_CASE("data: augmentation of in-memory datasets is deterministic under a seed", "[data]") {
  TempDir dir;
  std::string csv;
  for (int i = 0; i < 40; ++i) csv += digits_line(digit_pixels(i), i % 10);
  write_bytes(dir / "digits.csv", csv);
  const auto opts = DatasetOptions().augment(true).seed(7);
  wrpn::data::Digits a(dir.path().string(), Split::Train, opts);
  wrpn::data::Digits b(dir.path().string(), Split::Train, opts);
  wrpn::data::Digits other_seed(dir.path().string(), Split::Train, DatasetOptions(opts).seed(8));
  wrpn::data::Digits plain(dir.path().string(), Split::Train);

  int differs_from_plain = 0, differs_across_epochs = 0, differs_across_seeds = 0;
  for (size_t i = 0; i < a.size().value(); ++i) {
    const auto x = a.get(i).data;
    REQUIRE(x.sizes() == torch::IntArrayRef({1, 32, 32}));
    CHECK(torch::equal(x, b.get(i).data));
    differs_from_plain += !torch::equal(x, plain.get(i).data);
    differs_across_seeds += !torch::equal(x, other_seed.get(i).data);
  }
  a.set_epoch(1);
  wrpn::data::Digits copy = a;  // copies share the epoch
  CHECK(copy.epoch() == 1);
  for (size_t i = 0; i < a.size().value(); ++i) {
    differs_across_epochs += !torch::equal(a.get(i).data, b.get(i).data);
    CHECK(torch::equal(a.get(i).data, copy.get(i).data));
  }
  CHECK(differs_from_plain > 20);
  CHECK(differs_across_seeds > 20);
  CHECK(differs_across_epochs > 20);

  // The stacked-tensor path gives the same images as get().
  const auto idx = torch::tensor(std::vector<int64_t>{5, 0, 17, 31});
  const auto batch = a.tensors().batch(idx, 1);
  for (int64_t k = 0; k < 4; ++k) {
    const auto ex = a.get(static_cast<size_t>(idx[k].item<int64_t>()));
    CHECK(torch::equal(batch.data[k], ex.data));
    CHECK(batch.target[k].item<int64_t>() == ex.target.item<int64_t>());
  }
  // Black padding: after normalisation the fill is the normalised zero.
  const float black = static_cast<float>(-wrpn::data::Digits::kMean / wrpn::data::Digits::kStd);
  CHECK(a.tensors().images.min().item<float>() == Approx(black));
}

TEST_CASE("data: datasets load through make_data_loader, with worker threads, deterministically",
          "[data]") {
  TempDir dir;
  std::string csv;
  for (int i = 0; i < 75; ++i) csv += digits_line(digit_pixels(i), i % 10);
  write_bytes(dir / "digits.csv", csv);
  auto dataset =
      wrpn::data::Digits(dir.path().string(), Split::Train, DatasetOptions().augment(true).seed(1));
  dataset.set_epoch(4);
  const size_t n = dataset.size().value();

  const auto [x0, y0] = load_all(dataset, 0);
  const auto [x2, y2] = load_all(dataset, 2);
  REQUIRE(x0.size(0) == static_cast<int64_t>(n));
  CHECK(x0.sizes() == torch::IntArrayRef({static_cast<int64_t>(n), 1, 32, 32}));
  CHECK(torch::equal(x0, x2));
  CHECK(torch::equal(y0, y2));
  const auto all = torch::arange(static_cast<int64_t>(n));
  CHECK(torch::equal(x0, dataset.tensors().batch(all, 4).data));
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10

namespace {

// `count` records: label (i + first) % 10, pixel (c, y, x) = (31 c + 7 y + 3 x + i + first) % 256.
std::string cifar_records(int count, int first) {
  std::string out;
  for (int i = 0; i < count; ++i) {
    out.push_back(static_cast<char>((i + first) % 10));
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < 32; ++y) {
        for (int x = 0; x < 32; ++x) {
          out.push_back(static_cast<char>((31 * c + 7 * y + 3 * x + i + first) % 256));
        }
      }
    }
  }
  return out;
}

void write_cifar(const fs::path& dir, const std::vector<int>& train_counts, int test_count) {
  int first = 0;
  for (size_t b = 0; b < train_counts.size(); ++b) {
    write_bytes((dir / ("data_batch_" + std::to_string(b + 1) + ".bin")).string(),
                cifar_records(train_counts[b], first));
    first += train_counts[b];
  }
  write_bytes((dir / "test_batch.bin").string(), cifar_records(test_count, 1000));
}

}  // namespace

TEST_CASE("data: Cifar10 reads binary batches in order", "[data]") {
  TempDir dir;
  const bool subdir = GENERATE(false, true);
  const fs::path files = subdir ? dir.path() / "cifar-10-batches-bin" : dir.path();
  write_cifar(files, {3, 2, 1, 2, 4}, 5);
  const auto raw = DatasetOptions().normalize(false);
  wrpn::data::Cifar10 train(dir.path().string(), Split::Train, raw);
  wrpn::data::Cifar10 test(dir.path().string(), Split::Test, raw);
  REQUIRE(train.size().value() == 12);
  REQUIRE(test.size().value() == 5);
  CHECK(train.num_classes() == 10);
  CHECK(train.channels() == 3);
  CHECK(train.class_names()[0] == "airplane");
  CHECK(train.class_names()[9] == "truck");
  for (int64_t i = 0; i < 12; ++i) {
    const auto ex = train.get(static_cast<size_t>(i));
    REQUIRE(ex.data.sizes() == torch::IntArrayRef({3, 32, 32}));
    CHECK(ex.target.item<int64_t>() == i % 10);
    const std::array<std::array<int, 3>, 3> points = {{{0, 0, 0}, {1, 5, 9}, {2, 31, 30}}};
    for (const auto& [c, y, x] : points) {
      CHECK(ex.data[c][y][x].item<float>() == Approx(((31 * c + 7 * y + 3 * x + i) % 256) / 255.0));
    }
  }
  CHECK(test.get(4).target.item<int64_t>() == 1004 % 10);

  wrpn::data::Cifar10 norm(dir.path().string(), Split::Train);
  for (int c = 0; c < 3; ++c) {
    const auto expected = (train.tensors().images.select(1, c) - wrpn::data::Cifar10::kMean[c]) /
                          wrpn::data::Cifar10::kStd[c];
    CHECK(torch::allclose(norm.tensors().images.select(1, c), expected, 1e-5, 1e-5));
  }
}

TEST_CASE("data: Cifar10 takes class names from batches.meta.txt", "[data]") {
  TempDir dir;
  write_cifar(dir.path(), {1, 1, 1, 1, 1}, 1);
  std::string meta;
  for (int c = 0; c < 10; ++c) meta += "class" + std::to_string(c) + "\r\n";
  write_bytes(dir / "batches.meta.txt", meta + "\n");
  wrpn::data::Cifar10 train(dir.path().string(), Split::Train);
  CHECK(train.class_names()[3] == "class3");
}

TEST_CASE("data: Cifar10: missing and malformed files are named", "[data]") {
  TempDir dir;
  write_cifar(dir.path(), {1, 1, 1, 1, 1}, 1);
  SECTION("missing batch") {
    fs::remove(dir.path() / "data_batch_3.bin");
    CHECK_THROWS_WITH(wrpn::data::Cifar10(dir.path().string(), Split::Train),
                      Contains(dir / "data_batch_3.bin") && Contains("not found"));
    CHECK_NOTHROW(wrpn::data::Cifar10(dir.path().string(), Split::Test));
  }
  SECTION("partial record") {
    write_bytes(dir / "test_batch.bin", cifar_records(2, 0).substr(0, 3073 + 100));
    CHECK_THROWS_WITH(
        wrpn::data::Cifar10(dir.path().string(), Split::Test),
        Contains(dir / "test_batch.bin") && Contains("3173 bytes") && Contains("3073-byte"));
  }
  SECTION("empty file") {
    write_bytes(dir / "test_batch.bin", "");
    CHECK_THROWS_WITH(wrpn::data::Cifar10(dir.path().string(), Split::Test),
                      Contains(dir / "test_batch.bin"));
  }
  SECTION("label out of range") {
    std::string records = cifar_records(3, 0);
    records[2 * 3073] = 12;
    write_bytes(dir / "data_batch_2.bin", records);
    CHECK_THROWS_WITH(
        wrpn::data::Cifar10(dir.path().string(), Split::Train),
        Contains(dir / "data_batch_2.bin") && Contains("record 2") && Contains("label 12"));
  }
}

// ---------------------------------------------------------------------------------------------
// Image codecs

TEST_CASE("data: PNG round-trips exactly, JPEG closely", "[data]") {
  if (skip_without_codecs()) return;
  TempDir dir;
  const auto rgb = pattern(23, 37, 1);
  wrpn::data::write_png(dir / "a.png", rgb);
  const auto back = wrpn::data::read_image(dir / "a.png");
  CHECK(torch::equal(back, rgb));
  CHECK(wrpn::data::image_size(wrpn::data::read_file_bytes(dir / "a.png"), "a") ==
        (std::pair<int64_t, int64_t>(23, 37)));

  const auto gray = pattern(9, 4, 2).select(2, 0).contiguous();
  wrpn::data::write_png(dir / "g.png", gray);
  const auto gray_back = wrpn::data::read_image(dir / "g.png");
  REQUIRE(gray_back.sizes() == torch::IntArrayRef({9, 4, 3}));
  for (int c = 0; c < 3; ++c) CHECK(torch::equal(gray_back.select(2, c), gray));

  const auto smooth = solid(40, 48, {200, 30, 90});
  wrpn::data::write_jpeg(dir / "s.jpg", smooth, 95);
  const auto jpeg = wrpn::data::read_image(dir / "s.jpg");
  REQUIRE(jpeg.sizes() == torch::IntArrayRef({40, 48, 3}));
  CHECK((jpeg.to(torch::kInt) - smooth.to(torch::kInt)).abs().max().item<int>() <= 3);
  wrpn::data::write_jpeg(dir / "g.jpg", gray, 90);
  CHECK(wrpn::data::read_image(dir / "g.jpg").sizes() == torch::IntArrayRef({9, 4, 3}));

  const auto bytes = wrpn::data::read_file_bytes(dir / "s.jpg");
  CHECK(wrpn::data::sniff_image_format(bytes.data(), bytes.size()) ==
        wrpn::data::ImageFormat::Jpeg);
  CHECK(wrpn::data::image_size(bytes, "s") == (std::pair<int64_t, int64_t>(40, 48)));
  CHECK_THROWS(wrpn::data::write_png(dir / "f.png", torch::zeros({4, 4, 3})));
  CHECK_THROWS(wrpn::data::write_jpeg(dir / "q.jpg", rgb, 0));
}

TEST_CASE("data: corrupt images throw errors naming the file, never exit", "[data]") {
  if (skip_without_codecs()) return;
  TempDir dir;
  wrpn::data::write_jpeg(dir / "ok.jpg", pattern(64, 64, 3), 90);
  wrpn::data::write_png(dir / "ok.png", pattern(64, 64, 3));
  const std::string jpg = read_bytes(dir / "ok.jpg");
  const std::string png = read_bytes(dir / "ok.png");

  struct Case {
    std::string name, bytes, message;
  };
  std::string bad_crc = png;
  bad_crc[png.size() / 2] ^= 0x5a;
  std::string zero_height = jpg;
  const size_t sof = zero_height.find("\xff\xc0");
  REQUIRE(sof != std::string::npos);
  zero_height[sof + 5] = zero_height[sof + 6] = 0;  // SOF0: length, precision, height, width
  const std::vector<Case> cases = {
      {"empty.jpg", "", "empty file"},
      {"text.png", "this is not an image", "not a JPEG or PNG"},
      {"short.jpg", jpg.substr(0, jpg.size() / 2), "corrupt or truncated JPEG"},
      {"header_only.jpg", jpg.substr(0, 200), "corrupt or truncated JPEG"},
      {"short.png", png.substr(0, png.size() / 2), "PNG"},
      {"crc.png", bad_crc, "PNG"},
      {"zero_height.jpg", zero_height, "corrupt or truncated JPEG"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    write_bytes(dir / c.name, c.bytes);
    CHECK_THROWS_WITH(wrpn::data::read_image(dir / c.name),
                      Contains(dir / c.name) && Contains(c.message));
  }
  CHECK_THROWS_WITH(wrpn::data::read_image(dir / "absent.png"),
                    Contains(dir / "absent.png") && Contains("cannot open"));
}

TEST_CASE("data: real camera JPEGs decode like an independent decoder", "[data]") {
  if (skip_without_codecs()) return;
  struct Reference {
    const char* file;
    std::array<double, 3> mean;
    std::vector<std::array<int, 5>> pixels;  // y, x, r, g, b
  };
  // Values from Pillow's decoder (its own libjpeg-turbo build).
  const std::vector<Reference> refs = {
      {"china.jpg",
       {144.71968311, 145.46867681, 140.91860729},
       {{0, 0, 174, 201, 231},
        {100, 200, 123, 47, 11},
        {213, 320, 214, 191, 199},
        {426, 639, 15, 24, 7},
        {300, 50, 147, 160, 168}}},
      {"flower.jpg",
       {55.13415179, 73.57914227, 57.00021224},
       {{0, 0, 2, 19, 13},
        {100, 200, 5, 21, 21},
        {213, 320, 143, 1, 0},
        {426, 639, 9, 43, 27},
        {300, 50, 4, 55, 46}}},
  };
  for (const auto& ref : refs) {
    INFO(ref.file);
    const auto image =
        wrpn::data::read_image(repo_file(std::string("data/sample_images/") + ref.file));
    REQUIRE(image.sizes() == torch::IntArrayRef({427, 640, 3}));
    const auto mean = image.to(torch::kDouble).mean(torch::IntArrayRef{0, 1});
    for (int c = 0; c < 3; ++c) CHECK(mean[c].item<double>() == Approx(ref.mean[c]).margin(0.5));
    for (const auto& p : ref.pixels) {
      for (int c = 0; c < 3; ++c) {
        INFO("pixel (" << p[0] << ", " << p[1] << ") channel " << c);
        CHECK(std::abs(image[p[0]][p[1]][c].item<int>() - p[2 + c]) <= 3);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Image folders

namespace {

// root/{train,val}/{cat,dog,emu}: PNGs and JPEGs of assorted sizes, one solid-colour PNG per class
// first in order, and (with `corrupt`) broken files.
void write_folder(const fs::path& root, bool corrupt) {
  const std::vector<std::string> classes = {"cat", "dog", "emu"};
  int seed = 0;
  for (const std::string split : {"train", "val"}) {
    for (size_t c = 0; c < classes.size(); ++c) {
      const fs::path dir = root / split / classes[c];
      fs::create_directories(dir);
      wrpn::data::write_png((dir / "a_solid.png").string(),
                            solid(30 + 10 * c, 50, {40 * int(c), 100, 250}));
      wrpn::data::write_jpeg((dir / "b.jpg").string(), pattern(48, 64, seed++), 90);
      wrpn::data::write_png((dir / "c.PNG").string(), pattern(70, 40, seed++));
      wrpn::data::write_jpeg((dir / "d.jpeg").string(), pattern(33, 33, seed++), 80);
      write_bytes((dir / "notes.txt").string(), "not an image, ignored by extension");
    }
  }
  if (corrupt) {
    const fs::path dir = root / "train" / "dog";
    write_bytes((dir / "e_empty.jpg").string(), "");
    write_bytes((dir / "f_text.png").string(), "hello");
    const std::string jpg = read_bytes((dir / "b.jpg").string());
    write_bytes((dir / "g_truncated.jpg").string(), jpg.substr(0, jpg.size() * 2 / 3));
  }
}

}  // namespace

TEST_CASE("data: ImageFolder indexes classes and files in sorted order", "[data]") {
  if (skip_without_codecs()) return;
  TempDir dir;
  write_folder(dir.path(), false);
  wrpn::data::ImageFolder train(dir.path().string(), Split::Train);
  wrpn::data::ImageFolder val(dir.path().string(), Split::Test,
                              DatasetOptions().image_size(32).resize_size(36));
  CHECK(train.class_names() == std::vector<std::string>({"cat", "dog", "emu"}));
  CHECK(train.num_classes() == 3);
  CHECK(train.channels() == 3);
  REQUIRE(train.size().value() == 12);
  CHECK(val.size().value() == 12);
  CHECK(train.skipped().empty());
  CHECK(fs::path(train.paths()[5]).filename() == "b.jpg");
  CHECK(train.labels() == std::vector<int64_t>({0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2}));
  CHECK(fs::path(val.directory()).filename() == "val");

  for (size_t i = 0; i < val.size().value(); ++i) {
    const auto ex = val.get(i);
    REQUIRE(ex.data.sizes() == torch::IntArrayRef({3, 32, 32}));
    CHECK(ex.target.scalar_type() == torch::kLong);
    CHECK(ex.target.item<int64_t>() == static_cast<int64_t>(i / 4));
  }
  // A solid colour stays that colour through resize and crop, then is normalised.
  const auto ex = val.get(8);
  for (int c = 0; c < 3; ++c) {
    const double v =
        (std::array<int, 3>{80, 100, 250}[c] / 255.0 - wrpn::data::ImageFolder::kMean[c]) /
        wrpn::data::ImageFolder::kStd[c];
    CHECK(ex.data[c].min().item<double>() == Approx(v).margin(1e-5));
    CHECK(ex.data[c].max().item<double>() == Approx(v).margin(1e-5));
  }
}

TEST_CASE("data: ImageFolder reports and skips undecodable images", "[data]") {
  if (skip_without_codecs()) return;
  TempDir dir;
  write_folder(dir.path(), true);
  const std::string dog = (dir.path() / "train" / "dog").string();
  SECTION("header check at indexing, decoding failure at load") {
    WarningCapture warnings;
    wrpn::data::ImageFolder train(dir.path().string(), Split::Train,
                                  DatasetOptions().image_size(24).resize_size(24));
    CHECK(warnings.any_contains(dog + "/e_empty.jpg"));
    CHECK(warnings.any_contains(dog + "/f_text.png"));
    // The truncated JPEG has a valid header: it is found when it is loaded.
    REQUIRE(train.size().value() == 13);
    auto skipped = train.skipped();
    REQUIRE(skipped.size() == 2);
    CHECK(skipped[0].path == dog + "/e_empty.jpg");
    CHECK_THAT(skipped[0].reason, Contains("empty file"));
    CHECK(skipped[1].path == dog + "/f_text.png");

    const size_t truncated = 8;
    REQUIRE(fs::path(train.paths()[truncated]).filename() == "g_truncated.jpg");
    const auto ex = train.get(truncated);
    CHECK(ex.data.sizes() == torch::IntArrayRef({3, 24, 24}));
    CHECK(ex.target.item<int64_t>() == 2);  // the next good file, emu/a_solid.png
    CHECK(warnings.any_contains(dog + "/g_truncated.jpg"));
    skipped = train.skipped();
    REQUIRE(skipped.size() == 3);
    CHECK(skipped[2].path == dog + "/g_truncated.jpg");
    CHECK_THAT(skipped[2].reason, Contains("truncated JPEG"));
    train.get(truncated);
    CHECK(train.skipped().size() == 3);  // reported once
  }
  SECTION("full decode at indexing") {
    WarningCapture warnings;
    wrpn::data::ImageFolder train(dir.path().string(), Split::Train,
                                  DatasetOptions().check(wrpn::data::ImageCheck::Decode));
    CHECK(train.size().value() == 12);
    CHECK(train.skipped().size() == 3);
  }
  SECTION("no check") {
    wrpn::data::ImageFolder train(dir.path().string(), Split::Train,
                                  DatasetOptions().check(wrpn::data::ImageCheck::None));
    CHECK(train.size().value() == 15);
  }
}

TEST_CASE("data: ImageFolder: missing folders and bad layouts are named", "[data]") {
  TempDir dir;
  const std::string root = dir.path().string();
  if (!wrpn::data::image_codecs_available()) {
    CHECK_THROWS_WITH(wrpn::data::ImageFolder(root, Split::Train),
                      Contains("built without JPEG/PNG support"));
    return;
  }
  CHECK_THROWS_WITH(wrpn::data::ImageFolder(root + "/nothing", Split::Train),
                    Contains(root + "/nothing") && Contains("train/<class>"));
  CHECK_THROWS_WITH(wrpn::data::ImageFolder(root, Split::Train),
                    Contains(root + "/train") && Contains("not found"));
  fs::create_directories(dir.path() / "train");
  CHECK_THROWS_WITH(wrpn::data::ImageFolder(root, Split::Train),
                    Contains("no class subdirectories"));
  fs::create_directories(dir.path() / "train" / "a");
  write_bytes(dir / "train/a/x.jpg", "garbage");
  CHECK_THROWS_WITH(wrpn::data::ImageFolder(root, Split::Train),
                    Contains("no readable images") && Contains("1 skipped"));
  wrpn::data::write_png(dir / "train/a/y.png", pattern(8, 8, 0));
  CHECK(wrpn::data::ImageFolder(root, Split::Train, DatasetOptions().image_size(8).resize_size(8))
            .size()
            .value() == 1);
  CHECK_THROWS_WITH(wrpn::data::ImageFolder(root, Split::Test), Contains(root + "/val"));
  fs::create_directories(dir.path() / "test" / "b");
  CHECK_THROWS_WITH(wrpn::data::ImageFolder(root, Split::Test),
                    Contains(root + "/test") && Contains("same class folders"));
  CHECK_THROWS(wrpn::data::ImageFolder(root, Split::Train,
                                       DatasetOptions().image_size(300).resize_size(256)));

  // A class folder without readable images: an error for train (a class no image teaches), a
  // named warning for val.
  TempDir two;
  const std::string root2 = two.path().string();
  for (const char* split : {"train", "val"}) {
    for (const char* cls : {"a", "empty"}) fs::create_directories(two.path() / split / cls);
    wrpn::data::write_png(two / (std::string(split) + "/a/y.png"), pattern(8, 8, 0));
  }
  write_bytes(two / "train/empty/x.jpg", "not a jpeg");
  const auto small = DatasetOptions().image_size(8).resize_size(8);
  CHECK_THROWS_WITH(wrpn::data::ImageFolder(root2, Split::Train, small),
                    Contains(root2 + "/train has class folders without readable images: 'empty'") &&
                        Contains("remove the folders or add images"));
  WarningCapture warnings;
  CHECK(wrpn::data::ImageFolder(root2, Split::Test, small).num_classes() == 2);
  CHECK(warnings.any_contains("val has class folders without readable images: 'empty'"));
}

TEST_CASE("data: ImageFolder augmentation: shapes and determinism under a seed", "[data]") {
  if (skip_without_codecs()) return;
  TempDir dir;
  write_folder(dir.path(), false);
  const auto opts = DatasetOptions().augment(true).seed(11).image_size(20).resize_size(24);
  wrpn::data::ImageFolder a(dir.path().string(), Split::Train, opts);
  wrpn::data::ImageFolder b(dir.path().string(), Split::Train, opts);
  wrpn::data::ImageFolder eval(dir.path().string(), Split::Train,
                               DatasetOptions(opts).augment(false));
  int differs_across_epochs = 0, differs_from_eval = 0;
  std::vector<torch::Tensor> epoch0;
  for (size_t i = 0; i < a.size().value(); ++i) {
    const auto x = a.get(i).data;
    REQUIRE(x.sizes() == torch::IntArrayRef({3, 20, 20}));
    CHECK(torch::equal(x, b.get(i).data));
    differs_from_eval += !torch::allclose(x, eval.get(i).data);
    epoch0.push_back(x);
  }
  b.set_epoch(1);
  for (size_t i = 0; i < b.size().value(); ++i) {
    differs_across_epochs += !torch::equal(epoch0[i], b.get(i).data);
  }
  CHECK(differs_from_eval >= 6);
  CHECK(differs_across_epochs >= 6);

  // Through a loader with two workers: the same tensors as get() in order.
  a.set_epoch(0);
  auto loader = torch::data::make_data_loader<torch::data::samplers::SequentialSampler>(
      a.map(torch::data::transforms::Stack<>()),
      torch::data::DataLoaderOptions().batch_size(5).workers(2));
  int64_t k = 0;
  for (auto& batch : *loader) {
    for (int64_t j = 0; j < batch.data.size(0); ++j, ++k) {
      CHECK(torch::equal(batch.data[j], epoch0[k]));
    }
  }
  CHECK(k == 12);
}

TEST_CASE("data: folder transforms: crop boxes, resize and centre crop", "[data]") {
  for (uint64_t s = 0; s < 200; ++s) {
    wrpn::data::SampleRng rng(wrpn::data::sample_seed(5, 0, static_cast<int64_t>(s)));
    const int64_t h = 30 + static_cast<int64_t>(s % 50), w = 100 - static_cast<int64_t>(s % 60);
    const auto box = wrpn::data::random_resized_crop_box(h, w, 0.08, rng);
    REQUIRE(box.height > 0);
    REQUIRE(box.width > 0);
    REQUIRE(box.top >= 0);
    REQUIRE(box.left >= 0);
    REQUIRE(box.top + box.height <= h);
    REQUIRE(box.left + box.width <= w);
  }
  // Same seed, same box.
  wrpn::data::SampleRng r1(42), r2(42);
  const auto b1 = wrpn::data::random_resized_crop_box(100, 80, 0.2, r1);
  const auto b2 = wrpn::data::random_resized_crop_box(100, 80, 0.2, r2);
  CHECK((b1.top == b2.top && b1.left == b2.left && b1.height == b2.height && b1.width == b2.width));

  const auto landscape = torch::rand({3, 40, 60});
  CHECK(wrpn::data::resize_center_crop(landscape, 20, 16).sizes() ==
        torch::IntArrayRef({3, 16, 16}));
  // Shorter side already at the resize size: a plain centre crop.
  CHECK(torch::equal(wrpn::data::resize_center_crop(landscape, 40, 30),
                     landscape.narrow(1, 5, 30).narrow(2, 15, 30)));
  const auto portrait = torch::rand({1, 50, 20});
  CHECK(wrpn::data::resize_center_crop(portrait, 10, 10).sizes() ==
        torch::IntArrayRef({1, 10, 10}));
  const auto rrc = wrpn::data::random_resized_crop(landscape, 24, 0.08, true, 9);
  CHECK(rrc.sizes() == torch::IntArrayRef({3, 24, 24}));
  CHECK(torch::equal(rrc, wrpn::data::random_resized_crop(landscape, 24, 0.08, true, 9)));

  const auto n = wrpn::data::normalize(torch::ones({2, 2, 3, 3}), {0.5, 0.25}, {0.5, 2.0});
  CHECK(n[1][0].min().item<float>() == Approx(1.0));
  CHECK(n[1][1].max().item<float>() == Approx(0.375));
}

// ---------------------------------------------------------------------------------------------
// open_dataset

TEST_CASE("data: open_dataset opens every dataset by name", "[data]") {
  TempDir dir;
  std::string csv;
  for (int i = 0; i < 50; ++i) csv += digits_line(digit_pixels(i), i % 10);
  write_bytes(dir / "digits/digits.csv", csv);
  write_cifar(dir.path() / "cifar10", {2, 2, 2, 2, 2}, 3);

  auto digits = wrpn::data::open_dataset("digits", dir / "digits", Split::Test);
  CHECK(digits.name() == "digits");
  CHECK(digits.size().value() == 10);
  CHECK(digits.channels() == 1);
  CHECK(digits.image_size() == 32);
  CHECK(digits.num_classes() == 10);
  REQUIRE(digits.tensors() != nullptr);
  CHECK(digits.tensors()->images.size(0) == 10);

  ::setenv("WRPN_DATA_DIR", dir.path().c_str(), 1);
  auto cifar = wrpn::data::open_dataset("cifar10", "", Split::Train);
  ::unsetenv("WRPN_DATA_DIR");
  CHECK(cifar.size().value() == 10);
  CHECK(cifar.channels() == 3);
  CHECK(cifar.class_names()[1] == "automobile");

  CHECK_THROWS_AS(wrpn::data::open_dataset("emnist", "", Split::Train), std::invalid_argument);
  CHECK_THROWS_WITH(wrpn::data::open_dataset("emnist", "", Split::Train),
                    Contains("unknown dataset 'emnist'") && Contains("fashion_mnist"));
  // A known name whose files are missing is a DatasetError naming the file.
  CHECK_THROWS_AS(wrpn::data::open_dataset("mnist", dir.path().string(), Split::Train),
                  wrpn::data::DatasetError);
  CHECK_THROWS_AS(wrpn::data::open_dataset("folder", "", Split::Train), std::invalid_argument);
  CHECK(wrpn::data::dataset_names() ==
        std::vector<std::string>({"digits", "fashion_mnist", "mnist", "cifar10", "folder"}));
}

TEST_CASE("data: open_dataset opens image folders", "[data]") {
  if (skip_without_codecs()) return;
  TempDir dir;
  write_folder(dir.path(), false);
  auto folder = wrpn::data::open_dataset("folder", dir.path().string(), Split::Test,
                                         DatasetOptions().image_size(16).resize_size(16));
  CHECK(folder.tensors() == nullptr);
  CHECK(folder.folder() != nullptr);
  CHECK(folder.image_size() == 16);
  CHECK(folder.num_classes() == 3);
  folder.set_epoch(2);
  CHECK(folder.folder()->epoch() == 2);
  CHECK(folder.get(0).data.sizes() == torch::IntArrayRef({3, 16, 16}));

  auto loader =
      torch::data::make_data_loader(std::move(folder).map(torch::data::transforms::Stack<>()),
                                    torch::data::DataLoaderOptions().batch_size(4).workers(2));
  int64_t seen = 0;
  for (auto& batch : *loader) seen += batch.data.size(0);
  CHECK(seen == 12);
}

// ---------------------------------------------------------------------------------------------
// Throughput (hidden: run with `wrpn_data_tests "[.bench]"`)

namespace {

template <typename Dataset>
double images_per_second(Dataset dataset, size_t workers, int epochs) {
  const auto start = std::chrono::steady_clock::now();
  int64_t count = 0;
  for (int e = 0; e < epochs; ++e) {
    dataset.set_epoch(e);
    auto loader = torch::data::make_data_loader(
        dataset.map(torch::data::transforms::Stack<>()),
        torch::data::DataLoaderOptions().batch_size(64).workers(workers));
    for (auto& batch : *loader) count += batch.data.size(0);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(count) / s;
}

}  // namespace

TEST_CASE("data: data loading throughput", "[.bench][data]") {
  if (skip_without_codecs()) return;
  const std::string digits_path = repo_file("data/digits/digits.csv.gz");
  auto t0 = std::chrono::steady_clock::now();
  wrpn::data::Digits digits(digits_path, Split::Train, DatasetOptions().augment(true));
  const double open_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("digits: open (parse + upscale + split) %.1f ms\n", open_ms);
  for (size_t workers : {0, 1, 2}) {
    std::printf("digits get() + augment, %zu workers: %.0f images/s\n", workers,
                images_per_second(digits, workers, 5));
  }
  t0 = std::chrono::steady_clock::now();
  int64_t count = 0;
  for (int e = 0; e < 20; ++e) {
    const auto perm = torch::randperm(static_cast<int64_t>(digits.size().value()));
    for (int64_t b = 0; b < perm.size(0); b += 128) {
      count += digits.tensors()
                   .batch(perm.narrow(0, b, std::min<int64_t>(128, perm.size(0) - b)), e)
                   .data.size(0);
    }
  }
  std::printf("digits TensorData::batch + augment: %.0f images/s\n",
              count / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  TempDir dir;
  const auto china = wrpn::data::read_image(repo_file("data/sample_images/china.jpg"));
  for (int c = 0; c < 4; ++c) {
    for (int i = 0; i < 32; ++i) {
      fs::create_directories(dir.path() / "train" / ("c" + std::to_string(c)));
      const auto crop = china.narrow(0, (i * 7) % 60, 360).narrow(1, (i * 13) % 140, 480);
      wrpn::data::write_jpeg(
          dir / ("train/c" + std::to_string(c) + "/" + std::to_string(i) + ".jpg"),
          crop.contiguous(), 90);
    }
  }
  for (bool augment : {false, true}) {
    wrpn::data::ImageFolder folder(dir.path().string(), Split::Train,
                                   DatasetOptions().augment(augment));
    for (size_t workers : {1, 2}) {
      std::printf("folder 480x360 JPEG -> 224x224 (%s), %zu workers: %.0f images/s\n",
                  augment ? "train" : "eval", workers, images_per_second(folder, workers, 2));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// IDX (MNIST, Fashion-MNIST)

namespace {

void put_be32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

// An IDX file of unsigned bytes with the given dimensions and data.
std::string idx_bytes(const std::vector<uint32_t>& dims, const std::string& data) {
  std::string out = {0, 0, 8, static_cast<char>(dims.size())};
  for (uint32_t d : dims) put_be32(out, d);
  return out + data;
}

// Image i of an MNIST-layout split: pixel (y, x) = (13 i + 5 y + 3 x + first) % 256.
std::string idx_images(int count, int rows, int cols, int first) {
  std::string data;
  for (int i = 0; i < count; ++i) {
    for (int y = 0; y < rows; ++y) {
      for (int x = 0; x < cols; ++x)
        data.push_back(static_cast<char>((13 * i + 5 * y + 3 * x + first) % 256));
    }
  }
  return idx_bytes(
      {static_cast<uint32_t>(count), static_cast<uint32_t>(rows), static_cast<uint32_t>(cols)},
      data);
}

// Labels (7 i + first) % 10.
std::string idx_labels(int count, int first) {
  std::string data;
  for (int i = 0; i < count; ++i) data.push_back(static_cast<char>((7 * i + first) % 10));
  return idx_bytes({static_cast<uint32_t>(count)}, data);
}

// A small MNIST-layout directory: `train` and `test` images of rows x cols, gzip or plain.
void write_mnist_dir(const TempDir& dir, int train, int test, int rows, int cols, bool gz) {
  const auto put = [&](const std::string& base, const std::string& bytes) {
    write_bytes(dir / (gz ? base + ".gz" : base), gz ? gzip_stored(bytes) : bytes);
  };
  put("train-images-idx3-ubyte", idx_images(train, rows, cols, 0));
  put("train-labels-idx1-ubyte", idx_labels(train, 0));
  put("t10k-images-idx3-ubyte", idx_images(test, rows, cols, 100));
  put("t10k-labels-idx1-ubyte", idx_labels(test, 3));
}

}  // namespace

TEST_CASE("data: read_idx reads the header and row-major data, gzip or plain", "[data][idx]") {
  TempDir dir;
  const bool gz = GENERATE(true, false);
  const std::string bytes = idx_images(3, 2, 4, 0);
  const std::string path = dir / (gz ? "a.idx.gz" : "a.idx");
  write_bytes(path, gz ? gzip_stored(bytes) : bytes);
  const wrpn::data::IdxArray a = wrpn::data::read_idx(path, 3);
  REQUIRE(a.dims == std::vector<int64_t>({3, 2, 4}));
  REQUIRE(a.data.size() == 24);
  // Element (i, y, x) sits at i*8 + y*4 + x.
  for (int i = 0; i < 3; ++i) {
    for (int y = 0; y < 2; ++y) {
      for (int x = 0; x < 4; ++x)
        CHECK(a.data[i * 8 + y * 4 + x] == (13 * i + 5 * y + 3 * x) % 256);
    }
  }
  // Dimensions above 255 are big-endian.
  write_bytes(dir / "b.idx", idx_bytes({258}, std::string(258, '\x07')));
  const auto b = wrpn::data::read_idx(dir / "b.idx");
  CHECK(b.dims == std::vector<int64_t>({258}));
  CHECK(b.data.size() == 258);
}

TEST_CASE("data: read_idx: bad files name the file and what was expected", "[data][idx]") {
  TempDir dir;
  const std::string path = dir / "x.idx";
  const auto fails_with = [&](const std::string& bytes, int64_t dims, const std::string& what) {
    write_bytes(path, bytes);
    INFO(what);
    REQUIRE_THROWS_AS(wrpn::data::read_idx(path, dims), wrpn::data::DatasetError);
    REQUIRE_THROWS_WITH(wrpn::data::read_idx(path, dims), Contains(path) && Contains(what));
  };
  const std::string good = idx_images(2, 3, 3, 0);
  fails_with("", 0, "shorter than the 4-byte magic number");
  fails_with(std::string("\x01\x02\x08\x03", 4) + good.substr(4), 0, "bad magic number 0x01 0x02");
  fails_with(std::string("\x00\x00\x08\x00", 4), 0, "bad magic number");  // zero dimensions
  std::string floats = good;
  floats[2] = 0x0D;
  fails_with(floats, 0, "IDX type 0x0d (float32) is not supported: expected 0x08");
  fails_with(good, 1, "3 dimensions in the header, expected 1 (labels: count)");
  fails_with(idx_labels(4, 0), 3, "1 dimensions in the header, expected 3 (images");
  fails_with(good.substr(0, 10), 3, "truncated header: 10 bytes, expected 16");
  fails_with(good.substr(0, good.size() - 1), 3,
             "17 data bytes, expected 18 (2 x 3 x 3 from the header): the file is truncated");
  fails_with(good + "xy", 3,
             "more than 18 data bytes, expected 18 (2 x 3 x 3 from the header): trailing");
  // A header that claims far more than any file: refused from the header alone.
  fails_with(idx_bytes({4000000000u, 4000000000u, 4000000000u}, "abc"), 3,
             "(4000000000 x 4000000000 x 4000000000) claims more than 17179869184 data bytes");
  // 10 GB claimed, 3 bytes there: the reader reads what the file holds, not what it claims.
  fails_with(idx_bytes({100000u, 1000u, 100u}, "abc"), 3,
             "3 data bytes, expected 10000000000 (100000 x 1000 x 100 from the header): the "
             "file is truncated");
  // Not a regular file: named, and no read that would block on a FIFO.
  REQUIRE_THROWS_WITH(wrpn::data::read_idx(dir.path().string(), 3),
                      Contains(dir.path().string()) && Contains("directory"));
  const std::string fifo = dir / "fifo.idx";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  REQUIRE_THROWS_WITH(wrpn::data::read_idx(fifo, 3), Contains(fifo) && Contains("FIFO"));
  const std::string gz = gzip_stored(good);
  fails_with(gz.substr(0, gz.size() - 12), 3, "corrupt or truncated gzip data");
  REQUIRE_THROWS_WITH(wrpn::data::read_idx(dir / "missing.idx"),
                      Contains("IDX file not found") && Contains(dir / "missing.idx"));
}

TEST_CASE("data: Mnist reads the official split, pixel / 255, labels in file order",
          "[data][idx]") {
  TempDir dir;
  const bool gz = GENERATE(true, false);
  write_mnist_dir(dir, 12, 5, 6, 4, gz);
  const auto raw = DatasetOptions().normalize(false);
  wrpn::data::Mnist train(dir.path().string(), Split::Train, raw);
  wrpn::data::Mnist test(dir.path().string(), Split::Test, raw);
  REQUIRE(train.size().value() == 12);
  REQUIRE(test.size().value() == 5);
  REQUIRE(test.tensors().images.sizes() == torch::IntArrayRef({5, 1, 6, 4}));
  CHECK(test.num_classes() == 10);
  CHECK(test.class_names().front() == "0");
  for (int i = 0; i < 5; ++i) {
    CHECK(test.tensors().labels[i].item<int64_t>() == (7 * i + 3) % 10);
    for (int y = 0; y < 6; ++y) {
      for (int x = 0; x < 4; ++x) {
        const float want = static_cast<float>((13 * i + 5 * y + 3 * x + 100) % 256) / 255.0f;
        CHECK(test.tensors().images[i][0][y][x].item<float>() == want);
      }
    }
  }
  CHECK(train.tensors().labels[11].item<int64_t>() == 77 % 10);
  CHECK(train.tensors().normalization.mean.empty());
}

TEST_CASE("data: Mnist normalises both splits with the training images' statistics",
          "[data][idx]") {
  TempDir dir;
  write_mnist_dir(dir, 10, 4, 5, 5, true);
  // The training pixels' mean and population std, computed here from the bytes.
  double sum = 0, sum2 = 0;
  for (int i = 0; i < 10; ++i) {
    for (int y = 0; y < 5; ++y) {
      for (int x = 0; x < 5; ++x) {
        const double v = ((13 * i + 5 * y + 3 * x) % 256) / 255.0;
        sum += v;
        sum2 += v * v;
      }
    }
  }
  const double mean = sum / 250, std = std::sqrt(sum2 / 250 - mean * mean);
  wrpn::data::FashionMnist train(dir.path().string(), Split::Train);
  wrpn::data::FashionMnist test(dir.path().string(), Split::Test);
  for (const auto* d : {&train, &test}) {
    REQUIRE(d->tensors().normalization.mean.size() == 1);
    CHECK(d->tensors().normalization.mean[0] == Approx(mean).epsilon(1e-12));
    CHECK(d->tensors().normalization.std[0] == Approx(std).epsilon(1e-12));
    CHECK(d->tensors().fill[0] == Approx(-mean / std).epsilon(1e-12));
  }
  const double v = ((13 * 2 + 5 * 1 + 3 * 4 + 100) % 256) / 255.0;
  CHECK(test.tensors().images[2][0][1][4].item<float>() == Approx((v - mean) / std).epsilon(1e-6));
  CHECK(std::abs(train.tensors().images.mean().item<double>()) < 1e-5);
  CHECK(test.class_names() == wrpn::data::FashionMnist::names());
  CHECK(test.class_names()[9] == "Ankle boot");
}

TEST_CASE("data: Mnist: missing files, mismatched counts and bad labels are named", "[data][idx]") {
  TempDir dir;
  const std::string root = dir.path().string();
  REQUIRE_THROWS_WITH(wrpn::data::FashionMnist(root, Split::Train),
                      Contains(dir / "train-images-idx3-ubyte.gz") && Contains("not found") &&
                          Contains("scripts/fetch_data.sh") && Contains("dataset-fashion-mnist"));
  REQUIRE_THROWS_WITH(wrpn::data::Mnist(root, Split::Test),
                      Contains(dir / "t10k-images-idx3-ubyte.gz") && Contains("mnist file"));
  write_mnist_dir(dir, 6, 4, 3, 3, false);
  SECTION("label count differs from image count") {
    write_bytes(dir / "t10k-labels-idx1-ubyte", idx_labels(5, 0));
    REQUIRE_THROWS_WITH(wrpn::data::Mnist(root, Split::Test),
                        Contains(dir / "t10k-labels-idx1-ubyte") && Contains("5 labels") &&
                            Contains("4 images") && Contains("do not match"));
  }
  SECTION("label outside 0..9") {
    std::string labels = idx_labels(4, 0);
    labels[8 + 2] = 10;
    write_bytes(dir / "t10k-labels-idx1-ubyte", labels);
    REQUIRE_THROWS_WITH(
        wrpn::data::Mnist(root, Split::Test),
        Contains(dir / "t10k-labels-idx1-ubyte") && Contains("label 10 at index 2, expected 0..9"));
  }
  SECTION("images swapped for labels") {
    write_bytes(dir / "train-images-idx3-ubyte", idx_labels(6, 0));
    REQUIRE_THROWS_WITH(
        wrpn::data::Mnist(root, Split::Train),
        Contains(dir / "train-images-idx3-ubyte") && Contains("expected 3 (images"));
    // The test split needs the training images for its normalisation, and says which broke.
    REQUIRE_THROWS_WITH(wrpn::data::Mnist(root, Split::Test),
                        Contains(dir / "train-images-idx3-ubyte"));
    // Without normalisation the test split does not read them.
    CHECK(wrpn::data::Mnist(root, Split::Test, DatasetOptions().normalize(false)).size() == 4u);
  }
  SECTION("truncated images") {
    const std::string images = idx_images(4, 3, 3, 100);
    write_bytes(dir / "t10k-images-idx3-ubyte", images.substr(0, images.size() - 5));
    REQUIRE_THROWS_WITH(wrpn::data::Mnist(root, Split::Test),
                        Contains(dir / "t10k-images-idx3-ubyte") && Contains("truncated"));
  }
  SECTION("other names of the same files") {
    for (const char* base : {"train-images", "train-labels", "t10k-images", "t10k-labels"}) {
      const std::string kind =
          std::string(base).find("images") != std::string::npos ? "idx3" : "idx1";
      const std::string from = dir / (std::string(base) + "-" + kind + "-ubyte");
      const std::string to = dir / (std::string(base) + "." + kind + "-ubyte");
      REQUIRE(std::rename(from.c_str(), to.c_str()) == 0);
    }
    CHECK(wrpn::data::Mnist(root, Split::Train).size() == 6u);
  }
}

TEST_CASE("data: Fashion-MNIST loads through make_data_loader identically with 0 and 2 workers",
          "[data][idx]") {
  TempDir dir;
  write_mnist_dir(dir, 40, 8, 28, 28, true);
  auto dataset = wrpn::data::open_dataset("fashion_mnist", dir.path().string(), Split::Train,
                                          DatasetOptions().augment(true).seed(3));
  REQUIRE(dataset.in_memory() != nullptr);
  REQUIRE(dataset.image_size() == 28);
  REQUIRE(dataset.channels() == 1);
  dataset.set_epoch(2);
  const auto [x0, y0] = load_all(dataset, 0);
  const auto [x2, y2] = load_all(dataset, 2);
  REQUIRE(x0.sizes() == torch::IntArrayRef({40, 1, 28, 28}));
  CHECK(torch::equal(x0, x2));
  CHECK(torch::equal(y0, y2));
  CHECK(torch::equal(x0, dataset.tensors()->batch(torch::arange(40), 2).data));
  // The augmentation changes images (crop and flip) but keeps their shape and labels.
  CHECK_FALSE(torch::equal(x0, dataset.tensors()->images));
  CHECK(torch::equal(y0, dataset.tensors()->labels));
}

TEST_CASE("data: the real Fashion-MNIST files give the official 60,000 / 10,000 split",
          "[data][idx]") {
  const char* src = std::getenv("WRPN_SOURCE_DIR");
  const std::string root = std::string(src != nullptr ? src : ".") + "/data/fashion_mnist";
  if (!fs::is_regular_file(root + "/train-images-idx3-ubyte.gz")) {
    std::printf(
        "WRPN_SKIP: %s/train-images-idx3-ubyte.gz is missing (scripts/fetch_data.sh "
        "fetches it from Debian's dataset-fashion-mnist)\n",
        root.c_str());
    return;
  }
  wrpn::data::FashionMnist train(root, Split::Train);
  wrpn::data::FashionMnist test(root, Split::Test);
  REQUIRE(train.size().value() == 60000);
  REQUIRE(test.size().value() == 10000);
  CHECK(train.tensors().images.sizes() == torch::IntArrayRef({60000, 1, 28, 28}));
  const auto train_counts = torch::bincount(train.tensors().labels, {}, 10);
  const auto test_counts = torch::bincount(test.tensors().labels, {}, 10);
  for (int c = 0; c < 10; ++c) {
    CHECK(train_counts[c].item<int64_t>() == 6000);
    CHECK(test_counts[c].item<int64_t>() == 1000);
  }
  // The training set's statistics (published as 0.2860 / 0.3530).
  CHECK(train.tensors().normalization.mean[0] == Approx(0.2860).margin(5e-4));
  CHECK(train.tensors().normalization.std[0] == Approx(0.3530).margin(5e-4));
  CHECK(test.tensors().normalization.mean == train.tensors().normalization.mean);
  const auto names = wrpn::data::dataset_names();
  CHECK(std::find(names.begin(), names.end(), "fashion_mnist") != names.end());
}
