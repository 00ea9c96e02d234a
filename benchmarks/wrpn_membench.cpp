// wrpn_membench: training memory of widened low-bit ResNets with and without packed saved
// activations, measured in one run. Each configuration trains a few SGD steps on synthetic
// 3x32x32 batches; a counting CPU allocator (wrpn::util::CpuMemoryCounter) gives, exactly,
// the bytes the autograd graph holds after the forward (saved activations, the quantized
// weights the convs keep, the logits) and the peak of the step above what was live before it.
// On CUDA the caching allocator's statistics give the same two figures. Ratios are against the
// fp32 model of the same width and against the fp32 1x model, and packed step time against
// unpacked.

#include <fmt/format.h>
#include <torch/torch.h>
#include <wrpn/cli/flags.h>
#include <wrpn/cli/program.h>
#include <wrpn/models/registry.h>
#include <wrpn/nn/saved_codes.h>
#include <wrpn/train/trainer.h>
#include <wrpn/util/fs.h>
#include <wrpn/util/memory.h>

#ifdef WRPN_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

using nlohmann::json;

struct Config {
  std::string model;
  double width;
  int64_t bits;  // weights and activations; 32: fp32
  bool pack;
  int64_t batch;
  bool recompute = false;
};

struct Result {
  Config c;
  int64_t held = 0;   ///< bytes the graph holds after the forward (max over steps)
  int64_t peak = 0;   ///< peak bytes above the live bytes before the step (max over steps)
  double step_s = 0;  ///< median step time
  int64_t parameters = 0;
};

std::string name_of(const Config& c) {
  return fmt::format(
      "{} {}x {} {}", c.model, c.width,
      c.bits == 32 ? std::string("fp32") : fmt::format("{}/{}", c.bits, c.bits),
      c.bits == 32 ? "" : (c.recompute ? "packed+recompute" : (c.pack ? "packed" : "unpacked")));
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Result measure(const Config& c, torch::Device device, int steps) {
  torch::manual_seed(0);
  wrpn::models::ModelSpec spec;
  spec.name = c.model;
  spec.num_classes = 10;
  spec.in_channels = 3;
  spec.precision = wrpn::PrecisionConfig::make(c.bits, c.bits, c.width);
  spec.init = wrpn::nn::weight_init_from_string("quant_aware");
  auto m = wrpn::models::create_model(spec);
  wrpn::nn::set_pack_saved_inputs(*m, c.pack);
  wrpn::nn::set_recompute_bn_inputs(*m, c.recompute);
  m->to(device);
  m->train();
  torch::optim::SGD opt(m->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  Result r;
  r.c = c;
  for (const auto& p : m->parameters()) r.parameters += p.numel();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  std::vector<double> times;
  for (int s = 0; s <= steps; ++s) {  // step 0 warms up
    const auto x = torch::randn({c.batch, 3, 32, 32}, gen, torch::kFloat).to(device);
    const auto y = torch::randint(0, 10, {c.batch}, gen, torch::kLong).to(device);
    opt.zero_grad();
    int64_t held = 0, peak = 0;
    const double t0 = now_s();
    if (device.is_cpu()) {
      wrpn::util::CpuMemoryCounter counter;
      const int64_t before = counter.live_bytes();
      auto loss = torch::nn::functional::cross_entropy(m->forward(x), y);
      held = counter.live_bytes() - before;
      loss.backward();
      opt.step();
      peak = counter.peak_bytes() - before;
    } else {
#ifdef WRPN_WITH_CUDA
      namespace alloc = c10::cuda::CUDACachingAllocator;
      const int dev = device.index() < 0 ? 0 : device.index();
      torch::cuda::synchronize();
      alloc::resetPeakStats(dev);
      const auto live = [&] {
        return alloc::getDeviceStats(dev)
            .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
            .current;
      };
      const int64_t before = live();
      auto loss = torch::nn::functional::cross_entropy(m->forward(x), y);
      torch::cuda::synchronize();
      held = live() - before;
      loss.backward();
      opt.step();
      torch::cuda::synchronize();
      peak = alloc::getDeviceStats(dev)
                 .allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
                 .peak -
             before;
#else
      TORCH_CHECK(false, "this build has no CUDA");
#endif
    }
    const double dt = now_s() - t0;
    if (s > 0) {
      times.push_back(dt);
      r.held = std::max(r.held, held);
      r.peak = std::max(r.peak, peak);
    }
  }
  std::sort(times.begin(), times.end());
  r.step_s = times[times.size() / 2];
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  return wrpn::cli::run_main([&] {
    CLI::App app{"Training memory of WRPN ResNets with and without packed saved activations",
                 "wrpn_membench"};
    std::string json_path = "membench.json", device_name = "cpu";
    int64_t threads = 1;
    int steps = 3;
    bool quick = false;
    app.add_option("--json", json_path, "where to write the JSON")->capture_default_str();
    app.add_option("--device", device_name, "cpu or cuda")->capture_default_str();
    app.add_option("--threads", threads, "CPU threads")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();
    app.add_option("--steps", steps, "timed steps per configuration (after one warm-up)")
        ->check(CLI::Range(1, 100))
        ->capture_default_str();
    app.add_flag("--quick", quick,
                 "ResNet-20 at widths 1 and 2 only, batch 16, 1 step (a smoke test)");
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e) == 0 ? 0 : 2;
    }
    wrpn::cli::set_threads(threads);
    const torch::Device device = wrpn::train::resolve_device(device_name);
    if (quick) steps = 1;
    struct Family {
      std::string model;
      int64_t batch;
    };
    std::vector<Family> families = {{"resnet20", quick ? 16 : 64}};
    if (!quick) families.push_back({"resnet34_small", 16});
    std::vector<Result> results;
    for (const auto& f : families) {
      for (const double w : {1.0, 2.0}) {
        std::vector<Config> cs = {{f.model, w, 32, false, f.batch}};
        for (const int64_t b : {4, 2}) {
          cs.push_back({f.model, w, b, true, f.batch});
          cs.push_back({f.model, w, b, false, f.batch});
          cs.push_back({f.model, w, b, true, f.batch, true});
        }
        for (const auto& c : cs) {
          results.push_back(measure(c, device, steps));
          const auto& r = results.back();
          std::fprintf(stderr,
                       "[membench] %-34s batch %3lld: graph %8.1f MB, peak %8.1f MB, step %.3f s\n",
                       name_of(c).c_str(), static_cast<long long>(c.batch), r.held / 1e6,
                       r.peak / 1e6, r.step_s);
        }
      }
    }
    auto find = [&](const std::string& model, double w, int64_t bits, bool pack) -> const Result& {
      for (const auto& r : results) {
        if (r.c.model == model && r.c.width == w && r.c.bits == bits &&
            (bits == 32 || r.c.pack == pack))
          return r;
      }
      TORCH_CHECK(false, "no result for ", model);
    };
    json rows = json::array();
    std::printf(
        "| model | width | bits | conv inputs saved as | held after forward | vs fp32 same width | "
        "vs fp32 1x | peak of step | vs fp32 same width | step s | vs unpacked |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const auto& r : results) {
      const auto& fp = find(r.c.model, r.c.width, 32, false);
      const auto& fp1 = find(r.c.model, 1.0, 32, false);
      const double vs_unpacked =
          r.c.bits == 32 ? 1.0 : r.step_s / find(r.c.model, r.c.width, r.c.bits, false).step_s;
      const std::string mode = r.c.bits == 32
                                   ? "float"
                                   : (r.c.recompute ? "codes, BN input recomputed"
                                                    : (r.c.pack ? "packed codes" : "float"));
      std::printf("| %s | %gx | %s | %s | %.1f MB | %.3f | %.3f | %.1f MB | %.3f | %.3f | %.3f |\n",
                  r.c.model.c_str(), r.c.width,
                  r.c.bits == 32 ? "fp32" : fmt::format("{}/{}", r.c.bits, r.c.bits).c_str(),
                  mode.c_str(), r.held / 1e6, static_cast<double>(r.held) / fp.held,
                  static_cast<double>(r.held) / fp1.held, r.peak / 1e6,
                  static_cast<double>(r.peak) / fp.peak, r.step_s, vs_unpacked);
      rows.push_back({{"model", r.c.model},
                      {"width", r.c.width},
                      {"bits", r.c.bits},
                      {"packed", r.c.bits != 32 && r.c.pack},
                      {"recompute_bn_input", r.c.recompute},
                      {"batch", r.c.batch},
                      {"parameters", r.parameters},
                      {"held_after_forward_bytes", r.held},
                      {"peak_step_bytes", r.peak},
                      {"step_seconds_median", r.step_s},
                      {"held_vs_fp32_same_width", static_cast<double>(r.held) / fp.held},
                      {"held_vs_fp32_1x", static_cast<double>(r.held) / fp1.held},
                      {"peak_vs_fp32_same_width", static_cast<double>(r.peak) / fp.peak},
                      {"peak_vs_fp32_1x", static_cast<double>(r.peak) / fp1.peak},
                      {"step_vs_unpacked", vs_unpacked}});
    }
    const json out = {
        {"device", device.str()},
        {"threads", threads},
        {"steps", steps},
        {"input", "3x32x32 synthetic"},
        {"memory", device.is_cpu() ? "counting CPU allocator (exact requested bytes)"
                                   : "CUDA caching allocator statistics (allocated bytes)"},
        {"results", rows}};
    wrpn::fs::atomic_write(json_path, out.dump(2) + "\n");
    std::fprintf(stderr, "[membench] wrote %s\n", json_path.c_str());
    return 0;
  });
}
