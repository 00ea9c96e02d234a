// ModelSpec, ClassifierImpl and the registry of zoo models.

#include "wrpn/models/registry.h"

#include <c10/util/Exception.h>
#include <wrpn/util/text.h>

#include <map>
#include <mutex>
#include <set>

#include "model_spec_json.h"
#include "precision_json.h"
#include "wrpn/models/resnet.h"

namespace wrpn {
namespace models {

// ---- ModelSpec ----

namespace {
constexpr int64_t kMaxClasses = 1000000;
constexpr int64_t kMaxInChannels = 1024;
}  // namespace

void ModelSpec::validate() const {
  TORCH_CHECK(!name.empty(), "model spec: name is empty; expected a registered model name");
  TORCH_CHECK(num_classes >= 0 && num_classes <= kMaxClasses,
              "model spec: num_classes = ", num_classes, ": expected 1..", kMaxClasses,
              ", or 0 for the model's default");
  TORCH_CHECK(in_channels > 0 && in_channels <= kMaxInChannels,
              "model spec: in_channels = ", in_channels, ": expected 1..", kMaxInChannels,
              " (3 for RGB, 1 for grey)");
  precision.validate();
}

bool ModelSpec::operator==(const ModelSpec& o) const {
  return name == o.name && num_classes == o.num_classes && in_channels == o.in_channels &&
         precision == o.precision && init == o.init;
}

std::string ModelSpec::to_json(int indent) const {
  return detail::spec_to_json(*this).dump(indent);
}

ModelSpec ModelSpec::from_json(const std::string& text) {
  return detail::spec_from_json(wrpn::util::parse_json(text, "model spec"), "model spec");
}

namespace detail {

nlohmann::json spec_to_json(const ModelSpec& s) {
  return {{"name", s.name},
          {"num_classes", s.num_classes},
          {"in_channels", s.in_channels},
          {"init", nn::to_string(s.init)},
          {"precision", wrpn::detail::precision_to_json(s.precision)}};
}

ModelSpec spec_from_json(const nlohmann::json& j, const std::string& where) {
  TORCH_CHECK(j.is_object(), where, ": expected a JSON object, got ", wrpn::util::json_excerpt(j));
  ModelSpec s;
  for (const auto& [key, v] : j.items()) {
    const std::string what = where + ": " + key;
    if (key == "name" || key == "init") {
      TORCH_CHECK(v.is_string(), what, ": expected a string, got ", wrpn::util::json_excerpt(v));
      if (key == "name") {
        s.name = v.get<std::string>();
      } else {
        s.init = nn::weight_init_from_string(v.get<std::string>());
      }
    } else if (key == "num_classes" || key == "in_channels") {
      TORCH_CHECK(v.is_number_integer(), what, ": expected an integer, got ",
                  wrpn::util::json_excerpt(v));
      (key == "num_classes" ? s.num_classes : s.in_channels) = v.get<int64_t>();
    } else if (key == "precision") {
      s.precision = wrpn::detail::precision_from_json(v, what);
    } else {
      TORCH_CHECK(false, where, ": unknown key ", wrpn::util::printable(key),
                  "; expected name, num_classes, in_channels, init, precision");
    }
  }
  s.validate();
  return s;
}

}  // namespace detail

// ---- ClassifierImpl ----

ClassifierImpl::ClassifierImpl(ModelSpec spec) : spec_(std::move(spec)) {
  spec_.validate();
  TORCH_CHECK(spec_.num_classes > 0, spec_.name, ": num_classes must be resolved (positive), got ",
              spec_.num_classes);
}

// ---- registry ----

namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, ModelInfo> models;
};

/// `small_input`: a 10-class model for 32x32 inputs by default (CIFAR and small stems).
ModelInfo resnet_entry(const std::string& name, const std::string& description, bool small_input) {
  ModelInfo info;
  info.name = name;
  info.description = description;
  info.default_classes = small_input ? 10 : 1000;
  info.default_input_size = small_input ? 32 : 224;
  info.factory = [name](const ModelSpec& spec) -> Classifier {
    return std::make_shared<ResNetImpl>(spec, resnet_arch(name));
  };
  return info;
}

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    for (auto info : {
             resnet_entry("resnet18", "ResNet-18, ImageNet stem, basic blocks [2,2,2,2]", false),
             resnet_entry("resnet34", "ResNet-34, ImageNet stem, basic blocks [3,4,6,3]", false),
             resnet_entry("resnet50", "ResNet-50, ImageNet stem, bottlenecks [3,4,6,3]", false),
             resnet_entry("resnet18_small",
                          "ResNet-18, small-input 3x3 stem (no max-pool), basic blocks [2,2,2,2]",
                          true),
             resnet_entry("resnet34_small",
                          "ResNet-34, small-input 3x3 stem (no max-pool), basic blocks [3,4,6,3]",
                          true),
             resnet_entry("resnet50_small",
                          "ResNet-50, small-input 3x3 stem (no max-pool), bottlenecks [3,4,6,3]",
                          true),
             resnet_entry("resnet20", "ResNet-20, CIFAR 3x3 stem, basic blocks [3,3,3]", true),
             resnet_entry("resnet32", "ResNet-32, CIFAR 3x3 stem, basic blocks [5,5,5]", true),
             resnet_entry("resnet56", "ResNet-56, CIFAR 3x3 stem, basic blocks [9,9,9]", true),
         }) {
      reg->models.emplace(info.name, std::move(info));
    }
    return reg;
  }();
  return *r;
}

}  // namespace

std::vector<std::string> list_models() {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& kv : r.models) names.push_back(kv.first);
  return names;
}

ModelInfo model_info(const std::string& name) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.models.find(name);
  if (it == r.models.end()) {
    std::string known;
    for (const auto& kv : r.models) known += (known.empty() ? "" : ", ") + kv.first;
    TORCH_CHECK(false, "unknown model \"", name, "\"; known models: ", known);
  }
  return it->second;
}

Classifier create_model(const ModelSpec& spec) {
  spec.validate();
  const ModelInfo info = model_info(spec.name);
  ModelSpec resolved = spec;
  if (resolved.num_classes == 0) resolved.num_classes = info.default_classes;
  return info.factory(resolved);
}

void register_model(ModelInfo info) {
  TORCH_CHECK(!info.name.empty(), "register_model: the name is empty");
  TORCH_CHECK(static_cast<bool>(info.factory), "register_model: \"", info.name,
              "\" has no factory");
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.models[info.name] = std::move(info);
}

}  // namespace models
}  // namespace wrpn
