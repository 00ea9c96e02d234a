#pragma once
/// Packed export: a trained model's quantized weights as k-bit integer codes, for deployment and
/// to show the storage WRPN saves.
///
/// File layout (integers little-endian):
///   "WRPNPACK" | u32 format version (1) | u32 0
///   | u64 n | n bytes header JSON | u64 n | n bytes payload
///   | "WRPNEND\0" | u64 FNV-1a 64-bit hash of every byte before "WRPNEND"
/// The header holds "model" (the ModelSpec) and "tensors": one entry per state-dict tensor with
/// "name", "shape", "encoding", "bits", "scale", "offset" and "bytes" (byte range in the payload):
///   "int"     weights quantized at k = 2..16 bits: level n = round(clamp(w, -1, 1) * s),
///             s = 2^(k-1) - 1, stored as the unsigned code n + s in k bits; value = n * scale
///             with scale = 1/s.
///   "binary"  1-bit weights: bit 1 = +scale, 0 = -scale, scale = mean(|w|).
///   "float32" everything else (fp32 layers, biases, BatchNorm), raw IEEE 754.
///   "int64"   integer buffers (BatchNorm's num_batches_tracked), raw.
/// Codes are a little-endian bit stream: element i (row-major) occupies bits [i*k, (i+1)*k),
/// bit j of the stream being bit (j mod 8) of byte j/8.

#include <cstdint>
#include <string>

#include "wrpn/models/classifier.h"

namespace wrpn {
namespace models {

/// Sizes of an export.
struct PackedStats {
  /// Bytes of the file written.
  int64_t file_bytes = 0;
  /// Bytes of the same tensors stored raw (fp32 weights): what an fp32 export would hold.
  int64_t fp32_bytes = 0;
  /// Tensors stored as "int" or "binary" codes.
  int64_t quantized_tensors = 0;
  /// Tensors stored raw.
  int64_t raw_tensors = 0;
};

/// Writes `model` to `path` atomically in the packed format and returns the sizes.
PackedStats export_packed(const std::string& path, const ClassifierImpl& model);

/// Rebuilds the model from a packed file: every quantized weight is set to its quantized value,
/// so forward() equals the exported model's fake-quantized forward. Throws c10::Error for a
/// truncated, corrupt or foreign file.
Classifier import_packed(const std::string& path);

}  // namespace models
}  // namespace wrpn
