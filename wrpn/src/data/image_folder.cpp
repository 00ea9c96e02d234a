// ImageFolder: indexing (with a parallel check of the files), decoding and the ImageNet
// transforms.

#include <c10/util/Exception.h>
#include <torch/nn/functional/upsampling.h>
#include <wrpn/data/image.h>
#include <wrpn/data/image_folder.h>
#include <wrpn/data/transforms.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "wrpn/util/fs.h"
#include "wrpn/util/text.h"

namespace wrpn::data {

struct ImageFolder::LoadFailures {
  std::mutex mutex;
  std::unordered_set<size_t> bad;
  std::vector<SkippedFile> files;

  bool is_bad(size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    return bad.count(i) != 0;
  }
  // Returns true the first time `i` is recorded.
  bool add(size_t i, SkippedFile file) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!bad.insert(i).second) return false;
    files.push_back(std::move(file));
    return true;
  }
};

namespace {

constexpr size_t kHeaderBytes = 64 * 1024;

[[noreturn]] void fail(const std::string& message) { throw DatasetError("wrpn::data: " + message); }

std::string layout_hint(const std::string& root) {
  return "expected " + root + "/train/<class>/*.jpg|jpeg|png and " + root + "/val/<class>/...";
}

bool has_image_extension(const std::string& name) {
  const std::string ext = fs::lower_extension(name);
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

std::vector<uint8_t> read_prefix(const std::string& path, size_t limit, bool* whole) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *whole = true;
    return read_file_bytes(path);  // throws the error naming the file
  }
  std::vector<uint8_t> bytes(limit);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(limit));
  bytes.resize(static_cast<size_t>(in.gcount()));
  *whole = bytes.size() < limit || in.peek() == std::char_traits<char>::eof();
  return bytes;
}

// Empty when the file passes the check, else why it does not.
std::string check_file(const std::string& path, ImageCheck check) {
  try {
    if (check == ImageCheck::Decode) {
      read_image(path);
    } else if (check == ImageCheck::Header) {
      bool whole = false;
      std::vector<uint8_t> bytes = read_prefix(path, kHeaderBytes, &whole);
      try {
        image_size(bytes, path);
      } catch (const DatasetError&) {
        if (whole) throw;
        image_size(read_file_bytes(path), path);  // the header may be longer than the prefix
      }
    }
    return {};
  } catch (const std::exception& e) {
    return e.what();
  }
}

int64_t thread_count(int64_t requested, size_t work) {
  int64_t n = requested > 0 ? requested : static_cast<int64_t>(std::thread::hardware_concurrency());
  return std::max<int64_t>(1, std::min<int64_t>(n, static_cast<int64_t>(work)));
}

}  // namespace

ImageFolder::ImageFolder(const std::string& root, Split split, const DatasetOptions& options)
    : failures_(std::make_shared<LoadFailures>()),
      epoch_(std::make_shared<std::atomic<int64_t>>(0)) {
  if (!image_codecs_available()) {
    fail(root +
         ": cannot read image folders: this libwrpn was built without JPEG/PNG support "
         "(install libjpeg-dev and libpng-dev and rebuild with "
         "-DWRPN_WITH_IMAGE_CODECS=AUTO or ON)");
  }
  TORCH_CHECK(options.image_size() > 0 && options.image_size() <= options.resize_size(),
              "ImageFolder: image_size (", options.image_size(), ") must be in 1..resize_size (",
              options.resize_size(), ")");
  if (!fs::is_directory(root)) {
    fail("image folder not found: " + root + " (" + layout_hint(root) + ")");
  }
  std::string dir = fs::join(root, "train");
  std::string other = fs::join(root, "val");
  if (split == Split::Test) {
    std::swap(dir, other);
    if (!fs::is_directory(dir) && fs::is_directory(fs::join(root, "test"))) {
      dir = fs::join(root, "test");
    }
  }
  if (!fs::is_directory(dir)) {
    fail("image folder split not found: " + dir + " (" + layout_hint(root) + ")");
  }

  auto index = std::make_shared<Index>();
  index->directory = dir;
  index->options = options;
  index->class_names = fs::list_directory(dir, /*want_dirs=*/true);
  if (index->class_names.empty()) {
    fail(dir + ": no class subdirectories (expected " + dir + "/<class>/*.jpg|jpeg|png)");
  }
  if (fs::is_directory(other)) {
    const std::vector<std::string> other_classes = fs::list_directory(other, true);
    if (other_classes != index->class_names) {
      fail(dir + " has " + std::to_string(index->class_names.size()) + " classes but " + other +
           " has " + std::to_string(other_classes.size()) +
           " or different ones: train and val need the same class folders");
    }
  }

  std::vector<std::string> paths;
  std::vector<int64_t> labels;
  for (size_t c = 0; c < index->class_names.size(); ++c) {
    const std::string class_dir = fs::join(dir, index->class_names[c]);
    for (const std::string& name : fs::list_directory(class_dir, /*want_dirs=*/false)) {
      if (!has_image_extension(name)) continue;
      paths.push_back(fs::join(class_dir, name));
      labels.push_back(static_cast<int64_t>(c));
    }
  }

  std::vector<std::string> reasons(paths.size());
  if (options.check() != ImageCheck::None && !paths.empty()) {
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i = next++; i < paths.size(); i = next++) {
        reasons[i] = check_file(paths[i], options.check());
      }
    };
    std::vector<std::thread> threads;
    const int64_t n = thread_count(options.num_threads(), paths.size());
    for (int64_t t = 1; t < n; ++t) threads.emplace_back(work);
    work();
    for (auto& t : threads) t.join();
  }
  for (size_t i = 0; i < paths.size(); ++i) {
    if (reasons[i].empty()) {
      index->paths.push_back(std::move(paths[i]));
      index->labels.push_back(labels[i]);
    } else {
      TORCH_WARN(reasons[i], " (skipped)");
      index->skipped_at_index.push_back({std::move(paths[i]), std::move(reasons[i])});
    }
  }
  std::vector<int64_t> per_class(index->class_names.size(), 0);
  for (const int64_t label : index->labels) ++per_class[static_cast<size_t>(label)];
  std::string empty;
  for (size_t c = 0; c < per_class.size(); ++c) {
    if (per_class[c] == 0) {
      empty += (empty.empty() ? "" : ", ") + util::printable(index->class_names[c], 60);
    }
  }
  if (!empty.empty() && !index->paths.empty()) {
    // A class without training images cannot be learnt, yet would count as an output; a val
    // folder may lack a class, which only makes its accuracy cover fewer classes.
    const std::string message = dir + " has class folders without readable images: " + empty +
                                " (expected <class>/*.jpg|jpeg|png in each)";
    if (split == Split::Train) fail(message + "; remove the folders or add images");
    TORCH_WARN(message, "; their classes have no test images");
  }
  if (index->paths.empty()) {
    fail(dir + ": no readable images (" + std::to_string(index->skipped_at_index.size()) +
         " skipped; expected " + dir + "/<class>/*.jpg|jpeg|png)");
  }
  index_ = std::move(index);
}

std::optional<size_t> ImageFolder::size() const { return index_->paths.size(); }

std::vector<SkippedFile> ImageFolder::skipped() const {
  std::vector<SkippedFile> out = index_->skipped_at_index;
  std::lock_guard<std::mutex> lock(failures_->mutex);
  out.insert(out.end(), failures_->files.begin(), failures_->files.end());
  return out;
}

namespace {

// Antialiased bilinear resize of a uint8 [H, W, 3] image (any strides) to float [3, h, w] in
// [0, 1]. Resizing the bytes (ATen's channels-last uint8 kernel) before converting is several
// times faster than converting first, and differs by at most one grey level.
torch::Tensor resize_to_float(const torch::Tensor& hwc, int64_t height, int64_t width) {
  namespace F = torch::nn::functional;
  torch::Tensor x = hwc.permute({2, 0, 1}).unsqueeze(0).contiguous(at::MemoryFormat::ChannelsLast);
  if (x.size(2) != height || x.size(3) != width) {
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{height, width})
                              .mode(torch::kBilinear)
                              .align_corners(false)
                              .antialias(true));
  }
  return x.squeeze(0)
      .to(torch::kFloat, /*non_blocking=*/false, /*copy=*/false, at::MemoryFormat::Contiguous)
      .div_(255.0);
}

}  // namespace

torch::Tensor ImageFolder::transform(const torch::Tensor& image_hwc, int64_t index) const {
  TORCH_CHECK(
      image_hwc.dim() == 3 && image_hwc.size(2) == 3 && image_hwc.scalar_type() == torch::kUInt8,
      "ImageFolder::transform: expected a uint8 [H, W, 3] image, got ", image_hwc.sizes());
  const DatasetOptions& o = index_->options;
  const int64_t h = image_hwc.size(0), w = image_hwc.size(1);
  torch::Tensor out;
  if (o.augment()) {
    SampleRng rng(sample_seed(o.seed(), epoch(), index));
    const CropBox box = random_resized_crop_box(h, w, o.min_scale(), rng);
    const bool flipped = o.flip() && (rng.next() >> 63) != 0;
    const torch::Tensor crop =
        image_hwc.narrow(0, box.top, box.height).narrow(1, box.left, box.width);
    out = resize_to_float(crop, o.image_size(), o.image_size());
    if (flipped) out = out.flip({2});
  } else {
    // torchvision's Resize(resize_size) + CenterCrop(image_size).
    int64_t new_h = o.resize_size(), new_w = o.resize_size();
    if (h < w) {
      new_w = o.resize_size() * w / h;
    } else if (w < h) {
      new_h = o.resize_size() * h / w;
    }
    const torch::Tensor resized = resize_to_float(image_hwc, new_h, new_w);
    const auto top = static_cast<int64_t>(std::lround((new_h - o.image_size()) / 2.0));
    const auto left = static_cast<int64_t>(std::lround((new_w - o.image_size()) / 2.0));
    out = resized.narrow(1, top, o.image_size()).narrow(2, left, o.image_size());
  }
  if (o.normalize()) out = normalize(out, kMean, kStd);
  return out.contiguous();
}

torch::data::Example<> ImageFolder::get(size_t index) {
  const size_t n = index_->paths.size();
  if (index >= n) {
    throw std::out_of_range("wrpn::data: index " + std::to_string(index) + " out of range for " +
                            std::to_string(n) + " images");
  }
  for (size_t attempt = 0; attempt < n; ++attempt) {
    const size_t i = (index + attempt) % n;
    if (failures_->is_bad(i)) continue;
    try {
      const torch::Tensor image = read_image(index_->paths[i]);
      return {transform(image, static_cast<int64_t>(index)),
              torch::tensor(index_->labels[i], torch::kLong)};
    } catch (const DatasetError& e) {
      if (failures_->add(i, {index_->paths[i], e.what()})) TORCH_WARN(e.what(), " (skipped)");
    }
  }
  fail(index_->directory + ": none of the " + std::to_string(n) + " images could be decoded");
}

}  // namespace wrpn::data
