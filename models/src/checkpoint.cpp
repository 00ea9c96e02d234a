// Checkpoints (format in wrpn/models/checkpoint.h).

#include "wrpn/models/checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <torch/csrc/jit/serialization/import_read.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "container.h"
#include "model_spec_json.h"
#include "precision_json.h"
#include "wrpn/models/registry.h"
#include "wrpn/util/fs.h"
#include "wrpn/util/text.h"
#include "wrpn/version.h"

namespace wrpn {
namespace models {
namespace {

constexpr std::string_view kMagic = "WRPNCKPT";
constexpr uint32_t kFormatVersion = 1;
/// The largest epoch a checkpoint header may hold (a range check against crafted headers).
constexpr int64_t kMaxEpoch = 1000000;

/// Parameters then buffers, by state-dict name.
std::vector<std::pair<std::string, torch::Tensor>> state_of(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> state;
  for (const auto& p : model.named_parameters()) state.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers()) state.emplace_back(b.key(), b.value());
  return state;
}

/// What every checkpoint's header holds beside its model: checked and range-checked.
struct Common {
  nlohmann::json header;
  std::string library_version;
  CheckpointInfo info;
  std::string_view state;
};

Common parse_common(const std::string& data, const std::string& what) {
  auto sections = detail::parse_container(data, kMagic, kFormatVersion, 3, what);
  Common c;
  c.header = wrpn::util::parse_json(sections[0], what + " header");
  const auto& header = c.header;
  TORCH_CHECK(header.is_object() && header.value("format", "") == "wrpn-checkpoint", what,
              ": the header is not a wrpn checkpoint header");
  TORCH_CHECK(header.contains("model"), what, ": the header has no \"model\"");
  c.library_version = header.value("library_version", "");
  const auto epoch = header.value("epoch", nlohmann::json(0));
  TORCH_CHECK(epoch.is_number_integer(), what, ": \"epoch\" is not an integer");
  c.info.epoch = epoch.get<int64_t>();
  TORCH_CHECK(c.info.epoch >= 0 && c.info.epoch <= kMaxEpoch, what, ": \"epoch\" is ", c.info.epoch,
              ", outside [0, ", kMaxEpoch, "]");
  if (header.contains("metrics")) {
    const auto& metrics = header.at("metrics");
    TORCH_CHECK(metrics.is_object(), what, ": \"metrics\" is not an object");
    for (const auto& [k, v] : metrics.items()) {
      TORCH_CHECK(v.is_number(), what, ": metric ", wrpn::util::printable(k), " is not a number");
      TORCH_CHECK(std::isfinite(v.get<double>()) || k.find("loss") != std::string::npos, what,
                  ": metric ", wrpn::util::printable(k), " is not finite");
      c.info.metrics[k] = v.get<double>();
    }
  }
  c.info.extra_json = header.value("extra", nlohmann::json::object()).dump();
  c.info.blob = std::string(sections[2]);
  c.state = sections[1];
  return c;
}

/// The header's "model_kind": "classifier" for the zoo's models (whose headers predate it).
std::string model_kind(const nlohmann::json& header, const std::string& what) {
  if (!header.contains("model_kind")) return "classifier";
  TORCH_CHECK(header.at("model_kind").is_string(), what, ": \"model_kind\" is not a string");
  return header.at("model_kind").get<std::string>();
}

struct Parsed {
  CheckpointMeta meta;
  std::string_view state;
};

Parsed parse(const std::string& data, const std::string& what) {
  Common c = parse_common(data, what);
  const std::string kind = model_kind(c.header, what);
  TORCH_CHECK(kind == "classifier", what, " holds a ", wrpn::util::printable(kind),
              " model, not a classifier of the model zoo");
  Parsed p;
  p.meta.spec = detail::spec_from_json(c.header.at("model"), what + " model");
  p.meta.library_version = std::move(c.library_version);
  p.meta.info = std::move(c.info);
  p.state = c.state;
  return p;
}

// LibTorch's reader of its own zip archives, over an adapter that never reads past the bytes.
// torch::pickle_load reads through one (VectorReader) that copies whatever range the archive's
// directory names, so a crafted state section with a correct checksum made it read past its
// buffer (found by fuzzing, tests/fuzz/regressions/checkpoint/); this one returns the bytes
// that are there, and the archive reader then reports the archive as corrupt.
class BoundedReader final : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BoundedReader(std::string_view bytes) : bytes_(bytes) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= bytes_.size()) return 0;
    const size_t count = std::min<uint64_t>(n, bytes_.size() - pos);
    std::memcpy(buf, bytes_.data() + pos, count);
    return count;
  }

 private:
  std::string_view bytes_;
};

c10::IValue unpickle_state(std::string_view bytes) {
  caffe2::serialize::PyTorchStreamReader reader(std::make_shared<BoundedReader>(bytes));
  return torch::jit::readArchiveAndTensors("data", "", "", std::nullopt, std::nullopt, std::nullopt,
                                           reader);
}

c10::Dict<std::string, torch::Tensor> load_state(std::string_view bytes, const std::string& what) {
  c10::IValue value;
  try {
    value = unpickle_state(bytes);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, what, ": the state section cannot be read (", e.what_without_backtrace(),
                ")");
  } catch (const std::exception& e) {
    TORCH_CHECK(false, what, ": the state section cannot be read (", e.what(), ")");
  }
  const std::string bad = ": the state section is not a tuple of (name, tensor) pairs";
  TORCH_CHECK(value.isTuple(), what, bad);
  c10::Dict<std::string, torch::Tensor> state;
  for (const auto& item : value.toTupleRef().elements()) {
    TORCH_CHECK(item.isTuple() && item.toTupleRef().elements().size() == 2, what, bad);
    const auto& pair = item.toTupleRef().elements();
    TORCH_CHECK(pair[0].isString() && pair[1].isTensor(), what, bad);
    state.insert(pair[0].toStringRef(), pair[1].toTensor());
  }
  return state;
}

void copy_state(const c10::Dict<std::string, torch::Tensor>& saved, torch::nn::Module& model,
                const std::string& what) {
  auto state = state_of(model);
  // Check everything first so a mismatch leaves the model untouched.
  std::set<std::string> expected;
  for (const auto& [name, tensor] : state) {
    expected.insert(name);
    auto it = saved.find(name);
    TORCH_CHECK(it != saved.end(), what, " has no tensor \"", name, "\" that the model has");
    TORCH_CHECK(it->value().sizes() == tensor.sizes(), what, ": \"", name, "\" has shape ",
                it->value().sizes(), " but the model's has shape ", tensor.sizes(),
                " (a different width, class count or input channels?)");
  }
  for (const auto& item : saved) {
    TORCH_CHECK(expected.count(item.key()), what, " has a tensor ",
                wrpn::util::printable(item.key()), " that the model lacks");
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : state) tensor.copy_(saved.at(name));
}

}  // namespace

namespace {

void write_checkpoint(const std::string& path, const torch::nn::Module& model,
                      nlohmann::json model_header, const char* kind, const CheckpointInfo& info) {
  const std::string what = "checkpoint '" + path + "'";
  nlohmann::json metrics = nlohmann::json::object();
  for (const auto& [k, v] : info.metrics) metrics[k] = v;
  nlohmann::json header = {
      {"format", "wrpn-checkpoint"},
      {"format_version", kFormatVersion},
      {"library_version", wrpn::kVersion},
      {"model", std::move(model_header)},
      {"epoch", info.epoch},
      {"metrics", metrics},
      {"extra", wrpn::util::parse_json(info.extra_json, what + ": extra_json")}};
  if (kind != nullptr) header["model_kind"] = kind;
  // A tuple of (name, tensor) pairs: unlike a typed dict it pickles without TorchScript type
  // tags, so Python's torch.load(..., weights_only=True) reads it.
  std::vector<c10::IValue> pairs;
  for (const auto& [name, tensor] : state_of(model)) {
    pairs.emplace_back(
        c10::ivalue::Tuple::create({c10::IValue(name), tensor.detach().to(torch::kCPU)}));
  }
  const std::vector<char> state_bytes =
      torch::pickle_save(c10::IValue(c10::ivalue::Tuple::create(std::move(pairs))));
  const std::string header_text = header.dump();
  const std::string file = detail::build_container(
      kMagic, kFormatVersion,
      {header_text, std::string_view(state_bytes.data(), state_bytes.size()), info.blob});
  fs::atomic_write(path, file, /*make_parents=*/false);
}

ModuleCheckpointMeta parse_module(const std::string& data, const std::string& kind,
                                  const std::string& what, std::string_view* state) {
  Common c = parse_common(data, what);
  const std::string found = model_kind(c.header, what);
  TORCH_CHECK(found == kind, what, " holds a ", wrpn::util::printable(found), " model, not a ",
              kind, " model");
  ModuleCheckpointMeta m;
  m.kind = found;
  m.model_json = c.header.at("model").dump();
  m.library_version = std::move(c.library_version);
  m.info = std::move(c.info);
  if (state != nullptr) *state = c.state;
  return m;
}

}  // namespace

void save_checkpoint(const std::string& path, const ClassifierImpl& model,
                     const CheckpointInfo& info) {
  write_checkpoint(path, model, detail::spec_to_json(model.spec()), nullptr, info);
}

void save_module_checkpoint(const std::string& path, const torch::nn::Module& model,
                            const std::string& kind, const std::string& model_json,
                            const CheckpointInfo& info) {
  TORCH_CHECK(!kind.empty() && kind != "classifier",
              "save_module_checkpoint: kind must name a "
              "model family other than \"classifier\"");
  write_checkpoint(path, model,
                   wrpn::util::parse_json(model_json, "checkpoint '" + path + "': model_json"),
                   kind.c_str(), info);
}

ModuleCheckpointMeta read_module_checkpoint(const std::string& path, const std::string& kind) {
  const std::string what = "checkpoint '" + path + "'";
  return parse_module(detail::read_container_file(path, kMagic, kFormatVersion, what), kind, what,
                      nullptr);
}

ModuleCheckpointMeta load_module_checkpoint_into(const std::string& path, const std::string& kind,
                                                 torch::nn::Module& model) {
  const std::string what = "checkpoint '" + path + "'";
  const std::string data = detail::read_container_file(path, kMagic, kFormatVersion, what);
  std::string_view state;
  ModuleCheckpointMeta m = parse_module(data, kind, what, &state);
  copy_state(load_state(state, what), model, what);
  return m;
}

CheckpointMeta read_checkpoint(const std::string& path) {
  const std::string what = "checkpoint '" + path + "'";
  return parse(detail::read_container_file(path, kMagic, kFormatVersion, what), what).meta;
}

Classifier load_checkpoint(const std::string& path, CheckpointMeta* meta) {
  const std::string what = "checkpoint '" + path + "'";
  const std::string data = detail::read_container_file(path, kMagic, kFormatVersion, what);
  Parsed p = parse(data, what);
  Classifier model = create_model(p.meta.spec);
  copy_state(load_state(p.state, what), *model, what);
  if (meta != nullptr) *meta = std::move(p.meta);
  return model;
}

CheckpointMeta load_checkpoint_into(const std::string& path, ClassifierImpl& model) {
  const std::string what = "checkpoint '" + path + "'";
  const std::string data = detail::read_container_file(path, kMagic, kFormatVersion, what);
  Parsed p = parse(data, what);
  TORCH_CHECK(p.meta.spec.name == model.spec().name, what, " holds a ", p.meta.spec.name,
              " but the model is a ", model.spec().name);
  copy_state(load_state(p.state, what), model, what);
  return std::move(p.meta);
}

}  // namespace models
}  // namespace wrpn
