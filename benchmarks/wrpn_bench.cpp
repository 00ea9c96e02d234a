// wrpn_bench: times the fused quantizer kernels against a copy of the same bytes, the plain ATen
// composite and PyTorch's fake_quantize, prints a table and writes JSON (design.md, "Tests and
// benchmarks"). Run with --help for the flags and what each column means.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <malloc.h>
#include <torch/cuda.h>
#include <torch/version.h>
#include <wrpn/cli/flags.h>
#include <wrpn/cli/program.h>
#include <wrpn/ops.h>
#include <wrpn/precision.h>
#include <wrpn/version.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <ostream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#ifdef WRPN_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#endif

namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kDescription =
    R"(Times the fused quantizers (wrpn::quantize_weight, wrpn::quantize_activation and the ADaPTION
wrpn::quantize_fixed_point, deterministic "fixed" and stochastic "fixed_sr") in three directions:
  train     forward that also writes the packed straight-through mask (what training runs:
            quantize_*_with_mask)
  infer     forward without the mask (quantize_* on a tensor that needs no gradient)
  backward  wrpn::masked_grad(grad, mask)
against three baselines run in the same process, on the same tensors, in the same rounds:
  clone      a copy of the same bytes (x.clone(); grad.clone() for the backward)
  composite  plain ATen ops: round(clamp(x, lo, hi) * s) / s in the tensor's dtype (the same
             ops serve train and infer); backward grad * ((x >= lo) & (x <= hi))
  fakeq      at::fake_quantize_per_tensor_affine_cachemask (train), ..._affine (infer) and
             grad * mask (backward), with scale 1/s, zero point 0 and [quant_min, quant_max] =
             [-s, s] for weights, [0, s] for activations, scale 2^-f and [-(2^(m+f-1) - 1),
             2^(m+f-1) - 1] for fixed point (the same values as Q(m.f)); "n/a" where a dtype is
             not supported, and for fixed_sr (PyTorch has no stochastic-rounding fake_quantize,
             so fixed_sr's composite is floor(clamp(x) * 2^f + rand_like(x)) / 2^f)
Inputs are uniform in [-1.5, 1.5] (values outside both clamp ranges), grad is standard normal.
Before timing, each kernel's output is checked bit for bit against an fp32 reference.
Lists are comma-separated.)";

constexpr const char* kNotes = R"(
Columns: "median" is the median time of one call over the rounds ("min" with --stat min);
"GB/s" counts the bytes the wrpn op reads and writes (2*numel*elem_size, plus numel/8 for the
mask in train and backward; the JSON lists them per row); "%clone" is that GB/s over clone's
GB/s; "x comp" and "x fakeq" are speed-ups (baseline time / wrpn time).

Memory: every timed call allocates its output, the kernels and the baselines alike. glibc
serves blocks above its mmap threshold (adaptive, but never above 32 MiB on 64-bit systems)
with a fresh mmap and returns them to the OS on free, so without tuning each call of a large
size pays a page fault per 4 KiB of output, which can cost more than the computation. By
default wrpn_bench therefore calls mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD,
INT_MAX) at start: freed blocks stay in the heap and are reused, and every side is measured
without the faults (the process keeps its peak memory until it exits). --no-mallopt measures
with glibc's defaults instead; the JSON records which was used.

CUDA: each call is bracketed by CUDA events on the current stream and the stop event is
synchronized; sizes that fit in the L2 cache measure cache rather than DRAM bandwidth.

Exit status: 0 on success, 1 if a kernel disagrees with its reference or a run fails, 2 for bad
flags.)";

enum class Direction { kTrain, kInfer, kBackward };
enum class QuantOp { kWeight, kActivation, kFixed, kFixedStochastic };

bool is_fixed(QuantOp op) { return op == QuantOp::kFixed || op == QuantOp::kFixedStochastic; }

/// Indexed by QuantOp: the short name (flags, table) and the JSON's "op" name.
constexpr const char* kOpShort[] = {"weight", "activation", "fixed", "fixed_sr"};
constexpr const char* kOpName[] = {"quantize_weight", "quantize_activation", "quantize_fixed_point",
                                   "quantize_fixed_point(stochastic)"};
/// Indexed by Direction.
constexpr const char* kDirectionName[] = {"train", "infer", "backward"};

const char* op_short(QuantOp op) { return kOpShort[static_cast<int>(op)]; }
const char* op_name(QuantOp op) { return kOpName[static_cast<int>(op)]; }
const char* direction_name(Direction d) { return kDirectionName[static_cast<int>(d)]; }
const char* dtype_name(at::ScalarType t) {
  return t == at::kFloat ? "fp32" : t == at::kHalf ? "fp16" : t == at::kBFloat16 ? "bf16" : "?";
}
// CLI11 prints option values with operator<< where one exists (c10 declares one for vectors).
std::ostream& operator<<(std::ostream& os, QuantOp op) { return os << op_short(op); }
std::ostream& operator<<(std::ostream& os, Direction d) { return os << direction_name(d); }

struct Options {
  std::vector<int64_t> sizes{int64_t{1} << 16, int64_t{1} << 18, int64_t{1} << 20,
                             int64_t{1} << 22, int64_t{1} << 24, int64_t{1} << 26};
  std::vector<at::ScalarType> dtypes{at::kFloat, at::kHalf, at::kBFloat16};
  std::vector<int> threads{1, 2};
  std::string device = "all";
  std::vector<QuantOp> ops{QuantOp::kWeight, QuantOp::kActivation, QuantOp::kFixed,
                           QuantOp::kFixedStochastic};
  int fixed_total = 16, fixed_frac = 8;
  std::vector<Direction> directions{Direction::kTrain, Direction::kInfer, Direction::kBackward};
  int bits = 4;
  int iters = 0;
  double min_time = 0.2;
  int warmup = 2;
  std::string json_path = "wrpn_bench.json";
  std::string cpu_kernels;
  bool use_min = false;
  bool mallopt = true;
  bool check = true;
  bool quick = false;
};

/// Q<m>.<f> into o.fixed_total and o.fixed_frac.
void parse_fixed(const std::string& f, Options& o) {
  wrpn::FixedPointFormat format;
  try {
    format = wrpn::FixedPointFormat::parse(f);
  } catch (const c10::Error& e) {
    throw CLI::ValidationError("--fixed", e.what_without_backtrace());
  }
  if (format.frac_bits < 0 || format.stochastic) {
    throw CLI::ValidationError("--fixed", fmt::format("'{}': expected Q<m>.<f>, e.g. Q8.8", f));
  }
  o.fixed_total = static_cast<int>(format.total_bits);
  o.fixed_frac = static_cast<int>(format.frac_bits);
}

/// Parses the flags into `o`. Returns -1 to run, else the exit status (0 after --help, 2 for a
/// bad flag).
int parse_args(int argc, char** argv, Options& o) {
  CLI::App app(kDescription, "wrpn_bench");
  app.footer(kNotes);
  wrpn::cli::take_last_value(app);  // as in every wrpn program
  const std::map<std::string, at::ScalarType> dtypes{
      {"fp32", at::kFloat},    {"float32", at::kFloat},    {"float", at::kFloat},
      {"fp16", at::kHalf},     {"float16", at::kHalf},     {"half", at::kHalf},
      {"bf16", at::kBFloat16}, {"bfloat16", at::kBFloat16}};
  const std::map<std::string, QuantOp> ops{
      {"weight", QuantOp::kWeight},         {"quantize_weight", QuantOp::kWeight},
      {"activation", QuantOp::kActivation}, {"quantize_activation", QuantOp::kActivation},
      {"fixed", QuantOp::kFixed},           {"fixed_sr", QuantOp::kFixedStochastic}};
  const std::map<std::string, Direction> directions{{"train", Direction::kTrain},
                                                    {"infer", Direction::kInfer},
                                                    {"backward", Direction::kBackward}};
  // Each list item through its name map (an enum option reads the integer CLI11 is given).
  auto one_of = [](const auto& map, const std::string& names) {
    return CLI::Validator(
        [&map, names](std::string& s) -> std::string {
          const auto it = map.find(s);
          if (it == map.end()) return fmt::format("'{}' is not one of {}", s, names);
          s = std::to_string(static_cast<int>(it->second));
          return {};
        },
        "");
  };
  std::string fixed = "Q8.8", stat = "median";
  app.add_option("--sizes", o.sizes, "element counts; K, M, G are 2^10, 2^20, 2^30")
      ->delimiter(',')
      ->transform(CLI::AsSizeValue(false).description(""))
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 34).description(""))
      ->type_name("LIST")
      ->default_str("64K,256K,1M,4M,16M,64M");
  app.add_option("--dtypes", o.dtypes, "fp32, fp16, bf16 (also float32, float16, half, bfloat16)")
      ->delimiter(',')
      ->transform(one_of(dtypes, "fp32, fp16, bf16"))
      ->type_name("LIST")
      ->default_str("fp32,fp16,bf16");
  app.add_option("--threads", o.threads, "CPU thread counts, applied with at::set_num_threads")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024).description(""))
      ->type_name("LIST")
      ->default_str("1,2");
  app.add_option("--device", o.device, "all: the CPU, plus CUDA when a GPU is visible")
      ->check(CLI::IsMember({"cpu", "cuda", "all"}))
      ->capture_default_str();
  app.add_option("--ops", o.ops,
                 "weight, activation, fixed, fixed_sr; the fixed-point ops skip the backward, "
                 "which is the same kernel as the WRPN ops'")
      ->delimiter(',')
      ->transform(one_of(ops, "weight, activation, fixed, fixed_sr"))
      ->type_name("LIST")
      ->default_str("weight,activation,fixed,fixed_sr");
  app.add_option("--fixed", fixed, "the fixed-point format, Q<m>.<f>")->capture_default_str();
  app.add_option("--directions", o.directions, "train, infer, backward")
      ->delimiter(',')
      ->transform(one_of(directions, "train, infer, backward"))
      ->type_name("LIST")
      ->default_str("train,infer,backward");
  app.add_option("--bits", o.bits, "quantizer bit width (the time does not depend on it)")
      ->check(CLI::Range(2, 16))
      ->capture_default_str();
  app.add_option("--iters", o.iters,
                 "timed rounds; every variant runs once a round, in a shuffled order (default: "
                 "auto, enough rounds for --min-time seconds, at least 5 and at most 1000)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--min-time", o.min_time, "target seconds per group of variants in auto mode")
      ->check(CLI::Range(0.001, 60.0))
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed calls of each variant before timing")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--stat", stat,
                 "the statistic the table and the ratios use; min, the best round, resists "
                 "interference from other processes on a shared machine; the JSON holds both")
      ->check(CLI::IsMember({"median", "min"}))
      ->capture_default_str();
  app.add_option("--json", o.json_path, "where to write the JSON")
      ->check([](const std::string& s) { return s.empty() ? "the path is empty" : ""; })
      ->capture_default_str();
  app.add_option("--cpu-kernels", o.cpu_kernels,
                 "force a CPU kernel build (default: the best one this CPU supports)")
      ->check(CLI::IsMember({"DEFAULT", "AVX2", "AVX512"}));
  app.add_flag("!--no-mallopt", o.mallopt, "leave glibc's malloc settings as they are (Memory)");
  app.add_flag("!--no-check", o.check, "skip the correctness check before timing");
  app.add_flag("--quick", o.quick,
               "small smoke-test set: sizes 64K,1M, threads 1, 3 rounds, 1 warm-up (flags given "
               "explicitly still win)");
  try {
    app.parse(argc, argv);
    parse_fixed(fixed, o);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.use_min = stat == "min";
  if (o.quick) {
    if (!app.count("--sizes")) o.sizes = {int64_t{1} << 16, int64_t{1} << 20};
    if (!app.count("--threads")) o.threads = {1};
    if (!app.count("--iters")) o.iters = 3;
    if (!app.count("--warmup")) o.warmup = 1;
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------

std::string size_label(int64_t n) {
  if (n % (int64_t{1} << 30) == 0) return fmt::format("{}G", n >> 30);
  if (n % (int64_t{1} << 20) == 0) return fmt::format("{}M", n >> 20);
  if (n % (int64_t{1} << 10) == 0) return fmt::format("{}K", n >> 10);
  return std::to_string(n);
}

std::string time_label(double s) {
  if (s < 1e-3) return fmt::format("{:.1f}us", s * 1e6);
  if (s < 1.0) return fmt::format("{:.3f}ms", s * 1e3);
  return fmt::format("{:.3f}s", s);
}

/// Clamp range and scale of one quantizer, plus its fake_quantize mapping.
struct QuantSpec {
  double lo, hi, scale;
  int64_t qmin, qmax;
};

/// What one op computes: WRPN at `bits`, or fixed point Q(total - frac).(frac).
struct OpArgs {
  QuantOp op;
  int bits;
  int total;
  int frac;
};

QuantSpec spec_for(const OpArgs& a) {
  if (is_fixed(a.op)) {
    const int64_t qmax = (int64_t{1} << (a.total - 1)) - 1;
    const double s = std::ldexp(1.0, a.frac);
    return {-static_cast<double>(qmax) / s, static_cast<double>(qmax) / s, s, -qmax, qmax};
  }
  const QuantOp op = a.op;
  const int bits = a.bits;
  if (op == QuantOp::kWeight) {
    const int64_t s = (int64_t{1} << (bits - 1)) - 1;
    return {-1.0, 1.0, static_cast<double>(s), -s, s};
  }
  const int64_t s = (int64_t{1} << bits) - 1;
  return {0.0, 1.0, static_cast<double>(s), 0, s};
}

// ---- the measured variants ----

at::Tensor composite_forward(const at::Tensor& x, const QuantSpec& q) {
  return at::round(at::clamp(x, q.lo, q.hi) * q.scale) / q.scale;
}

/// Stochastic rounding from plain ATen ops (rand_like draws the uniforms).
at::Tensor composite_stochastic(const at::Tensor& x, const QuantSpec& q) {
  return at::floor(at::clamp(x, q.lo, q.hi) * q.scale + at::rand_like(x)) / q.scale;
}

at::Tensor composite_backward(const at::Tensor& grad, const at::Tensor& x, const QuantSpec& q) {
  return grad * ((x >= q.lo) & (x <= q.hi));
}

at::Tensor fake_quant_infer(const at::Tensor& x, const QuantSpec& q) {
  return at::fake_quantize_per_tensor_affine(x, 1.0 / q.scale, 0, q.qmin, q.qmax);
}

std::tuple<at::Tensor, at::Tensor> fake_quant_train(const at::Tensor& x, const QuantSpec& q) {
  return at::fake_quantize_per_tensor_affine_cachemask(x, 1.0 / q.scale, 0, q.qmin, q.qmax);
}

std::tuple<at::Tensor, at::Tensor> wrpn_train(const OpArgs& a, const at::Tensor& x) {
  if (is_fixed(a.op)) {
    return wrpn::quantize_fixed_point_with_mask(x, a.total, a.frac,
                                                a.op == QuantOp::kFixedStochastic);
  }
  return a.op == QuantOp::kWeight ? wrpn::quantize_weight_with_mask(x, a.bits)
                                  : wrpn::quantize_activation_with_mask(x, a.bits);
}

at::Tensor wrpn_infer(const OpArgs& a, const at::Tensor& x) {
  if (is_fixed(a.op)) {
    return wrpn::quantize_fixed_point(x, a.total, a.frac, a.op == QuantOp::kFixedStochastic);
  }
  return a.op == QuantOp::kWeight ? wrpn::quantize_weight(x, a.bits)
                                  : wrpn::quantize_activation(x, a.bits);
}

/// Empty when fake_quantize runs on this device and dtype, else why not.
std::string fake_quant_unsupported(at::ScalarType dtype, const at::Device& device) {
  try {
    const auto x = at::linspace(-2, 2, 64, at::TensorOptions().dtype(dtype).device(device));
    (void)fake_quant_train(x, spec_for({QuantOp::kWeight, 4, 0, 0}));
    return {};
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    return msg.substr(0, msg.find('\n'));
  }
}

/// Compares the wrpn kernels with an fp32 composite reference, bit for bit.
/// For fixed_sr, whose values are random, each value must be the floor or the ceiling on the grid.
std::vector<std::string> check_kernels(const OpArgs& a, const at::Tensor& x,
                                       const at::Tensor& grad) {
  const QuantSpec q = spec_for(a);
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor pass = (xf >= q.lo) & (xf <= q.hi);
  const at::Tensor want_mask = wrpn::pack_mask(pass);
  const at::Tensor want_g = at::where(pass, grad, at::zeros_like(grad));
  std::vector<std::string> bad;
  auto [q_train, mask] = wrpn_train(a, x);
  if (a.op == QuantOp::kFixedStochastic) {
    const at::Tensor c = at::clamp(xf, q.lo, q.hi) * q.scale;
    const at::Tensor down = (at::floor(c) / q.scale).to(x.scalar_type());
    const at::Tensor up = (at::ceil(c) / q.scale).to(x.scalar_type());
    for (const at::Tensor& got : {q_train, wrpn_infer(a, x)}) {
      if (!(got.eq(down) | got.eq(up)).all().item<bool>()) bad.push_back("stochastic values");
    }
  } else {
    const at::Tensor want_q = composite_forward(xf, q).to(x.scalar_type());
    if (!at::equal(q_train, want_q)) bad.push_back("train output");
    if (!at::equal(wrpn_infer(a, x), want_q)) bad.push_back("infer output");
  }
  if (!at::equal(mask, want_mask)) bad.push_back("train mask");
  if (!at::equal(wrpn::masked_grad(grad, mask), want_g)) bad.push_back("backward");
  return bad;
}

// ---- timing ----

/// One timed call: seconds from just before the call to the end of its work. The result is
/// released after the clock stops.
using TimedCall = std::function<double()>;

template <typename F>
TimedCall cpu_call(F f) {
  return [f]() {
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = f();
    const auto t1 = std::chrono::steady_clock::now();
    return std::chrono::duration<double>(t1 - t0).count();
  };
}

#ifdef WRPN_WITH_CUDA
template <typename F>
TimedCall cuda_call(F f) {
  return [f]() {
    at::cuda::CUDAEvent start(cudaEventDefault);
    at::cuda::CUDAEvent stop(cudaEventDefault);
    const auto stream = at::cuda::getCurrentCUDAStream();
    start.record(stream);
    const auto r = f();
    stop.record(stream);
    stop.synchronize();
    return static_cast<double>(start.elapsed_time(stop)) * 1e-3;
  };
}
#endif

struct Variant {
  std::string name;
  TimedCall call;  // empty: not available (see note)
  std::string note;
};

struct Measured {
  double median_s = 0;
  double min_s = 0;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Runs the variants in rounds (each once a round, in a shuffled order) so that a change of machine
/// load over the run affects all of them alike; returns the median and minimum per variant and
/// the rounds.
std::vector<std::optional<Measured>> measure(const std::vector<Variant>& variants,
                                             const Options& opt, int* rounds_out) {
  const size_t n = variants.size();
  std::vector<double> warm(n, 0.0);
  for (size_t k = 0; k < n; ++k) {
    if (!variants[k].call) continue;
    double best = 0;
    for (int w = 0; w < std::max(opt.warmup, 1); ++w) {
      const double t = variants[k].call();
      best = w == 0 ? t : std::min(best, t);
    }
    warm[k] = best;
  }
  int rounds = opt.iters;
  if (rounds <= 0) {
    double per_round = 0;
    for (double t : warm) per_round += t;
    const double want = per_round > 0 ? std::ceil(opt.min_time / per_round) : 1000.0;
    rounds = static_cast<int>(std::clamp(want, 5.0, 1000.0));
  }
  std::vector<std::vector<double>> times(n);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::mt19937 rng(12345);
  for (int r = 0; r < rounds; ++r) {
    // A new order every round: what a call leaves in the caches and the heap then favours no one.
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t k : order) {
      if (variants[k].call) times[k].push_back(variants[k].call());
    }
  }
  std::vector<std::optional<Measured>> out(n);
  for (size_t k = 0; k < n; ++k) {
    if (times[k].empty()) continue;
    out[k] = Measured{median(times[k]), *std::min_element(times[k].begin(), times[k].end())};
  }
  *rounds_out = rounds;
  return out;
}

// ---- one benchmark configuration ----

struct Row {
  QuantOp op;
  Direction dir;
  std::string device;
  at::ScalarType dtype;
  int threads;  // 0 on CUDA
  int64_t numel;
  int rounds;
  int64_t bytes, clone_bytes;
  Measured wrpn, clone, composite;
  std::optional<Measured> fake_quant;
  std::string fake_quant_note;
  std::string check;  // "ok", "skipped" or what disagreed
};

double gbps(int64_t bytes, double s) { return static_cast<double>(bytes) / s * 1e-9; }

/// Bytes the wrpn op reads and writes.
int64_t op_bytes(Direction d, int64_t numel, int64_t esize) {
  const int64_t mask = (numel + 7) / 8;
  return 2 * numel * esize + (d == Direction::kInfer ? 0 : mask);
}

class Bench {
 public:
  explicit Bench(const Options& opt) : opt_(opt) {}

  /// Times every op and direction for one device, dtype, size and thread count.
  void run(const at::Device& device, at::ScalarType dtype, int64_t numel, int threads) {
    const bool cuda = device.is_cuda();
    at::manual_seed(0);
    const auto cpu_f32 = at::TensorOptions().dtype(at::kFloat);
    const at::Tensor x = (at::rand({numel}, cpu_f32) * 3.0 - 1.5).to(device, dtype);
    const at::Tensor grad = at::randn({numel}, cpu_f32).to(device, dtype);
    const std::string fq_note = fake_quant_unsupported(dtype, device);
    const int bits = opt_.bits;

    auto make = [&](auto f) -> TimedCall {
#ifdef WRPN_WITH_CUDA
      if (cuda) return cuda_call(f);
#endif
      return cpu_call(f);
    };

    for (QuantOp op : opt_.ops) {
      const OpArgs args{op, bits, opt_.fixed_total, opt_.fixed_frac};
      const QuantSpec q = spec_for(args);
      const bool stochastic = op == QuantOp::kFixedStochastic;
      std::string check = "skipped";
      if (opt_.check) {
        const auto bad = check_kernels(args, x, grad);
        check = bad.empty() ? "ok" : fmt::format("MISMATCH: {}", fmt::join(bad, ", "));
        if (!bad.empty()) failed_ = true;
      }
      const at::Tensor mask = std::get<1>(wrpn_train(args, x));
      const std::string op_fq_note =
          stochastic ? "PyTorch has no stochastic-rounding fake_quantize" : fq_note;
      const at::Tensor fq_mask =
          op_fq_note.empty() ? std::get<1>(fake_quant_train(x, q)) : at::Tensor();

      for (Direction dir : opt_.directions) {
        if (is_fixed(op) && dir == Direction::kBackward) continue;  // the WRPN ops' kernel
        const bool backward = dir == Direction::kBackward, train = dir == Direction::kTrain;
        const at::Tensor& src = backward ? grad : x;
        std::vector<Variant> v{
            {"wrpn",
             backward ? make([=] { return wrpn::masked_grad(grad, mask); })
             : train  ? make([=] { return wrpn_train(args, x); })
                      : make([=] { return wrpn_infer(args, x); }),
             {}},
            {"clone", make([=] { return src.clone(); }), {}},
            {"composite",
             backward     ? make([=] { return composite_backward(grad, x, q); })
             : stochastic ? make([=] { return composite_stochastic(x, q); })
                          : make([=] { return composite_forward(x, q); }),
             {}},
            {"fake_quantize", nullptr, op_fq_note.empty() ? std::string() : "n/a: " + op_fq_note}};
        if (op_fq_note.empty()) {
          v[3].call = backward ? make([=] { return grad * fq_mask; })
                      : train  ? make([=] { return fake_quant_train(x, q); })
                               : make([=] { return fake_quant_infer(x, q); });
        }
        int rounds = 0;
        const auto m = measure(v, opt_, &rounds);
        Row row{op,
                dir,
                cuda ? "cuda" : "cpu",
                dtype,
                cuda ? 0 : threads,
                numel,
                rounds,
                op_bytes(dir, numel, static_cast<int64_t>(x.element_size())),
                2 * numel * static_cast<int64_t>(x.element_size()),
                *m[0],
                *m[1],
                *m[2],
                m[3],
                v[3].note,
                check};
        print_row(row);
        rows_.push_back(std::move(row));
      }
    }
  }

  void print_header() const {
    fmt::print("{:<10} {:<8} {:<4} {:<5} {:>3} {:>6} {:>6} {:>10} {:>7} {:>7} {:>7} {:>7}\n", "op",
               "dir", "dev", "dtype", "thr", "numel", "rounds", opt_.use_min ? "min" : "median",
               "GB/s", "%clone", "x comp", "x fakeq");
  }

  void print_row(const Row& r) const {
    const double t = pick(r.wrpn);
    const double g = gbps(r.bytes, t);
    const double clone_g = gbps(r.clone_bytes, pick(r.clone));
    const std::string fq = r.fake_quant ? fmt::format("{:.2f}", pick(*r.fake_quant) / t) : "n/a";
    fmt::print(
        "{:<10} {:<8} {:<4} {:<5} {:>3} {:>6} {:>6} {:>10} {:>7.1f} {:>6.0f}% {:>7.2f} {:>7}{}\n",
        op_short(r.op), direction_name(r.dir), r.device, dtype_name(r.dtype),
        r.threads ? std::to_string(r.threads) : "-", size_label(r.numel), r.rounds, time_label(t),
        g, 100.0 * g / clone_g, pick(r.composite) / t, fq,
        r.check == "ok" || r.check == "skipped" ? "" : "  " + r.check);
    std::fflush(stdout);
  }

  Json rows_json() const {
    Json out = Json::array();
    for (const Row& r : rows_) {
      const double t = pick(r.wrpn);
      const double g = gbps(r.bytes, t);
      const double clone_g = gbps(r.clone_bytes, pick(r.clone));
      Json j;
      j["op"] = op_name(r.op);
      j["direction"] = direction_name(r.dir);
      j["device"] = r.device;
      j["dtype"] = dtype_name(r.dtype);
      j["threads"] = r.threads ? Json(r.threads) : Json(nullptr);
      j["numel"] = r.numel;
      if (is_fixed(r.op)) {
        j["bits"] = opt_.fixed_total;
        j["format"] = fmt::format("Q{}.{}", opt_.fixed_total - opt_.fixed_frac, opt_.fixed_frac);
      } else {
        j["bits"] = opt_.bits;
      }
      j["rounds"] = r.rounds;
      j["bytes"] = r.bytes;
      j["median_us"] = r.wrpn.median_s * 1e6;
      j["min_us"] = r.wrpn.min_s * 1e6;
      j["gbps"] = g;
      j["ratio_to_clone"] = g / clone_g;
      j["speedup_vs_composite"] = pick(r.composite) / t;
      j["speedup_vs_fake_quantize"] = r.fake_quant ? Json(pick(*r.fake_quant) / t) : Json(nullptr);
      j["clone"] = {{"bytes", r.clone_bytes},
                    {"median_us", r.clone.median_s * 1e6},
                    {"min_us", r.clone.min_s * 1e6},
                    {"gbps", clone_g}};
      j["composite"] = {{"median_us", r.composite.median_s * 1e6},
                        {"min_us", r.composite.min_s * 1e6}};
      if (r.fake_quant) {
        j["fake_quantize"] = {{"median_us", r.fake_quant->median_s * 1e6},
                              {"min_us", r.fake_quant->min_s * 1e6}};
      } else {
        j["fake_quantize"] = nullptr;
        j["fake_quantize_note"] = r.fake_quant_note;
      }
      j["check"] = r.check;
      out.push_back(std::move(j));
    }
    return out;
  }

  bool failed() const { return failed_; }

 private:
  /// The statistic the table and the ratios use (--stat).
  double pick(const Measured& m) const { return opt_.use_min ? m.min_s : m.median_s; }

  const Options& opt_;
  std::vector<Row> rows_;
  bool failed_ = false;
};

// ---- machine description ----

std::string read_first_line(const std::string& path, const std::string& key = "") {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (key.empty()) return line;
    if (line.rfind(key, 0) == 0) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line
                                        : line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return {};
}

bool cuda_built() {
#ifdef WRPN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string gpu_name() {
#ifdef WRPN_WITH_CUDA
  if (torch::cuda::is_available()) return at::cuda::getCurrentDeviceProperties()->name;
#endif
  return {};
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Json machine_json(bool malloc_tuned) {
  Json m;
  m["cpu_model"] = read_first_line("/proc/cpuinfo", "model name");
  m["logical_cpus"] = std::thread::hardware_concurrency();
  m["cpu_kernel_capability"] = wrpn::cpu_kernel_capability();
  m["aten_cpu_capability"] = at::get_cpu_capability();
  m["torch_version"] = TORCH_VERSION;
  m["wrpn_version"] = wrpn::kVersion;
  m["wrpn_built_with_cuda"] = cuda_built();
  m["cuda_available"] = torch::cuda::is_available();
  const std::string gpu = gpu_name();
  m["gpu_name"] = gpu.empty() ? Json(nullptr) : Json(gpu);
  m["transparent_hugepage"] = read_first_line("/sys/kernel/mm/transparent_hugepage/enabled");
  m["malloc_tuned"] = malloc_tuned;
  return m;
}

Json definitions_json() {
  return {
      {"median_us", "median wall time of one call of the wrpn op, microseconds"},
      {"bytes",
       "bytes the wrpn op reads and writes: train 2*numel*elem_size + ceil(numel/8) (reads x, "
       "writes q and the packed mask); infer 2*numel*elem_size; backward 2*numel*elem_size + "
       "ceil(numel/8) (reads grad and the mask, writes the gradient)"},
      {"gbps", "bytes / time, 1e9 bytes per second; time is settings.statistic of the rounds"},
      {"clone",
       "x.clone() (grad.clone() for backward) in the same rounds; bytes 2*numel*elem_size"},
      {"ratio_to_clone", "gbps / clone.gbps"},
      {"composite",
       "ATen ops in the tensor's dtype: round(clamp(x, lo, hi) * s) / s for train and infer, "
       "grad * ((x >= lo) & (x <= hi)) for backward"},
      {"fake_quantize",
       "at::fake_quantize_per_tensor_affine_cachemask (train), at::fake_quantize_per_tensor_affine "
       "(infer), grad * mask (backward); scale 1/s, zero_point 0, quant range [-s, s] (weight) or "
       "[0, s] (activation); null with fake_quantize_note where unsupported"},
      {"speedup_vs_composite", "composite time / wrpn time (settings.statistic)"},
      {"speedup_vs_fake_quantize", "fake_quantize time / wrpn time (settings.statistic)"},
      {"rounds", "timed rounds; each variant runs once a round and the median is taken"},
      {"check", "ok: outputs, mask and gradient equal an fp32 composite reference bit for bit"},
  };
}

void tune_malloc() {
  // mallopt(3) gives 32 MiB as the upper limit of M_MMAP_THRESHOLD on 64-bit systems, so mmap is
  // turned off instead; the trim threshold keeps freed memory in the heap for reuse.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

int run_bench(const Options& opt) {
  if (opt.mallopt) tune_malloc();
  if (!opt.cpu_kernels.empty()) wrpn::set_cpu_kernel_capability(opt.cpu_kernels);

  const bool gpu = torch::cuda::is_available();
  bool want_cpu = opt.device != "cuda";
  bool want_cuda = opt.device == "cuda" || (opt.device == "all" && gpu && cuda_built());
  if (opt.device == "cuda" && !cuda_built()) {
    throw std::runtime_error("--device cuda: this wrpn_bench was built without CUDA");
  }
  if (opt.device == "cuda" && !gpu) {
    throw std::runtime_error("--device cuda: no CUDA device is visible");
  }

  const Json machine = machine_json(opt.mallopt);
  fmt::print("wrpn_bench: wrpn {} torch {} | CPU kernels {} ({}, {} logical CPUs){}{}\n",
             wrpn::kVersion, TORCH_VERSION, wrpn::cpu_kernel_capability(),
             machine["cpu_model"].get<std::string>(), std::thread::hardware_concurrency(),
             want_cuda ? " | GPU " + gpu_name() : std::string(),
             opt.mallopt ? "" : " | malloc untuned");
  if (opt.device == "all" && !want_cuda) {
    fmt::print("CUDA: {}; timing the CPU only\n", cuda_built() ? "no device visible" : "not built");
  }

  Bench bench(opt);
  bench.print_header();
  const int saved_threads = at::get_num_threads();
  if (want_cpu) {
    for (int threads : opt.threads) {
      at::set_num_threads(threads);
      for (at::ScalarType dtype : opt.dtypes) {
        for (int64_t n : opt.sizes) bench.run(at::Device(at::kCPU), dtype, n, threads);
      }
    }
    at::set_num_threads(saved_threads);
  }
  if (want_cuda) {
    for (at::ScalarType dtype : opt.dtypes) {
      for (int64_t n : opt.sizes) bench.run(at::Device(at::kCUDA), dtype, n, 0);
    }
  }

  Json settings;
  std::vector<std::string> dtypes, ops, dirs;
  for (auto t : opt.dtypes) dtypes.emplace_back(dtype_name(t));
  for (auto o : opt.ops) ops.emplace_back(op_name(o));
  for (auto d : opt.directions) dirs.emplace_back(direction_name(d));
  settings["sizes"] = opt.sizes;
  settings["dtypes"] = dtypes;
  settings["threads"] = opt.threads;
  settings["device"] = opt.device;
  settings["ops"] = ops;
  settings["fixed_format"] =
      fmt::format("Q{}.{}", opt.fixed_total - opt.fixed_frac, opt.fixed_frac);
  settings["directions"] = dirs;
  settings["bits"] = opt.bits;
  settings["iters"] = opt.iters > 0 ? Json(opt.iters) : Json("auto");
  settings["min_time_s"] = opt.min_time;
  settings["warmup"] = opt.warmup;
  settings["statistic"] = opt.use_min ? "min" : "median";
  settings["mallopt"] = opt.mallopt;
  settings["check"] = opt.check;
  settings["quick"] = opt.quick;

  Json doc;
  doc["schema"] = "wrpn_bench/1";
  doc["created_utc"] = utc_now();
  doc["machine"] = machine;
  doc["settings"] = settings;
  doc["definitions"] = definitions_json();
  doc["results"] = bench.rows_json();

  std::ofstream out(opt.json_path);
  if (!out) throw std::runtime_error(fmt::format("cannot write '{}'", opt.json_path));
  out << doc.dump(2) << '\n';
  out.close();
  if (!out) throw std::runtime_error(fmt::format("writing '{}' failed", opt.json_path));
  fmt::print("wrote {}\n", opt.json_path);
  if (bench.failed()) {
    fmt::print(stderr, "wrpn_bench: some kernels disagree with the reference (see 'check')\n");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  if (const int rc = parse_args(argc, argv, opt); rc >= 0) return rc;
  return wrpn::cli::run_main([&] { return run_bench(opt); });
}
