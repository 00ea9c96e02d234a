// The IDX reader and the MNIST-layout datasets (MNIST, Fashion-MNIST).

#include <wrpn/data/idx.h>

#include <cmath>
#include <cstdio>
#include <limits>

#include "detail.h"
#include "wrpn/util/fs.h"

namespace wrpn::data {
namespace {

[[noreturn]] void fail(const std::string& message) { throw DatasetError("wrpn::data: " + message); }

// 16 GiB: 20 times ImageNet-sized MNIST layouts; the bound keeps a crafted header's product from
// overflowing.
constexpr uint64_t kMaxIdxBytes = uint64_t{16} << 30;

const char kIdxHint[] =
    "expected an IDX file of unsigned bytes: magic 0x00 0x00 0x08 <number of dimensions>, one "
    "big-endian uint32 per dimension, then the bytes";

uint32_t big_endian_u32(const std::string& bytes, size_t offset) {
  const auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(bytes[i])); };
  return b(offset) << 24 | b(offset + 1) << 16 | b(offset + 2) << 8 | b(offset + 3);
}

std::string hex_byte(uint8_t value) {
  char buffer[8];
  std::snprintf(buffer, sizeof(buffer), "0x%02x", value);
  return buffer;
}

const char* idx_type_name(uint8_t type) {
  switch (type) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "int16";
    case 0x0C:
      return "int32";
    case 0x0D:
      return "float32";
    case 0x0E:
      return "float64";
    default:
      return "unknown";
  }
}

std::string dims_text(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? " x " : "") + std::to_string(dims[i]);
  return s;
}

}  // namespace

IdxArray read_idx(const std::string& path, int64_t expected_dims) {
  if (!fs::path_exists(path)) fail("IDX file not found: " + path);
  // The header is read and checked first: the data is read only once the header has said how
  // long it is, so a file that is not IDX (or claims absurd sizes) costs a few bytes.
  detail::GzipReader in(path, kIdxHint);
  std::string bytes = in.read(4);
  const std::string where = path + ": ";
  if (bytes.size() < 4) {
    fail(where + std::to_string(bytes.size()) + " bytes, shorter than the 4-byte magic number (" +
         kIdxHint + ")");
  }
  const auto type = static_cast<uint8_t>(bytes[2]);
  const auto ndims = static_cast<uint8_t>(bytes[3]);
  if (bytes[0] != 0 || bytes[1] != 0 || ndims == 0) {
    fail(where + "bad magic number " + hex_byte(static_cast<uint8_t>(bytes[0])) + " " +
         hex_byte(static_cast<uint8_t>(bytes[1])) + " " + hex_byte(type) + " " + hex_byte(ndims) +
         " (" + kIdxHint + ")");
  }
  if (type != 0x08) {
    fail(where + "IDX type " + hex_byte(type) + " (" + idx_type_name(type) +
         ") is not supported: expected 0x08 (unsigned byte)");
  }
  if (expected_dims > 0 && ndims != expected_dims) {
    fail(where + std::to_string(ndims) + " dimensions in the header, expected " +
         std::to_string(expected_dims) +
         (expected_dims == 3 ? " (images: count, rows, columns)" : " (labels: count)"));
  }
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  bytes += in.read(header - 4);
  if (bytes.size() < header) {
    fail(where + "truncated header: " + std::to_string(bytes.size()) + " bytes, expected " +
         std::to_string(header) + " for " + std::to_string(ndims) + " dimensions");
  }
  IdxArray out;
  // Saturating product of the uint32 dimensions: past kMaxIdxBytes the exact value no longer
  // matters.
  uint64_t total = 1;
  for (size_t d = 0; d < ndims; ++d) {
    const uint32_t n = big_endian_u32(bytes, 4 + 4 * d);
    out.dims.push_back(static_cast<int64_t>(n));
    total = n == 0 || total > kMaxIdxBytes ? (n == 0 ? 0 : total) : total * n;
  }
  if (total > kMaxIdxBytes) {
    fail(where + "the header (" + dims_text(out.dims) + ") claims more than " +
         std::to_string(kMaxIdxBytes) + " data bytes, more than wrpn reads from an IDX file");
  }
  const std::string data = in.read(static_cast<size_t>(total) + 1);
  const uint64_t have = data.size();
  if (have != total) {
    fail(where + (have < total ? std::to_string(have) : "more than " + std::to_string(total)) +
         " data bytes, expected " + std::to_string(total) + " (" + dims_text(out.dims) +
         " from the header): " +
         (have < total ? "the file is truncated" : "trailing bytes after the data"));
  }
  out.data.assign(data.begin(), data.end());
  return out;
}

namespace {

// The file of `base` in `root`: base.gz, base, or base with "-idx" as ".idx"
// (train-images.idx3-ubyte, as some copies of MNIST are named).
std::string find_idx_file(const std::string& root, const std::string& base,
                          const std::string& dataset) {
  std::string dotted = base;
  dotted[dotted.find("-idx")] = '.';
  for (const std::string& name : {base + ".gz", base, dotted + ".gz", dotted}) {
    const std::string path = fs::join(root, name);
    if (fs::is_regular_file(path)) return path;
  }
  const std::string how =
      dataset == "fashion_mnist"
          ? "run scripts/fetch_data.sh (or scripts/setup.sh) to fetch it from Debian's "
            "dataset-fashion-mnist into data/fashion_mnist/"
          : "put MNIST's train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz there";
  fail(dataset + " file not found: " + fs::join(root, base + ".gz") + " (or " + base +
       " uncompressed); " + how);
}

struct IdxSplit {
  torch::Tensor images;  // [N, 1, H, W] uint8
  torch::Tensor labels;  // [N] int64
};

IdxSplit read_split(const std::string& root, Split split, const std::string& dataset,
                    bool labels_too) {
  const auto names = Mnist::files(split);
  const std::string image_path = find_idx_file(root, names[0], dataset);
  IdxArray images = read_idx(image_path, 3);
  const int64_t n = images.dims[0], h = images.dims[1], w = images.dims[2];
  if (n == 0 || h == 0 || w == 0) {
    fail(image_path + ": " + dims_text(images.dims) + " images, expected at least one non-empty");
  }
  IdxSplit out;
  out.images = torch::from_blob(images.data.data(), {n, 1, h, w}, torch::kUInt8).clone();
  if (!labels_too) return out;
  const std::string label_path = find_idx_file(root, names[1], dataset);
  const IdxArray labels = read_idx(label_path, 1);
  if (labels.dims[0] != n) {
    fail(label_path + ": " + std::to_string(labels.dims[0]) + " labels, but " + image_path +
         " holds " + std::to_string(n) + " images: the image and label files do not match");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (labels.data[i] >= Mnist::kNumClasses) {
      fail(label_path + ": label " + std::to_string(labels.data[i]) + " at index " +
           std::to_string(i) + ", expected 0.." + std::to_string(Mnist::kNumClasses - 1));
    }
  }
  out.labels = torch::from_blob(const_cast<uint8_t*>(labels.data.data()), {n}, torch::kUInt8)
                   .to(torch::kLong);
  return out;
}

// Mean and (population) standard deviation of the pixels / 255, from the histogram of the bytes:
// exact in double precision without a float copy of the images.
std::pair<double, double> pixel_stats(const torch::Tensor& images_u8) {
  const torch::Tensor counts = torch::bincount(images_u8.flatten(), {}, 256).to(torch::kDouble);
  const torch::Tensor v = torch::arange(256, torch::kDouble).div_(255.0);
  const double n = static_cast<double>(images_u8.numel());
  const double mean = (counts * v).sum().item<double>() / n;
  const double var = (counts * (v - mean).square()).sum().item<double>() / n;
  return {mean, std::sqrt(var)};
}

TensorData load_mnist_layout(const std::string& root, Split split, const DatasetOptions& options,
                             std::vector<std::string> class_names, const std::string& dataset) {
  IdxSplit s = read_split(root, split, dataset, /*labels_too=*/true);
  TensorData data;
  data.images = s.images.to(torch::kFloat).div_(255.0);
  data.labels = std::move(s.labels);
  data.class_names = std::move(class_names);
  data.options = options;
  std::pair<double, double> stats{0.0, 1.0};
  if (options.normalize()) {
    stats = pixel_stats(split == Split::Train
                            ? s.images
                            : read_split(root, Split::Train, dataset, /*labels_too=*/false).images);
    if (!(stats.second > 0)) {
      fail(root + ": the training images are all one value; cannot normalise them");
    }
  }
  detail::finish_normalization(data, {stats.first}, {stats.second});
  return data;
}

std::vector<std::string> digit_names() {
  std::vector<std::string> names;
  for (int d = 0; d < Mnist::kNumClasses; ++d) names.push_back(std::to_string(d));
  return names;
}

}  // namespace

std::array<std::string, 2> Mnist::files(Split split) {
  if (split == Split::Train) return {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"};
  return {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
}

Mnist::Mnist(const std::string& root, Split split, const DatasetOptions& options)
    : Mnist(root, split, options, digit_names(), "mnist") {}

Mnist::Mnist(const std::string& root, Split split, const DatasetOptions& options,
             std::vector<std::string> class_names, const std::string& dataset)
    : InMemoryDataset(load_mnist_layout(root, split, options, std::move(class_names), dataset)) {}

const std::vector<std::string>& FashionMnist::names() {
  static const std::vector<std::string> kNames = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                                  "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                                  "Bag",         "Ankle boot"};
  return kNames;
}

FashionMnist::FashionMnist(const std::string& root, Split split, const DatasetOptions& options)
    : Mnist(root, split, options, names(), "fashion_mnist") {}

}  // namespace wrpn::data
