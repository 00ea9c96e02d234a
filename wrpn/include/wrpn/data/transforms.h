#pragma once
/// Seeded image transforms of wrpn::data. Every random choice comes from a per-sample seed, so a
/// sample's augmentation is the same whichever thread or loader worker produces it.

#include <c10/util/ArrayRef.h>
#include <torch/types.h>

#include <cstdint>

namespace wrpn::data {

/// The seed of sample `index` in `epoch` (SplitMix64 mixing of the three numbers).
uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t index);

/// A small deterministic generator (SplitMix64); the same numbers on every platform.
class SampleRng {
 public:
  explicit SampleRng(uint64_t seed) : state_(seed) {}
  /// Next 64 random bits.
  uint64_t next();
  /// Uniform in [0, 1).
  double uniform();
  /// Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Uniform integer in [0, n); n must be > 0.
  int64_t below(int64_t n);

 private:
  uint64_t state_;
};

/// Random crop with `padding` pixels of `fill` (one value per channel) on each side, back to the
/// input size, plus a horizontal flip with probability 1/2 when `flip`. `images` is float32
/// [N, C, H, W] (or [C, H, W]); image n draws from seeds[n].
torch::Tensor random_crop_flip(const torch::Tensor& images, int64_t padding, bool flip,
                               c10::ArrayRef<double> fill, c10::ArrayRef<uint64_t> seeds);

/// A crop rectangle in pixels.
struct CropBox {
  int64_t top = 0;
  int64_t left = 0;
  int64_t height = 0;
  int64_t width = 0;
};

/// torchvision's RandomResizedCrop box: area fraction uniform in [min_scale, 1], log aspect ratio
/// uniform in [log 3/4, log 4/3], 10 tries, then a centre crop of the clamped aspect ratio.
CropBox random_resized_crop_box(int64_t height, int64_t width, double min_scale, SampleRng& rng);

/// Bilinear (antialiased) resize of a float [C, H, W] image to [C, height, width].
torch::Tensor resize(const torch::Tensor& image, int64_t height, int64_t width);

/// Random resized crop of a float [C, H, W] image to [C, size, size], flipped with probability 1/2
/// when `flip`: ImageFolder's training transform (which resizes the uint8 pixels instead, within
/// one grey level of this).
torch::Tensor random_resized_crop(const torch::Tensor& image, int64_t size, double min_scale,
                                  bool flip, uint64_t seed);

/// Resize so the shorter side is `resize_size` (aspect kept), then crop the centre
/// [C, crop_size, crop_size]: ImageFolder's evaluation transform (on float pixels).
torch::Tensor resize_center_crop(const torch::Tensor& image, int64_t resize_size,
                                 int64_t crop_size);

/// (x - mean[c]) / std[c] per channel of a float [..., C, H, W] tensor.
torch::Tensor normalize(const torch::Tensor& images, c10::ArrayRef<double> mean,
                        c10::ArrayRef<double> std);

}  // namespace wrpn::data
