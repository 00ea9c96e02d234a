#pragma once
/// Checkpoints that recreate their own model: a JSON header (model spec, epoch, metrics, caller
/// JSON, library version), the state dict, and an optional opaque blob (e.g. optimizer state).
///
/// File layout (integers little-endian):
///   "WRPNCKPT" | u32 format version (1) | u32 0
///   | u64 n | n bytes header JSON | u64 n | n bytes state | u64 n | n bytes blob
///   | "WRPNEND\0" | u64 FNV-1a 64-bit hash of every byte before "WRPNEND"
/// The state is a tuple of (state-dict name, tensor) pairs written by torch::pickle_save; Python
/// reads it with dict(torch.load(io.BytesIO(section), weights_only=True)). Files are written to a
/// temporary file in the same directory, fsynced and renamed over the target, so a reader sees the
/// old file or the new one, never part of one.

#include <cstdint>
#include <map>
#include <string>

#include "wrpn/models/classifier.h"

namespace wrpn {
namespace models {

/// What a checkpoint records beside the weights; all optional.
struct CheckpointInfo {
  /// Epochs completed.
  int64_t epoch = 0;
  /// Named scalar results, e.g. {"val_top1", 0.71}.
  std::map<std::string, double> metrics;
  /// Any JSON value the caller wants back (learning-rate schedule, data config, ...).
  std::string extra_json = "{}";
  /// Opaque bytes stored as is, e.g. an optimizer serialized with torch::save to a stream.
  std::string blob;
};

/// A checkpoint's header and extras, without the weights.
struct CheckpointMeta {
  /// The spec that rebuilds the model (num_classes resolved).
  ModelSpec spec;
  /// wrpn version that wrote the file.
  std::string library_version;
  CheckpointInfo info;
};

/// A checkpoint of a model outside the classifier zoo (e.g. the language model): the same file,
/// with the header's "model_kind" naming the family and "model" holding the family's own JSON.
struct ModuleCheckpointMeta {
  std::string kind;
  /// The header's "model" as JSON text (what the family's from_json() reads).
  std::string model_json;
  std::string library_version;
  CheckpointInfo info;
};

/// Writes `model`'s parameters and buffers with `kind` (not "classifier") and `model_json`.
void save_module_checkpoint(const std::string& path, const torch::nn::Module& model,
                            const std::string& kind, const std::string& model_json,
                            const CheckpointInfo& info = {});
/// Reads and verifies a module checkpoint's header; throws unless its kind is `kind` (a
/// classifier checkpoint given here, or a module checkpoint given to read_checkpoint(), is
/// refused naming what it holds).
ModuleCheckpointMeta read_module_checkpoint(const std::string& path, const std::string& kind);
/// Loads a module checkpoint's weights into `model` (every tensor present, same shapes; the
/// model is left unchanged on error).
ModuleCheckpointMeta load_module_checkpoint_into(const std::string& path, const std::string& kind,
                                                 torch::nn::Module& model);

/// Writes `model`'s parameters and buffers (moved to CPU) with its spec and `info` to `path`,
/// atomically. Throws c10::Error naming the path and the OS error on failure.
void save_checkpoint(const std::string& path, const ClassifierImpl& model,
                     const CheckpointInfo& info = {});

/// Reads and verifies a checkpoint's header and extras (the whole file is checked, the weights
/// are not deserialized). Throws c10::Error for a missing, truncated, corrupt or foreign file.
CheckpointMeta read_checkpoint(const std::string& path);

/// Recreates the model a checkpoint was saved from (create_model(spec)) and loads its weights.
/// `meta`, when given, receives the header and extras.
Classifier load_checkpoint(const std::string& path, CheckpointMeta* meta = nullptr);

/// Loads a checkpoint's weights into an existing model of the same architecture: every
/// parameter and buffer must be present with the same shape, but bits may differ, so an fp32
/// checkpoint starts a quantized model for fine-tuning. Tensors are copied to the model's
/// devices and dtypes. Throws c10::Error naming the first missing, unexpected or mismatched
/// tensor (the model is then left unchanged).
CheckpointMeta load_checkpoint_into(const std::string& path, ClassifierImpl& model);

}  // namespace models
}  // namespace wrpn
