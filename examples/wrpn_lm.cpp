// wrpn_lm: trains a word-level language model with low-precision wide LSTM layers
// (wrpn::models::WordLM) on Jane Austen's novels and reports validation and test perplexity;
// `wrpn_lm --eval CKPT` evaluates a checkpoint. The run directory works as wrpn_train's.

#include <wrpn/cli/flags.h>
#include <wrpn/cli/program.h>
#include <wrpn/train/language_model.h>
#include <wrpn/train/trainer.h>
#include <wrpn/util/fs.h>
#include <wrpn/util/text.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

int main(int argc, char** argv) {
  return wrpn::cli::run_main([&] {
    wrpn::train::LmOptions o;
    CLI::App app{
        "Train a word-level language model with k-bit wide LSTM layers (Low Precision RNNs, "
        "arXiv 1710.07706) on Jane Austen's novels (scripts/fetch_data.sh)",
        "wrpn_lm"};
    wrpn::cli::take_last_value(app);
    std::string config, eval_checkpoint, eval_split = "test", json_path;
    app.add_option("--config", config,
                   "options as JSON (a run's options.json); flags given beside it override it");
    auto& m = o.model;
    app.add_option("--hidden-size", m.hidden_size, "hidden size at width 1")->capture_default_str();
    app.add_option("--width", m.width, "width multiplier of the hidden size")
        ->capture_default_str();
    app.add_option("--embedding-size", m.embedding_size, "0: the widened hidden size")
        ->capture_default_str();
    app.add_option("--layers", m.num_layers, "LSTM layers")->capture_default_str();
    app.add_option("--dropout", m.dropout, "dropout on embedding, between layers, before decoder")
        ->capture_default_str();
    app.add_option("--weight-bits", m.weight_bits, "recurrent weights: 2..16, or 32 (fp32)")
        ->capture_default_str();
    app.add_option("--hidden-bits", m.hidden_bits, "hidden state: 2..16, or 32 (fp32)")
        ->capture_default_str();
    app.add_option("--tie-weights", m.tie_weights,
                   "decoder shares the embedding's weights (true/false)")
        ->capture_default_str();
    wrpn::cli::add_data_root_flag(app, o.data_root,
                                  "directory of the novels' .txt files (default data/austen)");
    app.add_option("--vocab-size", o.vocab_size, "words kept (plus <unk>)")->capture_default_str();
    app.add_option("--epochs", o.epochs, "epochs")->capture_default_str();
    wrpn::cli::add_batch_size_flag(app, o.batch_size, "parallel training streams");
    app.add_option("--eval-batch-size", o.eval_batch_size, "parallel evaluation streams")
        ->capture_default_str();
    app.add_option("--bptt", o.bptt, "steps of truncated backprop through time")
        ->capture_default_str();
    app.add_option("--lr", o.lr, "SGD learning rate")->capture_default_str();
    app.add_option("--schedule", o.schedule, "plateau, cosine or constant")->capture_default_str();
    app.add_option("--lr-decay", o.lr_decay, "plateau: divide the rate by this")
        ->capture_default_str();
    app.add_option("--clip", o.clip, "largest gradient norm (0: off)")->capture_default_str();
    app.add_option("--weight-decay", o.weight_decay, "L2 weight decay")->capture_default_str();
    app.add_option("--seed", o.seed, "random seed")->capture_default_str();
    app.add_option("--limit-train-tokens", o.limit_train_tokens, "first N training tokens (0: all)")
        ->capture_default_str();
    app.add_option("--limit-eval-tokens", o.limit_eval_tokens,
                   "first N tokens of each evaluation split (0: all)")
        ->capture_default_str();
    app.add_option("--run-dir", o.run_dir, "where the run is written")->capture_default_str();
    app.add_flag("--resume", o.resume, "continue the run in --run-dir from its last.ckpt");
    app.add_flag("--overwrite", o.overwrite, "replace a previous run in --run-dir");
    app.add_option("--stop-after", o.stop_after,
                   "stop after N epochs, as if interrupted (0: never)")
        ->capture_default_str();
    app.add_option("--progress-interval", o.progress_interval, "seconds between progress lines")
        ->capture_default_str();
    wrpn::cli::add_threads_flag(app, o.threads);
    wrpn::cli::add_device_flag(app, o.device);
    wrpn::cli::add_quiet_flag(app, o.quiet);
    app.add_option("--eval", eval_checkpoint,
                   "evaluate this checkpoint (no training) on --split and print JSON");
    app.add_option("--split", eval_split, "with --eval: valid or test")->capture_default_str();
    wrpn::cli::add_json_flag(app, json_path, "also write the summary (or --eval's result) here");

    // --config first, so that flags override it: parse twice (the file fills the defaults).
    for (int i = 1; i + 1 < argc; ++i) {
      if (std::string(argv[i]) == "--config") config = argv[i + 1];
    }
    if (!config.empty()) {
      const auto j = wrpn::util::parse_json(
          wrpn::fs::read_file(config, "config '" + config + "'", wrpn::fs::kMaxConfigBytes),
          "config '" + config + "'");
      o = wrpn::train::LmOptions::from_json(j);
    }
    if (const auto rc = wrpn::cli::parse(app, argc, argv)) return *rc;

    nlohmann::json result;
    if (!eval_checkpoint.empty()) {
      result =
          wrpn::train::evaluate_language_model(eval_checkpoint, o.data_root, eval_split,
                                               o.eval_batch_size, o.limit_eval_tokens, o.device);
      std::cout << result.dump(2) << std::endl;
    } else {
      wrpn::cli::install_stop_handler();
      result = wrpn::train::fit_language_model(o);
      if (!o.quiet) std::cout << result.dump(2) << std::endl;
    }
    if (!json_path.empty()) wrpn::fs::atomic_write(json_path, result.dump(2) + "\n");
    return 0;
  });
}
