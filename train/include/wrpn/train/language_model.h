#pragma once
/// Training and evaluating the word-level language model (wrpn::models::WordLM) on a text
/// corpus (wrpn::data::load_austen by default): truncated backprop through time, gradient-norm
/// clipping, a learning-rate schedule, perplexity on the validation and test splits, and the
/// trainer's run directory (the lock, no overwrite without --overwrite, metrics.jsonl,
/// options.json, summary.json, atomic last.ckpt / best.ckpt, exact --resume).
///
///   wrpn::train::LmOptions o;
///   o.model.weight_bits = o.model.hidden_bits = 4;
///   o.model.width = 2;
///   o.run_dir = "runs/lm_w4h4x2";
///   const nlohmann::json summary = wrpn::train::fit_language_model(o);

#include <wrpn/models/language_model.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace wrpn::train {

/// Everything a language-model run depends on. model.vocab_size is set from the corpus.
struct LmOptions {
  models::WordLMOptions model;
  /// Directory with the six novels' .txt files (empty: data/austen, or $WRPN_DATA_DIR/austen).
  std::string data_root;
  /// Words kept in the vocabulary (plus "<unk>").
  int64_t vocab_size = 10000;
  int64_t epochs = 6;
  /// Parallel streams of the training text; evaluation uses eval_batch_size streams.
  int64_t batch_size = 20;
  int64_t eval_batch_size = 10;
  /// Steps of truncated backprop through time.
  int64_t bptt = 35;
  /// SGD without momentum (the usual recipe for LSTM language models).
  double lr = 20.0;
  /// "plateau" (divide by lr_decay after an epoch whose validation loss did not improve),
  /// "cosine" (per step, to 0 at the end) or "constant".
  std::string schedule = "plateau";
  double lr_decay = 4.0;
  /// Largest gradient L2 norm (over every parameter); 0 turns clipping off.
  double clip = 0.25;
  double weight_decay = 0.0;
  uint64_t seed = 1;
  /// Use only the first N tokens of the training / of each evaluation split (0: all).
  int64_t limit_train_tokens = 0;
  int64_t limit_eval_tokens = 0;
  std::string run_dir = "runs/lm";
  bool resume = false;
  bool overwrite = false;
  /// CPU threads (0: LibTorch's default).
  int64_t threads = 0;
  std::string device = "cpu";
  /// Stop after this many epochs as if interrupted (0: never); --resume continues.
  int64_t stop_after = 0;
  /// Seconds between progress lines (stderr).
  double progress_interval = 10.0;
  bool quiet = false;

  /// Throws std::invalid_argument-like c10::ValueError naming the first bad option and its range.
  void validate() const;
  nlohmann::json to_json() const;
  /// Reads what to_json() writes; unknown keys and wrong types are refused.
  static LmOptions from_json(const nlohmann::json& j);
};

/// Trains as `o` says (see the header comment) and returns summary.json's content: test and
/// validation perplexity of the best epoch (by validation loss), the cost report, corpus
/// statistics and timings.
nlohmann::json fit_language_model(const LmOptions& o);

/// Perplexity of a language-model checkpoint on a split ("valid" or "test") of the corpus in
/// `data_root` (the vocabulary is rebuilt from the training split and must match the one the
/// checkpoint was trained with). Returns {"split", "tokens", "loss", "perplexity", "seconds"}.
nlohmann::json evaluate_language_model(const std::string& checkpoint, const std::string& data_root,
                                       const std::string& split, int64_t eval_batch_size = 10,
                                       int64_t limit_tokens = 0, const std::string& device = "cpu");

/// The kind of checkpoint the language model writes (wrpn::models::save_module_checkpoint).
inline constexpr const char* kWordLmKind = "word_lm";

}  // namespace wrpn::train
