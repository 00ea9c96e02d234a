// wrpn_fuzz_seeds OUT_DIR: writes the fuzz targets' seed corpora, OUT_DIR/<target>/seed-*, from
// the library itself (a real checkpoint and packed export of a small ResNet-20, configs as the
// library writes them, small valid dataset files and images), so they follow the formats.

#include <wrpn/data/image.h>
#include <wrpn/models/checkpoint.h>
#include <wrpn/models/packed.h>
#include <wrpn/models/registry.h>
#include <wrpn/train/options.h>
#include <wrpn/util/fs.h>
#include <zlib.h>

#include <cstdio>
#include <string>
#include <vector>

#include "container.h"
#include "container_input.h"

namespace {

std::string out_dir;

void seed(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = wrpn::fs::join(out_dir, target);
  wrpn::fs::make_directories(dir);
  wrpn::fs::atomic_write(wrpn::fs::join(dir, name), bytes);
}

std::string gzip(const std::string& bytes) {
  const std::string tmp = wrpn::fs::join(out_dir, ".gzip.tmp");
  gzFile f = gzopen(tmp.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
  std::string out = wrpn::fs::read_file(tmp);
  wrpn::fs::remove_file(tmp);
  return out;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string idx(const std::vector<uint32_t>& dims, const std::string& data) {
  std::string out("\x00\x00\x08", 3);
  out += static_cast<char>(dims.size());
  for (const uint32_t d : dims) out += be32(d);
  return out + data;
}

// Both input forms of a container file (see container_input.h).
void container_seeds(const std::string& target, const std::string& name, const std::string& file,
                     std::string_view magic, size_t sections) {
  seed(target, name + "-file", std::string(1, '\0') + file);
  const auto parts = wrpn::models::detail::parse_container(file, magic, 1, sections, name);
  seed(target, name + "-sections", wrpn_fuzz::sections_input(parts));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  out_dir = argv[1];
  try {
    wrpn::fs::make_directories(out_dir);
    torch::manual_seed(0);
    // Checkpoints and packed exports of a quarter-width ResNet-20 (about 20 K parameters).
    for (const auto& [name, bits] : std::vector<std::pair<std::string, int64_t>>{
             {"fp32", 32}, {"w4a4", 4}, {"w2a2", 2}, {"w1a4", 1}}) {
      wrpn::models::ModelSpec spec;
      spec.name = "resnet20";
      spec.num_classes = 10;
      spec.in_channels = name == "fp32" ? 3 : 1;
      spec.precision = wrpn::PrecisionConfig::make(bits, bits == 1 ? 4 : bits, 0.25);
      const auto model = wrpn::models::create_model(spec);
      const std::string ckpt = wrpn::fs::join(out_dir, ".seed.ckpt");
      wrpn::models::CheckpointInfo info;
      info.epoch = 3;
      info.metrics = {{"test_top1", 0.5}, {"test_loss", 1.25}};
      info.extra_json = R"({"options": {"lr": 0.1}, "best_top1": 0.5})";
      info.blob = "optimizer state";
      wrpn::models::save_checkpoint(ckpt, *model, info);
      container_seeds("checkpoint", name, wrpn::fs::read_file(ckpt), "WRPNCKPT", 3);
      wrpn::fs::remove_file(ckpt);
      if (bits < 32) {
        const std::string pack = wrpn::fs::join(out_dir, ".seed.wrpnpack");
        wrpn::models::export_packed(pack, *model);
        container_seeds("packed", name, wrpn::fs::read_file(pack), "WRPNPACK", 2);
        wrpn::fs::remove_file(pack);
      }
    }
    // Configs as the library writes them, and hand-written ones.
    auto p = wrpn::PrecisionConfig::make(4, 2, 2.0);
    p.overrides["layer1.0.conv1"] = 8;
    seed("config", "precision", p.to_json(2));
    seed("config", "precision-fixed", R"({"scheme": "fixed", "weight_bits": 8, "act_bits": 8,
      "overrides": {"fc": "Q2.14", "layer1.0.act1": "fixed16"}})");
    seed("config", "options", wrpn::train::TrainOptions().to_json().dump(2));
    seed("config", "options-small", R"({"model": "resnet20", "epochs": 2, "lr": 0.05,
      "milestones": [1], "seed": 7, "dataset": "digits"})");
    wrpn::models::ModelSpec spec;
    spec.name = "resnet20";
    spec.precision = p;
    seed("config", "spec", spec.to_json(2));
    // Digits: 5 of each class (one per class in the test split), plain and gzip-compressed.
    std::string csv;
    for (int i = 0; i < 50; ++i) {
      for (int k = 0; k < 64; ++k) csv += std::to_string((i * 7 + k * 3) % 17) + ",";
      csv += std::to_string(i % 10) + "\n";
    }
    seed("digits", "digits.csv", csv);
    seed("digits", "digits.csv.gz", gzip(csv));
    // CIFAR-10: two records, without and with batches.meta.txt (see fuzz_cifar.cpp).
    std::string records;
    for (int r = 0; r < 2; ++r) {
      records += static_cast<char>(r * 7);
      for (int k = 0; k < 3072; ++k) records += static_cast<char>((r + k) % 256);
    }
    seed("cifar", "records", std::string(1, '\0') + records);
    std::string names;
    for (const char* n : {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"})
      names += n + std::string("\n");
    seed("cifar", "records-meta",
         std::string(1, static_cast<char>(names.size())) + names + records);
    // IDX: images and labels, plain and compressed.
    const std::string images = idx({2, 3, 3}, std::string("\x00\x01\x02\x03\x04\x05\x06\x07\x08"
                                                          "\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11",
                                                          18));
    seed("idx", "images", images);
    seed("idx", "images.gz", gzip(images));
    seed("idx", "labels", idx({4}, std::string("\x01\x00\x09\x03", 4)));
    // Images: RGB and grey PNG, a JPEG.
    const torch::Tensor rgb =
        torch::arange(5 * 4 * 3, torch::kLong).remainder(256).to(torch::kUInt8).view({5, 4, 3});
    const std::string img = wrpn::fs::join(out_dir, ".seed.img");
    wrpn::data::write_png(img, rgb);
    seed("image", "rgb.png", wrpn::fs::read_file(img));
    wrpn::data::write_png(img, rgb.select(2, 0).contiguous());
    seed("image", "grey.png", wrpn::fs::read_file(img));
    wrpn::data::write_jpeg(img, rgb, 80);
    seed("image", "rgb.jpg", wrpn::fs::read_file(img));
    wrpn::fs::remove_file(img);
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "wrpn_fuzz_seeds: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "wrpn_fuzz_seeds: %s\n", e.what());
    return 1;
  }
  std::printf("wrote the seed corpora to %s\n", out_dir.c_str());
  return 0;
}
