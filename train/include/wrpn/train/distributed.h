#pragma once
/// Data-parallel training on PyTorch's distributed engine, c10d: Gloo for CPU tensors, NCCL for
/// CUDA ones (one device per process), launched by torchrun or by anything that sets its
/// environment variables.
///
///   // torchrun --nproc-per-node 2 --no-python ./my_trainer
///   auto dp = wrpn::train::DataParallel::from_environment(torch::kCPU);  // null: no launcher
///   wrpn::train::fit(options, {}, dp);
///
/// fit() with a DataParallel: parameters and buffers are broadcast from rank 0 at the start,
/// gradients are averaged by c10d's Reducer (bucketed allreduce overlapped with backward),
/// BatchNorm buffers are broadcast from rank 0 before every training forward (DDP's default),
/// each epoch's permutation is the same on every rank and each rank takes its share of every
/// global batch, evaluation is sharded with its sums allreduced, and only rank 0 writes files.

#include <c10/util/intrusive_ptr.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace c10d {
class ProcessGroup;
class Store;
class Reducer;
}  // namespace c10d

namespace wrpn::train {

/// What torchrun (or a user) puts in the environment of each process.
struct LaunchEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr;
  int master_port = 0;
  /// TORCHELASTIC_USE_AGENT_STORE: torchrun's agent hosts the store; every rank is a client.
  bool agent_store = false;
  /// TORCHELASTIC_RESTART_COUNT (0 without torchrun).
  int restart_count = 0;

  /// The variables of this process, or nullopt when WORLD_SIZE is unset (a single process).
  /// Throws naming the variable when they are incomplete or malformed (WORLD_SIZE without
  /// RANK or MASTER_ADDR, RANK >= WORLD_SIZE, a port outside 1..65535, ...).
  static std::optional<LaunchEnv> from_environment();
};

/// How a DataParallel connects and synchronises.
struct DataParallelOptions {
  /// "auto" (NCCL for a CUDA device, Gloo for the CPU), "gloo" or "nccl".
  std::string backend = "auto";
  /// Seconds a rendezvous, a store request or a collective may wait for the other ranks before
  /// it fails (c10d's default is 30 minutes).
  double timeout_s = 300.0;
  /// Gradient bucket size of the Reducer, in MiB (DDP's default).
  double bucket_mib = 25.0;
};

/// The ranks of one data-parallel run: a c10d process group and what the trainer does with it.
class DataParallel {
 public:
  /// Connects to the other ranks as `env` says: a TCPStore at MASTER_ADDR:MASTER_PORT (hosted
  /// by rank 0, or by torchrun's agent), a PrefixStore per group, and a Gloo or NCCL process
  /// group. For CUDA, `device` is replaced by cuda:LOCAL_RANK.
  static std::shared_ptr<DataParallel> connect(const LaunchEnv& env, torch::Device device,
                                               const DataParallelOptions& options = {});
  /// connect() with LaunchEnv::from_environment(); nullptr when WORLD_SIZE is unset.
  static std::shared_ptr<DataParallel> from_environment(torch::Device device,
                                                        const DataParallelOptions& options = {});
  /// Wraps a process group the caller created (its default backend must serve `device`).
  /// `store`, when given, lets a failing rank tell the others why.
  DataParallel(c10::intrusive_ptr<c10d::ProcessGroup> group, torch::Device device,
               const DataParallelOptions& options = {}, c10::intrusive_ptr<c10d::Store> store = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_main() const { return rank_ == 0; }
  /// "gloo" or "nccl".
  const std::string& backend() const { return backend_; }
  /// Where this rank's tensors live (cuda:LOCAL_RANK for NCCL).
  torch::Device device() const { return device_; }
  const DataParallelOptions& options() const { return options_; }
  const c10::intrusive_ptr<c10d::ProcessGroup>& group() const { return group_; }

  /// Replaces `tensors` (on device()) in place by rank `root`'s.
  void broadcast(const std::vector<torch::Tensor>& tensors, int root = 0);
  /// Sums `tensors` (on device()) over the ranks, in place.
  void allreduce_sum(const std::vector<torch::Tensor>& tensors);
  /// Sums small host values over the ranks (exact for integers below 2^53).
  std::vector<double> sum_over_ranks(const std::vector<double>& values);
  /// Waits for every rank.
  void barrier();
  /// Each rank's `value`, in rank order (through the store when there is one).
  std::vector<std::string> all_gather_strings(const std::string& value);

  /// Checks that every rank holds parameters and buffers of the same names, shapes and dtypes
  /// as rank 0 (the error names the first difference), then makes them rank 0's.
  void broadcast_module(torch::nn::Module& module);
  /// Makes every module buffer rank 0's (BatchNorm statistics), one coalesced broadcast.
  void broadcast_buffers(torch::nn::Module& module);

  /// Gradient averaging over the ranks for `params` (those with requires_grad): c10d's Reducer.
  /// Call prepare_for_backward(loss) after each training forward, then loss.backward() leaves
  /// each parameter's .grad averaged over the ranks. Every parameter must receive a gradient in
  /// every step.
  void attach_gradients(const std::vector<torch::Tensor>& params);
  void prepare_for_backward(const torch::Tensor& loss);
  void detach_gradients();

  /// What a failing rank tells the others (through the store) before it exits; never throws.
  void report_failure(const std::string& what) noexcept;
  /// Why the other ranks let this one down, for an `error` raised here: the ranks that reported
  /// a failure (and what), else the ranks on this host that are no longer running; empty when
  /// no other rank is to blame (the error is this rank's own).
  std::string explain_failure(const std::string& error) noexcept;

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  c10::intrusive_ptr<c10d::Store> store_;
  std::shared_ptr<c10d::Reducer> reducer_;
  torch::Device device_;
  DataParallelOptions options_;
  std::string backend_;
  int rank_ = 0;
  int world_size_ = 1;
  /// "host:pid" of every rank, gathered at the start.
  std::vector<std::string> peers_;
};

/// The global batches of one epoch of `n` samples at global batch `batch` over `world` ranks,
/// as [begin, end) positions into the epoch's permutation. Every batch holds a multiple of
/// `world` samples, so every rank runs the same number of steps: a last partial batch keeps
/// floor(r / world) * world of its r samples (the rest, fewer than `world`, sit out the epoch)
/// and is folded into the batch before it when that leaves one sample per rank (BatchNorm
/// needs more). With world 1 this is the single-process plan.
std::vector<std::pair<int64_t, int64_t>> epoch_batches(int64_t n, int64_t batch, int world);

/// Rank `rank`'s share of `global`, positions rank, rank + world, rank + 2 world, ...
torch::Tensor shard(const torch::Tensor& global, int rank, int world);

}  // namespace wrpn::train
