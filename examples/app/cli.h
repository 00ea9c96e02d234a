#pragma once
/// Command-line pieces shared by the example programs (CLI11: help, validation, subcommands).

#include <CLI/CLI.hpp>

#include "app/train.h"

namespace wrpn::app {

/// Adds the model and precision flags (--model, --width, --weight-bits, --act-bits,
/// --quantize-first/--quantize-last, --quantized-residual, --override, --precision-config, --init)
/// writing into `o`. Call finish_precision_flags() after parsing.
void add_model_flags(CLI::App& app, TrainOptions& o);

/// Applies --precision-config / --override / --quantize-* after parsing; throws on bad values.
void finish_precision_flags(TrainOptions& o);

/// Reads the file of a --config FILE.json argument into `o`, before the flags are added and
/// parsed, so flags given on the command line override the file.
void load_config_arg(int argc, char** argv, TrainOptions& o);

/// Adds every training flag (model, data, optimisation, machine, output) writing into `o`.
void add_train_flags(CLI::App& app, TrainOptions& o);

/// Applies the precision flags and validates `o`, after parsing.
void finish_train_flags(TrainOptions& o);

/// SIGINT/SIGTERM: the first asks a running train() to stop after its epoch, a second exits.
void install_stop_handler();

/// Runs `body`, turning exceptions into a one-line message on stderr and exit code 1.
int run_main(const std::function<int()>& body);

}  // namespace wrpn::app
