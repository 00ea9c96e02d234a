// Packed export (format in wrpn/models/packed.h).

#include "wrpn/models/packed.h"

#include <torch/torch.h>

#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "container.h"
#include "model_spec_json.h"
#include "precision_json.h"
#include "wrpn/models/registry.h"
#include "wrpn/nn/layers.h"
#include "wrpn/ops.h"
#include "wrpn/util/fs.h"
#include "wrpn/util/text.h"
#include "wrpn/version.h"

namespace wrpn {
namespace models {
namespace {

constexpr std::string_view kMagic = "WRPNPACK";
constexpr uint32_t kFormatVersion = 1;

/// Weight bits of every quantized conv/FC weight, by state-dict name.
std::map<std::string, int64_t> quantized_weights(const torch::nn::Module& model) {
  std::map<std::string, int64_t> bits;
  nn::for_each_quantized_layer(model, [&](const std::string& name, const nn::QuantizedLayer& l) {
    if (l.has_weight() && l.quantizer().bits != kFullPrecisionBits) {
      bits[name + ".weight"] = l.quantizer().bits;
    }
  });
  return bits;
}

std::vector<std::pair<std::string, torch::Tensor>> state_of(const torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> state;
  for (const auto& p : model.named_parameters()) state.emplace_back(p.key(), p.value());
  for (const auto& b : model.named_buffers()) state.emplace_back(b.key(), b.value());
  return state;
}

/// Appends `codes` (each < 2^bits) as a little-endian bit stream.
void pack_codes(const int64_t* codes, int64_t n, int64_t bits, std::string& out) {
  uint64_t acc = 0;
  int filled = 0;
  for (int64_t i = 0; i < n; ++i) {
    acc |= static_cast<uint64_t>(codes[i]) << filled;
    filled += static_cast<int>(bits);
    while (filled >= 8) {
      out.push_back(static_cast<char>(acc & 0xff));
      acc >>= 8;
      filled -= 8;
    }
  }
  if (filled > 0) out.push_back(static_cast<char>(acc & 0xff));
}

std::vector<int64_t> unpack_codes(std::string_view bytes, int64_t n, int64_t bits) {
  std::vector<int64_t> codes(static_cast<size_t>(n));
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  uint64_t acc = 0;
  int filled = 0;
  size_t pos = 0;
  for (int64_t i = 0; i < n; ++i) {
    while (filled < bits) {
      acc |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[pos++])) << filled;
      filled += 8;
    }
    codes[static_cast<size_t>(i)] = static_cast<int64_t>(acc & mask);
    acc >>= bits;
    filled -= static_cast<int>(bits);
  }
  return codes;
}

int64_t packed_bytes(int64_t n, int64_t bits) { return (n * bits + 7) / 8; }

}  // namespace

PackedStats export_packed(const std::string& path, const ClassifierImpl& model) {
  const auto qbits = quantized_weights(model);
  PackedStats stats;
  nlohmann::json tensors = nlohmann::json::array();
  std::string payload;
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : state_of(model)) {
    const auto cpu = t.detach().to(torch::kCPU).contiguous();
    nlohmann::json entry = {{"name", name}, {"shape", cpu.sizes().vec()}};
    const size_t offset = payload.size();
    auto it = qbits.find(name);
    if (it != qbits.end()) {
      const int64_t bits = it->second;
      const auto w = cpu.to(torch::kFloat);
      torch::Tensor codes;
      double scale;
      if (bits == 1) {
        scale = w.abs().mean().item<double>();
        codes = w.ge(0).to(torch::kLong);
        entry["encoding"] = "binary";
      } else {
        const int64_t s = (int64_t{1} << (bits - 1)) - 1;
        scale = 1.0 / static_cast<double>(s);
        codes =
            torch::round(quantize_weight(w, bits) * static_cast<double>(s)).to(torch::kLong) + s;
        entry["encoding"] = "int";
      }
      codes = codes.contiguous();
      pack_codes(codes.data_ptr<int64_t>(), codes.numel(), bits, payload);
      entry["bits"] = bits;
      entry["scale"] = scale;
      ++stats.quantized_tensors;
      stats.fp32_bytes += cpu.numel() * 4;
    } else {
      TORCH_CHECK(cpu.scalar_type() == torch::kFloat || cpu.scalar_type() == torch::kLong,
                  "export_packed: tensor \"", name, "\" has dtype ", cpu.scalar_type(),
                  "; the packed format stores float32 and int64 tensors");
      const bool is_float = cpu.scalar_type() == torch::kFloat;
      entry["encoding"] = is_float ? "float32" : "int64";
      entry["bits"] = is_float ? 32 : 64;
      payload.append(static_cast<const char*>(cpu.data_ptr()), cpu.nbytes());
      ++stats.raw_tensors;
      stats.fp32_bytes += static_cast<int64_t>(cpu.nbytes());
    }
    entry["offset"] = offset;
    entry["bytes"] = payload.size() - offset;
    tensors.push_back(std::move(entry));
  }
  const nlohmann::json header = {{"format", "wrpn-packed"},
                                 {"format_version", kFormatVersion},
                                 {"library_version", wrpn::kVersion},
                                 {"model", detail::spec_to_json(model.spec())},
                                 {"tensors", tensors}};
  const std::string header_text = header.dump();
  const std::string file = detail::build_container(kMagic, kFormatVersion, {header_text, payload});
  fs::atomic_write(path, file, /*make_parents=*/false);
  stats.file_bytes = static_cast<int64_t>(file.size());
  return stats;
}

Classifier import_packed(const std::string& path) {
  const std::string what = "packed export '" + path + "'";
  const std::string data = detail::read_container_file(path, kMagic, kFormatVersion, what);
  const auto sections = detail::parse_container(data, kMagic, kFormatVersion, 2, what);
  const auto header = wrpn::util::parse_json(sections[0], what + " header");
  const std::string_view payload = sections[1];
  TORCH_CHECK(header.is_object() && header.value("format", "") == "wrpn-packed" &&
                  header.contains("model") && header.contains("tensors") &&
                  header.at("tensors").is_array(),
              what, ": the header is not a wrpn packed-export header");
  Classifier model = create_model(detail::spec_from_json(header.at("model"), what + " model"));
  const auto qbits = quantized_weights(*model);

  std::map<std::string, const nlohmann::json*> entries;
  for (const auto& e : header.at("tensors")) {
    TORCH_CHECK(e.is_object() && e.contains("name") && e.at("name").is_string(), what,
                ": a tensor entry has no name");
    entries[e.at("name").get<std::string>()] = &e;
  }
  std::map<std::string, torch::Tensor> decoded;
  std::set<std::string> expected;
  for (const auto& [name, t] : state_of(*model)) {
    expected.insert(name);
    auto it = entries.find(name);
    TORCH_CHECK(it != entries.end(), what, " has no tensor \"", name, "\" that the model has");
    const nlohmann::json& e = *it->second;
    std::vector<int64_t> shape;
    std::string encoding;
    int64_t bits = 0;
    uint64_t offset = 0, bytes = 0;
    try {
      shape = e.at("shape").get<std::vector<int64_t>>();
      encoding = e.at("encoding").get<std::string>();
      bits = e.at("bits").get<int64_t>();
      offset = e.at("offset").get<uint64_t>();
      bytes = e.at("bytes").get<uint64_t>();
    } catch (const nlohmann::json::exception& ex) {
      TORCH_CHECK(false, what, ": the entry of \"", name, "\" is malformed: ", ex.what());
    }
    TORCH_CHECK(c10::IntArrayRef(shape) == t.sizes(), what, ": \"", name, "\" has shape ",
                c10::IntArrayRef(shape), " but the model's has shape ", t.sizes());
    TORCH_CHECK(offset <= payload.size() && bytes <= payload.size() - offset, what, ": \"", name,
                "\" lies outside the payload");
    const std::string_view raw = payload.substr(offset, bytes);
    const int64_t n = t.numel();
    const bool quantized = qbits.count(name) > 0;
    torch::Tensor value;
    if (encoding == "int" || encoding == "binary") {
      TORCH_CHECK(quantized && qbits.at(name) == bits, what, ": \"", name, "\" is stored at ", bits,
                  " bits but the model quantizes it at ",
                  quantized ? std::to_string(qbits.at(name)) : std::string("32"), " bits");
      TORCH_CHECK(static_cast<int64_t>(bytes) == packed_bytes(n, bits), what, ": \"", name,
                  "\" holds ", bytes, " bytes, expected ", packed_bytes(n, bits));
      double scale = 0;
      try {
        scale = e.at("scale").get<double>();
      } catch (const nlohmann::json::exception& ex) {
        TORCH_CHECK(false, what, ": the entry of \"", name, "\" has no numeric scale: ", ex.what());
      }
      auto codes = torch::tensor(unpack_codes(raw, n, bits), torch::kLong);
      if (encoding == "binary") {
        value = torch::where(codes.eq(1), scale, -scale);
      } else {
        const int64_t s = (int64_t{1} << (bits - 1)) - 1;
        TORCH_CHECK(codes.max().item<int64_t>() <= 2 * s, what, ": \"", name,
                    "\" holds a code above ", 2 * s);
        // The level divided by s, as the quantizer computes it, not times the stored scale.
        value = (codes - s).to(torch::kFloat) / static_cast<float>(s);
      }
      value = value.to(torch::kFloat).reshape(shape);
    } else if (encoding == "float32" || encoding == "int64") {
      const auto dtype = encoding == "float32" ? torch::kFloat : torch::kLong;
      TORCH_CHECK(!quantized, what, ": \"", name, "\" is stored raw but the model quantizes it at ",
                  qbits.count(name) ? qbits.at(name) : 32, " bits");
      TORCH_CHECK(static_cast<int64_t>(bytes) == n * static_cast<int64_t>(c10::elementSize(dtype)),
                  what, ": \"", name, "\" holds ", bytes, " bytes, expected ",
                  n * static_cast<int64_t>(c10::elementSize(dtype)));
      value = torch::empty(shape, dtype);
      std::memcpy(value.data_ptr(), raw.data(), raw.size());
    } else {
      TORCH_CHECK(false, what, ": \"", name, "\" has unknown encoding ",
                  wrpn::util::printable(encoding), "; expected int, binary, float32 or int64");
    }
    decoded[name] = value;
  }
  for (const auto& kv : entries) {
    TORCH_CHECK(expected.count(kv.first), what, " has a tensor ", wrpn::util::printable(kv.first),
                " that the model lacks");
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : state_of(*model)) t.copy_(decoded.at(name));
  return model;
}

}  // namespace models
}  // namespace wrpn
