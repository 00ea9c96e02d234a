// wrpn_models: lists the model zoo and prints WRPN's cost table for a model at a width and
// bit widths.
//   wrpn_models list
//   wrpn_models describe --model resnet34 --width 2 --weight-bits 4 --act-bits 4 [--json]

#include <fmt/format.h>
#include <wrpn/cli/flags.h>
#include <wrpn/cli/program.h>
#include <wrpn/train/options.h>
#include <wrpn/wrpn.h>

#include <iostream>
#include <nlohmann/json.hpp>

namespace {

/// What `describe` builds: the model flags as wrpn_train reads them, fp32 width 1 by default.
struct DescribeArgs {
  wrpn::train::TrainOptions model;
  int64_t classes = 0;
  int64_t in_channels = 3;
  int64_t input_size = 0;
  bool json = false;
};

int list_models(bool json) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& name : wrpn::models::list_models()) {
    const auto info = wrpn::models::model_info(name);
    if (json) {
      out.push_back({{"name", name},
                     {"description", info.description},
                     {"default_classes", info.default_classes},
                     {"default_input_size", info.default_input_size}});
    } else {
      std::cout << fmt::format("{:<10} {} (default {} classes, {}x{} input)\n", name,
                               info.description, info.default_classes, info.default_input_size,
                               info.default_input_size);
    }
  }
  if (json) std::cout << out.dump(2) << "\n";
  return 0;
}

int describe(const DescribeArgs& a) {
  wrpn::models::ModelSpec spec;
  spec.name = a.model.model;
  spec.num_classes = a.classes;
  spec.in_channels = a.in_channels;
  spec.init = wrpn::nn::weight_init_from_string(a.model.resolved_init());
  spec.precision = a.model.precision;
  auto model = wrpn::models::create_model(spec);
  const auto report = wrpn::models::cost_report(*model, a.input_size, a.input_size);
  std::cout << (a.json ? report.to_json(2) + "\n" : report.to_table());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return wrpn::cli::run_main([&] {
    CLI::App app{"wrpn model zoo: list the models, or print a model's cost report", "wrpn_models"};
    wrpn::cli::take_last_value(app);
    app.require_subcommand(1);
    bool list_json = false;
    auto* list = app.add_subcommand("list", "List the registered models");
    list->add_flag("--json", list_json, "Print JSON");

    DescribeArgs a;
    a.model.precision = wrpn::PrecisionConfig();  // fp32, width 1
    a.model.init = "quant_aware";
    auto* desc =
        app.add_subcommand("describe",
                           "Per-layer parameters, MACs, bits, bit-ops, storage and zero fraction "
                           "at initialisation, against the fp32 width-1 model");
    const wrpn::cli::ModelFlags model_flags(*desc, a.model);
    model_flags.model_option()->required();
    desc->add_option("--classes", a.classes, "Number of classes (default: the model's)");
    desc->add_option("--in-channels", a.in_channels, "Input channels")->capture_default_str();
    desc->add_option("--input-size", a.input_size,
                     "Input height and width for MACs (default: 224 ImageNet, 32 CIFAR)");
    desc->add_flag("--json", a.json, "Print the report as JSON");

    if (const auto rc = wrpn::cli::parse(app, argc, argv)) return *rc;
    if (list->parsed()) return list_models(list_json);
    model_flags.apply();
    return describe(a);
  });
}
