// wrpn_analyze: ADaPTION's range and sparsity measurement of a checkpoint on real batches. Prints
// per layer the weight and activation ranges, zero fractions, the share of MACs a zero-skipping
// engine would skip and the Q(m.f) the range search picks; writes it all as JSON, and the
// fixed-point precision config that wrpn_train --precision-config accepts.

#include <wrpn/analysis.h>
#include <wrpn/cli/flags.h>
#include <wrpn/cli/program.h>
#include <wrpn/train/utils.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "app/analyze.h"

int main(int argc, char** argv) {
  return wrpn::cli::run_main([&] {
    CLI::App app{
        "Measure per-layer ranges and sparsity of a wrpn checkpoint and pick Q(m.f) "
        "fixed-point formats (ADaPTION)",
        "wrpn_analyze"};
    wrpn::cli::take_last_value(app);
    wrpn::app::AnalyzeRequest rq;
    std::string percentiles = "0.1,1,50,99,99.9", json_out, precision_out;
    int64_t threads = 0;
    app.add_option("--checkpoint,checkpoint", rq.checkpoint, "a checkpoint written by wrpn_train")
        ->required()
        ->check(CLI::ExistingFile);
    wrpn::cli::add_dataset_flag(app, rq.dataset,
                                "digits, fashion_mnist, mnist, cifar10 or folder (default: the one "
                                "the checkpoint was trained on)");
    wrpn::cli::add_data_root_flag(
        app, rq.data_root, "dataset directory (default: the training run's, else data/<dataset>)");
    app.add_option("--split", rq.split, "test or train")
        ->check(CLI::IsMember({"test", "train"}))
        ->capture_default_str();
    app.add_option("--batches", rq.batches, "batches to observe")->capture_default_str();
    wrpn::cli::add_batch_size_flag(app, rq.batch_size, "images a batch");
    app.add_option("--image-size", rq.image_size,
                   "folder datasets: crop size (default: the training run's)");
    app.add_option("--seed", rq.seed, "seed of the image choice and of the percentile samples")
        ->capture_default_str();
    app.add_option("--total-bits", rq.options.total_bits,
                   "bits of each Q(m.f) format, sign included (2..16)")
        ->check(CLI::Range(2, 16))
        ->capture_default_str();
    app.add_option("--threshold", rq.options.threshold,
                   "range search: largest share of values allowed to saturate, in [0, 1]")
        ->check(CLI::Range(0.0, 1.0))
        ->capture_default_str();
    app.add_option("--percentiles", percentiles, "percentiles to report, in percent")
        ->capture_default_str();
    app.add_option("--sample", rq.options.range.sample_capacity,
                   "values kept per layer for the percentiles (exact up to this many)")
        ->capture_default_str();
    wrpn::cli::add_json_flag(app, json_out,
                             "write everything (percentiles and histograms too) here");
    app.add_option("--precision-out", precision_out,
                   "write the fixed-point precision config (for --precision-config) here");
    wrpn::cli::add_device_flag(app, rq.device);
    wrpn::cli::add_threads_flag(app, threads);
    if (const auto rc = wrpn::cli::parse(app, argc, argv)) return *rc;
    wrpn::cli::set_threads(threads);
    rq.image_size_given = app.get_option("--image-size")->count() > 0;
    rq.options.range.percentiles = wrpn::app::parse_percentiles(percentiles);

    const auto r = wrpn::app::analyze_checkpoint(rq);
    std::printf("%s (%s, %s) on %s/%s, %s\n\n", rq.checkpoint.c_str(), r.spec.name.c_str(),
                r.spec.precision.short_name().c_str(), r.dataset.c_str(), r.split.c_str(),
                r.device.c_str());
    std::fputs(wrpn::app::format_analysis_table(r.analysis).c_str(), stdout);
    int64_t nonfinite = 0;
    for (const auto& l : r.analysis.layers)
      nonfinite += l.activation.nonfinite + l.weight.nonfinite;
    if (nonfinite > 0) {
      std::fprintf(stderr, "warning: %lld NaN or inf values were seen and left out\n",
                   static_cast<long long>(nonfinite));
    }

    if (!json_out.empty()) {
      auto j = nlohmann::json::parse(r.analysis.to_json(-1));
      j["checkpoint"] = rq.checkpoint;
      j["model"] = nlohmann::json::parse(r.spec.to_json(-1));
      j["dataset"] = r.dataset;
      j["split"] = r.split;
      j["device"] = r.device;
      wrpn::train::atomic_write(json_out, j.dump(2) + "\n");
      std::printf("wrote %s\n", json_out.c_str());
    }
    if (!precision_out.empty()) {
      const auto cfg = r.analysis.fixed_point_config(r.spec.precision);
      wrpn::train::atomic_write(precision_out, cfg.to_json() + "\n");
      std::printf("wrote %s (train with --precision-config %s)\n", precision_out.c_str(),
                  precision_out.c_str());
    }
    return 0;
  });
}
