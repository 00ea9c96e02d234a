// The core's building blocks: the per-layer quantizer descriptor (against the ops and against
// what the zoo builds), the visitor over quantized layers, and the file-system helpers.

#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>
#include <wrpn/wrpn.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "quant_reference.h"

namespace {

using Catch::Contains;
using wrpn::FixedPointFormat;
using wrpn::LayerRole;
using wrpn::nn::Quantizer;
using wrpn_test::bit_mismatch;
using wrpn_test::ref_fixed_point;
namespace wn = wrpn::nn;

std::string temp_dir(const std::string& tag) {
  std::string t = "/tmp/wrpn_core_" + tag + "_XXXXXX";
  REQUIRE(::mkdtemp(t.data()) != nullptr);
  return t;
}

}  // namespace

TEST_CASE("quantizer descriptor: kinds, resolution, text and errors", "[cpu][nn]") {
  CHECK(Quantizer::full_precision().kind() == Quantizer::Kind::kFullPrecision);
  CHECK(Quantizer::wrpn(4).kind() == Quantizer::Kind::kWrpn);
  CHECK(Quantizer::wrpn(32).kind() == Quantizer::Kind::kFullPrecision);
  const Quantizer fx = Quantizer::fixed(FixedPointFormat::parse("fixed8"));
  CHECK(fx.kind() == Quantizer::Kind::kFixedPoint);
  CHECK(fx.bits == 8);
  // The default split depends on the role: Q2.6 for weights, Q4.4 for activations.
  CHECK(fx.resolved(LayerRole::kWeight, "w").to_string() == "Q2.6");
  CHECK(fx.resolved(LayerRole::kActivation, "a").to_string() == "Q4.4");
  CHECK(Quantizer::wrpn(2).to_string() == "wrpn2");
  CHECK(Quantizer::full_precision().to_string() == "fp32");
  CHECK(Quantizer::fixed(FixedPointFormat::parse("Q3.5s")).to_string() == "Q3.5s");
  CHECK(Quantizer::wrpn(4) != Quantizer::wrpn(2));
  CHECK(Quantizer::wrpn(4) == Quantizer::wrpn(4));

  Quantizer bad = Quantizer::wrpn(4);
  bad.fixed_point = FixedPointFormat::parse("Q2.6");
  CHECK_THROWS_WITH(bad.resolved(LayerRole::kWeight, "layer1.0.conv1"),
                    Contains("layer1.0.conv1") && Contains("8 total bits but the layer has 4"));
  CHECK_THROWS_WITH(Quantizer::wrpn(17).resolved(LayerRole::kActivation, "act"),
                    Contains("act bits = 17"));
  CHECK_THROWS_WITH(Quantizer::wrpn(0).resolved(LayerRole::kWeight, "conv"),
                    Contains("conv weight_bits = 0"));
  // Unresolved fixed point is refused when applied, not silently split.
  CHECK_THROWS_WITH(fx.quantize_weight(torch::ones({2}), false), Contains("unresolved"));
}

TEST_CASE("quantizer descriptor: applies exactly the ops", "[cpu][nn]") {
  torch::manual_seed(3);
  const auto x = torch::randn({257}).mul(3);
  CHECK(torch::equal(Quantizer::full_precision().quantize_weight(x, true), x));
  CHECK(torch::equal(Quantizer::full_precision().quantize_activation(x, true), torch::relu(x)));
  for (int64_t k : {1, 2, 4, 8, 16}) {
    CHECK(bit_mismatch(Quantizer::wrpn(k).quantize_weight(x, true), wrpn::quantize_weight(x, k))
              .empty());
    CHECK(bit_mismatch(Quantizer::wrpn(k).quantize_activation(x, true),
                       wrpn::quantize_activation(x, k))
              .empty());
  }
  const Quantizer w = Quantizer::fixed(FixedPointFormat::parse("Q3.5"));
  CHECK(bit_mismatch(w.quantize_weight(x, false), ref_fixed_point(x, 8, 5)).empty());
  CHECK(
      bit_mismatch(w.quantize_activation(x, false), ref_fixed_point(torch::relu(x), 8, 5)).empty());
  // Stochastic rounding only in training.
  const Quantizer s = Quantizer::fixed(FixedPointFormat::parse("Q3.5s"));
  CHECK(bit_mismatch(s.quantize_weight(x, false), ref_fixed_point(x, 8, 5)).empty());
  CHECK_FALSE(torch::equal(s.quantize_weight(x, true), ref_fixed_point(x, 8, 5)));
}

TEST_CASE("quantizer descriptor: the zoo's layers compute what hand-built modules compute",
          "[cpu][nn][models][fixed]") {
  wrpn::models::ModelSpec spec;
  spec.name = "resnet20";
  spec.num_classes = 10;
  spec.in_channels = 1;
  spec.precision = wrpn::PrecisionConfig::from_json(
      R"({"weight_bits": 8, "act_bits": 6, "scheme": "fixed", "width": 0.5,
          "overrides": {"layer1.0.conv1": "Q3.5", "layer2.1.act1": 4, "fc": "Q4.4"}})");
  torch::manual_seed(0);
  auto model = wrpn::models::create_model(spec);
  model->eval();

  // The visitor sees exactly the layers a type switch over named_modules() finds.
  std::vector<std::string> switched;
  for (const auto& item : model->named_modules("", false)) {
    const auto* m = item.value().get();
    if (m->as<wn::QuantConv2dImpl>() || m->as<wn::QuantLinearImpl>() ||
        m->as<wn::QuantReLUImpl>()) {
      switched.push_back(item.key());
    }
  }
  std::vector<std::string> visited;
  std::map<std::string, Quantizer> quantizers;
  wn::for_each_quantized_layer(*model, [&](const std::string& name, const wn::QuantizedLayer& l) {
    visited.push_back(name);
    quantizers[name] = l.quantizer();
  });
  REQUIRE(visited == switched);
  REQUIRE(visited.size() > 20);

  // Hand-computed expectations from the config: fixed-point entries, the scheme's default
  // splits, the bits override (WRPN at 4 bits) and the fp32 first conv.
  CHECK(quantizers.at("layer1.0.conv1").to_string() == "Q3.5");
  CHECK(quantizers.at("layer1.0.conv2").to_string() == "Q2.6");
  CHECK(quantizers.at("layer1.0.act1").to_string() == "Q3.3");
  CHECK(quantizers.at("layer2.1.act1").to_string() == "Q2.2");  // 4 bits, scheme fixed
  CHECK(quantizers.at("conv1").to_string() == "fp32");
  CHECK(quantizers.at("fc").to_string() == "Q4.4");
  for (const auto& [name, q] : quantizers) {
    const LayerRole role =
        name.find("act") != std::string::npos ? LayerRole::kActivation : LayerRole::kWeight;
    const int64_t default_bits = role == LayerRole::kWeight ? 8 : 6;
    if (name == "conv1" || name == "fc" || name == "act1" ||
        name.find("act_out") != std::string::npos)
      continue;  // the zoo's first/last-layer and residual policy pick other default bits
    CHECK(q == spec.precision.quantizer_for(name, role, default_bits));
  }

  // Each layer against a module built by hand from the same descriptor.
  torch::manual_seed(1);
  int64_t compared = 0;
  wn::for_each_quantized_layer(*model, [&](const std::string& name, const wn::QuantizedLayer& l) {
    INFO(name);
    if (l.kind == wn::LayerKind::kConv2d) {
      const auto& o = l.conv->options;
      wn::QuantConv2d hand(
          wn::QuantConv2dOptions(o.in_channels(), o.out_channels(), o.kernel_size())
              .stride(o.stride())
              .padding(o.padding())
              .bias(false)
              .weight_quantizer(l.quantizer()));
      torch::NoGradGuard no_grad;
      hand->weight.copy_(l.conv->weight);
      hand->eval();
      const auto x = torch::rand({2, o.in_channels(), 8, 8});
      CHECK(bit_mismatch(hand->effective_weight(), l.effective_weight()).empty());
      CHECK(bit_mismatch(hand(x), l.conv->forward(x)).empty());
    } else if (l.kind == wn::LayerKind::kLinear) {
      const auto& o = l.linear->options;
      wn::QuantLinear hand(wn::QuantLinearOptions(o.in_features(), o.out_features())
                               .weight_quantizer(l.quantizer()));
      torch::NoGradGuard no_grad;
      hand->weight.copy_(l.linear->weight);
      hand->bias.copy_(l.linear->bias);
      hand->eval();
      const auto x = torch::randn({3, o.in_features()});
      CHECK(bit_mismatch(hand(x), l.linear->forward(x)).empty());
    } else {
      wn::QuantReLU hand(l.quantizer());
      hand->eval();
      const auto x = torch::randn({100}).mul(4);
      CHECK(bit_mismatch(hand(x), l.act->forward(x)).empty());
    }
    ++compared;
  });
  CHECK(compared == static_cast<int64_t>(visited.size()));
}

TEST_CASE("visitor: a hand-built Sequential, views and an empty callback", "[cpu][nn]") {
  torch::nn::Sequential seq(
      wn::QuantConv2d(wn::QuantConv2dOptions(1, 2, 3).weight_bits(2).input_bits(4)),
      torch::nn::BatchNorm2d(2), wn::QuantReLU(4), torch::nn::Flatten(),
      wn::QuantLinear(wn::QuantLinearOptions(8, 3).weight_bits(32)));
  std::vector<std::string> seen;
  wn::for_each_quantized_layer(*seq, [&](const std::string& name, const wn::QuantizedLayer& l) {
    seen.push_back(name + ":" + l.kind_name() + ":" + l.quantizer().to_string());
    if (l.has_weight()) {
      CHECK(l.weight().defined());
      CHECK(
          l.weight().is_same(l.kind == wn::LayerKind::kConv2d ? l.conv->weight : l.linear->weight));
    } else {
      CHECK_FALSE(l.weight().defined());
      CHECK(l.role() == LayerRole::kActivation);
    }
  });
  CHECK(seen == std::vector<std::string>{"0:conv:wrpn2", "2:act:wrpn4", "4:linear:fp32"});
  wn::QuantizedLayer view;
  CHECK_FALSE(wn::as_quantized_layer(*seq[1], view));
  REQUIRE(wn::as_quantized_layer(*seq[0], view));
  CHECK(view.input_quantizer().bits == 4);
  CHECK_THROWS_WITH(wn::for_each_quantized_layer(*seq, {}), Contains("callback is empty"));
}

TEST_CASE("fs helpers: atomic writes, reads, paths and listings", "[cpu][io]") {
  namespace fs = wrpn::fs;
  const std::string dir = temp_dir("fs");
  const std::string f = fs::join(dir, "a/b/c.txt");
  fs::atomic_write(f, "one");
  CHECK(fs::read_file(f) == "one");
  fs::atomic_write(f, std::string("two\0bytes", 9));
  CHECK(fs::read_file(f) == std::string("two\0bytes", 9));
  struct stat st {};
  REQUIRE(::stat(f.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
  // Without make_parents a missing directory is an error naming the step; nothing is left.
  CHECK_THROWS_WITH(
      fs::atomic_write(fs::join(dir, "x/y.txt"), "z", /*make_parents=*/false),
      Contains("cannot write '" + dir + "/x/y.txt'") && Contains("creating the temporary file"));
  CHECK_THROWS_WITH(fs::atomic_write(dir + "/", "z"), Contains("names a directory"));
  CHECK_THROWS_WITH(fs::read_file(dir + "/missing", "the config"),
                    Contains("cannot open the config"));
  CHECK_THROWS_WITH(fs::read_file(dir + "/missing"), Contains("'" + dir + "/missing'"));
  fs::append_line(fs::join(dir, "m.jsonl"), "1");
  fs::append_line(fs::join(dir, "m.jsonl"), "2");
  CHECK(fs::read_file(fs::join(dir, "m.jsonl")) == "1\n2\n");
  CHECK(fs::list_directory(dir, false) == std::vector<std::string>{"m.jsonl"});
  CHECK(fs::list_directory(dir, true) == std::vector<std::string>{"a"});
  CHECK(fs::list_directory(dir + "/none", true).empty());
  CHECK(fs::is_directory(dir));
  CHECK_FALSE(fs::is_regular_file(dir));
  CHECK(fs::is_regular_file(f));
  fs::remove_file(f);
  fs::remove_file(f);  // absent: no error
  CHECK_FALSE(fs::path_exists(f));
  CHECK(fs::join("", "x") == "x");
  CHECK(fs::join("d/", "x") == "d/x");
  CHECK(fs::parent_path("/x") == "/");
  CHECK(fs::parent_path("x") == "");
  CHECK(fs::parent_path("a/b/c") == "a/b");
  CHECK(fs::lower_extension("dir.d/Image.JPeG") == ".jpeg");
  CHECK(fs::lower_extension("dir.d/noext") == "");
}
