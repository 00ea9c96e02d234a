#include <signal.h>
#include <torch/torch.h>
#include <unistd.h>
#include <wrpn/train/distributed.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#ifdef WRPN_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace wrpn::train {
namespace {

std::string seconds_str(double s) {
  std::ostringstream o;
  o << s;
  return o.str();
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

const char* env_or_null(const char* name) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : nullptr;
}

/// An integer environment variable in [lo, hi]; throws naming it otherwise.
int env_int(const char* name, int lo, int hi, const char* why) {
  const char* v = env_or_null(name);
  TORCH_CHECK_VALUE(
      v != nullptr, name, " is not set, but WORLD_SIZE is: ", why,
      " (launch with torchrun, or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)");
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  TORCH_CHECK_VALUE(errno == 0 && end != v && *end == '\0' && x >= lo && x <= hi, name, "='", v,
                    "' is not an integer in ", lo, "..", hi);
  return static_cast<int>(x);
}

bool env_true(const char* name) {
  const char* v = env_or_null(name);
  if (v == nullptr) return false;
  const std::string s(v);
  return s == "1" || s == "True" || s == "true" || s == "TRUE";
}

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

/// Whether process `pid` on this host is alive (a zombie, exited but not yet reaped, is not).
bool process_running(long pid) {
  if (::kill(static_cast<pid_t>(pid), 0) != 0) return errno != ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto close = line.rfind(')');  // "pid (comm) state ..."
  if (close == std::string::npos || close + 2 >= line.size()) return true;
  const char state = line[close + 2];
  return state != 'Z' && state != 'X';
}

/// Process groups made by this process so far: each gets its own store prefix.
std::atomic<int> g_groups{0};

std::string describe_tensors(torch::nn::Module& m) {
  std::ostringstream s;
  for (const auto& p : m.named_parameters()) {
    s << "parameter " << p.key() << " " << p.value().sizes() << " " << p.value().dtype() << "\n";
  }
  for (const auto& b : m.named_buffers()) {
    s << "buffer " << b.key() << " " << b.value().sizes() << " " << b.value().dtype() << "\n";
  }
  return s.str();
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

}  // namespace

std::optional<LaunchEnv> LaunchEnv::from_environment() {
  if (env_or_null("WORLD_SIZE") == nullptr) return std::nullopt;
  LaunchEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 1 << 20, "the number of processes");
  e.rank = env_int("RANK", 0, e.world_size - 1, "this process's rank");
  e.local_rank =
      env_or_null("LOCAL_RANK") ? env_int("LOCAL_RANK", 0, e.world_size - 1, "") : e.rank;
  const char* addr = env_or_null("MASTER_ADDR");
  TORCH_CHECK_VALUE(addr != nullptr, "WORLD_SIZE=", e.world_size,
                    " is set but MASTER_ADDR is not: the address of rank 0 (or of torchrun's "
                    "agent) is needed (launch with torchrun, or set MASTER_ADDR and MASTER_PORT)");
  e.master_addr = addr;
  e.master_port = env_int("MASTER_PORT", 1, 65535, "the port of rank 0's store");
  e.agent_store = env_true("TORCHELASTIC_USE_AGENT_STORE");
  e.restart_count = env_or_null("TORCHELASTIC_RESTART_COUNT")
                        ? env_int("TORCHELASTIC_RESTART_COUNT", 0, 1 << 30, "")
                        : 0;
  return e;
}

std::shared_ptr<DataParallel> DataParallel::from_environment(torch::Device device,
                                                             const DataParallelOptions& options) {
  const auto env = LaunchEnv::from_environment();
  if (!env) return nullptr;
  return connect(*env, device, options);
}

std::shared_ptr<DataParallel> DataParallel::connect(const LaunchEnv& env, torch::Device device,
                                                    const DataParallelOptions& options) {
  TORCH_CHECK_VALUE(options.timeout_s > 0, "the data-parallel timeout must be > 0 seconds, got ",
                    options.timeout_s);
  std::string backend = options.backend;
  TORCH_CHECK_VALUE(backend == "auto" || backend == "gloo" || backend == "nccl",
                    "data-parallel backend must be auto, gloo or nccl, got '", backend, "'");
  if (backend == "auto") backend = device.is_cuda() ? "nccl" : "gloo";
  TORCH_CHECK_VALUE(backend != "nccl" || device.is_cuda(),
                    "the NCCL backend needs a CUDA device, but the run is on ", device.str());
  TORCH_CHECK_VALUE(backend != "gloo" || !device.is_cuda(),
                    "wrpn uses Gloo for CPU tensors only; use the NCCL backend on ", device.str());
  const auto timeout = to_ms(options.timeout_s);

  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(env.master_port);
  so.isServer = !env.agent_store && env.rank == 0;
  so.numWorkers = env.agent_store ? std::nullopt : std::optional<size_t>(env.world_size);
  so.waitWorkers = !env.agent_store;
  so.timeout = timeout;
  so.multiTenant = true;
  c10::intrusive_ptr<c10d::Store> tcp;
  try {
    tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
  } catch (const std::exception& e) {
    const auto* c10e = dynamic_cast<const c10::Error*>(&e);
    const std::string what = c10e != nullptr ? c10e->what_without_backtrace() : e.what();
    const bool in_use = what.find("EADDRINUSE") != std::string::npos ||
                        what.find("address already in use") != std::string::npos;
    TORCH_CHECK(false, "rank ", env.rank, ": ",
                so.isServer ? "could not start the store on " : "could not reach the store at ",
                env.master_addr, ":", env.master_port,
                in_use ? " (the port is in use: choose another MASTER_PORT)"
                       : " within the timeout of " + seconds_str(options.timeout_s) +
                             " s (are all WORLD_SIZE=" + std::to_string(env.world_size) +
                             " ranks started, with the same MASTER_ADDR and MASTER_PORT?)",
                ": ", what.substr(0, 400));
  }
  const std::string prefix = "wrpn/attempt_" + std::to_string(env.restart_count) + "/group_" +
                             std::to_string(g_groups.fetch_add(1)) + "/";
  auto store = c10::make_intrusive<c10d::PrefixStore>(prefix, tcp);
  auto group = c10::make_intrusive<c10d::ProcessGroup>(store, env.rank, env.world_size);
  if (backend == "gloo") {
    auto go = c10d::ProcessGroupGloo::Options::create(timeout);
    if (const char* ifname = env_or_null("GLOO_SOCKET_IFNAME")) {
      go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (is_loopback(env.master_addr)) {
      go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo/", store), env.rank, env.world_size, go);
    group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
    group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
  } else {
#ifdef WRPN_WITH_NCCL
    device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
    c10::cuda::set_device(device.index());
    auto no = c10d::ProcessGroupNCCL::Options::create();
    no->timeout = timeout;
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        c10::make_intrusive<c10d::PrefixStore>("nccl/", store), env.rank, env.world_size, no);
    group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, nccl);
    group->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
#else
    TORCH_CHECK(false,
                "this build of wrpn has no NCCL backend (build with CUDA and the nccl "
                "headers of the nvidia-nccl wheel)");
#endif
  }
  DataParallelOptions resolved = options;
  resolved.backend = backend;
  return std::make_shared<DataParallel>(group, device, resolved, store);
}

DataParallel::DataParallel(c10::intrusive_ptr<c10d::ProcessGroup> group, torch::Device device,
                           const DataParallelOptions& options,
                           c10::intrusive_ptr<c10d::Store> store)
    : group_(std::move(group)), store_(std::move(store)), device_(device), options_(options) {
  TORCH_CHECK_VALUE(group_, "DataParallel needs a process group");
  rank_ = group_->getRank();
  world_size_ = group_->getSize();
  backend_ = group_->getBackendName();
  peers_ = all_gather_strings(host_name() + ":" + std::to_string(::getpid()));
}

DataParallel::~DataParallel() { detach_gradients(); }

void DataParallel::broadcast(const std::vector<torch::Tensor>& tensors, int root) {
  if (tensors.empty()) return;
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> flat_in;
  for (const auto& t : tensors) flat_in.push_back(t.detach());
  c10d::broadcast_coalesced(group_, flat_in, 16u << 20, root);
}

void DataParallel::allreduce_sum(const std::vector<torch::Tensor>& tensors) {
  if (tensors.empty()) return;
  torch::NoGradGuard no_grad;
  std::vector<at::Tensor> flat{torch::cat([&] {
    std::vector<at::Tensor> parts;
    for (const auto& t : tensors) parts.push_back(t.detach().reshape({-1}));
    return parts;
  }())};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::SUM;
  o.timeout = to_ms(options_.timeout_s);
  group_->allreduce(flat, o)->wait();
  int64_t at = 0;
  for (const auto& t : tensors) {
    t.detach().copy_(flat[0].slice(0, at, at + t.numel()).view(t.sizes()));
    at += t.numel();
  }
}

std::vector<double> DataParallel::sum_over_ranks(const std::vector<double>& values) {
  if (values.empty()) return {};
  auto t = torch::tensor(values, torch::kDouble).to(device_);
  allreduce_sum(std::vector<torch::Tensor>{t});
  t = t.cpu();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

void DataParallel::barrier() {
  c10d::BarrierOptions o;
  o.timeout = to_ms(options_.timeout_s);
  if (device_.is_cuda()) o.device_ids = {static_cast<int64_t>(device_.index())};
  group_->barrier(o)->wait();
}

std::vector<std::string> DataParallel::all_gather_strings(const std::string& value) {
  // Lengths first, then one row of bytes per rank; a sum over ranks of rows that are zero
  // except one's own is an all-gather on any backend.
  auto len = torch::zeros({world_size_}, torch::kLong);
  len[rank_] = static_cast<int64_t>(value.size());
  len = len.to(device_);
  allreduce_sum(std::vector<torch::Tensor>{len});
  len = len.cpu();
  const int64_t width = std::max<int64_t>(1, len.max().item<int64_t>());
  auto rows = torch::zeros({world_size_, width}, torch::kUInt8);
  std::memcpy(rows[rank_].data_ptr<uint8_t>(), value.data(), value.size());
  rows = rows.to(device_);
  allreduce_sum(std::vector<torch::Tensor>{rows});
  rows = rows.cpu().contiguous();
  std::vector<std::string> out;
  for (int r = 0; r < world_size_; ++r) {
    const auto* p = reinterpret_cast<const char*>(rows[r].data_ptr<uint8_t>());
    out.emplace_back(p, static_cast<size_t>(len[r].item<int64_t>()));
  }
  return out;
}

void DataParallel::broadcast_module(torch::nn::Module& module) {
  const auto all = all_gather_strings(describe_tensors(module));
  const auto ref = split_lines(all[0]);
  for (int r = 1; r < world_size_; ++r) {
    const auto mine = split_lines(all[r]);
    for (size_t i = 0; i < std::max(ref.size(), mine.size()); ++i) {
      const std::string a = i < ref.size() ? ref[i] : "(nothing)";
      const std::string b = i < mine.size() ? mine[i] : "(nothing)";
      TORCH_CHECK_VALUE(a == b, "the ranks built different models: rank 0 has ", a, " where rank ",
                        r, " has ", b, " (launch every rank with the same model options)");
    }
  }
  std::vector<torch::Tensor> ts;
  for (const auto& p : module.parameters()) ts.push_back(p);
  for (const auto& b : module.buffers()) ts.push_back(b);
  broadcast(ts);
}

void DataParallel::broadcast_buffers(torch::nn::Module& module) {
  std::vector<torch::Tensor> ts;
  for (const auto& b : module.buffers()) ts.push_back(b);
  broadcast(ts);
}

void DataParallel::attach_gradients(const std::vector<torch::Tensor>& params) {
  detach_gradients();
  std::vector<at::Tensor> ps;
  for (const auto& p : params) {
    if (p.requires_grad()) ps.push_back(p);
  }
  if (ps.empty()) return;
  const auto cap = static_cast<size_t>(options_.bucket_mib * 1024 * 1024);
  const size_t first_cap = std::min<size_t>(cap, c10d::kDefaultFirstBucketBytes);
  const std::vector<bool> sparse(ps.size(), false);
  auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(ps, {first_cap, cap}, sparse);
  // Gradients arrive roughly in reverse order of the parameters: so do DDP's buckets.
  std::reverse(buckets.begin(), buckets.end());
  std::vector<int64_t> caps(limits.rbegin(), limits.rend());
  std::unordered_map<size_t, std::string> names;
  reducer_ = std::make_shared<c10d::Reducer>(
      ps, buckets, group_, sparse, static_cast<int64_t>(cap), /*find_unused_parameters=*/false,
      /*gradient_as_bucket_view=*/false, names, static_cast<int64_t>(first_cap),
      /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false, caps);
}

void DataParallel::prepare_for_backward(const torch::Tensor& loss) {
  if (!reducer_) return;
  reducer_->prepare_for_forward();
  reducer_->prepare_for_backward({loss});
}

void DataParallel::detach_gradients() { reducer_.reset(); }

void DataParallel::report_failure(const std::string& what) noexcept {
  if (!store_) return;
  try {
    store_->setTimeout(std::chrono::milliseconds(5000));
    store_->set("failed/" + std::to_string(rank_), what.substr(0, 2000));
  } catch (...) {
  }
}

std::string DataParallel::explain_failure(const std::string& error) noexcept {
  std::string why;
  try {
    if (store_) {
      store_->setTimeout(std::chrono::milliseconds(5000));
      for (int r = 0; r < world_size_; ++r) {
        if (r == rank_) continue;
        const std::string key = "failed/" + std::to_string(r);
        if (store_->check({key})) {
          const auto v = store_->get(key);
          why += (why.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) +
                 " failed: " + std::string(v.begin(), v.end());
        }
      }
    }
  } catch (...) {
    // The store went with its host (rank 0): the process table below still tells.
  }
  if (why.empty()) {
    const std::string me = host_name() + ":";
    for (int r = 0; r < world_size_ && r < static_cast<int>(peers_.size()); ++r) {
      if (r == rank_ || peers_[r].rfind(me, 0) != 0) continue;
      const long pid = std::strtol(peers_[r].c_str() + me.size(), nullptr, 10);
      if (pid > 0 && !process_running(pid)) {
        why += (why.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + " (pid " +
               std::to_string(pid) + ") is no longer running: killed or crashed";
      }
    }
  }
  if (why.empty() && (error.find("Timed out") != std::string::npos ||
                      error.find("timed out") != std::string::npos)) {
    why = "a peer did not answer within --dist-timeout " + seconds_str(options_.timeout_s) +
          " s (a stopped or hung rank, or one far slower than the others)";
  }
  if (why.empty()) return "";
  return "rank " + std::to_string(rank_) + " stopped because " + why + " [" + error.substr(0, 300) +
         "]";
}

std::vector<std::pair<int64_t, int64_t>> epoch_batches(int64_t n, int64_t batch, int world) {
  TORCH_CHECK_VALUE(n >= 0 && batch >= 1 && world >= 1, "epoch_batches: n=", n, " batch=", batch,
                    " world=", world);
  TORCH_CHECK_VALUE(batch % world == 0, "the global batch size ", batch,
                    " must be a multiple of the world size ", world);
  std::vector<std::pair<int64_t, int64_t>> out;
  const int64_t full = n / batch;
  for (int64_t b = 0; b < full; ++b) out.emplace_back(b * batch, (b + 1) * batch);
  const int64_t rest = n - full * batch;
  const int64_t keep = rest - rest % world;
  if (keep > 0) {
    if (keep == world && !out.empty()) {
      out.back().second += keep;  // one sample per rank: fold into the previous batch
    } else {
      out.emplace_back(full * batch, full * batch + keep);
    }
  }
  return out;
}

torch::Tensor shard(const torch::Tensor& global, int rank, int world) {
  TORCH_CHECK_VALUE(world >= 1 && rank >= 0 && rank < world, "shard: rank ", rank,
                    " outside a world of ", world);
  if (world == 1) return global;
  return global.slice(0, rank, global.size(0), world);
}

}  // namespace wrpn::train
