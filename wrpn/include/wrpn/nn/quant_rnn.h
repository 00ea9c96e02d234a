#pragma once
/// Low-precision wide recurrent layers (Low Precision RNNs: Quantizing RNNs Without Losing
/// Accuracy, Kapur, Mishra, Marr, arXiv 1710.07706), by the rules of spec.md, "Low-precision wide
/// RNNs": every weight matrix W is used as W_q = a * Q_k(W / a) with a fixed scale a (a buffer,
/// default 1 / sqrt(hidden_size)) and the WRPN k-bit weight quantizer Q_k (straight-through
/// gradient [|W| <= a]); the hidden state h_t is quantized where it is made, on the signed k-bit
/// grid of [-1, 1], and that quantized h is what the next step, the next layer and the caller
/// read. Gates, the LSTM's cell state and the biases stay fp32.
///
/// Parameter names, shapes, gate order and the forward's signature and results are those of
/// torch::nn::LSTM / torch::nn::GRU, so an fp32 model's parameters copy in and out by name.
/// The two matrix products of a step stay GEMMs (one input projection for the whole sequence,
/// one hidden projection per step); everything elementwise after them is one fused pass on the
/// CPU or CUDA (<wrpn/kernels/rnn_cell.h>) that saves only the gates and the cell state for the
/// backward (backprop through time in one autograd node per layer; no double backward).

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/common.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

namespace wrpn {
namespace nn {

/// "32 bits" of a recurrent layer: full precision (the quantizer is skipped).
constexpr int64_t kRnnFullPrecisionBits = 32;

// The options both layer kinds share, in torch::nn::LSTMOptions' names where they exist.
#define WRPN_QUANT_RNN_OPTIONS(Name)                                                         \
  Name(int64_t input_size, int64_t hidden_size);                                             \
  TORCH_ARG(int64_t, input_size);                                                            \
  TORCH_ARG(int64_t, hidden_size);                                                           \
  /** Stacked layers; layer l > 0 reads layer l-1's quantized hidden states. */              \
  TORCH_ARG(int64_t, num_layers) = 1;                                                        \
  /** Biases bias_ih_l<k> and bias_hh_l<k> (fp32). */                                        \
  TORCH_ARG(bool, bias) = true;                                                              \
  /** Input and output [batch, seq, feature] instead of [seq, batch, feature]; states stay   \
   * [num_layers, batch, hidden]. */                                                         \
  TORCH_ARG(bool, batch_first) = false;                                                      \
  /** Dropout on the outputs of every layer but the last, in training mode (as torch's). */  \
  TORCH_ARG(double, dropout) = 0.0;                                                          \
  /** Weight bits: 2..16, or 32 (fp32 weights). */                                           \
  TORCH_ARG(int64_t, weight_bits) = 4;                                                       \
  /** Hidden-state bits: 2..16, or 32 (fp32 hidden state). */                                \
  TORCH_ARG(int64_t, hidden_bits) = 4;                                                       \
  /** The fixed weight scale a (> 0); unset: 1 / sqrt(hidden_size), the bound of LibTorch's  \
   * uniform initialisation. Weights are drawn uniform in [-a, a], so they fill the grid. */ \
  TORCH_ARG(std::optional<double>, weight_scale) = std::nullopt

/// Options of QuantLSTM.
struct QuantLSTMOptions {
  WRPN_QUANT_RNN_OPTIONS(QuantLSTMOptions);
};

/// Options of QuantGRU.
struct QuantGRUOptions {
  WRPN_QUANT_RNN_OPTIONS(QuantGRUOptions);
};

#undef WRPN_QUANT_RNN_OPTIONS

/// A stacked unidirectional LSTM with WRPN-quantized weights and hidden state.
/// Parameters weight_ih_l<k> [4H, in], weight_hh_l<k> [4H, H], bias_ih_l<k>, bias_hh_l<k> [4H]
/// (gates i, f, g, o), buffer "weight_scale" (0-dim, the a of every matrix).
class QuantLSTMImpl : public torch::nn::Cloneable<QuantLSTMImpl> {
 public:
  QuantLSTMImpl(int64_t input_size, int64_t hidden_size)
      : QuantLSTMImpl(QuantLSTMOptions(input_size, hidden_size)) {}
  explicit QuantLSTMImpl(QuantLSTMOptions options);

  void reset() override;
  /// Weights uniform in [-a, a], biases uniform in [-1/sqrt(H), 1/sqrt(H)] (torch's default).
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// input [T, B, in] ([B, T, in] batch-first, or [T, in] unbatched), float32; hx = (h_0, c_0),
  /// each [num_layers, B, H] ([num_layers, H] unbatched), zeros when absent. Returns
  /// (output [T, B, H]: the last layer's quantized h_t, (h_n, c_n)), as torch::nn::LSTM.
  std::tuple<torch::Tensor, std::tuple<torch::Tensor, torch::Tensor>> forward(
      const torch::Tensor& input,
      torch::optional<std::tuple<torch::Tensor, torch::Tensor>> hx = {});

  /// The scale a of every weight matrix.
  double weight_scale() const;
  /// A weight as forward() uses it ("weight_ih_l0", ...): a * Q(W / a), or W at 32 bits.
  torch::Tensor effective_weight(const std::string& name) const;
  /// The fraction of each weight matrix's entries that quantize to zero (the pitfall of
  /// spec.md: about 1/14 at 4 bits and 1/2 at 2 bits at initialisation), by parameter name.
  std::map<std::string, double> weight_zero_fractions() const;

  QuantLSTMOptions options;

 protected:
  FORWARD_HAS_DEFAULT_ARGS(
      {1, torch::nn::AnyValue(torch::optional<std::tuple<torch::Tensor, torch::Tensor>>())})
};

/// A stacked unidirectional GRU with WRPN-quantized weights and hidden state. Parameters as
/// torch::nn::GRU (gates r, z, n; 3H rows), buffer "weight_scale".
class QuantGRUImpl : public torch::nn::Cloneable<QuantGRUImpl> {
 public:
  QuantGRUImpl(int64_t input_size, int64_t hidden_size)
      : QuantGRUImpl(QuantGRUOptions(input_size, hidden_size)) {}
  explicit QuantGRUImpl(QuantGRUOptions options);

  void reset() override;
  void reset_parameters();
  void pretty_print(std::ostream& stream) const override;

  /// input as QuantLSTM; hx = h_0 [num_layers, B, H] (zeros when undefined). Returns
  /// (output [T, B, H], h_n [num_layers, B, H]), as torch::nn::GRU.
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& input,
                                                   torch::Tensor hx = {});

  double weight_scale() const;
  torch::Tensor effective_weight(const std::string& name) const;
  std::map<std::string, double> weight_zero_fractions() const;

  QuantGRUOptions options;

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(torch::Tensor())})
};

TORCH_MODULE(QuantLSTM);
TORCH_MODULE(QuantGRU);

/// a * Q_k(w / a) with the straight-through gradient [|w| <= a] (k = 2..16), w itself at k = 32:
/// the weight rule of the recurrent layers, for any tensor (scale a 0-dim or a double).
torch::Tensor quantize_scaled_weight(const torch::Tensor& w, const torch::Tensor& scale,
                                     int64_t bits);

/// One layer of the fused recurrent forward, the op under the modules (exposed for benchmarks and
/// tests): xp [T, B, 4H] = x W_ih^T + b_ih for the whole sequence, w_hh [4H, H] (already
/// quantized), b_hh [4H] or undefined, h0 and c0 [B, H]. Returns (h [T, B, H] quantized to
/// hidden_bits, c_T [B, H]). Differentiable in xp, w_hh, b_hh, h0 and c0.
std::tuple<torch::Tensor, torch::Tensor> quant_lstm_layer(
    const torch::Tensor& xp, const torch::Tensor& w_hh, const torch::Tensor& b_hh,
    const torch::Tensor& h0, const torch::Tensor& c0, int64_t hidden_bits);

/// The GRU layer: xp [T, B, 3H] = x W_ih^T + b_ih, w_hh [3H, H], b_hh [3H] or undefined,
/// h0 [B, H]. Returns h [T, B, H].
torch::Tensor quant_gru_layer(const torch::Tensor& xp, const torch::Tensor& w_hh,
                              const torch::Tensor& b_hh, const torch::Tensor& h0,
                              int64_t hidden_bits);

}  // namespace nn
}  // namespace wrpn
