// wrpn_models: lists the model zoo and prints WRPN's cost table for a model at a width and
// bit widths.
//   wrpn_models list
//   wrpn_models describe --model resnet34 --width 2 --weight-bits 4 --act-bits 4 [--json]

#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <wrpn/wrpn.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace {

struct DescribeArgs {
  std::string model;
  std::string config_path;
  double width = -1;
  int64_t weight_bits = -1;
  int64_t act_bits = -1;
  int64_t classes = 0;
  int64_t in_channels = 3;
  int64_t input_size = 0;
  std::string init = "quant_aware";
  bool quantized_first = false;
  bool quantized_last = false;
  bool quantized_residual = false;
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
  spec.name = a.model;
  spec.num_classes = a.classes;
  spec.in_channels = a.in_channels;
  spec.init = wrpn::nn::weight_init_from_string(a.init);
  if (!a.config_path.empty()) {
    std::ifstream in(a.config_path);
    TORCH_CHECK(in.is_open(), "cannot open --config file '", a.config_path, "'");
    std::stringstream text;
    text << in.rdbuf();
    spec.precision = wrpn::PrecisionConfig::from_json(text.str());
  }
  if (a.width > 0) spec.precision.width = a.width;
  if (a.weight_bits >= 0) spec.precision.weight_bits = a.weight_bits;
  if (a.act_bits >= 0) spec.precision.act_bits = a.act_bits;
  if (a.quantized_first) spec.precision.fp32_first_layer = false;
  if (a.quantized_last) spec.precision.fp32_last_layer = false;
  if (a.quantized_residual) spec.precision.quantized_residual = true;
  spec.precision.validate();

  auto model = wrpn::models::create_model(spec);
  const auto report = wrpn::models::cost_report(*model, a.input_size, a.input_size);
  std::cout << (a.json ? report.to_json(2) + "\n" : report.to_table());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"wrpn model zoo: list the models, or print a model's cost report"};
  app.require_subcommand(1);
  bool list_json = false;
  auto* list = app.add_subcommand("list", "List the registered models");
  list->add_flag("--json", list_json, "Print JSON");

  DescribeArgs a;
  auto* desc =
      app.add_subcommand("describe",
                         "Per-layer parameters, MACs, bits, bit-ops, storage and zero fraction at "
                         "initialisation, against the fp32 width-1 model");
  desc->add_option("--model", a.model, "Model name (see `list`)")->required();
  desc->add_option("--width", a.width, "Width multiplier, e.g. 1, 2, 3 or 1.5 (default 1)");
  desc->add_option("--weight-bits", a.weight_bits, "Weight bits: 1..16, or 32 (default 32)");
  desc->add_option("--act-bits", a.act_bits, "Activation bits: 1..16, or 32 (default 32)");
  desc->add_option("--config", a.config_path,
                   "Precision config JSON file; the flags above override its fields");
  desc->add_option("--classes", a.classes, "Number of classes (default: the model's)");
  desc->add_option("--in-channels", a.in_channels, "Input channels")->capture_default_str();
  desc->add_option("--input-size", a.input_size,
                   "Input height and width for MACs (default: 224 ImageNet, 32 CIFAR)");
  desc->add_option("--init", a.init, "Weight init: quant_aware, he or torch_default")
      ->capture_default_str();
  desc->add_flag("--quantized-first-layer", a.quantized_first,
                 "Quantize the first conv (and its input) too");
  desc->add_flag("--quantized-last-layer", a.quantized_last,
                 "Quantize the last FC (and its input) too");
  desc->add_flag("--quantized-residual", a.quantized_residual,
                 "Quantize after each residual addition (k-bit block outputs)");
  desc->add_flag("--json", a.json, "Print the report as JSON");

  CLI11_PARSE(app, argc, argv);
  try {
    if (list->parsed()) return list_models(list_json);
    return describe(a);
  } catch (const c10::Error& e) {
    std::cerr << "wrpn_models: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "wrpn_models: " << e.what() << "\n";
    return 1;
  }
}
