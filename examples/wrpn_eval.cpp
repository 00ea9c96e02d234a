// wrpn_eval: evaluates a checkpoint on a dataset split; prints top-1/top-5, loss and images/s
// and writes them as JSON. --engine int8 runs the model on integer kernels (wrpn::deploy).

#include <wrpn/cli/flags.h>
#include <wrpn/cli/program.h>
#include <wrpn/models/checkpoint.h>
#include <wrpn/train/trainer.h>
#include <wrpn/train/utils.h>

#include <cstdio>
#include <nlohmann/json.hpp>

int main(int argc, char** argv) {
  return wrpn::cli::run_main([&] {
    CLI::App app{"Evaluate a wrpn checkpoint", "wrpn_eval"};
    wrpn::cli::take_last_value(app);
    std::string checkpoint, dataset, root, split = "test", device = "auto", json_out;
    int64_t batch_size = 256, limit = 0, image_size = 224, threads = 0;
    app.add_option("checkpoint", checkpoint, "a checkpoint written by wrpn_train")
        ->required()
        ->check(CLI::ExistingFile);
    wrpn::cli::add_dataset_flag(app, dataset,
                                "digits, fashion_mnist, mnist, cifar10 or folder (default: the one "
                                "the checkpoint was trained on)");
    wrpn::cli::add_data_root_flag(
        app, root, "dataset directory (default: the training run's, else data/<dataset>)");
    app.add_option("--split", split, "train or test")->capture_default_str();
    wrpn::cli::add_device_flag(app, device);
    wrpn::cli::add_batch_size_flag(app, batch_size, "batch size");
    app.add_option("--limit", limit,
                   "evaluate only the first N images (0: all; default: the run's --limit-test "
                   "when evaluating on its data)")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--image-size", image_size, "folder datasets: crop size")->capture_default_str();
    wrpn::cli::add_threads_flag(app, threads);
    wrpn::cli::add_json_flag(app, json_out, "also write the result to this JSON file");
    wrpn::train::InferenceOptions inference;
    app.add_option("--engine", inference.engine,
                   "fake-quant (the model as trained), int8 (integer kernels: onednn on CPU, "
                   "gemm on CUDA), onednn, gemm or float (wrpn::deploy's fp32 path)")
        ->check(CLI::IsMember({"fake-quant", "int8", "onednn", "gemm", "float"}))
        ->capture_default_str();
    app.add_flag("--compare", inference.compare,
                 "with an integer engine: also run the fake-quantized model on the same images "
                 "and report how many top-1 answers differ and the largest logit difference");
    if (const auto rc = wrpn::cli::parse(app, argc, argv)) return *rc;
    wrpn::cli::set_threads(threads);
    if (dataset.empty()) {
      // wrpn_train records its options in the checkpoint: evaluate on the same data by default.
      const auto meta = wrpn::models::read_checkpoint(checkpoint);
      const auto extra = nlohmann::json::parse(meta.info.extra_json, nullptr, false);
      const bool has = !extra.is_discarded() && extra.contains("options");
      dataset = has ? extra["options"].value("dataset", "digits") : "digits";
      if (root.empty() && has) root = extra["options"].value("data_root", "");
      if (has && !app.get_option("--image-size")->count()) {
        image_size = extra["options"].value("image_size", image_size);
      }
      // The run's own test split: the images its recorded accuracies were measured on.
      if (has && split == "test" && !app.get_option("--limit")->count()) {
        limit = extra["options"].value("limit_test", limit);
      }
    }
    inference.on_deployed = [](const wrpn::deploy::IntegerModel& m) {
      std::printf("%s", m.summary().c_str());
    };
    const auto r = wrpn::train::evaluate_checkpoint(checkpoint, dataset, root, split, device,
                                                    batch_size, limit, image_size, inference);
    std::printf("%s on %s/%s: top-1 %.2f%%  top-5 %.2f%%  loss %.4f  (%lld images, %.0f img/s)\n",
                checkpoint.c_str(), dataset.c_str(), split.c_str(), 100 * r.top1, 100 * r.top5,
                r.loss, static_cast<long long>(r.images), r.images_per_second);
    if (r.top1_disagreements >= 0) {
      std::printf(
          "against the fake-quantized model: top-1 differs on %lld of %lld images, "
          "largest logit difference %.3g\n",
          static_cast<long long>(r.top1_disagreements), static_cast<long long>(r.images),
          r.max_logit_diff);
    }
    nlohmann::json j = r.to_json();
    j["engine"] = inference.engine;
    j["checkpoint"] = checkpoint;
    j["dataset"] = dataset;
    j["split"] = split;
    if (!json_out.empty()) wrpn::train::atomic_write(json_out, j.dump(2) + "\n");
    return 0;
  });
}
