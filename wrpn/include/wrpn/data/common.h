#pragma once
/// Pieces shared by the wrpn::data datasets: the split, the options, the error type and the
/// in-memory split as stacked tensors.

#include <torch/arg.h>
#include <torch/data/example.h>
#include <torch/types.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace wrpn::data {

/// Which part of a dataset to read. For image folders Test is the `val/` (or `test/`) folder.
enum class Split { Train, Test };

/// "train" or "test".
const char* split_name(Split split);

/// Parses "train", "test" or "val" ("val" is Split::Test); throws std::invalid_argument otherwise.
Split parse_split(const std::string& name);

/// A missing, unreadable or malformed dataset file. The message names the file and what was
/// expected there.
class DatasetError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// How an image folder checks its files when it is indexed. Files that fail are reported (as a
/// warning naming the file) and left out; files that fail later, when loaded, are reported and
/// replaced by the next good file.
enum class ImageCheck {
  None,    ///< no check at indexing: fastest for very large folders
  Header,  ///< read each file's header: catches non-images, wrong signatures, bad sizes
  Decode,  ///< decode every file: catches truncated and corrupt data too
};

/// Options shared by all datasets; each dataset uses the ones that apply to it.
struct DatasetOptions {
  /// Training augmentation. Digits and CIFAR-10: random crop with `padding` pixels of black on
  /// each side, and (with `flip`) a random horizontal flip. Folders: random resized crop to
  /// `image_size` with `flip`. Without it folders are resized and centre-cropped.
  TORCH_ARG(bool, augment) = false;
  /// Horizontal flips in the augmentation (off makes sense for digits).
  TORCH_ARG(bool, flip) = true;
  /// Padding of the random crop (digits, CIFAR-10).
  TORCH_ARG(int64_t, padding) = 4;
  /// Seed of the augmentation; sample i of epoch e draws from sample_seed(seed, e, i), so results
  /// do not depend on the number of loader workers or the order they run in.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Per-channel (x - mean) / std with the dataset's documented constants.
  TORCH_ARG(bool, normalize) = true;
  /// Folders: output height and width.
  TORCH_ARG(int64_t, image_size) = 224;
  /// Folders, evaluation: the shorter side is resized to this before the centre crop.
  TORCH_ARG(int64_t, resize_size) = 256;
  /// Folders: smallest crop area of the random resized crop, as a fraction of the image.
  TORCH_ARG(double, min_scale) = 0.08;
  /// Folders: how files are checked when the folder is indexed.
  TORCH_ARG(ImageCheck, check) = ImageCheck::Header;
  /// Folders: threads that index (check) the files; 0 uses all hardware threads.
  TORCH_ARG(int64_t, num_threads) = 0;
};

/// Per-channel normalisation constants, (x - mean[c]) / std[c].
struct Normalization {
  std::vector<double> mean;
  std::vector<double> std;
};

/// A whole in-memory split as stacked tensors: a trainer can index batches out of it much faster
/// than it can call get() per example.
struct TensorData {
  torch::Tensor images;                  ///< [N, C, H, W] float32, normalised as get() returns
  torch::Tensor labels;                  ///< [N] int64
  std::vector<std::string> class_names;  ///< label -> name
  Normalization normalization;           ///< what was applied to `images` (empty: none)
  std::vector<double> fill;              ///< per channel: a black pixel after normalisation
  DatasetOptions options;                ///< the options the split was opened with

  /// The examples at `indices` (int64 [B]) as one batch (images [B, C, H, W], labels [B]), with
  /// the augmentation of `epoch` when options.augment(): identical to stacking get(i).
  torch::data::Example<> batch(const torch::Tensor& indices, int64_t epoch = 0) const;
};

/// The file-order indices of one split of a stratified fixed split: within each class, in file
/// order, every `every`-th sample (the 5th, 10th, ... for every = 5) is a test sample and all
/// others are training samples. Labels must be >= 0.
std::vector<int64_t> stratified_split(const std::vector<int64_t>& labels, Split split,
                                      int64_t every = 5);

}  // namespace wrpn::data
