#pragma once
/// The IDX format of MNIST and Fashion-MNIST, and the two datasets stored in it.
///
/// An IDX file is a 4-byte magic number (two zero bytes, a type byte, the number of dimensions),
/// one big-endian uint32 per dimension, then the data in row-major order. wrpn reads the
/// unsigned-byte type (0x08) that both datasets use, gzip-compressed (as distributed) or not.

#include <wrpn/data/common.h>
#include <wrpn/data/in_memory.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace wrpn::data {

/// An IDX file of unsigned bytes, read whole.
struct IdxArray {
  std::vector<int64_t> dims;  ///< from the header, outermost first
  std::vector<uint8_t> data;  ///< product(dims) bytes, row-major
};

/// Reads an IDX file of unsigned bytes, gzip-compressed or plain. `expected_dims` > 0 requires
/// that many dimensions. Throws DatasetError naming the file and what was expected for a missing
/// or unreadable file, corrupt gzip data, a bad magic number, a type other than unsigned byte, the
/// wrong number of dimensions, and data shorter or longer than the header's dimensions say.
IdxArray read_idx(const std::string& path, int64_t expected_dims = 0);

/// A dataset in MNIST's file layout: `root` holds train-images-idx3-ubyte.gz,
/// train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (each
/// may also be uncompressed, without .gz, or named like train-images.idx3-ubyte). The split is
/// the official one (the train files and the t10k files). Images are 1 x rows x columns float32,
/// pixel / 255, normalised with the mean and standard deviation of the training images (for
/// both splits, so opening the test split reads the training images too). Labels must be 0..9.
/// A missing file, counts that disagree between the image and label files, a label outside
/// 0..9 and every read_idx() error throw DatasetError naming the file.
class Mnist : public InMemoryDataset {
 public:
  static constexpr int64_t kNumClasses = 10;

  Mnist(const std::string& root, Split split, const DatasetOptions& options = {});

  /// The base names (without .gz) of a split's image and label files.
  static std::array<std::string, 2> files(Split split);

 protected:
  /// `dataset` names the dataset in error messages ("mnist", "fashion_mnist").
  Mnist(const std::string& root, Split split, const DatasetOptions& options,
        std::vector<std::string> class_names, const std::string& dataset);
};

/// Fashion-MNIST (Zalando): 60,000 training and 10,000 test 28x28 grayscale images of 10 kinds
/// of clothing, in MNIST's layout; scripts/fetch_data.sh copies it into data/fashion_mnist/ from
/// Debian's dataset-fashion-mnist package. Class names are those of the dataset's README.
class FashionMnist : public Mnist {
 public:
  static constexpr int64_t kTrainSize = 60000;
  static constexpr int64_t kTestSize = 10000;

  FashionMnist(const std::string& root, Split split, const DatasetOptions& options = {});

  /// "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
  /// "Ankle boot".
  static const std::vector<std::string>& names();
};

}  // namespace wrpn::data
