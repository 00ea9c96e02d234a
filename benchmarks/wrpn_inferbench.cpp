// wrpn_inferbench: inference speed of widened low-bit ResNets run three ways, measured in one
// run: the fp32 1x model (the baseline a user would otherwise deploy), the fake-quantized
// widened model (how it trains: every value fp32) and the same model lowered onto integer
// kernels (wrpn::deploy). Rounds are interleaved (each round times every configuration once), so
// drifts of this machine's speed fall on all of them alike; images/s is the median over rounds,
// with the spread (min..max) beside it. As in wrpn_bench, glibc is told to keep freed blocks
// (mallopt) so that no configuration pays a page fault per 4 KiB of every fresh activation
// tensor; --no-mallopt measures with glibc's defaults. On CUDA the baseline also runs under bf16
// autocast (cuDNN bf16 convolutions) and the integer model uses the GEMM engine.

#include <fmt/format.h>
#include <torch/torch.h>
#include <wrpn/cli/flags.h>
#include <wrpn/cli/program.h>
#include <wrpn/deploy/integer_model.h>
#include <wrpn/models/registry.h>
#include <wrpn/train/trainer.h>
#include <wrpn/util/fs.h>

#ifdef WRPN_WITH_CUDA
#include <ATen/autocast_mode.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using nlohmann::json;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// One model variant at one batch size.
struct Runner {
  std::string label;  // "fp32 1x", "4/4 2x fake-quant", "4/4 2x int8"
  std::string kind;   // fp32, fp32-bf16, fake-quant, int8
  double width = 1;
  int64_t bits = 32;
  int64_t weight_bytes = 0;
  std::function<void(const torch::Tensor&)> run;
  std::vector<double> images_per_s;
};

std::vector<int64_t> parse_list(const std::string& text, const char* what) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      TORCH_CHECK_VALUE(used == item.size() && v >= 1, "");
      out.push_back(v);
    } catch (...) {
      TORCH_CHECK_VALUE(false, what, ": expected positive integers separated by commas, got \"",
                        text, "\"");
    }
  }
  TORCH_CHECK_VALUE(!out.empty(), what, ": empty list");
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  return wrpn::cli::run_main([&] {
    CLI::App app{"Inference speed: fp32 1x, fake-quantized and integer WRPN ResNets",
                 "wrpn_inferbench"};
    std::string json_path = "inferbench.json", device_name = "cpu", model = "resnet20";
    std::string threads_text = "1,2", batches_text = "1,64";
    int64_t channels = 1, image_size = 32, rounds = 15;
    double min_round_s = 0.2;
    bool quick = false, tune_malloc = true;
    app.add_option("--json", json_path, "where to write the JSON")->capture_default_str();
    app.add_option("--device", device_name, "cpu or cuda")->capture_default_str();
    app.add_option("--model", model, "zoo model")->capture_default_str();
    app.add_option("--threads", threads_text, "CPU thread counts, e.g. 1,2")->capture_default_str();
    app.add_option("--batch", batches_text, "batch sizes, e.g. 1,64")->capture_default_str();
    app.add_option("--channels", channels, "input channels (1: digits, Fashion-MNIST)")
        ->check(CLI::Range(1, 4))
        ->capture_default_str();
    app.add_option("--image-size", image_size, "input height and width")
        ->check(CLI::Range(8, 512))
        ->capture_default_str();
    app.add_option("--rounds", rounds, "interleaved timing rounds (the median is reported)")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    app.add_option("--min-round-seconds", min_round_s,
                   "each configuration repeats its forward for at least this long per round")
        ->check(CLI::Range(0.0, 60.0))
        ->capture_default_str();
    app.add_flag("--quick", quick, "4/4 2x only, batch 1 and 8, 1 thread, 2 rounds (smoke test)");
    app.add_flag("!--no-mallopt", tune_malloc, "leave glibc's malloc settings as they are");
    if (const auto rc = wrpn::cli::parse(app, argc, argv)) return *rc;
    if (tune_malloc) {
      mallopt(M_MMAP_MAX, 0);
      mallopt(M_TRIM_THRESHOLD, INT_MAX);
    }
    const torch::Device device = wrpn::train::resolve_device(device_name);
    std::vector<int64_t> threads = parse_list(threads_text, "--threads");
    std::vector<int64_t> batches = parse_list(batches_text, "--batch");
    struct Variant {
      int64_t bits;
      double width;
    };
    std::vector<Variant> variants = {{4, 2}, {2, 2}, {4, 3}, {2, 3}};
    if (quick) {
      threads = {1};
      batches = {1, 8};
      variants = {{4, 2}};
      rounds = 2;
      min_round_s = 0.0;
    }
    if (device.is_cuda()) threads = {static_cast<int64_t>(at::get_num_threads())};

    torch::NoGradGuard no_grad;
    auto make = [&](int64_t bits, double width) {
      wrpn::models::ModelSpec s;
      s.name = model;
      s.num_classes = 10;
      s.in_channels = channels;
      s.precision = wrpn::PrecisionConfig::make(bits, bits, width);
      auto m = wrpn::models::create_model(s);
      m->eval();
      m->to(device);
      return m;
    };
    // fp32 bytes of a model as deployed: conv weights, folded BatchNorms, the FC.
    auto param_bytes = [&](const wrpn::models::Classifier& m) {
      return wrpn::deploy::deploy(
                 *m,
                 wrpn::deploy::DeployOptions().engine(wrpn::deploy::Engine::kFloat).device(device))
          .fp32_weight_bytes();
    };
    std::vector<Runner> runners;
    const auto fp32 = make(32, 1);
    runners.push_back({"fp32 1x", "fp32", 1, 32, param_bytes(fp32),
                       [fp32](const torch::Tensor& x) { fp32->forward(x); }});
#ifdef WRPN_WITH_CUDA
    if (device.is_cuda()) {
      runners.push_back({"fp32 1x bf16 autocast", "fp32-bf16", 1, 32, param_bytes(fp32),
                         [fp32](const torch::Tensor& x) {
                           at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
                           at::autocast::set_autocast_enabled(at::kCUDA, true);
                           fp32->forward(x);
                           at::autocast::set_autocast_enabled(at::kCUDA, false);
                           at::autocast::clear_cache();
                         }});
    }
#endif
    for (const auto& v : variants) {
      const auto fq = make(v.bits, v.width);
      const std::string tag = fmt::format("{}/{} {}x", v.bits, v.bits, v.width);
      runners.push_back({tag + " fake-quant", "fake-quant", v.width, v.bits, param_bytes(fq),
                         [fq](const torch::Tensor& x) { fq->forward(x); }});
      const auto im = wrpn::deploy::deploy(*fq, wrpn::deploy::DeployOptions().device(device));
      std::fprintf(stderr, "[inferbench] %s", im.summary().c_str());
      runners.push_back({tag + " int8 " + wrpn::deploy::to_string(im.engine()), "int8", v.width,
                         v.bits, im.weight_bytes(),
                         [im](const torch::Tensor& x) { im.forward(x); }});
    }
    auto sync = [&] {
#ifdef WRPN_WITH_CUDA
      if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
    };

    json rows = json::array();
    std::printf(
        "| threads | batch | model | images/s (median) | min..max | vs fake-quant | "
        "vs fp32 1x | weight bytes |\n|---|---|---|---|---|---|---|---|\n");
    for (const int64_t t : threads) {
      if (device.is_cpu()) wrpn::cli::set_threads(t);
      for (const int64_t batch : batches) {
        torch::manual_seed(0);
        const torch::Tensor x = torch::rand({batch, channels, image_size, image_size}).to(device);
        for (auto& r : runners) {
          r.images_per_s.clear();
          r.run(x);  // warm-up: prepacking, oneDNN primitive caches, allocator
        }
        sync();
        for (int64_t round = 0; round < rounds; ++round) {
          for (auto& r : runners) {
            int64_t n = 0;
            const double t0 = now_s();
            double t1 = t0;
            do {
              r.run(x);
              sync();
              ++n;
              t1 = now_s();
            } while (t1 - t0 < min_round_s);
            r.images_per_s.push_back(static_cast<double>(n * batch) / (t1 - t0));
          }
        }
        const double base = median(runners[0].images_per_s);
        for (size_t i = 0; i < runners.size(); ++i) {
          const Runner& r = runners[i];
          const double med = median(r.images_per_s);
          const auto [lo, hi] = std::minmax_element(r.images_per_s.begin(), r.images_per_s.end());
          // The fake-quant runner of the same variant sits just before an int8 runner.
          double vs_fake = 1.0;
          if (r.kind == "int8") vs_fake = med / median(runners[i - 1].images_per_s);
          std::printf("| %lld | %lld | %s | %.1f | %.1f..%.1f | %s | %.3f | %lld |\n",
                      static_cast<long long>(t), static_cast<long long>(batch), r.label.c_str(),
                      med, *lo, *hi, r.kind == "int8" ? fmt::format("{:.2f}", vs_fake).c_str() : "",
                      med / base, static_cast<long long>(r.weight_bytes));
          rows.push_back({{"threads", t},
                          {"batch", batch},
                          {"model", r.label},
                          {"kind", r.kind},
                          {"width", r.width},
                          {"bits", r.bits},
                          {"images_per_second_median", med},
                          {"images_per_second_min", *lo},
                          {"images_per_second_max", *hi},
                          {"vs_fake_quant", r.kind == "int8" ? json(vs_fake) : json()},
                          {"vs_fp32_1x", med / base},
                          {"weight_bytes", r.weight_bytes}});
        }
        std::fflush(stdout);
      }
    }
    const json out = {
        {"device", device.str()},
        {"model", model},
        {"input", fmt::format("{}x{}x{} uniform [0, 1)", channels, image_size, image_size)},
        {"rounds", rounds},
        {"min_round_seconds", min_round_s},
        {"malloc_tuned", tune_malloc},
        {"cpu_threads_available", static_cast<int64_t>(std::thread::hardware_concurrency())},
        {"results", rows}};
    wrpn::fs::atomic_write(json_path, out.dump(2) + "\n");
    std::fprintf(stderr, "[inferbench] wrote %s\n", json_path.c_str());
    return 0;
  });
}
