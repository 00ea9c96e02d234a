// The language-model trainer (wrpn/train/language_model.h).

#include "wrpn/train/language_model.h"

#include <torch/torch.h>
#include <wrpn/data/text.h>
#include <wrpn/models/checkpoint.h>
#include <wrpn/train/trainer.h>
#include <wrpn/train/utils.h>
#include <wrpn/util/text.h>
#include <wrpn/version.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <set>

#include "run_dir.h"

namespace wrpn::train {
namespace {

using json = nlohmann::json;
using torch::Tensor;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string data_root_of(const std::string& root) {
  if (!root.empty()) return root;
  const char* env = std::getenv("WRPN_DATA_DIR");
  return fs::join(env != nullptr && *env != '\0' ? env : "data", "austen");
}

/// Options that do not change what a run computes, or that only steer the process.
const std::set<std::string> kPlace = {"data_root",         "run_dir",         "resume",
                                      "overwrite",         "stop_after",      "quiet",
                                      "progress_interval", "eval_batch_size", "limit_eval_tokens"};
const std::set<std::string> kRounding = {"threads", "device"};

/// The epoch's own seed: dropout draws the same numbers in a resumed run as in an
/// uninterrupted one.
uint64_t epoch_seed(uint64_t seed, int64_t epoch) {
  return seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) * 0xBF58476D1CE4E5B9ull + 1;
}

Tensor limited(const Tensor& ids, int64_t limit) {
  return limit > 0 && limit < ids.size(0) ? ids.slice(0, 0, limit) : ids;
}

struct EvalOut {
  int64_t tokens = 0;
  double loss = 0.0;
  double seconds = 0.0;
};

/// Mean cross-entropy (nats per token) over a batchified stream, state carried between windows.
EvalOut evaluate(models::WordLMImpl& m, const Tensor& data, int64_t bptt, torch::Device device) {
  const double t0 = now_s();
  m.eval();
  const torch::NoGradGuard no_grad;
  std::optional<models::LstmState> state;
  double sum = 0.0;
  int64_t tokens = 0;
  for (int64_t start = 0; start < data.size(0) - 1; start += bptt) {
    auto [x, y] = data::bptt_window(data, start, bptt);
    auto [logits, next] = m.forward(x.to(device), state);
    sum += torch::nn::functional::cross_entropy(
               logits.view({-1, logits.size(-1)}), y.to(device).reshape({-1}),
               torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
               .item<double>();
    tokens += y.numel();
    state = next;
  }
  return {tokens, tokens > 0 ? sum / tokens : 0.0, now_s() - t0};
}

double perplexity(double loss) { return std::isfinite(loss) ? std::exp(loss) : loss; }

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
}

struct Corpus {
  data::TextCorpus text;
  Tensor train, valid, test;  // batchified
};

Corpus load_corpus(const std::string& root, int64_t vocab_size, int64_t limit_train,
                   int64_t limit_eval, int64_t batch, int64_t eval_batch) {
  Corpus c;
  c.text = data::load_austen(root, vocab_size);
  c.train = data::batchify(limited(c.text.train, limit_train), batch);
  c.valid = data::batchify(limited(c.text.valid, limit_eval), eval_batch);
  c.test = data::batchify(limited(c.text.test, limit_eval), eval_batch);
  return c;
}

json cost_json(const models::WordLMImpl& m) {
  const auto c = m.cost();
  return {{"parameters", c.params},
          {"recurrent_parameters", c.recurrent_params},
          {"macs_per_token", c.macs_per_token},
          {"bit_ops_per_token", c.bit_ops_per_token},
          {"weight_storage_bytes", c.storage_bits / 8},
          {"fp32_weight_storage_bytes", c.fp32_storage_bits / 8}};
}

}  // namespace

// ---- options ------------------------------------------------------------------------------------

void LmOptions::validate() const {
  models::WordLMOptions m = model;
  m.vocab_size = vocab_size + 1;
  m.validate();
  TORCH_CHECK_VALUE(vocab_size >= 1 && vocab_size <= 10000000,
                    "vocab_size must be 1..10000000, got ", vocab_size);
  TORCH_CHECK_VALUE(epochs >= 1 && epochs <= 100000, "epochs must be 1..100000, got ", epochs);
  TORCH_CHECK_VALUE(batch_size >= 1 && batch_size <= 65536, "batch_size must be 1..65536, got ",
                    batch_size);
  TORCH_CHECK_VALUE(eval_batch_size >= 1 && eval_batch_size <= 65536,
                    "eval_batch_size must be 1..65536, got ", eval_batch_size);
  TORCH_CHECK_VALUE(bptt >= 1 && bptt <= 100000, "bptt must be 1..100000, got ", bptt);
  TORCH_CHECK_VALUE(std::isfinite(lr) && lr > 0, "lr must be > 0, got ", lr);
  TORCH_CHECK_VALUE(schedule == "plateau" || schedule == "cosine" || schedule == "constant",
                    "schedule must be plateau, cosine or constant, got ",
                    util::printable(schedule));
  TORCH_CHECK_VALUE(std::isfinite(lr_decay) && lr_decay >= 1, "lr_decay must be >= 1, got ",
                    lr_decay);
  TORCH_CHECK_VALUE(std::isfinite(clip) && clip >= 0, "clip must be >= 0 (0: off), got ", clip);
  TORCH_CHECK_VALUE(std::isfinite(weight_decay) && weight_decay >= 0,
                    "weight_decay must be >= 0, got ", weight_decay);
  TORCH_CHECK_VALUE(limit_train_tokens >= 0 && limit_eval_tokens >= 0,
                    "limit_train_tokens and limit_eval_tokens must be >= 0 (0: all)");
  TORCH_CHECK_VALUE(threads >= 0 && threads <= 1024, "threads must be 0 (default) or 1..1024, got ",
                    threads);
  TORCH_CHECK_VALUE(stop_after >= 0, "stop_after must be >= 0 (0: never), got ", stop_after);
  TORCH_CHECK_VALUE(std::isfinite(progress_interval) && progress_interval > 0,
                    "progress_interval must be > 0 seconds, got ", progress_interval);
  TORCH_CHECK_VALUE(!run_dir.empty(), "run_dir must not be empty");
  TORCH_CHECK_VALUE(!(resume && overwrite), "--resume and --overwrite exclude each other");
}

json LmOptions::to_json() const {
  return {{"model", json::parse(model.to_json())},
          {"data_root", data_root},
          {"vocab_size", vocab_size},
          {"epochs", epochs},
          {"batch_size", batch_size},
          {"eval_batch_size", eval_batch_size},
          {"bptt", bptt},
          {"lr", lr},
          {"schedule", schedule},
          {"lr_decay", lr_decay},
          {"clip", clip},
          {"weight_decay", weight_decay},
          {"seed", seed},
          {"limit_train_tokens", limit_train_tokens},
          {"limit_eval_tokens", limit_eval_tokens},
          {"run_dir", run_dir},
          {"threads", threads},
          {"device", device}};
}

LmOptions LmOptions::from_json(const json& j) {
  TORCH_CHECK_VALUE(j.is_object(), "language-model options: expected a JSON object");
  LmOptions o;
  const json ref = o.to_json();
  for (const auto& [key, value] : j.items()) {
    TORCH_CHECK_VALUE(ref.contains(key), "language-model options: unknown key ",
                      util::printable(key));
  }
  const auto get = [&](const char* key, auto& out) {
    if (!j.contains(key)) return;
    const json& v = j.at(key);
    using T = std::decay_t<decltype(out)>;
    if constexpr (std::is_same_v<T, std::string>) {
      TORCH_CHECK_VALUE(v.is_string(), "language-model options: \"", key, "\" must be a string");
    } else if constexpr (std::is_same_v<T, double>) {
      TORCH_CHECK_VALUE(v.is_number(), "language-model options: \"", key, "\" must be a number");
    } else if constexpr (std::is_same_v<T, uint64_t>) {
      TORCH_CHECK_VALUE(v.is_number_unsigned(), "language-model options: \"", key,
                        "\" must be an integer >= 0");
    } else {
      TORCH_CHECK_VALUE(v.is_number_integer(), "language-model options: \"", key,
                        "\" must be an integer, got ", util::json_excerpt(v));
    }
    out = v.get<T>();
  };
  if (j.contains("model")) {
    o.model = models::WordLMOptions::from_json(j.at("model").dump());
  }
  get("data_root", o.data_root);
  get("vocab_size", o.vocab_size);
  get("epochs", o.epochs);
  get("batch_size", o.batch_size);
  get("eval_batch_size", o.eval_batch_size);
  get("bptt", o.bptt);
  get("lr", o.lr);
  get("schedule", o.schedule);
  get("lr_decay", o.lr_decay);
  get("clip", o.clip);
  get("weight_decay", o.weight_decay);
  get("seed", o.seed);
  get("limit_train_tokens", o.limit_train_tokens);
  get("limit_eval_tokens", o.limit_eval_tokens);
  get("run_dir", o.run_dir);
  get("threads", o.threads);
  get("device", o.device);
  o.validate();
  return o;
}

// ---- training -----------------------------------------------------------------------------------

json fit_language_model(const LmOptions& o_in) {
  LmOptions o = o_in;
  o.validate();
  clear_stop();
  if (o.threads > 0) at::set_num_threads(static_cast<int>(o.threads));
  const torch::Device device = resolve_device(o.device);
  const auto say = [&](const std::string& s) {
    if (!o.quiet) std::fprintf(stderr, "%s\n", s.c_str());
  };
  const std::string root = data_root_of(o.data_root);
  RunDir dir(o.run_dir);
  const bool has_last = dir.has_last();
  TORCH_CHECK_VALUE(
      !o.resume || has_last, "--resume: nothing to resume in '", o.run_dir,
      "': it has no last.ckpt",
      dir.run_files().empty() ? "" : " (a run there ended before its first epoch did)",
      "; start without --resume");
  // The corpus first: a run that cannot read its data leaves a previous run's files alone.
  const Corpus corpus = load_corpus(root, o.vocab_size, o.limit_train_tokens, o.limit_eval_tokens,
                                    o.batch_size, o.eval_batch_size);
  if (!o.resume) dir.start_fresh(o.overwrite);
  o.model.vocab_size = corpus.text.vocab.size();
  const std::string fingerprint = corpus.text.vocab.fingerprint();
  say("corpus " + root + ": " + std::to_string(corpus.text.train.numel()) + " / " +
      std::to_string(corpus.text.valid.numel()) + " / " + std::to_string(corpus.text.test.numel()) +
      " train / valid / test tokens, vocabulary " + std::to_string(o.model.vocab_size));

  torch::manual_seed(o.seed);
  models::WordLM model(o.model);
  const double zero_init = model->recurrent_zero_fraction();
  model->to(device);
  torch::optim::SGD opt(model->parameters(),
                        torch::optim::SGDOptions(o.lr).weight_decay(o.weight_decay));

  int64_t start_epoch = 0, best_epoch = 0;
  double best_valid = std::numeric_limits<double>::infinity();
  double lr = o.lr, wall_before = 0.0;
  const json options_json = o.to_json();
  if (o.resume) {
    const std::string last = dir.last();
    const auto meta = models::read_module_checkpoint(last, kWordLmKind);
    const json extra = json::parse(meta.info.extra_json);
    std::vector<std::string> warnings;
    const std::string differ =
        extra.contains("options") && extra["options"].is_object()
            ? option_differences(extra["options"], options_json, kPlace, kRounding, warnings)
            : std::string("the checkpoint records no options");
    TORCH_CHECK_VALUE(differ.empty(), "--resume: ", last,
                      " was trained with other options than these, which would change the "
                      "result: ",
                      differ, ". Resume with the run's options (", o.run_dir,
                      "/options.json), or start a new run");
    TORCH_CHECK_VALUE(extra.value("vocab_fingerprint", std::string()) == fingerprint,
                      "--resume: ", last, " was trained on another vocabulary than the corpus in '",
                      root, "' gives");
    models::load_module_checkpoint_into(last, kWordLmKind, *model);
    load_optimizer_state(meta.info.blob, opt, device, last);
    start_epoch = meta.info.epoch;
    best_epoch = extra.value("best_epoch", int64_t{0});
    best_valid = extra.value("best_valid_loss", std::numeric_limits<double>::infinity());
    lr = extra.value("lr_next", o.lr);
    wall_before = extra.value("wall_seconds", 0.0);
    dir.prune_metrics(start_epoch);
    say("resuming " + last + " after epoch " + std::to_string(start_epoch));
    for (const auto& w : warnings) say("warning: " + w);
  } else {
    dir.write_options_json(options_json);
  }
  say("model " + o.model.to_json() + ": " + std::to_string(model->cost().params) +
      " parameters, recurrent zero fraction " + std::to_string(zero_init));

  const int64_t windows = (corpus.train.size(0) - 1 + o.bptt - 1) / o.bptt;
  const double t_run = now_s();
  double last_tps = 0.0;
  EvalOut last_valid;
  int64_t epoch = start_epoch;
  bool stopped = false;
  for (; epoch < o.epochs; ++epoch) {
    model->train();
    torch::manual_seed(epoch_seed(o.seed, epoch));
    Progress prog("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(o.epochs), windows,
                  o.quiet ? nullptr : stderr);
    prog.interval_s = o.progress_interval;
    prog.unit = "tok";
    prog.show_accuracy = false;
    prog.show_perplexity = true;
    std::optional<models::LstmState> state;
    int64_t w = 0;
    for (int64_t start = 0; start < corpus.train.size(0) - 1; start += o.bptt, ++w) {
      if (o.schedule == "cosine") {
        const double t = epoch + static_cast<double>(w) / windows;
        lr = o.lr * 0.5 * (1.0 + std::cos(M_PI * t / static_cast<double>(o.epochs)));
      }
      set_lr(opt, lr);
      auto [x, y] = data::bptt_window(corpus.train, start, o.bptt);
      if (state) state = models::WordLMImpl::detach_state(*state);
      opt.zero_grad();
      auto [logits, next] = model->forward(x.to(device), state);
      const Tensor loss = torch::nn::functional::cross_entropy(logits.view({-1, logits.size(-1)}),
                                                               y.to(device).reshape({-1}));
      loss.backward();
      if (o.clip > 0) torch::nn::utils::clip_grad_norm_(model->parameters(), o.clip);
      opt.step();
      state = next;
      const double l = loss.item<double>();
      TORCH_CHECK(std::isfinite(l), "training diverged at epoch ", epoch + 1, ", window ", w + 1,
                  " (loss ", l, "): lower --lr or --clip; ", dir.last(),
                  " still holds the last good epoch");
      prog.update(y.numel(), l, 0);
    }
    const double train_s = prog.finish();
    last_tps = prog.images_per_second();
    last_valid = evaluate(*model, corpus.valid, o.bptt, device);
    const bool improved = std::isfinite(last_valid.loss) && last_valid.loss < best_valid;
    const double lr_used = lr;
    if (improved) {
      best_valid = last_valid.loss;
      best_epoch = epoch + 1;
    } else if (o.schedule == "plateau") {
      lr /= o.lr_decay;
    }
    const json line = {{"epoch", epoch + 1},
                       {"lr", lr_used},
                       {"train_loss", prog.mean_loss()},
                       {"train_ppl", perplexity(prog.mean_loss())},
                       {"valid_loss", last_valid.loss},
                       {"valid_ppl", perplexity(last_valid.loss)},
                       {"tokens_per_second", last_tps},
                       {"seconds", train_s + last_valid.seconds}};
    dir.append_metrics(line);
    char buf[160];
    std::snprintf(buf, sizeof buf, "  valid: loss %.4f  ppl %.2f  (best %.2f, epoch %lld)",
                  last_valid.loss, perplexity(last_valid.loss), perplexity(best_valid),
                  static_cast<long long>(best_epoch));
    say(buf);
    TORCH_CHECK(std::isfinite(last_valid.loss), "training diverged at epoch ", epoch + 1,
                " (validation loss ", last_valid.loss, "): lower --lr or --clip");
    models::CheckpointInfo info;
    info.epoch = epoch + 1;
    info.metrics = {{"valid_loss", last_valid.loss}, {"train_loss", prog.mean_loss()}};
    info.extra_json =
        json{{"options", options_json},          {"best_epoch", best_epoch},
             {"best_valid_loss", best_valid},    {"lr_next", lr},
             {"vocab_fingerprint", fingerprint}, {"wall_seconds", wall_before + now_s() - t_run}}
            .dump();
    if (improved)
      models::save_module_checkpoint(dir.best(), *model, kWordLmKind, o.model.to_json(), info);
    info.blob = optimizer_state(opt);
    models::save_module_checkpoint(dir.last(), *model, kWordLmKind, o.model.to_json(), info);
    if ((stop_requested() || (o.stop_after > 0 && epoch + 1 >= o.stop_after)) &&
        epoch + 1 < o.epochs) {
      say("stopped after epoch " + std::to_string(epoch + 1) + "; continue with --resume");
      ++epoch;
      stopped = true;
      break;
    }
  }
  const double wall = wall_before + now_s() - t_run;
  json summary = {{"model", json::parse(o.model.to_json())},
                  {"hidden", o.model.hidden()},
                  {"embedding", o.model.embedding()},
                  {"cost", cost_json(*model)},
                  {"zero_fraction_init", zero_init},
                  {"zero_fraction_final", model->recurrent_zero_fraction()},
                  {"corpus",
                   {{"root", root},
                    {"vocab_size", o.model.vocab_size},
                    {"vocab_fingerprint", fingerprint},
                    {"train_tokens", corpus.text.train.numel()},
                    {"valid_tokens", corpus.text.valid.numel()},
                    {"test_tokens", corpus.text.test.numel()},
                    {"train_unk", corpus.text.train_unk},
                    {"valid_unk", corpus.text.valid_unk},
                    {"test_unk", corpus.text.test_unk}}},
                  {"epochs", o.epochs},
                  {"epochs_completed", epoch},
                  {"completed", !stopped},
                  {"best_epoch", best_epoch},
                  {"best_valid_ppl", perplexity(best_valid)},
                  {"train_tokens_per_second", last_tps},
                  {"wall_seconds", wall},
                  {"device", device.str()},
                  {"threads", at::get_num_threads()},
                  {"library_version", kVersion}};
  if (!stopped && best_epoch > 0) {
    models::WordLM best(o.model);
    models::load_module_checkpoint_into(dir.best(), kWordLmKind, *best);
    best->to(device);
    const EvalOut v = evaluate(*best, corpus.valid, o.bptt, device);
    const EvalOut t = evaluate(*best, corpus.test, o.bptt, device);
    summary["valid_ppl"] = perplexity(v.loss);
    summary["test_ppl"] = perplexity(t.loss);
    summary["test_loss"] = t.loss;
    summary["test_tokens_evaluated"] = t.tokens;
    char buf[160];
    std::snprintf(buf, sizeof buf, "best epoch %lld: valid ppl %.2f, test ppl %.2f",
                  static_cast<long long>(best_epoch), perplexity(v.loss), perplexity(t.loss));
    say(buf);
  }
  dir.write_summary(summary);
  return summary;
}

json evaluate_language_model(const std::string& checkpoint, const std::string& data_root,
                             const std::string& split, int64_t eval_batch_size,
                             int64_t limit_tokens, const std::string& device_name) {
  TORCH_CHECK_VALUE(split == "valid" || split == "test", "split must be valid or test, got ",
                    util::printable(split));
  TORCH_CHECK_VALUE(eval_batch_size >= 1, "eval_batch_size must be >= 1, got ", eval_batch_size);
  const auto meta = models::read_module_checkpoint(checkpoint, kWordLmKind);
  const json extra = json::parse(meta.info.extra_json);
  const models::WordLMOptions mo = models::WordLMOptions::from_json(meta.model_json);
  const int64_t vocab = extra.contains("options") ? extra["options"].value("vocab_size", int64_t{0})
                                                  : mo.vocab_size - 1;
  const std::string root = data_root_of(data_root);
  data::TextCorpus text = data::load_austen(root, vocab);
  TORCH_CHECK_VALUE(text.vocab.fingerprint() == extra.value("vocab_fingerprint", std::string()),
                    checkpoint, " was trained on another vocabulary than the corpus in '", root,
                    "' gives");
  const torch::Device device = resolve_device(device_name);
  models::WordLM model(mo);
  models::load_module_checkpoint_into(checkpoint, kWordLmKind, *model);
  model->to(device);
  const Tensor ids = limited(split == "valid" ? text.valid : text.test, limit_tokens);
  const int64_t bptt = extra.contains("options") ? extra["options"].value("bptt", int64_t{35}) : 35;
  const EvalOut r = evaluate(*model, data::batchify(ids, eval_batch_size), bptt, device);
  return {{"checkpoint", checkpoint},
          {"split", split},
          {"tokens", r.tokens},
          {"loss", r.loss},
          {"perplexity", perplexity(r.loss)},
          {"seconds", r.seconds}};
}

}  // namespace wrpn::train
