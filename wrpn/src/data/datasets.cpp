// The in-memory datasets (digits, CIFAR-10), the seeded transforms and open_dataset().

#include <ATen/Parallel.h>
#include <torch/nn/functional/upsampling.h>
#include <wrpn/data/common.h>
#include <wrpn/data/dataset.h>
#include <wrpn/data/idx.h>
#include <wrpn/data/in_memory.h>
#include <wrpn/data/transforms.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string_view>

#include "detail.h"
#include "wrpn/util/fs.h"
#include "wrpn/util/text.h"

namespace wrpn::data {

// ---------------------------------------------------------------------------------------------
// Common

const char* split_name(Split split) { return split == Split::Train ? "train" : "test"; }

Split parse_split(const std::string& name) {
  if (name == "train") return Split::Train;
  if (name == "test" || name == "val") return Split::Test;
  throw std::invalid_argument("wrpn::data: unknown split '" + name +
                              "' (expected train, test or val)");
}

std::vector<int64_t> stratified_split(const std::vector<int64_t>& labels, Split split,
                                      int64_t every) {
  if (every < 2) throw std::invalid_argument("wrpn::data::stratified_split: every must be >= 2");
  std::vector<int64_t> seen;
  std::vector<int64_t> indices;
  for (size_t i = 0; i < labels.size(); ++i) {
    const int64_t label = labels[i];
    if (label < 0) {
      throw std::invalid_argument("wrpn::data::stratified_split: negative label " +
                                  std::to_string(label) + " at index " + std::to_string(i));
    }
    if (static_cast<size_t>(label) >= seen.size()) seen.resize(label + 1, 0);
    const bool test = seen[label]++ % every == every - 1;
    if (test == (split == Split::Test)) indices.push_back(static_cast<int64_t>(i));
  }
  return indices;
}

torch::data::Example<> TensorData::batch(const torch::Tensor& indices, int64_t epoch) const {
  const torch::Tensor idx = indices.to(torch::kLong).contiguous();
  torch::Tensor x = images.index_select(0, idx);
  if (options.augment()) {
    std::vector<uint64_t> seeds(idx.numel());
    const int64_t* p = idx.data_ptr<int64_t>();
    for (size_t i = 0; i < seeds.size(); ++i) seeds[i] = sample_seed(options.seed(), epoch, p[i]);
    x = random_crop_flip(x, options.padding(), options.flip(), fill, seeds);
  }
  return {x, labels.index_select(0, idx)};
}

// ---------------------------------------------------------------------------------------------
// Transforms

namespace {

uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

torch::Tensor as_chw_float(const torch::Tensor& image, const char* what) {
  TORCH_CHECK(image.dim() == 3, what, ": expected a [C, H, W] image, got shape ", image.sizes());
  TORCH_CHECK(image.scalar_type() == torch::kFloat, what, ": expected float32, got ",
              image.scalar_type());
  return image;
}

}  // namespace

uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t index) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(epoch)) ^
                    static_cast<uint64_t>(index));
}

uint64_t SampleRng::next() {
  const uint64_t z = splitmix64(state_);
  state_ += 0x9e3779b97f4a7c15ULL;
  return z;
}

double SampleRng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

int64_t SampleRng::below(int64_t n) {
  TORCH_CHECK(n > 0, "SampleRng::below: n must be positive, got ", n);
  return static_cast<int64_t>((static_cast<unsigned __int128>(next()) * static_cast<uint64_t>(n)) >>
                              64);
}

torch::Tensor random_crop_flip(const torch::Tensor& images, int64_t padding, bool flip,
                               c10::ArrayRef<double> fill, c10::ArrayRef<uint64_t> seeds) {
  TORCH_CHECK(images.dim() == 3 || images.dim() == 4,
              "random_crop_flip: expected [N, C, H, W] or [C, H, W] images, got shape ",
              images.sizes());
  TORCH_CHECK(images.scalar_type() == torch::kFloat, "random_crop_flip: expected float32, got ",
              images.scalar_type());
  TORCH_CHECK(padding >= 0, "random_crop_flip: padding must be >= 0, got ", padding);
  const torch::Tensor in = (images.dim() == 3 ? images.unsqueeze(0) : images).contiguous();
  const int64_t n = in.size(0), c = in.size(1), h = in.size(2), w = in.size(3);
  TORCH_CHECK(static_cast<int64_t>(seeds.size()) == n, "random_crop_flip: ", n, " images but ",
              seeds.size(), " seeds");
  TORCH_CHECK(fill.empty() || fill.size() == 1 || static_cast<int64_t>(fill.size()) == c,
              "random_crop_flip: fill needs 1 or ", c, " values, got ", fill.size());
  std::vector<int64_t> dy(n), dx(n);
  std::vector<char> flips(n);
  for (int64_t i = 0; i < n; ++i) {
    SampleRng rng(seeds[i]);
    dy[i] = rng.below(2 * padding + 1) - padding;
    dx[i] = rng.below(2 * padding + 1) - padding;
    flips[i] = flip && (rng.next() >> 63) != 0;
  }
  torch::Tensor out = torch::empty_like(in);
  const float* src = in.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  // Threads only pay off for large batches: about 256K pixels a task.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, h * w));
  at::parallel_for(0, n * c, grain, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t i = plane / c, ch = plane % c;
      const float value =
          fill.empty() ? 0.f : static_cast<float>(fill.size() == 1 ? fill[0] : fill[ch]);
      const float* s = src + plane * h * w;
      float* d = dst + plane * h * w;
      // Output column x reads source column x + dx (or w - 1 - x + dx flipped); [x0, x1) are the
      // columns whose source lies inside the image.
      const int64_t shift = dx[i];
      const int64_t x0 = flips[i] ? std::max<int64_t>(0, shift) : std::max<int64_t>(0, -shift);
      const int64_t x1 =
          flips[i] ? std::min<int64_t>(w, w + shift) : std::min<int64_t>(w, w - shift);
      for (int64_t y = 0; y < h; ++y) {
        const int64_t sy = y + dy[i];
        float* row = d + y * w;
        if (sy < 0 || sy >= h || x0 >= x1) {
          std::fill(row, row + w, value);
          continue;
        }
        const float* in_row = s + sy * w;
        std::fill(row, row + x0, value);
        if (flips[i]) {
          for (int64_t x = x0; x < x1; ++x) row[x] = in_row[w - 1 - x + shift];
        } else {
          std::copy(in_row + x0 + shift, in_row + x1 + shift, row + x0);
        }
        std::fill(row + x1, row + w, value);
      }
    }
  });
  return images.dim() == 3 ? out.squeeze(0) : out;
}

CropBox random_resized_crop_box(int64_t height, int64_t width, double min_scale, SampleRng& rng) {
  TORCH_CHECK(height > 0 && width > 0, "random_resized_crop_box: empty image");
  TORCH_CHECK(min_scale > 0 && min_scale <= 1,
              "random_resized_crop_box: min_scale must be in (0, 1], got ", min_scale);
  const double area = static_cast<double>(height) * static_cast<double>(width);
  const double log_lo = std::log(3.0 / 4.0), log_hi = std::log(4.0 / 3.0);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(min_scale, 1.0);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const auto w = static_cast<int64_t>(std::llround(std::sqrt(target * aspect)));
    const auto h = static_cast<int64_t>(std::llround(std::sqrt(target / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const int64_t top = rng.below(height - h + 1);
      const int64_t left = rng.below(width - w + 1);
      return {top, left, h, w};
    }
  }
  const double ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t h = height, w = width;
  if (ratio < 3.0 / 4.0) {
    h = std::min<int64_t>(height, std::llround(w / (3.0 / 4.0)));
  } else if (ratio > 4.0 / 3.0) {
    w = std::min<int64_t>(width, std::llround(h * (4.0 / 3.0)));
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

torch::Tensor resize(const torch::Tensor& image, int64_t height, int64_t width) {
  as_chw_float(image, "resize");
  TORCH_CHECK(height > 0 && width > 0, "resize: size must be positive, got ", height, "x", width);
  if (image.size(1) == height && image.size(2) == width) return image;
  namespace F = torch::nn::functional;
  return F::interpolate(image.unsqueeze(0), F::InterpolateFuncOptions()
                                                .size(std::vector<int64_t>{height, width})
                                                .mode(torch::kBilinear)
                                                .align_corners(false)
                                                .antialias(true))
      .squeeze(0);
}

torch::Tensor random_resized_crop(const torch::Tensor& image, int64_t size, double min_scale,
                                  bool flip, uint64_t seed) {
  as_chw_float(image, "random_resized_crop");
  SampleRng rng(seed);
  const CropBox box = random_resized_crop_box(image.size(1), image.size(2), min_scale, rng);
  const bool flipped = flip && (rng.next() >> 63) != 0;
  torch::Tensor out = resize(
      image.narrow(1, box.top, box.height).narrow(2, box.left, box.width).contiguous(), size, size);
  return flipped ? out.flip({2}) : out;
}

torch::Tensor resize_center_crop(const torch::Tensor& image, int64_t resize_size,
                                 int64_t crop_size) {
  as_chw_float(image, "resize_center_crop");
  TORCH_CHECK(crop_size > 0 && crop_size <= resize_size, "resize_center_crop: crop size (",
              crop_size, ") must be in 1..resize size (", resize_size, ")");
  const int64_t h = image.size(1), w = image.size(2);
  int64_t new_h = resize_size, new_w = resize_size;
  if (h < w) {
    new_w = resize_size * w / h;
  } else if (w < h) {
    new_h = resize_size * h / w;
  }
  const torch::Tensor resized = resize(image, new_h, new_w);
  const auto top = static_cast<int64_t>(std::lround((new_h - crop_size) / 2.0));
  const auto left = static_cast<int64_t>(std::lround((new_w - crop_size) / 2.0));
  return resized.narrow(1, top, crop_size).narrow(2, left, crop_size).contiguous();
}

torch::Tensor normalize(const torch::Tensor& images, c10::ArrayRef<double> mean,
                        c10::ArrayRef<double> std) {
  TORCH_CHECK(images.dim() >= 3, "normalize: expected [..., C, H, W], got ", images.sizes());
  const int64_t c = images.size(-3);
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == c && static_cast<int64_t>(std.size()) == c,
              "normalize: ", c, " channels but ", mean.size(), " means and ", std.size(), " stds");
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  const torch::Tensor m = torch::tensor(mean.vec(), opts).to(images.scalar_type()).view({c, 1, 1});
  const torch::Tensor s = torch::tensor(std.vec(), opts).to(images.scalar_type()).view({c, 1, 1});
  return (images - m) / s;
}

// ---------------------------------------------------------------------------------------------
// In-memory datasets

namespace {

[[noreturn]] void fail(const std::string& message) { throw DatasetError("wrpn::data: " + message); }

const char kDigitsHint[] =
    "expected digits.csv.gz, the 1,797 8x8 digits of Debian's python3-sklearn (64 pixel values "
    "0..16 and a label 0..9 a line); run scripts/fetch_data.sh (or scripts/setup.sh) to fetch it "
    "into data/digits/";

std::string digits_file(const std::string& root) {
  if (fs::is_regular_file(root)) return root;
  for (const char* name : {"digits.csv.gz", "digits.csv"}) {
    const std::string path = fs::join(root, name);
    if (fs::is_regular_file(path)) return path;
  }
  fail("digits dataset not found: " + fs::join(root, "digits.csv.gz") + " (" + kDigitsHint + ")");
}

struct DigitsFile {
  std::vector<float> pixels;  // 64 per row
  std::vector<int64_t> labels;
};

DigitsFile parse_digits(const std::string& path, const std::string& text) {
  DigitsFile out;
  size_t pos = 0;
  int64_t line_no = 0;
  std::string field;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    const std::string where = path + ": line " + std::to_string(line_no) + ": ";
    int64_t count = 0;
    size_t start = 0;
    while (true) {
      const size_t comma = line.find(',', start);
      field.assign(line.substr(
          start, comma == std::string_view::npos ? line.size() - start : comma - start));
      ++count;
      if (count > 65) break;
      char* end = nullptr;
      const double value = std::strtod(field.c_str(), &end);
      while (end != nullptr && (*end == ' ' || *end == '\t')) ++end;
      const bool integer = !field.empty() && end != nullptr && *end == '\0' &&
                           std::isfinite(value) && value == std::floor(value);
      if (count <= 64) {
        if (!integer || value < 0 || value > 16) {
          fail(where + "pixel " + std::to_string(count) + " is " + util::printable(field) +
               ", expected an integer 0..16 (" + kDigitsHint + ")");
        }
        out.pixels.push_back(static_cast<float>(value));
      } else {
        if (!integer || value < 0 || value > 9) {
          fail(where + "label is " + util::printable(field) + ", expected an integer 0..9 (" +
               kDigitsHint + ")");
        }
        out.labels.push_back(static_cast<int64_t>(value));
      }
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    if (count != 65) {
      fail(where +
           "expected 65 comma-separated values (64 pixels 0..16, then a label 0..9), "
           "found " +
           (count > 65 ? std::string("more") : std::to_string(count)) + " (" + kDigitsHint + ")");
    }
  }
  if (out.labels.empty()) fail(path + ": no digits in the file (" + kDigitsHint + ")");
  return out;
}

const std::vector<std::string> kCifarNames = {"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};

std::string cifar_dir(const std::string& root) {
  const std::string sub = fs::join(root, "cifar-10-batches-bin");
  if (fs::is_regular_file(fs::join(sub, "test_batch.bin")) ||
      fs::is_regular_file(fs::join(sub, "data_batch_1.bin"))) {
    return sub;
  }
  return root;
}

std::vector<std::string> cifar_class_names(const std::string& dir) {
  const std::string path = fs::join(dir, "batches.meta.txt");
  if (!fs::is_regular_file(path)) return kCifarNames;  // a FIFO there would block the read
  std::ifstream meta(path);
  if (!meta) return kCifarNames;
  std::vector<std::string> names;
  std::string line;
  while (std::getline(meta, line)) {
    const size_t b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) continue;
    names.push_back(line.substr(b, line.find_last_not_of(" \t\r") - b + 1));
  }
  return names.size() == kCifarNames.size() ? names : kCifarNames;
}

std::string default_root(const std::string& name) {
  const char* env = std::getenv("WRPN_DATA_DIR");
  return fs::join(env != nullptr && *env != '\0' ? env : "data", name);
}

}  // namespace

InMemoryDataset::InMemoryDataset(TensorData data)
    : data_(std::make_shared<const TensorData>(std::move(data))),
      epoch_(std::make_shared<std::atomic<int64_t>>(0)) {
  const TensorData& d = *data_;
  TORCH_CHECK(d.images.dim() == 4 && d.images.scalar_type() == torch::kFloat,
              "InMemoryDataset: images must be float32 [N, C, H, W], got ", d.images.sizes());
  TORCH_CHECK(d.labels.dim() == 1 && d.labels.scalar_type() == torch::kLong &&
                  d.labels.size(0) == d.images.size(0),
              "InMemoryDataset: labels must be int64 [N] with N = ", d.images.size(0));
  TORCH_CHECK(d.fill.empty() || static_cast<int64_t>(d.fill.size()) == d.images.size(1),
              "InMemoryDataset: fill needs one value per channel");
}

torch::data::Example<> InMemoryDataset::get(size_t index) {
  const auto n = static_cast<size_t>(data_->images.size(0));
  if (index >= n) {
    throw std::out_of_range("wrpn::data: index " + std::to_string(index) + " out of range for " +
                            std::to_string(n) + " examples");
  }
  const auto i = static_cast<int64_t>(index);
  torch::Tensor image = data_->images[i];
  if (data_->options.augment()) {
    const uint64_t seed = sample_seed(data_->options.seed(), epoch(), i);
    image = random_crop_flip(image, data_->options.padding(), data_->options.flip(), data_->fill,
                             {seed});
  }
  return {image, data_->labels[i]};
}

std::optional<size_t> InMemoryDataset::size() const {
  return static_cast<size_t>(data_->images.size(0));
}

namespace {

std::pair<TensorData, std::vector<int64_t>> load_digits(const std::string& root, Split split,
                                                        const DatasetOptions& options) {
  const std::string path = digits_file(root);
  const DigitsFile file =
      parse_digits(path, detail::read_gzip_file(path, kDigitsHint, Digits::kMaxFileBytes));
  std::vector<int64_t> rows = stratified_split(file.labels, split, Digits::kSplitEvery);
  if (rows.empty()) {
    fail(path + ": " + std::to_string(file.labels.size()) + " digits leave none for the " +
         split_name(split) + " split (every " + std::to_string(Digits::kSplitEvery) +
         "th digit of each class is a test digit; " + kDigitsHint + ")");
  }
  const auto n = static_cast<int64_t>(file.labels.size());
  const torch::Tensor all =
      torch::from_blob(const_cast<float*>(file.pixels.data()), {n, 1, 8, 8}, torch::kFloat);
  const torch::Tensor idx = torch::tensor(rows, torch::kLong);
  namespace F = torch::nn::functional;
  TensorData data;
  data.images =
      F::interpolate(all.index_select(0, idx) / 16.0,
                     F::InterpolateFuncOptions()
                         .size(std::vector<int64_t>{Digits::kImageSize, Digits::kImageSize})
                         .mode(torch::kBilinear)
                         .align_corners(false));
  data.labels = torch::tensor(file.labels, torch::kLong).index_select(0, idx);
  for (int d = 0; d < 10; ++d) data.class_names.push_back(std::to_string(d));
  data.options = options;
  detail::finish_normalization(data, {Digits::kMean}, {Digits::kStd});
  return {std::move(data), std::move(rows)};
}

TensorData load_cifar10(const std::string& root, Split split, const DatasetOptions& options) {
  const std::string dir = cifar_dir(root);
  std::vector<uint8_t> bytes;
  for (const std::string& name : Cifar10::batch_files(split)) {
    const std::string path = fs::join(dir, name);
    if (!fs::is_regular_file(path)) {
      fail("CIFAR-10 file not found: " + path +
           " (expected the binary version: data_batch_1.bin .. data_batch_5.bin and "
           "test_batch.bin in " +
           root + " or " + root + "/cifar-10-batches-bin)");
    }
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    const std::streamoff size = in ? static_cast<std::streamoff>(in.tellg()) : -1;
    if (size < 0) fail(path + ": cannot open or size the file");
    if (size > Cifar10::kMaxFileBytes) {
      fail(path + ": " + std::to_string(size) + " bytes, more than the " +
           std::to_string(Cifar10::kMaxFileBytes) +
           " a CIFAR-10 batch file may be (a full batch is 30,730,000 bytes)");
    }
    if (size == 0 || size % Cifar10::kRecordBytes != 0) {
      fail(path + ": " + std::to_string(size) + " bytes is not a whole number of " +
           std::to_string(Cifar10::kRecordBytes) +
           "-byte CIFAR-10 records (1 label byte + 3,072 pixel bytes; a full batch is "
           "30,730,000 bytes)");
    }
    const size_t offset = bytes.size();
    bytes.resize(offset + static_cast<size_t>(size));
    in.seekg(0);
    if (!in.read(reinterpret_cast<char*>(bytes.data() + offset), size)) {
      fail(path + ": read error");
    }
    for (int64_t r = 0; r < size / Cifar10::kRecordBytes; ++r) {
      const uint8_t label = bytes[offset + r * Cifar10::kRecordBytes];
      if (label > 9) {
        fail(path + ": record " + std::to_string(r) + " has label " + std::to_string(label) +
             ", expected 0..9 (is this the CIFAR-10 binary version, not CIFAR-100?)");
      }
    }
  }
  const auto n = static_cast<int64_t>(bytes.size()) / Cifar10::kRecordBytes;
  const torch::Tensor records =
      torch::from_blob(bytes.data(), {n, Cifar10::kRecordBytes}, torch::kUInt8);
  TensorData data;
  data.labels = records.select(1, 0).to(torch::kLong);
  data.images = records.narrow(1, 1, 3072).reshape({n, 3, 32, 32}).to(torch::kFloat).div_(255.0);
  data.class_names = cifar_class_names(dir);
  data.options = options;
  detail::finish_normalization(data, {std::begin(Cifar10::kMean), std::end(Cifar10::kMean)},
                               {std::begin(Cifar10::kStd), std::end(Cifar10::kStd)});
  return data;
}

}  // namespace

Digits::Digits(const std::string& root, Split split, const DatasetOptions& options)
    : Digits(load_digits(root, split, options)) {}

Digits::Digits(std::pair<TensorData, std::vector<int64_t>> loaded)
    : InMemoryDataset(std::move(loaded.first)),
      rows_(std::make_shared<const std::vector<int64_t>>(std::move(loaded.second))) {}

std::vector<std::string> Cifar10::batch_files(Split split) {
  if (split == Split::Test) return {"test_batch.bin"};
  return {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
          "data_batch_5.bin"};
}

Cifar10::Cifar10(const std::string& root, Split split, const DatasetOptions& options)
    : InMemoryDataset(load_cifar10(root, split, options)) {}

// ---------------------------------------------------------------------------------------------
// AnyDataset

AnyDataset::AnyDataset(std::string name, InMemoryDataset dataset)
    : name_(std::move(name)), impl_(std::move(dataset)) {}

AnyDataset::AnyDataset(std::string name, ImageFolder dataset)
    : name_(std::move(name)), impl_(std::move(dataset)) {}

torch::data::Example<> AnyDataset::get(size_t index) {
  return std::visit([index](auto& d) { return d.get(index); }, impl_);
}

std::optional<size_t> AnyDataset::size() const {
  return std::visit([](const auto& d) { return d.size(); }, impl_);
}

int64_t AnyDataset::num_classes() const {
  return std::visit([](const auto& d) { return d.num_classes(); }, impl_);
}

int64_t AnyDataset::channels() const {
  return std::visit([](const auto& d) { return d.channels(); }, impl_);
}

int64_t AnyDataset::image_size() const {
  if (const auto* m = in_memory()) return m->height();
  return folder()->options().image_size();
}

const std::vector<std::string>& AnyDataset::class_names() const {
  return std::visit(
      [](const auto& d) -> const std::vector<std::string>& { return d.class_names(); }, impl_);
}

void AnyDataset::set_epoch(int64_t epoch) {
  std::visit([epoch](auto& d) { d.set_epoch(epoch); }, impl_);
}

const TensorData* AnyDataset::tensors() const {
  const auto* m = in_memory();
  return m != nullptr ? &m->tensors() : nullptr;
}

std::vector<std::string> dataset_names() {
  return {"digits", "fashion_mnist", "mnist", "cifar10", "folder"};
}

AnyDataset open_dataset(const std::string& name, const std::string& root, Split split,
                        const DatasetOptions& options) {
  if (name == "digits") {
    return {name, Digits(root.empty() ? default_root(name) : root, split, options)};
  }
  if (name == "fashion_mnist") {
    return {name, FashionMnist(root.empty() ? default_root(name) : root, split, options)};
  }
  if (name == "mnist") {
    return {name, Mnist(root.empty() ? default_root(name) : root, split, options)};
  }
  if (name == "cifar10") {
    return {name, Cifar10(root.empty() ? default_root(name) : root, split, options)};
  }
  if (name == "folder") {
    if (root.empty()) {
      throw std::invalid_argument(
          "wrpn::data: the folder dataset needs a root directory (root/train/<class>/*.jpg|png, "
          "root/val/<class>/...)");
    }
    return {name, ImageFolder(root, split, options)};
  }
  throw std::invalid_argument("wrpn::data: unknown dataset '" + name +
                              "' (expected digits, fashion_mnist, mnist, cifar10 or folder)");
}

}  // namespace wrpn::data
