#pragma once
/// A word-level language model with low-precision wide recurrent layers (Low Precision RNNs,
/// Kapur, Mishra, Marr, arXiv 1710.07706; spec.md, "Low-precision wide RNNs"):
///   token ids [T, B] -> fp32 embedding -> dropout -> QuantLSTM layers (k-bit weights with a
///   fixed scale, k-bit hidden state) -> dropout -> fp32 decoder -> logits [T, B, vocab]
/// The width multiplier widens the hidden state: hidden = round(hidden_size * width); the
/// embedding follows the hidden size unless set, so the decoder can share the embedding's
/// weights (tie_weights; "Using the Output Embedding to Improve Language Models", Press and
/// Wolf, arXiv 1608.05859).

#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>

#include "wrpn/nn/quant_rnn.h"

namespace wrpn {
namespace models {

/// Everything that determines a WordLM's architecture. Checkpoints store it (to_json()).
struct WordLMOptions {
  int64_t vocab_size = 10001;
  /// Hidden size at width 1.
  int64_t hidden_size = 256;
  /// Multiplies the hidden size (rounded to the nearest integer, at least 1).
  double width = 1.0;
  /// 0: the (widened) hidden size.
  int64_t embedding_size = 0;
  int64_t num_layers = 2;
  /// Dropout on the embedding, between the layers and before the decoder (training only).
  double dropout = 0.5;
  /// Recurrent weights and hidden state: 2..16 bits, or 32 (fp32).
  int64_t weight_bits = 4;
  int64_t hidden_bits = 4;
  /// The decoder uses the embedding's weight matrix (needs embedding size = hidden size).
  bool tie_weights = true;

  /// round(hidden_size * width).
  int64_t hidden() const;
  /// embedding_size, or hidden() when 0.
  int64_t embedding() const;
  /// Throws c10::Error naming the first bad field and its allowed values.
  void validate() const;
  /// {"kind": "word_lm", "vocab_size": ..., ...}, one line.
  std::string to_json() const;
  /// Parses what to_json() writes (unknown keys and wrong types refused, then validate()).
  static WordLMOptions from_json(const std::string& text);
  bool operator==(const WordLMOptions& o) const { return to_json() == o.to_json(); }
  bool operator!=(const WordLMOptions& o) const { return !(*this == o); }
};

/// The cost of one token, counted like the zoo's cost report: a layer's bit-ops are its MACs *
/// weight bits * input bits (the embedding's output enters layer 0 at 32 bits; every other
/// recurrent product and the decoder read the k-bit hidden state); storage counts quantized
/// weights at their bits plus one 32-bit scale, everything else at 32 bits.
struct WordLMCost {
  int64_t params = 0;
  int64_t recurrent_params = 0;
  int64_t macs_per_token = 0;
  int64_t bit_ops_per_token = 0;
  int64_t storage_bits = 0;
  /// The same model with every weight at 32 bits.
  int64_t fp32_storage_bits = 0;
};

/// (h, c), each [num_layers, B, hidden].
using LstmState = std::tuple<torch::Tensor, torch::Tensor>;

class WordLMImpl : public torch::nn::Module {
 public:
  explicit WordLMImpl(WordLMOptions options);

  /// ids [T, B] (int64, 0 <= id < vocab_size) and the state carried from the previous window
  /// (zeros when absent) -> (logits [T, B, vocab_size], the state after the last step).
  std::tuple<torch::Tensor, LstmState> forward(const torch::Tensor& ids,
                                               const std::optional<LstmState>& state = {});

  /// Embedding and decoder uniform in [-0.1, 0.1], decoder bias 0, recurrent layers as
  /// QuantLSTM::reset_parameters().
  void reset_parameters();
  /// The state with its history cut (for truncated backprop through time).
  static LstmState detach_state(const LstmState& s);

  const WordLMOptions& options() const { return options_; }
  WordLMCost cost() const;
  /// Zero fraction of every recurrent weight matrix (wrpn::nn::QuantLSTM::weight_zero_fractions)
  /// averaged over the weights.
  double recurrent_zero_fraction() const;

  torch::nn::Embedding encoder{nullptr};
  nn::QuantLSTM rnn{nullptr};
  torch::nn::Dropout drop{nullptr};
  /// [vocab, hidden]; undefined when tied to encoder->weight.
  torch::Tensor decoder_weight;
  torch::Tensor decoder_bias;

 private:
  WordLMOptions options_;
};

TORCH_MODULE(WordLM);

}  // namespace models
}  // namespace wrpn
