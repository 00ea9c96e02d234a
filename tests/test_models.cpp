// Tests of the model zoo: architectures and parameter counts against torchvision and hand
// computation, forward/backward of every model, where the quantizers sit, the registry, the
// cost report, checkpoints and the packed export.

#include <dirent.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>
#include <wrpn/wrpn.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace {

using Catch::Contains;
using wrpn::PrecisionConfig;
using wrpn::models::Classifier;
using wrpn::models::ModelSpec;

ModelSpec make_spec(const std::string& name, int64_t wb, int64_t ab, double width,
                    int64_t classes = 0, int64_t in_channels = 3) {
  ModelSpec s;
  s.name = name;
  s.num_classes = classes;
  s.in_channels = in_channels;
  s.precision = PrecisionConfig::make(wb, ab, width);
  return s;
}

int64_t count_params(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

/// Parameter count of an ImageNet ResNet with basic blocks, computed from the architecture by
/// hand: stem conv stem_k x stem_k (7 for ImageNet, 3 for the small stem; no bias) + BN, per
/// block two 3x3 convs + BNs, a 1x1 projection + BN where the stage changes, FC with bias.
int64_t basic_resnet_params(const std::vector<int64_t>& blocks, int64_t w, int64_t classes,
                            int64_t stem_k = 7, int64_t in_ch = 3) {
  const int64_t c[4] = {64 * w, 128 * w, 256 * w, 512 * w};
  int64_t n = in_ch * c[0] * stem_k * stem_k + 2 * c[0];
  int64_t in = c[0];
  for (int s = 0; s < 4; ++s) {
    for (int64_t b = 0; b < blocks[s]; ++b) {
      n += in * c[s] * 9 + 2 * c[s] + c[s] * c[s] * 9 + 2 * c[s];
      if (in != c[s]) n += in * c[s] + 2 * c[s];
      in = c[s];
    }
  }
  return n + in * classes + classes;
}

/// The same for CIFAR ResNets: 3x3 stem, three stages of 16w/32w/64w, parameter-free shortcuts.
int64_t cifar_resnet_params(int64_t n_blocks, int64_t w, int64_t classes, int64_t in_ch) {
  const int64_t c[3] = {16 * w, 32 * w, 64 * w};
  int64_t n = in_ch * c[0] * 9 + 2 * c[0];
  int64_t in = c[0];
  for (int s = 0; s < 3; ++s) {
    for (int64_t b = 0; b < n_blocks; ++b) {
      n += in * c[s] * 9 + 2 * c[s] + c[s] * c[s] * 9 + 2 * c[s];
      in = c[s];
    }
  }
  return n + in * classes + classes;
}

/// Names in a directory, sorted, without "." and "..".
std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") names.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

void remove_tree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    for (const auto& n : list_dir(path)) remove_tree(path + "/" + n);
    ::rmdir(path.c_str());
  } else {
    ::unlink(path.c_str());
  }
}

/// A fresh directory under /tmp, removed at scope exit. POSIX calls only: std::filesystem calls
/// can bind to the copies of those functions that libtorch.so exports.
struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = "/tmp/wrpn_models_test_XXXXXX";
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() { remove_tree(path); }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

/// Gives BatchNorm non-trivial running statistics and affine parameters, so round trips that
/// forget a buffer show up in eval-mode outputs.
void perturb_batchnorm(torch::nn::Module& model, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& item : model.named_buffers()) {
    if (item.key().find("running_mean") != std::string::npos) item.value().normal_(0, 0.1);
    if (item.value().is_floating_point() && item.key().find("running_var") != std::string::npos) {
      item.value().uniform_(0.5, 1.5);
    }
  }
  for (auto& item : model.named_parameters()) {
    const auto& k = item.key();
    if (k.find("bn") != std::string::npos || k.find("downsample.1") != std::string::npos) {
      item.value().uniform_(0.5, 1.5);
    }
  }
}

std::map<std::string, const wrpn::models::LayerCost*> by_name(const wrpn::models::CostReport& r) {
  std::map<std::string, const wrpn::models::LayerCost*> m;
  for (const auto& l : r.layers) m[l.name] = &l;
  return m;
}

template <typename T>
std::shared_ptr<T> module_as(const torch::nn::Module& model, const std::string& name) {
  for (const auto& item : model.named_modules()) {
    if (item.key() == name) return std::dynamic_pointer_cast<T>(item.value());
  }
  return nullptr;
}

}  // namespace

TEST_CASE("models: zoo: parameter counts equal torchvision's at width 1", "[models]") {
  const std::vector<std::pair<std::string, int64_t>> want = {
      {"resnet18", 11689512}, {"resnet34", 21797672}, {"resnet50", 25557032}};
  for (const auto& [name, n] : want) {
    for (int64_t bits : {32, 4}) {
      INFO(name << " at " << bits << " bits");
      auto model = wrpn::models::create_model(make_spec(name, bits, bits, 1.0, 1000));
      REQUIRE(count_params(*model) == n);
    }
  }
  // CIFAR ResNets with 10 classes ("Deep Residual Learning", 0.27M / 0.46M / 0.85M).
  const std::vector<std::pair<std::string, int64_t>> cifar = {
      {"resnet20", 269722}, {"resnet32", 464154}, {"resnet56", 853018}};
  for (const auto& [name, n] : cifar) {
    INFO(name);
    REQUIRE(count_params(*wrpn::models::create_model(make_spec(name, 4, 4, 1.0))) == n);
  }
}

TEST_CASE("models: zoo: parameter counts at other widths equal hand-computed ones", "[models]") {
  // The formulas against torchvision at width 1, and two counts written out: ResNet-18 at width
  // 2 and ResNet-50 at width 1.5 (every channel count, bottleneck outputs included, times the
  // width). Widths 2 and 3 of every model are checked in the forward/backward test.
  REQUIRE(basic_resnet_params({2, 2, 2, 2}, 1, 1000) == 11689512);
  REQUIRE(basic_resnet_params({3, 4, 6, 3}, 1, 1000) == 21797672);
  REQUIRE(cifar_resnet_params(3, 1, 10, 3) == 269722);
  REQUIRE(basic_resnet_params({2, 2, 2, 2}, 2, 1000) == 45693032);
  REQUIRE(count_params(*wrpn::models::create_model(make_spec("resnet50", 4, 4, 1.5))) == 55919176);
  REQUIRE(count_params(*wrpn::models::create_model(make_spec("resnet20", 4, 4, 1.5))) == 605026);
}

TEST_CASE("models: zoo: state dict names and sizes follow torchvision", "[models]") {
  auto model = wrpn::models::create_model(make_spec("resnet18", 4, 4, 1.0));
  std::set<std::string> keys;
  for (const auto& p : model->named_parameters()) keys.insert(p.key());
  for (const auto& b : model->named_buffers()) keys.insert(b.key());
  REQUIRE(keys.size() == 122);  // len(torchvision.models.resnet18().state_dict())
  for (const char* k :
       {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.num_batches_tracked", "layer4.1.bn2.bias", "fc.weight", "fc.bias"}) {
    INFO(k);
    REQUIRE(keys.count(k) == 1);
  }
  REQUIRE(model->named_buffers().size() + model->named_parameters().size() == 122);
  auto r50 = wrpn::models::create_model(make_spec("resnet50", 32, 32, 1.0));
  REQUIRE(r50->named_buffers().size() + r50->named_parameters().size() == 320);
  REQUIRE(r50->named_parameters()["layer1.0.conv3.weight"].sizes() ==
          torch::IntArrayRef({256, 64, 1, 1}));
  REQUIRE(r50->named_parameters()["layer2.0.conv2.weight"].sizes() ==
          torch::IntArrayRef({128, 128, 3, 3}));
  auto r56 = wrpn::models::create_model(make_spec("resnet56", 4, 4, 1.0));
  REQUIRE(r56->named_buffers().size() + r56->named_parameters().size() == 332);
}

namespace {

/// Forward and backward of a 4/4-bit model at widths 1, 2 and 3 on 2 small images, with its
/// parameter count against the hand-computed one.
/// Small-stem models are run on 1x28x28 images (Fashion-MNIST's shape), the others on 32x32.
void check_forward_backward(const std::string& name,
                            const std::vector<double>& widths = {1.0, 2.0, 3.0}) {
  const bool small = name.size() > 6 && name.compare(name.size() - 6, 6, "_small") == 0;
  const bool cifar = !small && wrpn::models::model_info(name).default_input_size == 32;
  const std::string base = small ? name.substr(0, name.size() - 6) : name;
  for (double width : widths) {
    INFO(name << " at width " << width);
    const int64_t in_ch = cifar || small ? 1 : 3;
    auto model = wrpn::models::create_model(make_spec(name, 4, 4, width, 7, in_ch));
    const auto w = static_cast<int64_t>(width);
    const int64_t stem_k = small ? 3 : 7;
    if (base == "resnet18" || base == "resnet34") {
      REQUIRE(count_params(*model) ==
              basic_resnet_params(wrpn::models::resnet_arch(name).blocks, w, 7, stem_k, in_ch));
    } else if (base == "resnet50") {
      // ResNet-50 with 1000 classes has 98,004,072 / 217,342,120 parameters at width 2 / 3;
      // the small stem swaps the 3x64wx7x7 stem conv for an in_ch x 64w x 3x3 one.
      const int64_t fc_1000 = 2048 * w * 1000 + 1000, fc_7 = 2048 * w * 7 + 7;
      const int64_t stem_7x7 = 3 * 64 * w * 49, stem = in_ch * 64 * w * stem_k * stem_k;
      const int64_t want[] = {25557032, 98004072, 217342120};
      REQUIRE(count_params(*model) == want[w - 1] - fc_1000 + fc_7 - stem_7x7 + stem);
    } else if (cifar) {
      REQUIRE(count_params(*model) ==
              cifar_resnet_params(wrpn::models::resnet_arch(name).blocks[0], w, 7, 1));
    }
    model->train();
    torch::manual_seed(1);
    const int64_t size = small ? 28 : 32;
    const auto x = torch::rand({2, in_ch, size, size});
    const auto y = model->forward(x);
    REQUIRE(y.sizes() == torch::IntArrayRef({2, 7}));
    REQUIRE(torch::isfinite(y).all().item<bool>());
    torch::nn::functional::cross_entropy(y, torch::tensor({1, 5})).backward();
    int64_t with_signal = 0, convs = 0;
    for (const auto& p : model->named_parameters()) {
      INFO(p.key());
      REQUIRE(p.value().grad().defined());
      REQUIRE(torch::isfinite(p.value().grad()).all().item<bool>());
      if (p.key().find("conv") != std::string::npos) {
        ++convs;
        with_signal += p.value().grad().abs().sum().item<double>() > 0 ? 1 : 0;
      }
    }
    // The straight-through gradient reaches (nearly) every quantized conv.
    REQUIRE(with_signal >= convs - 1);
    model->eval();
    torch::NoGradGuard no_grad;
    REQUIRE(model->forward(x.narrow(0, 0, 1)).sizes() == torch::IntArrayRef({1, 7}));
  }
}

}  // namespace

TEST_CASE("models: zoo: resnet18 forward and backward at widths 1, 2 and 3", "[models]") {
  check_forward_backward("resnet18");
}

TEST_CASE("models: zoo: resnet34 forward and backward at widths 1, 2 and 3", "[models]") {
  check_forward_backward("resnet34");
}

TEST_CASE("models: zoo: resnet50 forward and backward at widths 1, 2 and 3", "[models]") {
  check_forward_backward("resnet50");
}

TEST_CASE("models: zoo: small-stem resnet18/34/50 forward and backward on 28x28 at widths 1, 2",
          "[models]") {
  for (const char* name : {"resnet18_small", "resnet34_small", "resnet50_small"}) {
    check_forward_backward(name, {1.0, 2.0});
  }
}

TEST_CASE("models: zoo: the small stem is one 3x3 stride-1 conv and no max-pool", "[models]") {
  // Parameter counts written out: ResNet-18/34 with a 3-channel 3x3 stem and 10 classes (the
  // CIFAR ResNet-18 of many papers: 11,173,962 parameters).
  REQUIRE(count_params(*wrpn::models::create_model(
              make_spec("resnet18_small", 32, 32, 1.0, 10, 3))) == 11173962);
  REQUIRE(count_params(*wrpn::models::create_model(
              make_spec("resnet34_small", 32, 32, 1.0, 10, 3))) == 21282122);
  REQUIRE(wrpn::models::model_info("resnet34_small").default_classes == 10);
  REQUIRE(wrpn::models::model_info("resnet34_small").default_input_size == 32);
  const auto arch = wrpn::models::resnet_arch("resnet50_small");
  REQUIRE(arch.stem == wrpn::models::ResNetArch::Stem::kSmall);
  REQUIRE(arch.block == wrpn::models::ResNetArch::Block::kBottleneck);

  // MACs at 32x32, by hand: stem 32*32*64*27; layer1 four 64->64 3x3 convs at 32x32; layers 2-4
  // each a strided 3x3 conv, three 3x3 convs and a 1x1 projection, at 16, 8 and 4 pixels
  // (each stage has the same MACs: channels double as the side halves); FC 512*10.
  auto r18 = wrpn::models::create_model(make_spec("resnet18_small", 4, 4, 1.0, 10, 3));
  const int64_t stage = 16 * 16 * 128 * 64 * 9 + 3 * 16 * 16 * 128 * 128 * 9 + 16 * 16 * 128 * 64;
  const int64_t want = 32 * 32 * 64 * 27 + 4 * 32 * 32 * 64 * 64 * 9 + 3 * stage + 512 * 10;
  const auto report = wrpn::models::cost_report(*r18, 32, 32, /*with_baseline=*/false);
  REQUIRE(report.totals.macs == want);
  // The ImageNet stem at the same input: the 7x7 stride-2 conv and the max-pool leave 8x8 for
  // layer1, 1/16 of the small stem's pixels in every stage.
  auto r18_imagenet = wrpn::models::create_model(make_spec("resnet18", 4, 4, 1.0, 10, 3));
  const int64_t want_imagenet =
      16 * 16 * 64 * 3 * 49 + (4 * 32 * 32 * 64 * 64 * 9 + 3 * stage) / 16 + 512 * 10;
  REQUIRE(wrpn::models::cost_report(*r18_imagenet, 32, 32, false).totals.macs == want_imagenet);
  // Wrong input shapes are named.
  REQUIRE_THROWS_WITH(r18->forward(torch::zeros({1, 1, 28, 28})),
                      Catch::Matchers::Contains("expected input [N, 3, H, W]"));
}

TEST_CASE("models: zoo: resnet20 forward and backward at widths 1, 2 and 3", "[models]") {
  check_forward_backward("resnet20");
}

TEST_CASE("models: zoo: resnet32 forward and backward at widths 1, 2 and 3", "[models]") {
  check_forward_backward("resnet32");
}

TEST_CASE("models: zoo: resnet56 forward and backward at widths 1, 2 and 3", "[models]") {
  check_forward_backward("resnet56");
}

TEST_CASE("models: zoo: where the quantizers sit", "[models]") {
  using wrpn::nn::QuantConv2dImpl;
  using wrpn::nn::QuantLinearImpl;
  using wrpn::nn::QuantReLUImpl;
  auto bits_of = [](const torch::nn::Module& m, const std::string& name) {
    if (auto c = module_as<QuantConv2dImpl>(m, name)) {
      return std::make_pair(c->options.weight_bits(), c->options.input_bits());
    }
    if (auto f = module_as<QuantLinearImpl>(m, name)) {
      return std::make_pair(f->options.weight_bits(), f->options.input_bits());
    }
    if (auto a = module_as<QuantReLUImpl>(m, name)) {
      return std::make_pair(a->options.bits(), int64_t{-1});
    }
    return std::make_pair(int64_t{-2}, int64_t{-2});
  };
  using P = std::pair<int64_t, int64_t>;

  SECTION("default: fp32 stem and FC, quantized convs read k-bit inputs, fp32 residual") {
    auto m = wrpn::models::create_model(make_spec("resnet20", 4, 2, 1.0));
    REQUIRE(bits_of(*m, "conv1") == P{32, 32});
    REQUIRE(bits_of(*m, "act1") == P{32, -1});
    REQUIRE(bits_of(*m, "layer1.0.act_in") == P{2, -1});
    REQUIRE(bits_of(*m, "layer1.0.conv1") == P{4, 2});
    REQUIRE(bits_of(*m, "layer1.0.act1") == P{2, -1});
    REQUIRE(bits_of(*m, "layer1.0.conv2") == P{4, 2});
    REQUIRE(bits_of(*m, "layer1.0.act_out") == P{32, -1});
    REQUIRE(bits_of(*m, "layer3.2.act_out") == P{32, -1});
    REQUIRE(bits_of(*m, "fc") == P{32, 32});
    REQUIRE(!module_as<QuantReLUImpl>(*m, "input_act"));
    auto r50 = wrpn::models::create_model(make_spec("resnet50", 4, 4, 1.0));
    REQUIRE(bits_of(*r50, "layer2.0.downsample.0") == P{4, 4});
    REQUIRE(bits_of(*r50, "layer2.0.conv3") == P{4, 4});
  }
  SECTION("quantized residual: blocks exchange k-bit activations") {
    auto spec = make_spec("resnet20", 4, 2, 1.0);
    spec.precision.quantized_residual = true;
    auto m = wrpn::models::create_model(spec);
    auto& r = dynamic_cast<wrpn::models::ResNetImpl&>(*m);
    REQUIRE(bits_of(*m, "act1") == P{2, -1});
    REQUIRE(!module_as<QuantReLUImpl>(*m, "layer1.0.act_in"));
    REQUIRE(bits_of(*m, "layer1.0.act_out") == P{2, -1});
    REQUIRE(bits_of(*m, "layer3.2.act_out") == P{32, -1});  // feeds the fp32 FC
    REQUIRE(bits_of(*m, "layer2.0.conv1") == P{4, 2});
    // Stage outputs lie on the 2-bit grid {0, 1/3, 2/3, 1}, except the one feeding the FC.
    m->eval();
    torch::NoGradGuard no_grad;
    torch::manual_seed(3);
    auto x = r.act1(r.bn1(r.conv1(torch::randn({2, 3, 16, 16}))));
    for (size_t s = 0; s < r.stages.size(); ++s) {
      x = r.stages[s]->forward(x);
      const auto on_grid = torch::round(x * 3).div(3).eq(x).all().item<bool>();
      REQUIRE(on_grid == (s + 1 < r.stages.size()));
    }
  }
  SECTION("quantized first and last layers, and per-layer overrides") {
    auto spec = make_spec("resnet18", 4, 4, 1.0);
    spec.precision.fp32_first_layer = false;
    spec.precision.fp32_last_layer = false;
    spec.precision.overrides = {
        {"input_act", 8}, {"layer1.1.conv2", 2}, {"layer2.0.act_in", 32}, {"fc", 8}};
    auto m = wrpn::models::create_model(spec);
    REQUIRE(bits_of(*m, "input_act") == P{8, -1});
    REQUIRE(bits_of(*m, "conv1") == P{4, 8});
    REQUIRE(bits_of(*m, "layer1.1.conv2") == P{2, 4});
    REQUIRE(bits_of(*m, "layer2.0.conv1") == P{4, 32});
    REQUIRE(bits_of(*m, "layer2.0.downsample.0") == P{4, 32});
    REQUIRE(bits_of(*m, "layer4.1.act_out") == P{4, -1});
    REQUIRE(bits_of(*m, "fc") == P{8, 4});
  }
  SECTION("an override naming no layer is rejected with the layer names") {
    auto spec = make_spec("resnet20", 4, 4, 1.0);
    spec.precision.overrides = {{"layer4.0.conv1", 8}};
    REQUIRE_THROWS_WITH(wrpn::models::create_model(spec),
                        Contains("\"layer4.0.conv1\" names no quantizable layer of resnet20") &&
                            Contains("layer3.2.conv2") && Contains("fc"));
  }
}

TEST_CASE("models: registry: names, defaults and errors", "[models]") {
  const auto names = wrpn::models::list_models();
  for (const char* n : {"resnet18", "resnet20", "resnet32", "resnet34", "resnet50", "resnet56"}) {
    REQUIRE(std::find(names.begin(), names.end(), n) != names.end());
  }
  REQUIRE(std::is_sorted(names.begin(), names.end()));
  REQUIRE_THROWS_WITH(
      wrpn::models::create_model(make_spec("resnet35", 4, 4, 1)),
      Contains("unknown model \"resnet35\"") && Contains("resnet34") && Contains("resnet56"));
  REQUIRE(wrpn::models::create_model(make_spec("resnet20", 4, 4, 1))->spec().num_classes == 10);
  REQUIRE(wrpn::models::create_model(make_spec("resnet18", 4, 4, 1))->spec().num_classes == 1000);
  auto bad = make_spec("resnet20", 4, 4, 1);
  bad.in_channels = 0;
  REQUIRE_THROWS_WITH(wrpn::models::create_model(bad), Contains("in_channels = 0"));
  auto m = wrpn::models::create_model(make_spec("resnet20", 4, 4, 1, 10, 1));
  REQUIRE_THROWS_WITH(m->forward(torch::zeros({1, 3, 32, 32})),
                      Contains("expected input [N, 1, H, W]"));

  wrpn::models::ModelInfo info = wrpn::models::model_info("resnet20");
  info.name = "tiny_resnet";
  info.description = "ResNet-20 under another name";
  wrpn::models::register_model(info);
  REQUIRE(wrpn::models::create_model(make_spec("tiny_resnet", 4, 4, 1))->spec().name ==
          "tiny_resnet");
}

TEST_CASE("models: ModelSpec: JSON round trip and errors", "[models]") {
  auto spec = make_spec("resnet34", 4, 2, 2.5, 100, 1);
  spec.init = wrpn::nn::WeightInit::kHe;
  spec.precision.overrides = {{"fc", 8}};
  REQUIRE(ModelSpec::from_json(spec.to_json()) == spec);
  REQUIRE_THROWS_WITH(ModelSpec::from_json(R"({"name": "resnet20", "clases": 10})"),
                      Contains("unknown key 'clases'"));
  REQUIRE_THROWS_WITH(ModelSpec::from_json(R"({"name": "resnet20", "init": "xavier"})"),
                      Contains("unknown weight init \"xavier\""));
  REQUIRE_THROWS_WITH(ModelSpec::from_json(R"({"name": "resnet20", "precision": {"width": 0}})"),
                      Contains("width = 0"));
}

TEST_CASE("models: cost report: a ResNet-20 layer and the totals by hand", "[models]") {
  auto model = wrpn::models::create_model(make_spec("resnet20", 4, 4, 1.0, 10, 3));
  const auto r = wrpn::models::cost_report(*model, 32, 32);
  REQUIRE(r.layers.size() == 20);  // 19 convs and the FC
  const auto layers = by_name(r);

  // layer1.0.conv1: 16 -> 16, 3x3, stride 1 on 32x32.
  const auto& l = *layers.at("layer1.0.conv1");
  REQUIRE(l.kind == "conv");
  REQUIRE(l.params == 16 * 16 * 9);
  REQUIRE(l.macs == 16 * 32 * 32 * (16 * 9));  // 2,359,296
  REQUIRE(l.weight_bits == 4);
  REQUIRE(l.act_bits == 4);
  REQUIRE(l.bit_ops == int64_t{2359296} * 4 * 4);
  REQUIRE(l.storage_bits == 2304 * 4 + 32);
  REQUIRE(layers.at("layer2.0.conv1")->macs == 32 * 16 * 16 * (16 * 9));  // stride 2
  REQUIRE(layers.at("conv1")->macs == 16 * 32 * 32 * 27);
  REQUIRE(layers.at("conv1")->bit_ops == int64_t{16 * 32 * 32 * 27} * 32 * 32);
  REQUIRE(layers.at("fc")->macs == 640);
  REQUIRE(layers.at("fc")->storage_bits == 650 * 32);

  // Totals: 6 convs of 2,359,296 MACs in stage 1; in stages 2 and 3 one 1,179,648-MAC strided
  // conv and 5 of 2,359,296 each; the stem 442,368; the FC 640.
  const int64_t quantized_macs = 6 * 2359296 + 2 * (1179648 + 5 * 2359296);
  const int64_t fp32_macs = 442368 + 640;
  REQUIRE(r.totals.macs == quantized_macs + fp32_macs);
  REQUIRE(r.totals.macs == 40551040);
  REQUIRE(r.totals.bit_ops == quantized_macs * 16 + fp32_macs * 1024);
  REQUIRE(r.totals.params == 269722);
  REQUIRE(r.totals.layer_params == 269722 - 2 * (7 * 16 + 6 * 32 + 6 * 64));  // minus BatchNorm
  const int64_t quantized_weights = 269722 - 2 * (7 * 16 + 6 * 32 + 6 * 64) - 432 - 650;
  REQUIRE(r.totals.storage_bits ==
          quantized_weights * 4 + 18 * 32 + (432 + 650) * 32 + 2 * (7 * 16 + 6 * 32 + 6 * 64) * 32);
  REQUIRE(r.baseline.has_value());
  REQUIRE(r.baseline->macs == 40551040);
  REQUIRE(r.baseline->bit_ops == int64_t{40551040} * 1024);
  REQUIRE(r.baseline->storage_bits == int64_t{269722} * 32);
  REQUIRE(r.totals.zero_fraction > 0.3);
  REQUIRE(r.totals.zero_fraction < 0.45);

  const auto j = nlohmann::json::parse(r.to_json());
  REQUIRE(j["totals"]["macs"] == 40551040);
  REQUIRE(j["layers"].size() == 20);
  REQUIRE(
      j["ratios"]["bit_ops"].get<double>() ==
      Approx(static_cast<double>(quantized_macs * 16 + fp32_macs * 1024) / (40551040.0 * 1024)));
  const auto table = r.to_table();
  REQUIRE_THAT(table, Contains("layer1.0.conv1") && Contains("2,359,296") &&
                          Contains("40,551,040") && Contains("fp32 x1"));

  // Width 2 multiplies the conv MACs by 4 (the stem's and FC's by 2).
  auto wide = wrpn::models::create_model(make_spec("resnet20", 4, 4, 2.0, 10, 3));
  const auto r2 = wrpn::models::cost_report(*wide, 32, 32, /*with_baseline=*/false);
  REQUIRE(!r2.baseline);
  REQUIRE(r2.totals.macs == 4 * quantized_macs + 2 * fp32_macs);
  // The report leaves the model in training mode.
  REQUIRE(wide->is_training());
}

TEST_CASE("models: cost report: ImageNet ResNets at 224 match reference MAC counts", "[models]") {
  // Conv and FC MACs of torchvision's models at 3x224x224 (ResNet-18 1.81G, ResNet-50 4.09G).
  auto r18 = wrpn::models::create_model(make_spec("resnet18", 4, 4, 1.0));
  REQUIRE(wrpn::models::cost_report(*r18, 224, 224, false).totals.macs == 1814073344);
  auto r34 = wrpn::models::create_model(make_spec("resnet34", 4, 4, 2.0));
  const auto r = wrpn::models::cost_report(*r34);  // the registry's default 224
  REQUIRE(r.input_height == 224);
  REQUIRE(r.totals.macs == 14417993728);
  REQUIRE(r.baseline->macs == 3663761408);
  REQUIRE(r.totals.params == 86110824);
  REQUIRE(r.baseline->params == 21797672);
}

TEST_CASE("models: checkpoint: round trip recreates the model and its extras", "[models]") {
  TempDir dir;
  auto spec = make_spec("resnet20", 4, 4, 1.5, 10, 1);
  spec.precision.overrides = {{"layer2.1.conv2", 2}};
  auto model = wrpn::models::create_model(spec);
  perturb_batchnorm(*model, 5);
  wrpn::models::CheckpointInfo info;
  info.epoch = 7;
  info.metrics = {{"val_top1", 0.875}, {"loss", 0.25}};
  info.extra_json = R"({"lr": 0.1, "schedule": [30, 60]})";
  info.blob = std::string("opt\0state\xff", 10);
  const auto path = dir.file("model.ckpt");
  wrpn::models::save_checkpoint(path, *model, info);

  wrpn::models::CheckpointMeta meta;
  auto loaded = wrpn::models::load_checkpoint(path, &meta);
  REQUIRE(meta.spec == model->spec());
  REQUIRE(meta.library_version == wrpn::kVersion);
  REQUIRE(meta.info.epoch == 7);
  REQUIRE(meta.info.metrics == info.metrics);
  REQUIRE(nlohmann::json::parse(meta.info.extra_json) == nlohmann::json::parse(info.extra_json));
  REQUIRE(meta.info.blob == info.blob);
  REQUIRE(wrpn::models::read_checkpoint(path).info.epoch == 7);

  const auto a = model->named_parameters(), b = loaded->named_parameters();
  for (const auto& p : a) REQUIRE(torch::equal(p.value(), b[p.key()]));
  const auto ab = model->named_buffers(), bb = loaded->named_buffers();
  for (const auto& p : ab) REQUIRE(torch::equal(p.value(), bb[p.key()]));
  model->eval();
  loaded->eval();
  const auto x = torch::rand({2, 1, 32, 32});
  REQUIRE(torch::equal(model->forward(x), loaded->forward(x)));

  // Optimizer state fits in the blob.
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  model->train();
  torch::nn::functional::cross_entropy(model->forward(x), torch::tensor({1, 2})).backward();
  opt.step();
  std::ostringstream opt_bytes;
  torch::save(opt, opt_bytes);
  info.blob = opt_bytes.str();
  wrpn::models::save_checkpoint(path, *model, info);
  torch::optim::SGD opt2(loaded->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  wrpn::models::load_checkpoint_into(path, *loaded);
  std::istringstream in(wrpn::models::read_checkpoint(path).info.blob);
  torch::load(opt2, in);
  REQUIRE(opt2.state().size() == opt.state().size());
}

TEST_CASE("models: checkpoint: an fp32 checkpoint starts a quantized model", "[models]") {
  TempDir dir;
  auto fp32 = wrpn::models::create_model(make_spec("resnet20", 32, 32, 2.0));
  perturb_batchnorm(*fp32, 6);
  const auto path = dir.file("fp32.ckpt");
  wrpn::models::save_checkpoint(path, *fp32);
  auto quant = wrpn::models::create_model(make_spec("resnet20", 4, 4, 2.0));
  const auto meta = wrpn::models::load_checkpoint_into(path, *quant);
  REQUIRE(meta.spec.precision.is_full_precision());
  for (const auto& p : fp32->named_parameters()) {
    REQUIRE(torch::equal(p.value(), quant->named_parameters()[p.key()]));
  }
  // The quantized forward uses the fp32 weights' quantized values.
  auto conv = module_as<wrpn::nn::QuantConv2dImpl>(*quant, "layer1.0.conv1");
  const auto w = fp32->named_parameters()["layer1.0.conv1.weight"];
  REQUIRE(torch::equal(conv->effective_weight(), torch::round(w.clamp(-1, 1) * 7) / 7));

  // A model of another width or class count is refused, and left unchanged.
  auto other = wrpn::models::create_model(make_spec("resnet20", 4, 4, 1.0));
  const auto before = other->named_parameters()["conv1.weight"].clone();
  REQUIRE_THROWS_WITH(wrpn::models::load_checkpoint_into(path, *other),
                      Contains("\"conv1.weight\" has shape [32, 3, 3, 3]") &&
                          Contains("the model's has shape [16, 3, 3, 3]"));
  REQUIRE(torch::equal(before, other->named_parameters()["conv1.weight"]));
  auto r32 = wrpn::models::create_model(make_spec("resnet32", 32, 32, 2.0));
  REQUIRE_THROWS_WITH(wrpn::models::load_checkpoint_into(path, *r32),
                      Contains("holds a resnet20 but the model is a resnet32"));
}

TEST_CASE("models: checkpoint: atomic replacement, no leftovers, clear write errors", "[models]") {
  TempDir dir;
  const auto path = dir.file("run.ckpt");
  auto m1 = wrpn::models::create_model(make_spec("resnet20", 4, 4, 1.0));
  wrpn::models::CheckpointInfo info;
  info.epoch = 1;
  wrpn::models::save_checkpoint(path, *m1, info);
  const std::string old_bytes = slurp(path);
  struct stat st1 {};
  REQUIRE(::stat(path.c_str(), &st1) == 0);

  // A reader holding the old file keeps reading the whole old file while a save replaces it.
  std::ifstream reader(path, std::ios::binary);
  REQUIRE(reader.is_open());
  auto m2 = wrpn::models::create_model(make_spec("resnet20", 4, 4, 2.0));
  info.epoch = 2;
  wrpn::models::save_checkpoint(path, *m2, info);
  const std::string seen((std::istreambuf_iterator<char>(reader)),
                         std::istreambuf_iterator<char>());
  REQUIRE(seen == old_bytes);
  struct stat st2 {};
  REQUIRE(::stat(path.c_str(), &st2) == 0);
  REQUIRE(st2.st_ino != st1.st_ino);  // replaced by rename, not rewritten in place
  REQUIRE(wrpn::models::read_checkpoint(path).info.epoch == 2);

  // A failed save (the target is a directory) reports the path and leaves no temporary file.
  const auto blocked = dir.file("blocked.ckpt");
  REQUIRE(::mkdir(blocked.c_str(), 0755) == 0);
  REQUIRE_THROWS_WITH(wrpn::models::save_checkpoint(blocked, *m1),
                      Contains("cannot write '" + blocked + "'") && Contains("renaming"));
  REQUIRE_THROWS_WITH(wrpn::models::save_checkpoint(dir.file("no/such/dir/x.ckpt"), *m1),
                      Contains("creating the temporary file"));
  REQUIRE(list_dir(dir.path) == std::vector<std::string>{"blocked.ckpt", "run.ckpt"});
}

TEST_CASE("models: checkpoint: truncated, corrupt and foreign files give clear errors",
          "[models]") {
  TempDir dir;
  const auto path = dir.file("good.ckpt");
  auto model = wrpn::models::create_model(make_spec("resnet20", 4, 4, 1.0));
  wrpn::models::save_checkpoint(path, *model);
  const std::string good = slurp(path);
  const auto bad = dir.file("bad.ckpt");
  for (size_t cut : {size_t{0}, size_t{10}, size_t{20}, size_t{100}, good.size() / 2,
                     good.size() - 20, good.size() - 9, good.size() - 1}) {
    INFO("truncated to " << cut << " of " << good.size() << " bytes");
    spit(bad, good.substr(0, cut));
    REQUIRE_THROWS_WITH(wrpn::models::load_checkpoint(bad), Contains("truncated"));
    REQUIRE_THROWS_WITH(wrpn::models::read_checkpoint(bad), Contains("truncated"));
  }
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x10;
  spit(bad, flipped);
  REQUIRE_THROWS_WITH(wrpn::models::load_checkpoint(bad), Contains("checksum"));
  spit(bad, good + "x");
  REQUIRE_THROWS_WITH(wrpn::models::load_checkpoint(bad), Contains("unexpected bytes"));
  spit(bad, "PK\x03\x04 this is a zip file, not a checkpoint");
  REQUIRE_THROWS_WITH(wrpn::models::load_checkpoint(bad), Contains("not a wrpn checkpoint"));
  REQUIRE_THROWS_WITH(wrpn::models::load_checkpoint(dir.file("missing.ckpt")),
                      Contains("cannot open checkpoint") && Contains("missing.ckpt"));
}

TEST_CASE("models: packed export: outputs equal the fake-quantized model's, file size",
          "[models]") {
  TempDir dir;
  struct Case {
    int64_t bits;
    double width;
    bool quantized_ends;
  };
  for (const auto& c : std::vector<Case>{
           {4, 1.0, false}, {2, 2.0, false}, {3, 1.0, true}, {1, 1.0, false}, {16, 1.0, true}}) {
    INFO("bits " << c.bits << ", width " << c.width);
    auto spec = make_spec("resnet20", c.bits, 4, c.width, 10, 1);
    spec.precision.fp32_first_layer = spec.precision.fp32_last_layer = !c.quantized_ends;
    auto model = wrpn::models::create_model(spec);
    perturb_batchnorm(*model, 7);
    const auto path = dir.file("model.wrpn");
    const auto stats = wrpn::models::export_packed(path, *model);
    auto loaded = wrpn::models::import_packed(path);
    REQUIRE(loaded->spec() == model->spec());
    model->eval();
    loaded->eval();
    torch::NoGradGuard no_grad;
    const auto x = torch::rand({3, 1, 32, 32});
    if (c.bits == 1) {
      REQUIRE(torch::allclose(model->forward(x), loaded->forward(x), 1e-4, 1e-5));
    } else {
      REQUIRE(torch::equal(model->forward(x), loaded->forward(x)));
    }

    // Size: the preamble, two length-prefixed sections and the trailer around the payload, and
    // the payload is ceil(n * k / 8) bytes per quantized weight plus raw bytes for the rest.
    const std::string bytes = slurp(path);
    REQUIRE(static_cast<int64_t>(bytes.size()) == stats.file_bytes);
    uint64_t header_len = 0;
    std::memcpy(&header_len, bytes.data() + 16, 8);
    int64_t payload = 0, fp32 = 0, quantized = 0;
    for (const auto& item : model->named_modules()) {
      for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) {
        const std::string name = item.key().empty() ? p.key() : item.key() + "." + p.key();
        int64_t k = 32;
        if (auto conv = std::dynamic_pointer_cast<wrpn::nn::QuantConv2dImpl>(item.value())) {
          if (p.key() == "weight") k = conv->options.weight_bits();
        }
        if (auto fc = std::dynamic_pointer_cast<wrpn::nn::QuantLinearImpl>(item.value())) {
          if (p.key() == "weight") k = fc->options.weight_bits();
        }
        payload += k == 32 ? p.value().numel() * 4 : (p.value().numel() * k + 7) / 8;
        quantized += k == 32 ? 0 : 1;
        fp32 += p.value().numel() * 4;
      }
    }
    for (const auto& b : model->named_buffers()) {
      payload += static_cast<int64_t>(b.value().nbytes());
      fp32 += static_cast<int64_t>(b.value().nbytes());
    }
    REQUIRE(stats.file_bytes == 16 + 8 + static_cast<int64_t>(header_len) + 8 + payload + 16);
    REQUIRE(stats.fp32_bytes == fp32);
    REQUIRE(stats.quantized_tensors == quantized);
    if (c.bits == 4 && c.width == 1.0) {
      // 4-bit convs: about 1/8 of fp32 plus the fp32 stem, FC, BatchNorm and the header.
      REQUIRE(stats.file_bytes < fp32 / 6);
    }
  }
}

TEST_CASE("models: packed export: the bit stream holds k-bit codes as documented", "[models]") {
  TempDir dir;
  auto model = wrpn::models::create_model(make_spec("resnet20", 3, 4, 1.0, 10, 1));
  const auto path = dir.file("m.wrpn");
  wrpn::models::export_packed(path, *model);
  const std::string bytes = slurp(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data() + 16, 8);
  const auto header = nlohmann::json::parse(bytes.substr(24, header_len));
  const size_t payload_start = 24 + header_len + 8;
  REQUIRE(header["format"] == "wrpn-packed");
  REQUIRE(header["model"]["name"] == "resnet20");
  bool checked = false;
  for (const auto& e : header["tensors"]) {
    if (e["name"] != "layer2.1.conv1.weight") continue;
    REQUIRE(e["encoding"] == "int");
    REQUIRE(e["bits"] == 3);
    REQUIRE(e["scale"].get<double>() == Approx(1.0 / 3));
    const auto w = model->named_parameters()["layer2.1.conv1.weight"].reshape(-1);
    const auto want = (torch::round(w.clamp(-1, 1) * 3) + 3).to(torch::kLong);
    REQUIRE(e["bytes"] == (w.numel() * 3 + 7) / 8);
    const size_t start = payload_start + e["offset"].get<size_t>();
    for (int64_t i = 0; i < w.numel(); ++i) {
      int64_t code = 0;
      for (int64_t j = 0; j < 3; ++j) {
        const int64_t bit = i * 3 + j;
        code |= ((static_cast<unsigned char>(bytes[start + bit / 8]) >> (bit % 8)) & 1) << j;
      }
      REQUIRE(code == want[i].item<int64_t>());
    }
    checked = true;
  }
  REQUIRE(checked);
  spit(path, bytes.substr(0, bytes.size() / 3));
  REQUIRE_THROWS_WITH(wrpn::models::import_packed(path),
                      Contains("packed export") && Contains("truncated"));
  REQUIRE_THROWS_WITH(wrpn::models::load_checkpoint(dir.file("m.wrpn")),
                      Contains("not a wrpn checkpoint") || Contains("truncated"));
}
