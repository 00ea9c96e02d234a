#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <wrpn/cli/flags.h>
#include <wrpn/train/utils.h>
#include <wrpn/util/fs.h>
#include <wrpn/util/text.h>

#include <nlohmann/json.hpp>
#include <type_traits>

namespace wrpn::cli {
namespace {

const char* group_name(train::OptionGroup g) {
  switch (g) {
    case train::OptionGroup::kModel:
      return "Model";
    case train::OptionGroup::kData:
      return "Data";
    case train::OptionGroup::kOptimization:
      return "Optimization";
    case train::OptionGroup::kDistillation:
      return "Distillation";
    case train::OptionGroup::kMachine:
      return "Machine";
    case train::OptionGroup::kOutput:
      return "Output";
  }
  return "Options";
}

/// The descriptor of `key` bound to a variable of the program's own.
template <class T>
CLI::Option* add_like(CLI::App& app, const std::string& key, T& var, const std::string& help) {
  const auto& d = train::train_option(key);
  return add_flag(app, d, train::OptionField(&var), help)->group("Options");
}

}  // namespace

void take_last_value(CLI::App& app) {
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
}

std::optional<int> parse(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return std::nullopt;
}

CLI::Option* add_flag(CLI::App& app, const train::OptionDescriptor& d,
                      const train::OptionField& field, const std::string& help) {
  const std::string& text = help.empty() ? d.help : help;
  CLI::Option* opt = std::visit(
      [&](auto* p) -> CLI::Option* {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, PrecisionConfig>) {
          TORCH_CHECK(false, "option '", d.key, "' is set by the precision flags");
        } else if constexpr (std::is_same_v<T, bool>) {
          return app.add_flag((d.negated() ? "!" : "") + d.flag, *p, text);
        } else {
          CLI::Option* o = app.add_option(d.flag, *p, text)->capture_default_str();
          if constexpr (std::is_same_v<T, std::vector<int64_t>>) o->delimiter(',');
          // An unsigned value (the seed) given as "-1" would wrap to 2^64 - 1: refuse it.
          if constexpr (std::is_unsigned_v<T>) {
            o->check(CLI::Validator(
                [](const std::string& v) {
                  return v.find('-') == std::string::npos
                             ? std::string()
                             : "expected a non-negative integer, got " + v;
                },
                "UINT"));
          }
          if (!d.choices.empty()) o->check(CLI::IsMember(d.choices));
          return o;
        }
      },
      field);
  return opt->group(group_name(d.group));
}

PrecisionFlags::PrecisionFlags(CLI::App& app, PrecisionConfig& target)
    : target_(target),
      weight_bits_(target.weight_bits),
      act_bits_(target.act_bits),
      width_(target.width) {
  const std::string group = group_name(train::OptionGroup::kModel);
  width_opt_ = app.add_option("--width", width_, "width multiplier of every internal layer")
                   ->capture_default_str()
                   ->group(group);
  weight_bits_opt_ =
      app.add_option("--weight-bits", weight_bits_, "weight bits: 1..16, or 32 for fp32")
          ->capture_default_str()
          ->group(group);
  act_bits_opt_ = app.add_option("--act-bits", act_bits_, "activation bits: 1..16, or 32 for ReLU")
                      ->capture_default_str()
                      ->group(group);
  app.add_flag("--quantize-first", quantize_first_, "quantize the first conv too (default: fp32)")
      ->group(group);
  app.add_flag("--quantize-last", quantize_last_, "quantize the last FC too (default: fp32)")
      ->group(group);
  app.add_flag("--quantized-residual", quantized_residual_,
               "quantize block outputs too (k-bit activations between blocks)")
      ->group(group);
  app.add_option("--scheme", scheme_,
                 "quantizer family: wrpn (default), or fixed (ADaPTION Q(m.f) with --weight-bits / "
                 "--act-bits total bits)")
      ->check(CLI::IsMember({"wrpn", "fixed"}))
      ->group(group);
  app.add_flag("--fixed-stochastic", fixed_stochastic_,
               "scheme fixed: stochastic rounding while training")
      ->group(group);
  app.add_option("--override", overrides_,
                 "per-layer NAME=BITS or NAME=FORMAT, e.g. layer1.0.conv1=8, fc=Q2.14 or "
                 "layer1.0.act1=fixed16 (repeatable)")
      ->group(group);
  app.add_option("--precision-config", config_file_,
                 "a precision config JSON file (flags given beside it override its values)")
      ->check(CLI::ExistingFile)
      ->group(group);
}

void PrecisionFlags::apply() const {
  PrecisionConfig p = target_;
  const bool file = !config_file_.empty();
  if (file) {
    p = PrecisionConfig::from_json(fs::read_file(
        config_file_, "--precision-config '" + config_file_ + "'", fs::kMaxConfigBytes));
  }
  if (!file || weight_bits_opt_->count()) p.weight_bits = weight_bits_;
  if (!file || act_bits_opt_->count()) p.act_bits = act_bits_;
  if (!file || width_opt_->count()) p.width = width_;
  if (quantize_first_) p.fp32_first_layer = false;
  if (quantize_last_) p.fp32_last_layer = false;
  if (quantized_residual_) p.quantized_residual = true;
  if (!scheme_.empty()) p.scheme = scheme_;
  if (fixed_stochastic_) p.fixed_stochastic = true;
  for (const auto& kv : overrides_) {
    const auto eq = kv.find('=');
    TORCH_CHECK_VALUE(eq != std::string::npos && eq > 0,
                      "--override expects NAME=BITS or NAME=FORMAT, got '", kv, "'");
    const std::string name = kv.substr(0, eq), value = kv.substr(eq + 1);
    if (!value.empty() && value.find_first_not_of("0123456789") == std::string::npos) {
      p.fixed_point.erase(name);
      p.overrides[name] = std::stoll(value);
    } else {
      p.overrides.erase(name);
      p.fixed_point[name] = FixedPointFormat::parse(value);  // names the accepted forms
    }
  }
  p.validate();
  target_ = p;
}

ModelFlags::ModelFlags(CLI::App& app, train::TrainOptions& o) {
  for (const auto& d : train::train_option_table()) {
    if (d.group != train::OptionGroup::kModel) continue;
    if (d.flag.empty()) {
      precision_ = std::make_unique<PrecisionFlags>(app, o.precision);
    } else {
      CLI::Option* opt = add_flag(app, d, d.field(o));
      if (d.key == "model") model_ = opt;
    }
  }
}

void load_config_arg(int argc, char** argv, train::TrainOptions& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], file;
    if (a == "--config" && i + 1 < argc) {
      file = argv[i + 1];
    } else if (a.rfind("--config=", 0) == 0) {
      file = a.substr(9);
    } else {
      continue;
    }
    const std::string what = "--config '" + file + "'";
    o.update_from_json(util::parse_json(fs::read_file(file, what, fs::kMaxConfigBytes), what));
  }
}

TrainFlags::TrainFlags(CLI::App& app, train::TrainOptions& o) : o_(o) {
  app.add_option("--config",
                 "training options as JSON (keys as in a run's options.json); "
                 "flags given beside it override its values")
      ->check(CLI::ExistingFile);
  model_ = std::make_unique<ModelFlags>(app, o);
  for (const auto& d : train::train_option_table()) {
    if (d.group != train::OptionGroup::kModel) add_flag(app, d, d.field(o));
  }
}

void TrainFlags::finish() const {
  model_->apply();
  o_.validate();
}

CLI::Option* add_threads_flag(CLI::App& app, int64_t& threads) {
  return add_like(app, "threads", threads, "");
}

CLI::Option* add_device_flag(CLI::App& app, std::string& device) {
  return add_like(app, "device", device, "");
}

CLI::Option* add_quiet_flag(CLI::App& app, bool& quiet) {
  return add_like(app, "--quiet", quiet, "");
}

CLI::Option* add_batch_size_flag(CLI::App& app, int64_t& batch_size, const std::string& help) {
  return add_like(app, "batch_size", batch_size, help);
}

CLI::Option* add_dataset_flag(CLI::App& app, std::string& dataset, const std::string& help) {
  return add_like(app, "dataset", dataset, help);
}

CLI::Option* add_data_root_flag(CLI::App& app, std::string& root, const std::string& help) {
  return add_like(app, "data_root", root, help);
}

CLI::Option* add_json_flag(CLI::App& app, std::string& path, const std::string& help) {
  return app.add_option("--json", path, help);
}

void set_threads(int64_t threads) {
  if (threads > 0) at::set_num_threads(static_cast<int>(threads));
}

}  // namespace wrpn::cli
