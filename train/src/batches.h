#pragma once
// The datasets of a run and their batches, in memory or decoded by worker threads.

#include <torch/torch.h>
#include <wrpn/data.h>
#include <wrpn/train/options.h>

#include <cstdint>

namespace wrpn::train {

/// How a run opens its datasets: augmentation only for training, no flip on digits.
data::DatasetOptions dataset_options(const TrainOptions& o, bool train);

/// The number of images a run uses of `ds` (all, or the first `limit`).
int64_t split_size(const data::AnyDataset& ds, int64_t limit);

/// The examples at `idx` as one batch: sliced from memory, or decoded by `workers` threads.
torch::data::Example<> get_batch(data::AnyDataset& ds, const torch::Tensor& idx, int64_t epoch,
                                 int64_t workers);

/// A run's two splits and how much of each it uses.
struct Splits {
  data::AnyDataset train;
  data::AnyDataset test;
  int64_t n_train = 0;
  int64_t n_test = 0;
};

/// Opens the training and test splits `o` names; throws when fewer than 2 training images remain.
Splits open_splits(const TrainOptions& o);

}  // namespace wrpn::train
