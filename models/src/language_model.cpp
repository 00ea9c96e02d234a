// wrpn::models::WordLM (wrpn/models/language_model.h).

#include "wrpn/models/language_model.h"

#include <torch/nn/functional/embedding.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "wrpn/util/text.h"

namespace wrpn {
namespace models {
namespace {

bool valid_bits(int64_t b) { return b == nn::kRnnFullPrecisionBits || (b >= 2 && b <= 16); }

constexpr const char* kKind = "word_lm";

}  // namespace

int64_t WordLMOptions::hidden() const {
  return std::max<int64_t>(1, std::llround(static_cast<double>(hidden_size) * width));
}

int64_t WordLMOptions::embedding() const { return embedding_size > 0 ? embedding_size : hidden(); }

void WordLMOptions::validate() const {
  TORCH_CHECK_VALUE(vocab_size >= 2 && vocab_size <= 10000000,
                    "language model: vocab_size must be 2..10000000, got ", vocab_size);
  TORCH_CHECK_VALUE(hidden_size >= 1 && hidden_size <= 65536,
                    "language model: hidden_size must be 1..65536, got ", hidden_size);
  TORCH_CHECK_VALUE(std::isfinite(width) && width > 0.0 && width <= 64.0,
                    "language model: width must be in (0, 64], got ", width);
  TORCH_CHECK_VALUE(hidden() <= 65536, "language model: hidden_size * width = ", hidden(),
                    " is more than 65536");
  TORCH_CHECK_VALUE(embedding_size >= 0 && embedding_size <= 65536,
                    "language model: embedding_size must be 0 (the hidden size) or 1..65536, got ",
                    embedding_size);
  TORCH_CHECK_VALUE(num_layers >= 1 && num_layers <= 16,
                    "language model: num_layers must be 1..16, got ", num_layers);
  TORCH_CHECK_VALUE(std::isfinite(dropout) && dropout >= 0.0 && dropout < 1.0,
                    "language model: dropout must be in [0, 1), got ", dropout);
  TORCH_CHECK_VALUE(valid_bits(weight_bits),
                    "language model: weight_bits must be 2..16 or 32 (fp32), got ", weight_bits);
  TORCH_CHECK_VALUE(valid_bits(hidden_bits),
                    "language model: hidden_bits must be 2..16 or 32 (fp32), got ", hidden_bits);
  TORCH_CHECK_VALUE(!tie_weights || embedding() == hidden(),
                    "language model: tie_weights needs the embedding size (", embedding(),
                    ") to equal the hidden size (", hidden(),
                    "): leave embedding_size at 0 or turn tying off");
}

std::string WordLMOptions::to_json() const {
  const nlohmann::ordered_json j = {{"kind", kKind},
                                    {"vocab_size", vocab_size},
                                    {"hidden_size", hidden_size},
                                    {"width", width},
                                    {"embedding_size", embedding_size},
                                    {"num_layers", num_layers},
                                    {"dropout", dropout},
                                    {"weight_bits", weight_bits},
                                    {"hidden_bits", hidden_bits},
                                    {"tie_weights", tie_weights}};
  return j.dump();
}

WordLMOptions WordLMOptions::from_json(const std::string& text) {
  const auto j = util::parse_json(text, "language model options");
  TORCH_CHECK_VALUE(j.is_object(), "language model options: expected a JSON object");
  TORCH_CHECK_VALUE(j.value("kind", std::string()) == kKind,
                    "language model options: \"kind\" is not \"", kKind, "\"");
  WordLMOptions o;
  const std::set<std::string> known = {"kind",           "vocab_size", "hidden_size", "width",
                                       "embedding_size", "num_layers", "dropout",     "weight_bits",
                                       "hidden_bits",    "tie_weights"};
  for (const auto& [key, value] : j.items()) {
    TORCH_CHECK_VALUE(known.count(key), "language model options: unknown key ",
                      util::printable(key));
  }
  const auto integer = [&](const char* key, int64_t& out) {
    if (!j.contains(key)) return;
    TORCH_CHECK_VALUE(j.at(key).is_number_integer(), "language model options: \"", key,
                      "\" must be an integer, got ", util::json_excerpt(j.at(key)));
    out = j.at(key).get<int64_t>();
  };
  const auto number = [&](const char* key, double& out) {
    if (!j.contains(key)) return;
    TORCH_CHECK_VALUE(j.at(key).is_number(), "language model options: \"", key,
                      "\" must be a number, got ", util::json_excerpt(j.at(key)));
    out = j.at(key).get<double>();
  };
  integer("vocab_size", o.vocab_size);
  integer("hidden_size", o.hidden_size);
  number("width", o.width);
  integer("embedding_size", o.embedding_size);
  integer("num_layers", o.num_layers);
  number("dropout", o.dropout);
  integer("weight_bits", o.weight_bits);
  integer("hidden_bits", o.hidden_bits);
  if (j.contains("tie_weights")) {
    TORCH_CHECK_VALUE(j.at("tie_weights").is_boolean(),
                      "language model options: \"tie_weights\" must be true or false");
    o.tie_weights = j.at("tie_weights").get<bool>();
  }
  o.validate();
  return o;
}

WordLMImpl::WordLMImpl(WordLMOptions options) : options_(std::move(options)) {
  options_.validate();
  const int64_t H = options_.hidden(), E = options_.embedding(), V = options_.vocab_size;
  encoder = register_module("encoder", torch::nn::Embedding(V, E));
  rnn = register_module("rnn", nn::QuantLSTM(nn::QuantLSTMOptions(E, H)
                                                 .num_layers(options_.num_layers)
                                                 .dropout(options_.dropout)
                                                 .weight_bits(options_.weight_bits)
                                                 .hidden_bits(options_.hidden_bits)));
  drop = register_module("drop", torch::nn::Dropout(options_.dropout));
  if (!options_.tie_weights)
    decoder_weight = register_parameter("decoder_weight", torch::empty({V, H}));
  decoder_bias = register_parameter("decoder_bias", torch::empty({V}));
  reset_parameters();
}

void WordLMImpl::reset_parameters() {
  const torch::NoGradGuard no_grad;
  encoder->weight.uniform_(-0.1, 0.1);
  if (decoder_weight.defined()) decoder_weight.uniform_(-0.1, 0.1);
  decoder_bias.zero_();
  rnn->reset_parameters();
}

std::tuple<torch::Tensor, LstmState> WordLMImpl::forward(const torch::Tensor& ids,
                                                         const std::optional<LstmState>& state) {
  TORCH_CHECK_VALUE(ids.defined() && ids.dim() == 2,
                    "language model: expected token ids [T, B], got ",
                    ids.defined() ? ids.sizes() : torch::IntArrayRef{});
  TORCH_CHECK_VALUE(ids.scalar_type() == torch::kLong,
                    "language model: token ids must be int64, got ", ids.scalar_type());
  if (ids.numel() > 0) {
    const auto [lo, hi] = torch::aminmax(ids);
    TORCH_CHECK_VALUE(lo.item<int64_t>() >= 0 && hi.item<int64_t>() < options_.vocab_size,
                      "language model: token ids must be in [0, ", options_.vocab_size, "), got [",
                      lo.item<int64_t>(), ", ", hi.item<int64_t>(), "]");
  }
  const torch::Tensor emb = drop(encoder(ids));
  torch::optional<LstmState> hx;
  if (state) hx = *state;
  auto [out, next] = rnn->forward(emb, hx);
  const torch::Tensor h = drop(out);
  const torch::Tensor w = decoder_weight.defined() ? decoder_weight : encoder->weight;
  return {torch::linear(h, w, decoder_bias), next};
}

LstmState WordLMImpl::detach_state(const LstmState& s) {
  return {std::get<0>(s).detach(), std::get<1>(s).detach()};
}

WordLMCost WordLMImpl::cost() const {
  const auto& o = options_;
  const int64_t H = o.hidden(), E = o.embedding(), V = o.vocab_size;
  WordLMCost c;
  for (const auto& p : parameters()) c.params += p.numel();
  int64_t recurrent_weights = 0, biases = 0;
  for (int64_t l = 0; l < o.num_layers; ++l) {
    const int64_t in = l == 0 ? E : H;
    const int64_t in_bits = l == 0 ? 32 : o.hidden_bits;
    const int64_t mac_ih = 4 * H * in, mac_hh = 4 * H * H;
    c.macs_per_token += mac_ih + mac_hh;
    c.bit_ops_per_token +=
        mac_ih * o.weight_bits * in_bits + mac_hh * o.weight_bits * o.hidden_bits;
    recurrent_weights += mac_ih + mac_hh;
    biases += 2 * 4 * H;
  }
  c.recurrent_params = recurrent_weights + biases;
  c.macs_per_token += V * H;
  c.bit_ops_per_token += V * H * 32 * o.hidden_bits;
  const int64_t other = c.params - recurrent_weights;  // embedding, decoder, biases: fp32
  const int64_t scales = o.weight_bits == 32 ? 0 : 32;
  c.storage_bits = recurrent_weights * o.weight_bits + scales + other * 32;
  c.fp32_storage_bits = c.params * 32;
  return c;
}

double WordLMImpl::recurrent_zero_fraction() const {
  const auto fractions = rnn->weight_zero_fractions();
  double zeros = 0, total = 0;
  for (const auto& p : rnn->named_parameters(false)) {
    const auto it = fractions.find(p.key());
    if (it == fractions.end()) continue;
    zeros += it->second * static_cast<double>(p.value().numel());
    total += static_cast<double>(p.value().numel());
  }
  return total > 0 ? zeros / total : 0.0;
}

}  // namespace models
}  // namespace wrpn
