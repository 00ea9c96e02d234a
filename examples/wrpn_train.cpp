// wrpn_train: trains a zoo model at any precision on digits, CIFAR-10 or an image folder.
// Writes metrics.jsonl, summary.json and atomic last/best checkpoints into --run-dir;
// --resume continues an interrupted run to the result it would have reached.

#include <wrpn/cli/flags.h>
#include <wrpn/cli/program.h>
#include <wrpn/train/trainer.h>

#include <iostream>
#include <nlohmann/json.hpp>

int main(int argc, char** argv) {
  return wrpn::cli::run_main([&] {
    wrpn::train::TrainOptions o;
    wrpn::cli::load_config_arg(argc, argv, o);
    CLI::App app{"Train a wide reduced-precision network (WRPN, arXiv 1709.01134)", "wrpn_train"};
    wrpn::cli::take_last_value(app);
    const wrpn::cli::TrainFlags flags(app, o);
    if (const auto rc = wrpn::cli::parse(app, argc, argv)) return *rc;
    flags.finish();
    wrpn::cli::install_stop_handler();
    const auto summary = wrpn::train::fit(o);
    std::cout << summary.dump(2) << std::endl;
    return summary.value("completed", false) ? 0 : 3;
  });
}
