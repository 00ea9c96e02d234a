// Tests of the word-level language model (wrpn::models::WordLM), its checkpoints and its trainer
// (wrpn::train::fit_language_model): shapes, tying, the cost by hand, state carried across
// windows, bad input, a small training on a generated corpus, exact resume, and the run
// directory's refusals.

#include <torch/torch.h>
#include <unistd.h>
#include <wrpn/wrpn.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "train_test_helpers.h"

namespace {

using Catch::Contains;
using wrpn::models::WordLM;
using wrpn::models::WordLMOptions;
using json = nlohmann::json;
using wrpn_test::temp_dir;

WordLMOptions small_model(int64_t vocab = 50) {
  WordLMOptions o;
  o.vocab_size = vocab;
  o.hidden_size = 8;
  o.num_layers = 2;
  o.dropout = 0.0;
  o.weight_bits = 4;
  o.hidden_bits = 2;
  return o;
}

TEST_CASE("WordLM options: width, embedding, JSON and their errors", "[lm]") {
  WordLMOptions o;
  o.hidden_size = 200;
  o.width = 1.5;
  CHECK(o.hidden() == 300);
  CHECK(o.embedding() == 300);
  o.embedding_size = 64;
  CHECK(o.embedding() == 64);
  CHECK_THROWS_WITH(o.validate(), Contains("tie_weights needs the embedding size (64)"));
  o.tie_weights = false;
  o.validate();
  const auto back = WordLMOptions::from_json(o.to_json());
  CHECK(back == o);
  CHECK(back.embedding() == 64);
  WordLMOptions bad;
  bad.weight_bits = 1;
  CHECK_THROWS_WITH(bad.validate(), Contains("weight_bits must be 2..16 or 32"));
  bad = WordLMOptions();
  bad.width = 0;
  CHECK_THROWS_WITH(bad.validate(), Contains("width must be in (0, 64]"));
  bad = WordLMOptions();
  bad.dropout = 1.0;
  CHECK_THROWS_WITH(bad.validate(), Contains("dropout must be in [0, 1)"));
  CHECK_THROWS_WITH(WordLMOptions::from_json(R"({"kind":"word_lm","hidden":3})"),
                    Contains("unknown key"));
  CHECK_THROWS_WITH(WordLMOptions::from_json(R"({"kind":"word_lm","num_layers":1.5})"),
                    Contains("\"num_layers\" must be an integer"));
  CHECK_THROWS_WITH(WordLMOptions::from_json(R"({"kind":"resnet"})"),
                    Contains("\"kind\" is not \"word_lm\""));
}

TEST_CASE("WordLM: shapes, tied decoder, state across windows, bad ids", "[lm]") {
  torch::manual_seed(1);
  // An fp32 hidden state: at 2 bits nearly every h of a fresh model is in the zero band, and
  // the logits would be the bias alone.
  WordLMOptions opts = small_model();
  opts.hidden_bits = 32;
  WordLM m(opts);
  m->eval();
  CHECK_FALSE(m->decoder_weight.defined());
  CHECK(m->named_parameters().find("decoder_weight") == nullptr);
  const auto ids = torch::randint(0, 50, {12, 3}, torch::kLong);
  auto [logits, state] = m->forward(ids);
  CHECK(logits.sizes() == torch::IntArrayRef({12, 3, 50}));
  CHECK(std::get<0>(state).sizes() == torch::IntArrayRef({2, 3, 8}));
  // The decoder is the embedding's matrix.
  {
    const torch::NoGradGuard g;
    m->encoder->weight.mul_(2);
  }
  CHECK_FALSE(torch::allclose(std::get<0>(m->forward(ids)), logits));
  // Two windows with the state carried equal one window over both.
  auto [all, s_all] = m->forward(ids);
  auto [first, s1] = m->forward(ids.slice(0, 0, 5));
  auto [second, s2] = m->forward(ids.slice(0, 5), s1);
  CHECK(torch::allclose(torch::cat({first, second}), all, 1e-5, 1e-6));
  CHECK(torch::allclose(std::get<1>(s2), std::get<1>(s_all), 1e-5, 1e-6));
  const auto det = wrpn::models::WordLMImpl::detach_state(s2);
  CHECK_FALSE(std::get<0>(det).requires_grad());

  CHECK_THROWS_WITH(m->forward(torch::full({2, 2}, 50, torch::kLong)),
                    Contains("token ids must be in [0, 50), got [50, 50]"));
  CHECK_THROWS_WITH(m->forward(torch::zeros({2, 2}, torch::kInt)), Contains("must be int64"));
  CHECK_THROWS_WITH(m->forward(torch::zeros({4}, torch::kLong)), Contains("[T, B]"));

  WordLMOptions untied = small_model();
  untied.tie_weights = false;
  untied.embedding_size = 5;
  WordLM u(untied);
  CHECK(u->decoder_weight.sizes() == torch::IntArrayRef({50, 8}));
  CHECK(std::get<0>(u->forward(ids)).sizes() == torch::IntArrayRef({12, 3, 50}));
}

TEST_CASE("WordLM cost per token, by hand", "[lm]") {
  WordLM m(small_model());  // V 50, E = H = 8, 2 layers, 4-bit weights, 2-bit hidden
  const auto c = m->cost();
  // layer 0: W_ih 32x8 read at 32 bits, W_hh 32x8 at 2 bits; layer 1: both at 2 bits;
  // decoder 50x8 fp32 weights reading 2-bit h.
  CHECK(c.macs_per_token == 256 + 256 + 256 + 256 + 400);
  CHECK(c.bit_ops_per_token == 256 * 4 * 32 + 256 * 4 * 2 + 512 * 4 * 2 + 400 * 32 * 2);
  CHECK(c.params == 400 + 1024 + 128 + 50);
  CHECK(c.recurrent_params == 1024 + 128);
  CHECK(c.storage_bits == 1024 * 4 + 32 + (400 + 128 + 50) * 32);
  CHECK(c.fp32_storage_bits == c.params * 32);
  WordLMOptions wide = small_model();
  wide.weight_bits = 4;
  wide.hidden_size = 64;
  WordLM w(wide);
  CHECK(w->recurrent_zero_fraction() == Approx(1.0 / 14).margin(0.02));
}

TEST_CASE("language-model checkpoints round trip and are told apart from the zoo's", "[lm]") {
  const std::string dir = temp_dir("lm_ckpt");
  torch::manual_seed(2);
  WordLM m(small_model());
  wrpn::models::CheckpointInfo info;
  info.epoch = 3;
  info.metrics = {{"valid_loss", 1.5}};
  const std::string path = dir + "/m.ckpt";
  wrpn::models::save_module_checkpoint(path, *m, "word_lm", m->options().to_json(), info);
  const auto meta = wrpn::models::read_module_checkpoint(path, "word_lm");
  CHECK(meta.info.epoch == 3);
  CHECK(WordLMOptions::from_json(meta.model_json) == m->options());
  WordLM n(small_model());
  wrpn::models::load_module_checkpoint_into(path, "word_lm", *n);
  for (const auto& p : m->named_parameters()) {
    CHECK(torch::equal(p.value(), n->named_parameters()[p.key()]));
  }
  CHECK(
      torch::equal(m->named_buffers()["rnn.weight_scale"], n->named_buffers()["rnn.weight_scale"]));
  CHECK_THROWS_WITH(wrpn::models::read_checkpoint(path),
                    Contains("holds a 'word_lm' model, not a classifier"));
  CHECK_THROWS_WITH(wrpn::models::read_module_checkpoint(path, "other"),
                    Contains("not a other model"));
  WordLMOptions bigger = small_model();
  bigger.hidden_size = 9;
  WordLM b(bigger);
  CHECK_THROWS_WITH(wrpn::models::load_module_checkpoint_into(path, "word_lm", *b),
                    Contains("has shape"));
  auto zoo = wrpn::models::create_model(wrpn::models::ModelSpec{"resnet20", 10, 1, {}, {}});
  wrpn::models::save_checkpoint(dir + "/zoo.ckpt", *zoo);
  CHECK_THROWS_WITH(wrpn::models::read_module_checkpoint(dir + "/zoo.ckpt", "word_lm"),
                    Contains("holds a 'classifier' model, not a word_lm model"));
}

// ---- the trainer on a generated corpus
// -----------------------------------------------------------

/// Six small "novels" with the benchmark's file names: sentences from a tiny grammar, so that a
/// small LSTM learns something within two epochs.
std::string make_corpus(const std::string& tag) {
  const std::string dir = temp_dir(tag);
  const std::vector<std::string> subj = {"Emma", "Anne", "the captain", "her sister",
                                         "Mr. Knightley"};
  const std::vector<std::string> verb = {"walked to", "wrote to", "thought of", "smiled at"};
  const std::vector<std::string> obj = {"the house", "Bath", "the letter", "Highbury", "him"};
  uint64_t x = 7;
  const auto next = [&](size_t n) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<size_t>((x >> 33) % n);
  };
  for (const auto& novel : wrpn::data::austen_novels()) {
    std::ofstream f(dir + "/" + novel + ".txt");
    const int paragraphs = novel == "northangerabbey" || novel == "persuasion" ? 20 : 40;
    for (int p = 0; p < paragraphs; ++p) {
      for (int s = 0; s < 4; ++s) {
        f << subj[next(subj.size())] << " " << verb[next(verb.size())] << " "
          << obj[next(obj.size())] << (next(3) == 0 ? "!" : ".") << "\n";
      }
      f << "\n";
    }
  }
  return dir;
}

wrpn::train::LmOptions tiny_run(const std::string& data, const std::string& run) {
  wrpn::train::LmOptions o;
  o.data_root = data;
  o.run_dir = run;
  o.model.hidden_size = 24;
  o.model.num_layers = 1;
  o.model.dropout = 0.1;
  o.model.weight_bits = 4;
  o.model.hidden_bits = 4;
  o.epochs = 3;
  o.batch_size = 4;
  o.eval_batch_size = 2;
  o.bptt = 8;
  o.lr = 2.0;
  o.seed = 5;
  o.threads = 1;
  o.quiet = true;
  return o;
}

std::vector<json> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(json::parse(line));
  }
  return out;
}

TEST_CASE("wrpn_lm's trainer learns a small corpus and writes its run", "[lm][train]") {
  const std::string data = make_corpus("lm_data");
  const std::string run = temp_dir("lm_run") + "/run";
  const auto o = tiny_run(data, run);
  const json s = wrpn::train::fit_language_model(o);
  CHECK(s["completed"] == true);
  CHECK(s["epochs_completed"] == 3);
  const int64_t vocab = s["corpus"]["vocab_size"];
  CHECK(vocab > 20);
  CHECK(vocab < 40);
  const double test_ppl = s["test_ppl"];
  // The grammar allows about 5 * 4 * 5 * 2 sentences: far fewer choices than the vocabulary.
  CHECK(test_ppl < vocab / 2.0);
  CHECK(std::isfinite(test_ppl));
  const auto lines = read_lines(run + "/metrics.jsonl");
  REQUIRE(lines.size() == 3);
  CHECK(lines[2]["train_loss"].get<double>() < lines[0]["train_loss"].get<double>());
  CHECK(lines[0]["lr"] == 2.0);
  for (const char* f : {"/options.json", "/summary.json", "/last.ckpt", "/best.ckpt"}) {
    CHECK(wrpn::fs::is_regular_file(run + f));
  }
  CHECK(s["cost"]["bit_ops_per_token"].get<int64_t>() > 0);
  // The checkpoint evaluates to the summary's figure.
  const json ev = wrpn::train::evaluate_language_model(run + "/best.ckpt", data, "test", 2);
  CHECK(ev["perplexity"].get<double>() == Approx(test_ppl).epsilon(1e-9));
  // What the options say lands in options.json, and reads back.
  const auto back =
      wrpn::train::LmOptions::from_json(json::parse(wrpn::fs::read_file(run + "/options.json")));
  auto expect = o;
  expect.model.vocab_size = vocab;  // resolved from the corpus
  CHECK(back.to_json() == expect.to_json());
}

TEST_CASE("an interrupted language-model run resumes to the uninterrupted result", "[lm][train]") {
  const std::string data = make_corpus("lm_resume_data");
  const std::string root = temp_dir("lm_resume");
  auto a = tiny_run(data, root + "/straight");
  const json sa = wrpn::train::fit_language_model(a);
  auto b = tiny_run(data, root + "/interrupted");
  b.stop_after = 1;
  const json sb1 = wrpn::train::fit_language_model(b);
  CHECK(sb1["completed"] == false);
  CHECK(sb1["epochs_completed"] == 1);
  b.stop_after = 0;
  b.resume = true;
  const json sb = wrpn::train::fit_language_model(b);
  CHECK(sb["completed"] == true);
  CHECK(sb["test_ppl"].get<double>() == sa["test_ppl"].get<double>());
  CHECK(sb["best_valid_ppl"].get<double>() == sa["best_valid_ppl"].get<double>());
  const auto la = read_lines(root + "/straight/metrics.jsonl");
  const auto lb = read_lines(root + "/interrupted/metrics.jsonl");
  REQUIRE(lb.size() == 3);
  for (size_t i = 0; i < 3; ++i) CHECK(la[i]["valid_loss"] == lb[i]["valid_loss"]);
}

TEST_CASE("the language-model trainer refuses what would lose or mix runs", "[lm][train]") {
  const std::string data = make_corpus("lm_refuse_data");
  const std::string root = temp_dir("lm_refuse");
  auto o = tiny_run(data, root + "/run");
  o.epochs = 1;
  o.limit_train_tokens = 200;
  wrpn::train::fit_language_model(o);
  CHECK_THROWS_WITH(wrpn::train::fit_language_model(o),
                    Contains("holds a previous run") && Contains("--resume"));
  auto r = o;
  r.resume = true;
  r.lr = 3.0;
  r.epochs = 1;
  CHECK_THROWS_WITH(wrpn::train::fit_language_model(r), Contains("lr was 2.0, now 3.0"));
  auto fresh = tiny_run(data, root + "/empty");
  fresh.resume = true;
  CHECK_THROWS_WITH(wrpn::train::fit_language_model(fresh), Contains("nothing to resume"));
  auto over = o;
  over.overwrite = true;
  CHECK_NOTHROW(wrpn::train::fit_language_model(over));
  auto missing = tiny_run(root + "/no_such_dir", root + "/run2");
  CHECK_THROWS_WITH(wrpn::train::fit_language_model(missing),
                    Contains("sensesensibility.txt' is missing"));
  CHECK_FALSE(wrpn::fs::path_exists(root + "/run2/options.json"));
  auto bad = tiny_run(data, root + "/run3");
  bad.bptt = 0;
  CHECK_THROWS_WITH(wrpn::train::fit_language_model(bad), Contains("bptt must be 1..100000"));
  bad = tiny_run(data, root + "/run3");
  bad.schedule = "linear";
  CHECK_THROWS_WITH(wrpn::train::fit_language_model(bad),
                    Contains("schedule must be plateau, cosine or constant"));
  CHECK_THROWS_WITH(wrpn::train::LmOptions::from_json(json{{"epochs", 1.5}}),
                    Contains("\"epochs\" must be an integer"));
  CHECK_THROWS_WITH(wrpn::train::LmOptions::from_json(json{{"epoch", 2}}), Contains("unknown key"));
  CHECK_THROWS_WITH(wrpn::train::evaluate_language_model(root + "/run/best.ckpt", data, "train"),
                    Contains("split must be valid or test"));
}

}  // namespace
