#pragma once
/// open_dataset(): any wrpn::data dataset by name, behind one type a generic trainer iterates.

#include <torch/data/datasets/base.h>
#include <wrpn/data/common.h>
#include <wrpn/data/image_folder.h>
#include <wrpn/data/in_memory.h>

#include <string>
#include <variant>
#include <vector>

namespace wrpn::data {

/// One of the datasets, type-erased: an InMemoryDataset (digits, fashion_mnist, mnist,
/// cifar10) or an ImageFolder.
/// Works with torch::data::make_data_loader like the datasets it holds.
class AnyDataset : public torch::data::datasets::Dataset<AnyDataset> {
 public:
  AnyDataset(std::string name, InMemoryDataset dataset);
  AnyDataset(std::string name, ImageFolder dataset);

  torch::data::Example<> get(size_t index) override;
  std::optional<size_t> size() const override;

  /// The name it was opened by ("digits", "fashion_mnist", "mnist", "cifar10", "folder").
  const std::string& name() const { return name_; }
  int64_t num_classes() const;
  int64_t channels() const;
  /// Height (= width) of the images get() returns.
  int64_t image_size() const;
  const std::vector<std::string>& class_names() const;
  void set_epoch(int64_t epoch);

  /// The whole split as tensors for in-memory datasets (batch with TensorData::batch), nullptr
  /// for folders.
  const TensorData* tensors() const;

  /// The dataset inside, or nullptr when it holds the other kind.
  const InMemoryDataset* in_memory() const { return std::get_if<InMemoryDataset>(&impl_); }
  const ImageFolder* folder() const { return std::get_if<ImageFolder>(&impl_); }

 private:
  std::string name_;
  std::variant<InMemoryDataset, ImageFolder> impl_;
};

/// The names open_dataset() knows: "digits", "fashion_mnist", "mnist", "cifar10", "folder".
std::vector<std::string> dataset_names();

/// Opens a dataset by name. An empty `root` means $WRPN_DATA_DIR/<name>, or data/<name> under the
/// working directory when WRPN_DATA_DIR is unset ("folder" needs an explicit root). Throws
/// std::invalid_argument for an unknown name, DatasetError for missing or malformed files.
AnyDataset open_dataset(const std::string& name, const std::string& root, Split split,
                        const DatasetOptions& options = {});

}  // namespace wrpn::data
