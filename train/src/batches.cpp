#include "batches.h"

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace wrpn::train {

data::DatasetOptions dataset_options(const TrainOptions& o, bool train) {
  data::DatasetOptions d;
  d.augment(train && o.augment)
      .flip(o.dataset != "digits" && o.dataset != "mnist")  // a mirrored digit is another glyph
      .padding(o.dataset == "digits" ? 2 : 4)
      .seed(o.seed)
      .image_size(o.image_size)
      .resize_size(std::max<int64_t>(o.image_size, o.image_size * 8 / 7));
  return d;
}

int64_t split_size(const data::AnyDataset& ds, int64_t limit) {
  const auto n = static_cast<int64_t>(ds.size().value_or(0));
  return limit > 0 ? std::min(n, limit) : n;
}

torch::data::Example<> get_batch(data::AnyDataset& ds, const torch::Tensor& idx, int64_t epoch,
                                 int64_t workers) {
  if (const data::TensorData* t = ds.tensors()) return t->batch(idx, epoch);
  ds.set_epoch(epoch);
  const int64_t n = idx.numel();
  const auto* ip = idx.const_data_ptr<int64_t>();
  std::vector<torch::data::Example<>> ex(static_cast<size_t>(n));
  const int64_t nt = std::max<int64_t>(1, std::min(workers, n));
  std::vector<std::thread> pool;
  std::exception_ptr error;
  std::mutex error_mutex;
  for (int64_t t = 0; t < nt; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (int64_t i = t; i < n; i += nt) ex[i] = ds.get(static_cast<size_t>(ip[i]));
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        error = std::current_exception();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);
  std::vector<torch::Tensor> xs, ys;
  for (auto& e : ex) {
    xs.push_back(e.data);
    ys.push_back(e.target);
  }
  return {torch::stack(xs), torch::stack(ys)};
}

Splits open_splits(const TrainOptions& o) {
  Splits s{
      data::open_dataset(o.dataset, o.data_root, data::Split::Train, dataset_options(o, true)),
      data::open_dataset(o.dataset, o.data_root, data::Split::Test, dataset_options(o, false))};
  s.n_train = split_size(s.train, o.limit_train);
  s.n_test = split_size(s.test, o.limit_test);
  TORCH_CHECK_VALUE(s.n_train >= 2, "the training split of '", o.dataset, "' has ", s.n_train,
                    " images; at least 2 are needed");
  return s;
}

}  // namespace wrpn::train
