// wrpn_train: trains a zoo model at any precision on digits, CIFAR-10 or an image folder.
// Writes metrics.jsonl, summary.json and atomic last/best checkpoints into --run-dir;
// --resume continues an interrupted run to the result it would have reached.

#include <nlohmann/json.hpp>

#include <iostream>

#include "app/cli.h"
#include "app/train.h"

int main(int argc, char** argv) {
  return wrpn::app::run_main([&] {
    wrpn::app::TrainOptions o;
    wrpn::app::load_config_arg(argc, argv, o);
    CLI::App app{"Train a wide reduced-precision network (WRPN, arXiv 1709.01134)", "wrpn_train"};
    // A flag given twice takes its last value, so scripts can put defaults before "$@".
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    wrpn::app::add_train_flags(app, o);
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    wrpn::app::finish_train_flags(o);
    wrpn::app::install_stop_handler();
    const auto summary = wrpn::app::train(o);
    std::cout << summary.dump(2) << std::endl;
    return summary.value("completed", false) ? 0 : 3;
  });
}
