// wrpn_rnnbench: times one recurrent layer's forward and forward + backward (backprop through time)
// for wrpn::nn::QuantLSTM / QuantGRU against LibTorch's fp32 torch::nn::LSTM / GRU and against the
// same quantized cell written with plain ATen ops under autograd, in the same process, on the
// same inputs, in interleaved rounds; prints a table and writes JSON.

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>
#include <torch/version.h>
#include <wrpn/cli/flags.h>
#include <wrpn/cli/program.h>
#include <wrpn/nn/quant_rnn.h>
#include <wrpn/train/trainer.h>
#include <wrpn/util/fs.h>
#include <wrpn/version.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

using Json = nlohmann::ordered_json;
using torch::Tensor;

constexpr const char* kDescription =
    R"(Times one recurrent layer (input size = hidden size H, sequence T, batch B) in two directions:
  fwd     forward of the whole sequence (no gradient recorded)
  train   forward with autograd + backward of sum(output * g) (backprop through time)
for three implementations, on the same inputs, one call of each per round, rounds interleaved:
  torch      torch::nn::LSTM / torch::nn::GRU, fp32 (LibTorch's own CPU or cuDNN kernels)
  wrpn       wrpn::nn::QuantLSTM / QuantGRU at the given weight / hidden bits (fused cell)
  composite  the same quantized layer in plain ATen ops under autograd: per step a linear, chunk,
             sigmoid / tanh, the cell update and round(clamp(h, -1, 1) * s) / s with a
             straight-through gradient; the weights quantized once per call as wrpn does
Reported: the median time of a call over the rounds (and min / max), and the ratios
wrpn / torch (goal: <= 1.5 at 4 bits) and composite / wrpn (goal: >= 3).)";

struct Config {
  std::string cell;
  int64_t hidden, batch, seq, bits;
};

struct Stats {
  double median = 0, min = 0, max = 0;
};

Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

void sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize();
}

/// The composite quantized cell (plain ATen, autograd through every op).
Tensor composite_hidden(const Tensor& h, int64_t bits) {
  if (bits == 32) return h;
  const double s = std::pow(2.0, bits - 1) - 1;
  return (torch::round(h.clamp(-1, 1) * s) / s - h).detach() + h;
}

Tensor composite_layer(torch::nn::Module& m, const std::string& cell, const Tensor& x, int64_t bits,
                       double scale) {
  auto params = m.named_parameters(false);
  const auto qw = [&](const Tensor& w) {
    return wrpn::nn::quantize_scaled_weight(w, torch::tensor(scale, torch::kFloat).to(w.device()),
                                            bits);
  };
  const Tensor w_ih = qw(params["weight_ih_l0"]), w_hh = qw(params["weight_hh_l0"]);
  const Tensor b_ih = params["bias_ih_l0"], b_hh = params["bias_hh_l0"];
  const int64_t T = x.size(0), B = x.size(1), H = w_hh.size(1);
  const Tensor xp = torch::linear(x.reshape({T * B, -1}), w_ih, b_ih).view({T, B, -1});
  Tensor h = torch::zeros({B, H}, x.options()), c = torch::zeros({B, H}, x.options());
  std::vector<Tensor> out;
  for (int64_t t = 0; t < T; ++t) {
    const Tensor hg = torch::linear(h, w_hh, b_hh);
    if (cell == "lstm") {
      const auto g = (xp[t] + hg).chunk(4, 1);
      c = torch::sigmoid(g[1]) * c + torch::sigmoid(g[0]) * torch::tanh(g[2]);
      h = composite_hidden(torch::sigmoid(g[3]) * torch::tanh(c), bits);
    } else {
      const auto xs = xp[t].chunk(3, 1), hs = hg.chunk(3, 1);
      const Tensor r = torch::sigmoid(xs[0] + hs[0]), z = torch::sigmoid(xs[1] + hs[1]);
      const Tensor n = torch::tanh(xs[2] + r * hs[2]);
      h = composite_hidden((1 - z) * n + z * h, bits);
    }
    out.push_back(h);
  }
  return torch::stack(out);
}

struct Row {
  Config config;
  std::map<std::string, Stats> fwd, train;
};

Row run_config(const Config& k, const torch::Device& device, int rounds) {
  torch::manual_seed(1);
  const int64_t H = k.hidden;
  std::shared_ptr<torch::nn::Module> ref, wrpn_layer;
  std::function<Tensor(const Tensor&)> ref_fwd, wrpn_fwd;
  double scale = 0;
  // The reference and the wrpn layer of one cell kind, at the same sizes and on one device.
  const auto make = [&](auto r, auto q) {
    r->to(device);
    q->to(device);
    ref = r.ptr();
    wrpn_layer = q.ptr();
    scale = q->weight_scale();
    ref_fwd = [r](const Tensor& x) mutable { return std::get<0>(r->forward(x)); };
    wrpn_fwd = [q](const Tensor& x) mutable { return std::get<0>(q->forward(x)); };
  };
  if (k.cell == "lstm") {  // constructed in this order: the same initial weights every run
    torch::nn::LSTM r(torch::nn::LSTMOptions(H, H));
    wrpn::nn::QuantLSTM q(wrpn::nn::QuantLSTMOptions(H, H).weight_bits(k.bits).hidden_bits(k.bits));
    make(r, q);
  } else {
    torch::nn::GRU r(torch::nn::GRUOptions(H, H));
    wrpn::nn::QuantGRU q(wrpn::nn::QuantGRUOptions(H, H).weight_bits(k.bits).hidden_bits(k.bits));
    make(r, q);
  }
  auto comp_fwd = [&](const Tensor& x) {
    return composite_layer(*wrpn_layer, k.cell, x, k.bits, scale);
  };
  const Tensor x = torch::randn({k.seq, k.batch, H}, device);
  const Tensor g = torch::randn({k.seq, k.batch, H}, device);
  struct Impl {
    std::string name;
    std::function<Tensor(const Tensor&)> fwd;
    torch::nn::Module* module;
  };
  const std::vector<Impl> impls = {{"torch", ref_fwd, ref.get()},
                                   {"wrpn", wrpn_fwd, wrpn_layer.get()},
                                   {"composite", comp_fwd, wrpn_layer.get()}};
  std::map<std::string, std::vector<double>> fwd, train;
  for (int round = -1; round < rounds; ++round) {  // round -1: warm-up, not recorded
    for (const auto& impl : impls) {
      {
        const torch::NoGradGuard no_grad;
        sync(device);
        const auto t0 = std::chrono::steady_clock::now();
        const Tensor y = impl.fwd(x);
        sync(device);
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (round >= 0) fwd[impl.name].push_back(s);
      }
      impl.module->zero_grad();
      sync(device);
      const auto t0 = std::chrono::steady_clock::now();
      const Tensor y = impl.fwd(x);
      (y * g).sum().backward();
      sync(device);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (round >= 0) train[impl.name].push_back(s);
    }
  }
  Row row{k, {}, {}};
  for (const auto& impl : impls) {
    row.fwd[impl.name] = stats(fwd[impl.name]);
    row.train[impl.name] = stats(train[impl.name]);
  }
  return row;
}

Json stats_json(const Stats& s) {
  return {{"median_ms", s.median * 1e3}, {"min_ms", s.min * 1e3}, {"max_ms", s.max * 1e3}};
}

}  // namespace

int main(int argc, char** argv) {
  return wrpn::cli::run_main([&] {
    CLI::App app{kDescription, "wrpn_rnnbench"};
    std::string json_path = "rnnbench.json", device_name = "cpu";
    std::vector<std::string> cells = {"lstm", "gru"};
    std::vector<int64_t> hiddens = {256, 512}, bits_list = {4, 2};
    int64_t batch = 32, seq = 35, threads = 1;
    int rounds = 9;
    bool quick = false;
    app.add_option("--json", json_path, "where to write the JSON")->capture_default_str();
    app.add_option("--device", device_name, "cpu, cuda or auto")->capture_default_str();
    app.add_option("--cells", cells, "lstm, gru")->delimiter(',')->capture_default_str();
    app.add_option("--hidden", hiddens, "hidden sizes (= input sizes)")
        ->delimiter(',')
        ->check(CLI::Range(int64_t{1}, int64_t{16384}))
        ->capture_default_str();
    app.add_option("--bits", bits_list, "weight = hidden bits: 2..16 or 32")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--batch", batch, "batch size")
        ->check(CLI::Range(int64_t{1}, int64_t{65536}))
        ->capture_default_str();
    app.add_option("--seq", seq, "sequence length")
        ->check(CLI::Range(int64_t{1}, int64_t{100000}))
        ->capture_default_str();
    app.add_option("--rounds", rounds, "timed rounds (after one warm-up)")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    app.add_option("--threads", threads, "CPU threads")
        ->check(CLI::Range(int64_t{1}, int64_t{256}))
        ->capture_default_str();
    app.add_flag("--quick", quick, "LSTM, H = 64, T = 8, B = 4, 4 bits, 2 rounds (a smoke test)");
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e) == 0 ? 0 : 2;
    }
    for (const auto& c : cells) {
      if (c != "lstm" && c != "gru")
        throw std::invalid_argument("--cells: '" + c + "' is not lstm or gru");
    }
    for (const int64_t b : bits_list) {
      if (!(b == 32 || (b >= 2 && b <= 16))) {
        throw std::invalid_argument("--bits: " + std::to_string(b) + " is not 2..16 or 32");
      }
    }
    if (quick) {
      cells = {"lstm"};
      hiddens = {64};
      bits_list = {4};
      batch = 4;
      seq = 8;
      rounds = 2;
    }
    wrpn::cli::set_threads(threads);
    const torch::Device device = wrpn::train::resolve_device(device_name);
    Json rows = Json::array();
    fmt::print("{:<5} {:>5} {:>4} {:>4} {:>4}  {:>9} {:>9} {:>9}  {:>9} {:>9} {:>9}  {:>7} {:>7}\n",
               "cell", "H", "B", "T", "bits", "torch ms", "wrpn ms", "comp ms", "torch ms",
               "wrpn ms", "comp ms", "w/torch", "comp/w");
    fmt::print("{:<24}  {:^29}  {:^29}  (train)\n", "", "forward", "forward + backward");
    for (const auto& cell : cells) {
      for (const int64_t H : hiddens) {
        for (const int64_t bits : bits_list) {
          const Row r = run_config({cell, H, batch, seq, bits}, device, rounds);
          const auto& f = r.fwd;
          const auto& t = r.train;
          fmt::print(
              "{:<5} {:>5} {:>4} {:>4} {:>4}  {:>9.2f} {:>9.2f} {:>9.2f}  {:>9.2f} {:>9.2f} "
              "{:>9.2f}  {:>7.2f} {:>7.2f}\n",
              cell, H, batch, seq, bits, f.at("torch").median * 1e3, f.at("wrpn").median * 1e3,
              f.at("composite").median * 1e3, t.at("torch").median * 1e3, t.at("wrpn").median * 1e3,
              t.at("composite").median * 1e3, t.at("wrpn").median / t.at("torch").median,
              t.at("composite").median / t.at("wrpn").median);
          Json row = {
              {"cell", cell}, {"hidden", H}, {"batch", batch}, {"seq", seq}, {"bits", bits}};
          for (const char* name : {"torch", "wrpn", "composite"}) {
            row["forward"][name] = stats_json(f.at(name));
            row["train"][name] = stats_json(t.at(name));
          }
          row["forward"]["wrpn_over_torch"] = f.at("wrpn").median / f.at("torch").median;
          row["forward"]["composite_over_wrpn"] = f.at("composite").median / f.at("wrpn").median;
          row["train"]["wrpn_over_torch"] = t.at("wrpn").median / t.at("torch").median;
          row["train"]["composite_over_wrpn"] = t.at("composite").median / t.at("wrpn").median;
          rows.push_back(row);
        }
      }
    }
    const Json out = {{"benchmark", "wrpn_rnnbench"},
                      {"wrpn_version", WRPN_VERSION_STRING},
                      {"torch_version", TORCH_VERSION},
                      {"device", device.str()},
                      {"threads", at::get_num_threads()},
                      {"rounds", rounds},
                      {"rows", rows}};
    wrpn::fs::atomic_write(json_path, out.dump(2) + "\n");
    fmt::print("wrote {}\n", json_path);
    return 0;
  });
}
