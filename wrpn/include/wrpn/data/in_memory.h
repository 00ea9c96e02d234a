#pragma once
/// Datasets held in memory as stacked tensors: the digits and CIFAR-10 readers, and the base they
/// share.

#include <torch/data/datasets/base.h>
#include <wrpn/data/common.h>

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace wrpn::data {

/// A dataset whose whole split sits in memory (TensorData). get() returns one normalised
/// [C, H, W] float32 image, augmented when options().augment(), and an int64 scalar label.
/// Copies share the data and the epoch, so set_epoch() on the trainer's copy reaches the copies
/// inside loader workers.
class InMemoryDataset : public torch::data::datasets::Dataset<InMemoryDataset> {
 public:
  /// Wraps already-prepared tensors (see TensorData for the layout).
  explicit InMemoryDataset(TensorData data);

  torch::data::Example<> get(size_t index) override;
  std::optional<size_t> size() const override;

  int64_t num_classes() const { return static_cast<int64_t>(data_->class_names.size()); }
  int64_t channels() const { return data_->images.size(1); }
  int64_t height() const { return data_->images.size(2); }
  int64_t width() const { return data_->images.size(3); }
  const std::vector<std::string>& class_names() const { return data_->class_names; }
  const DatasetOptions& options() const { return data_->options; }

  /// The whole split, for trainers that batch by indexing (TensorData::batch).
  const TensorData& tensors() const { return *data_; }

  /// Selects the augmentation of `epoch` for every copy of this dataset.
  void set_epoch(int64_t epoch) { epoch_->store(epoch); }
  int64_t epoch() const { return epoch_->load(); }

 protected:
  std::shared_ptr<const TensorData> data_;
  std::shared_ptr<std::atomic<int64_t>> epoch_;
};

/// The 1,797 8x8 handwritten digits of Debian's python3-sklearn (digits.csv.gz: 64 pixel values
/// 0..16 and a label 0..9 a line), as 1x32x32 images: pixel / 16, bilinear upscale
/// (half-pixel centres), normalised with Digits::kMean / kStd.
/// Split: within each class, in file order, every 5th sample (the 5th, 10th, ...) is a test
/// sample: 1,442 training and 355 test images.
class Digits : public InMemoryDataset {
 public:
  /// Mean and standard deviation of the training split's 32x32 pixels (after / 16).
  static constexpr double kMean = 0.3051;
  static constexpr double kStd = 0.3238;
  static constexpr int64_t kImageSize = 32;
  static constexpr int64_t kSplitEvery = 5;
  /// The largest digits file read (decompressed), far above the 1,797-digit file's ~0.5 MB; a
  /// larger one (or a gzip bomb) is refused once this much has been decompressed.
  static constexpr int64_t kMaxFileBytes = int64_t{64} << 20;

  /// `root` is a directory with digits.csv.gz (or digits.csv), or the file itself. A missing or
  /// malformed file throws DatasetError naming it and saying how to fetch it.
  Digits(const std::string& root, Split split, const DatasetOptions& options = {});

  /// Line (0-based, file order) of each example in the file.
  const std::vector<int64_t>& rows() const { return *rows_; }

 private:
  explicit Digits(std::pair<TensorData, std::vector<int64_t>> loaded);

  std::shared_ptr<const std::vector<int64_t>> rows_;
};

/// CIFAR-10 in its binary format: data_batch_1.bin .. data_batch_5.bin (train) and
/// test_batch.bin (test), each a sequence of 3,073-byte records (label byte 0..9, then 1,024 red,
/// 1,024 green and 1,024 blue bytes of a 32x32 image). Normalised with kMean / kStd.
class Cifar10 : public InMemoryDataset {
 public:
  static constexpr double kMean[3] = {0.4914, 0.4822, 0.4465};
  static constexpr double kStd[3] = {0.2470, 0.2435, 0.2616};
  static constexpr int64_t kRecordBytes = 3073;
  /// The largest batch file read: 1 GiB, 35 times a real batch; the size is checked before
  /// anything is read or allocated.
  static constexpr int64_t kMaxFileBytes = int64_t{1} << 30;

  /// `root` holds the .bin files directly or in a cifar-10-batches-bin/ subdirectory. Class names
  /// come from batches.meta.txt when it is there. Missing files, sizes that are not whole records
  /// and labels > 9 throw DatasetError naming the file.
  Cifar10(const std::string& root, Split split, const DatasetOptions& options = {});

  /// The batch files the split reads, in order.
  static std::vector<std::string> batch_files(Split split);
};

}  // namespace wrpn::data
