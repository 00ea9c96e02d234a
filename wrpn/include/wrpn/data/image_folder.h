#pragma once
/// ImageNet-style image folders: root/train/<class>/*.jpg|jpeg|png and root/val/<class>/...

#include <torch/data/datasets/base.h>
#include <wrpn/data/common.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

namespace wrpn::data {

/// One file that was left out, and why.
struct SkippedFile {
  std::string path;
  std::string reason;
};

/// An image folder dataset. Classes are the subdirectories of the split's folder in sorted order
/// (label = position); files are taken in sorted order, by content (JPEG or PNG) among names
/// ending in .jpg, .jpeg or .png (any case). get() decodes the file and returns a float32
/// [3, image_size, image_size] image, normalised with ImageNet's kMean / kStd, and an int64 label:
/// with options().augment() a random resized crop and flip, otherwise a resize of the shorter side
/// to resize_size and a centre crop. Files that fail the check at indexing are left out; a file
/// that fails to decode in get() is reported once and the next good file is returned instead.
class ImageFolder : public torch::data::datasets::Dataset<ImageFolder> {
 public:
  static constexpr double kMean[3] = {0.485, 0.456, 0.406};
  static constexpr double kStd[3] = {0.229, 0.224, 0.225};

  /// Indexes root/train (Split::Train) or root/val, falling back to root/test (Split::Test),
  /// checking files with options.num_threads() threads. Throws DatasetError for a missing folder,
  /// a folder without classes or images, or a train/val class mismatch, and when the library was
  /// built without JPEG/PNG support.
  ImageFolder(const std::string& root, Split split, const DatasetOptions& options = {});

  torch::data::Example<> get(size_t index) override;
  std::optional<size_t> size() const override;

  int64_t num_classes() const { return static_cast<int64_t>(index_->class_names.size()); }
  int64_t channels() const { return 3; }
  const std::vector<std::string>& class_names() const { return index_->class_names; }
  const DatasetOptions& options() const { return index_->options; }
  /// The split's folder (root/train, root/val or root/test).
  const std::string& directory() const { return index_->directory; }

  /// Path and label of each example.
  const std::vector<std::string>& paths() const { return index_->paths; }
  const std::vector<int64_t>& labels() const { return index_->labels; }

  /// Files left out at indexing plus those that failed in get() so far.
  std::vector<SkippedFile> skipped() const;

  /// Selects the augmentation of `epoch` for every copy of this dataset.
  void set_epoch(int64_t epoch) { epoch_->store(epoch); }
  int64_t epoch() const { return epoch_->load(); }

  /// The transform of get() applied to a decoded uint8 [H, W, 3] image, for sample `index`.
  torch::Tensor transform(const torch::Tensor& image_hwc, int64_t index) const;

 private:
  struct Index {
    std::string directory;
    std::vector<std::string> class_names;
    std::vector<std::string> paths;
    std::vector<int64_t> labels;
    std::vector<SkippedFile> skipped_at_index;
    DatasetOptions options;
  };
  struct LoadFailures;

  std::shared_ptr<const Index> index_;
  std::shared_ptr<LoadFailures> failures_;
  std::shared_ptr<std::atomic<int64_t>> epoch_;
};

}  // namespace wrpn::data
