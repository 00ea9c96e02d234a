#pragma once
/// The programs' flags, on CLI11: every TrainOptions option from the library's option table
/// (wrpn::train::train_option_table()), the precision flag group, and the flags several programs
/// share (--threads, --device, --json, --quiet, --batch-size, --dataset, --data-root), so that
/// the same thing has the same flag everywhere.

#include <wrpn/precision.h>
#include <wrpn/train/options.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace wrpn::cli {

/// A flag given twice takes its last value, so scripts can put defaults before "$@".
void take_last_value(CLI::App& app);

/// Parses the command line; returns the exit code when the program should end now (--help or
/// a parse error, already printed), else nothing.
std::optional<int> parse(CLI::App& app, int argc, char** argv);

/// The flag of `descriptor` bound to `field` (the field's type must match the descriptor's),
/// with `help` in place of the descriptor's when not empty.
CLI::Option* add_flag(CLI::App& app, const train::OptionDescriptor& descriptor,
                      const train::OptionField& field, const std::string& help = "");

/// The precision flags: --width, --weight-bits, --act-bits, --quantize-first, --quantize-last,
/// --quantized-residual, --scheme, --fixed-stochastic, --override, --precision-config. Their
/// defaults are `target`'s values; apply() writes them into `target` after parsing.
class PrecisionFlags {
 public:
  PrecisionFlags(CLI::App& app, PrecisionConfig& target);
  PrecisionFlags(const PrecisionFlags&) = delete;
  PrecisionFlags& operator=(const PrecisionFlags&) = delete;

  /// Applies --precision-config (flags given beside it override its fields), the bit widths
  /// and width, the layer switches and --override; throws on bad values.
  void apply() const;

 private:
  PrecisionConfig& target_;
  std::string config_file_;
  std::vector<std::string> overrides_;
  bool quantize_first_ = false;
  bool quantize_last_ = false;
  bool quantized_residual_ = false;
  std::string scheme_;
  bool fixed_stochastic_ = false;
  int64_t weight_bits_ = 0;
  int64_t act_bits_ = 0;
  double width_ = 0;
  CLI::Option* weight_bits_opt_ = nullptr;
  CLI::Option* act_bits_opt_ = nullptr;
  CLI::Option* width_opt_ = nullptr;
};

/// --model, the precision flags and --init, writing into o.model, o.precision and o.init: what
/// picks and builds a zoo model, the same in wrpn_train and wrpn_models.
class ModelFlags {
 public:
  ModelFlags(CLI::App& app, train::TrainOptions& o);

  CLI::Option* model_option() const { return model_; }
  /// PrecisionFlags::apply().
  void apply() const { precision_->apply(); }

 private:
  CLI::Option* model_ = nullptr;
  std::unique_ptr<PrecisionFlags> precision_;
};

/// Reads the file of a --config FILE.json argument into `o`, before TrainFlags binds the flags,
/// so that flags given on the command line override the file.
void load_config_arg(int argc, char** argv, train::TrainOptions& o);

/// Every training flag: --config, the model flags, then each option of the table.
class TrainFlags {
 public:
  TrainFlags(CLI::App& app, train::TrainOptions& o);

  /// After parsing: applies the precision flags and validates the options.
  void finish() const;

 private:
  train::TrainOptions& o_;
  std::unique_ptr<ModelFlags> model_;
};

/// The flags other programs share with wrpn_train, named and explained as there (`help`
/// replaces the explanation when not empty).
CLI::Option* add_threads_flag(CLI::App& app, int64_t& threads);
CLI::Option* add_device_flag(CLI::App& app, std::string& device);
CLI::Option* add_quiet_flag(CLI::App& app, bool& quiet);
CLI::Option* add_batch_size_flag(CLI::App& app, int64_t& batch_size, const std::string& help);
CLI::Option* add_dataset_flag(CLI::App& app, std::string& dataset, const std::string& help = "");
CLI::Option* add_data_root_flag(CLI::App& app, std::string& root, const std::string& help = "");
/// --json FILE: where a program writes its result as JSON.
CLI::Option* add_json_flag(CLI::App& app, std::string& path, const std::string& help);

/// Sets LibTorch's CPU threads when `threads` > 0 (0: its default).
void set_threads(int64_t threads);

}  // namespace wrpn::cli
