#include <torch/torch.h>
#include <wrpn/models/cost.h>
#include <wrpn/models/registry.h>
#include <wrpn/nn/init.h>
#include <wrpn/nn/saved_codes.h>
#include <wrpn/train/distributed.h>
#include <wrpn/train/trainer.h>
#include <wrpn/version.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <memory>

#include "batches.h"
#include "evaluate.h"
#include "param_groups.h"
#include "run_dir.h"
#include "teacher.h"

namespace wrpn::train {
namespace {

using nlohmann::json;

std::atomic<bool> g_stop{false};

/// One fit() call: the options, the data, the models and the optimizer.
struct Run {
  const TrainOptions& o;
  const TrainHooks& hooks;
  std::shared_ptr<DataParallel> dp;
  torch::Device device;
  RunDir dir;
  Say say;
  Splits data;
  models::Classifier model{};
  std::unique_ptr<Teacher> teacher{};
  ParamGroups groups{};
  std::unique_ptr<torch::optim::SGD> opt{};
  ResumeState state{};
  int64_t n_params = 0;
  double init_zero_fraction = 0.0;

  int rank() const { return dp ? dp->rank() : 0; }
  int world() const { return dp ? dp->world_size() : 1; }

  EvalSetup eval_setup() const {
    EvalSetup s{o.limit_test, device, o.eval_batch_size, o.workers, o.amp};
    if (dp) {
      s.rank = dp->rank();
      s.world = dp->world_size();
      s.reduce = [d = dp](std::vector<double>& v) { v = d->sum_over_ranks(v); };
    }
    return s;
  }
};

/// What an epoch's batches measured.
struct EpochResult {
  double lr = 0.0;
  double mean_loss = 0.0;
  double accuracy = 0.0;
  double seconds = 0.0;
  double images_per_second = 0.0;
};

models::Classifier create_student(const TrainOptions& o, const Splits& data) {
  models::ModelSpec spec;
  spec.name = o.model;
  spec.num_classes = data.train.num_classes();
  spec.in_channels = data.train.channels();
  spec.precision = o.precision;
  spec.init = nn::weight_init_from_string(o.resolved_init());
  models::Classifier model = models::create_model(spec);
  nn::set_pack_saved_inputs(*model, o.packed_activations);
  nn::set_recompute_bn_inputs(*model, o.recompute_bn_input);
  return model;
}

int64_t count_parameters(const models::ClassifierImpl& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters()) n += p.numel();
  return n;
}

void say_start(const Run& r) {
  const TrainOptions& o = r.o;
  r.say("wrpn " + std::string(kVersion) + ": " + o.model + " " + o.precision.short_name() + " on " +
        o.dataset + " (" + std::to_string(r.data.n_train) + " train / " +
        std::to_string(r.data.n_test) + " test images), " + std::to_string(r.n_params) +
        " parameters, device " + r.device.str() + ", " + std::to_string(at::get_num_threads()) +
        " threads" +
        (r.dp ? ", data-parallel over " + std::to_string(r.world()) + " ranks (" + r.dp->backend() +
                    "), " + std::to_string(o.batch_size / r.world()) + " images per rank per step"
              : std::string()));
  const std::string init_name =
      o.distill_scheme == "C"
          ? "loaded from " + (o.student_init.empty() ? o.teacher : o.student_init)
          : o.resolved_init();
  char buf[256];
  std::snprintf(buf, sizeof buf, "quantized weights at zero after init (%s): %.1f%%",
                init_name.c_str(), 100.0 * r.init_zero_fraction);
  r.say(buf);
}

/// Data-parallel: every rank must run the same options, and --resume must find the same
/// last.ckpt everywhere (the run directory on a filesystem every rank reads).
void check_ranks_agree(Run& r, bool resuming) {
  const auto opts = r.dp->all_gather_strings(r.o.to_json().dump());
  const json ref = json::parse(opts[0]);
  for (int k = 1; k < r.world(); ++k) {
    const json mine = json::parse(opts[k]);
    for (const auto& [key, value] : ref.items()) {
      const json other = mine.contains(key) ? mine[key] : json();
      TORCH_CHECK_VALUE(other == value, "the ranks were given different options: ", key, " is ",
                        value.dump(), " on rank 0 but ", other.dump(), " on rank ", k,
                        " (launch every rank with the same flags)");
    }
  }
  const auto has = r.dp->all_gather_strings(resuming ? "1" : "0");
  for (int k = 1; k < r.world(); ++k) {
    TORCH_CHECK_VALUE(has[k] == has[0], "--resume: rank 0 ",
                      has[0] == "1" ? "found" : "did not find", " ", r.dir.last(), " but rank ", k,
                      has[k] == "1" ? " found it" : " did not",
                      "; every rank must see the same run directory (one machine or a shared "
                      "filesystem)");
  }
}

/// Builds everything a run needs, in the order that fixes its random numbers: the seed, the
/// student, the teacher, then (resuming) the state of last.ckpt.
void prepare(Run& r) {
  const TrainOptions& o = r.o;
  r.model = create_student(o, r.data);
  const bool has_last = r.dir.has_last();
  TORCH_CHECK_VALUE(
      !o.resume || has_last, "--resume: nothing to resume in '", o.run_dir,
      "': it has no last.ckpt",
      r.dir.run_files().empty() ? "" : " (a run there ended before its first epoch did)",
      "; start without --resume, or pass --auto-resume to continue when there is "
      "something to continue and start fresh otherwise");
  const bool resuming = (o.resume || o.auto_resume) && has_last;
  if (r.dp) check_ranks_agree(r, resuming);
  r.teacher = Teacher::make(o, r.model->spec(), r.dir, r.device);
  if (r.teacher) r.teacher->prepare_student(*r.model);
  // Over every quantized weight, as the cost report defines it.
  r.init_zero_fraction = models::cost_report(*r.model, 0, 0, false).totals.zero_fraction;
  r.model->to(r.device);
  r.n_params = count_parameters(*r.model);
  r.groups = make_param_groups(
      *r.model, o, r.teacher ? r.teacher->trainable_parameters() : std::vector<torch::Tensor>{});
  r.opt = std::make_unique<torch::optim::SGD>(r.groups.groups, sgd_options(o));
  if (resuming) {
    r.state = r.dir.resume(*r.model, *r.opt, r.teacher.get(), o, r.device);
    r.say("resuming " + r.dir.last() + " after epoch " + std::to_string(r.state.start_epoch));
    for (const auto& w : r.state.warnings) r.say("warning: " + w);
  } else {
    r.dir.start_fresh(o.overwrite);
  }
  if (r.dp) {
    if (resuming) {
      const auto epochs = r.dp->all_gather_strings(std::to_string(r.state.start_epoch));
      for (int k = 1; k < r.world(); ++k) {
        TORCH_CHECK_VALUE(epochs[k] == epochs[0], "--resume: rank ", k, " read ", r.dir.last(),
                          " at epoch ", epochs[k], " but rank 0 at epoch ", epochs[0],
                          "; every rank must read the same run directory");
      }
    }
    // Rank 0's parameters and buffers everywhere, then gradients averaged by c10d's Reducer.
    r.dp->broadcast_module(*r.model);
    r.dp->attach_gradients(r.model->parameters());
  }
  r.dir.write_options(o);
  say_start(r);
  if (r.teacher) {
    auto test = r.eval_setup();
    r.teacher->start(*r.model, r.data.test, test, resuming, r.say);
  }
}

/// One pass over the shuffled training images.
EpochResult train_epoch(Run& r, int64_t epoch) {
  const TrainOptions& o = r.o;
  const int64_t n_train = r.data.n_train;
  r.model->train();
  r.data.train.set_epoch(epoch);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed * 1000003ULL + epoch + 1);
  const auto perm = torch::randperm(n_train, gen, torch::kLong);
  // Global batches of o.batch_size (a last one of one image per rank folded into the one
  // before); each rank takes positions rank, rank + world, ... of each.
  const auto plan = epoch_batches(n_train, o.batch_size, r.world());
  TORCH_CHECK_VALUE(!plan.empty(), "no training batch: ", n_train, " training images for ",
                    r.world(), " ranks");
  const auto batches = static_cast<int64_t>(plan.size());
  Progress prog("epoch " + std::to_string(epoch + 1) + "/" + std::to_string(o.epochs), batches,
                o.quiet || r.rank() != 0 ? nullptr : stderr);
  double lr = o.schedule.base_lr;
  if (r.teacher) r.teacher->begin_epoch();
  const bool teacher_used = r.teacher && r.teacher->used();
  for (int64_t b = 0; b < batches; ++b) {
    const auto [lo, hi] = plan[b];
    const auto idx = shard(perm.slice(0, lo, hi), r.rank(), r.world());
    const int64_t n_local = idx.size(0);
    auto batch = get_batch(r.data.train, idx, epoch, o.workers);
    const auto x = batch.data.to(r.device), y = batch.target.to(r.device);
    // DDP's default: every rank starts the step with rank 0's BatchNorm statistics.
    if (r.dp) r.dp->broadcast_buffers(*r.model);
    lr = o.schedule.at(epoch + static_cast<double>(b) / batches, o.epochs);
    set_learning_rate(*r.opt, r.groups.mult, lr);
    r.opt->zero_grad();
    torch::Tensor logits, teacher_logits;
    {
      Autocast ac(o.amp && r.device.is_cuda());
      logits = r.model->forward(x);
      if (teacher_used) teacher_logits = r.teacher->forward(x);
    }
    logits = logits.to(torch::kFloat);
    const torch::Tensor loss =
        r.teacher ? r.teacher->loss(teacher_logits, logits, y, n_local)
                  : torch::nn::functional::cross_entropy(
                        logits, y,
                        torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(
                            o.label_smoothing));
    double loss_v = loss.item<double>();
    int64_t correct = topk_correct(logits.detach(), y, 1);
    if (r.dp) {
      // The global batch's mean loss and accuracy, the same on every rank (so is the check).
      const auto sums = r.dp->sum_over_ranks(
          {loss_v * n_local, static_cast<double>(correct), static_cast<double>(n_local)});
      loss_v = sums[0] / sums[2];
      correct = static_cast<int64_t>(sums[1]);
      r.dp->prepare_for_backward(loss);
    }
    TORCH_CHECK(std::isfinite(loss_v), "the training loss became ", loss_v, " at epoch ", epoch + 1,
                ", batch ", b + 1, "; try a lower --lr (now ", lr, ")");
    loss.backward();
    if (r.hooks.sync_gradients) r.hooks.sync_gradients(*r.opt);
    r.opt->step();
    prog.update(hi - lo, loss_v, correct);
    if (r.hooks.on_step) r.hooks.on_step(StepInfo{epoch, b, batches, hi - lo, loss_v, lr});
  }
  EpochResult e;
  e.lr = lr;
  e.seconds = prog.finish();
  e.images_per_second = prog.images_per_second();
  e.mean_loss = prog.mean_loss();
  e.accuracy = prog.accuracy();
  return e;
}

/// The checkpoint record of the epoch just finished (best so far, wall time, options).
models::CheckpointInfo checkpoint_info(const Run& r, int64_t epoch_done, const EvalResult& ev,
                                       double wall_seconds) {
  models::CheckpointInfo info;
  info.epoch = epoch_done;
  info.metrics = eval_json(ev, "test_");
  json extra = {{"best_top1", r.state.best_top1},
                {"best_top5", r.state.best_top5},
                {"best_epoch", r.state.best_epoch},
                {"wall_seconds", wall_seconds},
                {"options", r.o.to_json()}};
  if (r.teacher) extra["distill"] = r.teacher->describe();
  info.extra_json = extra.dump();
  return info;
}

/// Trains the epochs left, evaluating, logging and checkpointing each; returns the last
/// evaluation, the epochs done and the last epoch's images/s.
int64_t run_epochs(Run& r, EvalResult& ev, double& last_ips, double t_run) {
  const TrainOptions& o = r.o;
  int64_t epoch = r.state.start_epoch;
  for (; epoch < o.epochs; ++epoch) {
    const EpochResult e = train_epoch(r, epoch);
    // Each rank's last step updated its own BatchNorm statistics: evaluate with rank 0's.
    if (r.dp) r.dp->broadcast_buffers(*r.model);
    last_ips = e.images_per_second;
    ev = evaluate(*r.model, r.data.test, r.eval_setup());
    if (r.hooks.on_evaluate) r.hooks.on_evaluate(epoch + 1, ev);
    const double teacher_s = r.teacher ? r.teacher->evaluate_epoch(r.data.test, r.eval_setup()) : 0;
    // A diverged model (NaN or infinite test loss) is never the best, whatever its accuracy.
    const bool improved = std::isfinite(ev.loss) && ev.top1 > r.state.best_top1;
    if (improved) {
      r.state.best_top1 = ev.top1;
      r.state.best_top5 = ev.top5;
      r.state.best_epoch = epoch + 1;
    }
    json line = {{"epoch", epoch + 1},           {"lr", e.lr},
                 {"train_loss", e.mean_loss},    {"train_top1", e.accuracy},
                 {"test_loss", ev.loss},         {"test_top1", ev.top1},
                 {"test_top5", ev.top5},         {"seconds", e.seconds + ev.seconds + teacher_s},
                 {"images_per_second", last_ips}};
    if (r.teacher) r.teacher->add_epoch_metrics(line, r.data.n_train);
    r.dir.append_metrics(line);
    char buf[160];
    std::snprintf(buf, sizeof buf, "  test: loss %.4f  top-1 %.2f%%  top-5 %.2f%%  (best %.2f%%)",
                  ev.loss, 100 * ev.top1, 100 * ev.top5, 100 * r.state.best_top1);
    r.say(buf);
    const auto info = checkpoint_info(r, epoch + 1, ev, r.state.wall_before + now_s() - t_run);
    if (improved) r.dir.save_best(*r.model, info);
    if (r.teacher) r.teacher->end_epoch(epoch + 1, r.say);
    r.dir.save_last(*r.model, info, *r.opt, r.teacher.get());
    bool stop_now = g_stop.load() || (o.stop_after > 0 && epoch + 1 >= o.stop_after);
    // A signal may reach some ranks only: they stop together.
    if (r.dp) stop_now = r.dp->sum_over_ranks({stop_now ? 1.0 : 0.0})[0] > 0;
    if (stop_now && epoch + 1 < o.epochs) {
      r.say("stopped after epoch " + std::to_string(epoch + 1) + "; continue with --resume");
      return epoch + 1;
    }
  }
  return epoch;
}

json summary_json(Run& r, int64_t epoch, const EvalResult& ev, double last_ips, double wall) {
  const TrainOptions& o = r.o;
  const auto report = models::cost_report(*r.model, 0, 0, true);
  json summary = {{"model", o.model},
                  {"dataset", o.dataset},
                  {"train_images", r.data.n_train},
                  {"test_images", r.data.n_test},
                  {"seed", o.seed},
                  {"precision", json::parse(o.precision.to_json(-1))},
                  {"precision_name", o.precision.short_name()},
                  {"spec", json::parse(r.model->spec().to_json(-1))},
                  {"parameters", r.n_params},
                  {"epochs", o.epochs},
                  {"epochs_completed", std::min(epoch, o.epochs)},
                  {"completed", epoch >= o.epochs},
                  {"best_top1", r.state.best_top1},
                  {"best_top5", r.state.best_top5},
                  {"best_epoch", r.state.best_epoch},
                  {"final_top1", ev.top1},
                  {"final_top5", ev.top5},
                  {"final_test_loss", ev.loss},
                  {"train_images_per_second", last_ips},
                  {"wall_seconds", wall},
                  {"bit_ops", report.totals.bit_ops},
                  {"macs", report.totals.macs},
                  {"weight_storage_bytes", report.totals.storage_bits / 8},
                  {"zero_fraction_init", r.init_zero_fraction},
                  {"zero_fraction_final", report.totals.zero_fraction},
                  {"quantized_lr_mult", r.groups.lr_mults},
                  {"device", r.device.str()},
                  {"world_size", r.world()},
                  {"backend", r.dp ? json(r.dp->backend()) : json()},
                  {"batch_size_per_rank", o.batch_size / r.world()},
                  {"train_images_per_second_per_rank", last_ips / r.world()},
                  {"library_version", kVersion}};
  if (r.teacher) summary["distill"] = r.teacher->describe();
  if (report.baseline) {
    summary["baseline_fp32_1x"] = {{"bit_ops", report.baseline->bit_ops},
                                   {"weight_storage_bytes", report.baseline->storage_bits / 8}};
  }
  return summary;
}

}  // namespace

void request_stop() { g_stop.store(true); }
bool stop_requested() { return g_stop.load(); }
void clear_stop() { g_stop.store(false); }

json fit(const TrainOptions& o, const TrainHooks& hooks, std::shared_ptr<DataParallel> dp) {
  o.validate();
  g_stop.store(false);
  if (o.threads > 0) at::set_num_threads(static_cast<int>(o.threads));
  torch::manual_seed(o.seed);
  torch::Device device = resolve_device(o.device);
  const bool main_rank = !dp || dp->is_main();
  if (dp) {
    TORCH_CHECK_VALUE(dp->device().type() == device.type(), "--device ", o.device, " is ",
                      device.str(), " but the data-parallel group runs on ", dp->device().str());
    device = dp->device();
    TORCH_CHECK_VALUE(o.batch_size % dp->world_size() == 0, "--batch-size ", o.batch_size,
                      " is the global batch and must be a multiple of the world size ",
                      dp->world_size());
    TORCH_CHECK_VALUE(o.batch_size / dp->world_size() >= 2, "--batch-size ", o.batch_size,
                      " leaves ", o.batch_size / dp->world_size(),
                      " image per rank; BatchNorm needs at least 2 per rank");
    TORCH_CHECK_VALUE(o.distill_scheme.empty(),
                      "distillation (--distill-scheme) is not supported in data-parallel runs");
  }
  RunDir dir(o.run_dir, main_rank);
  Say say = [quiet = o.quiet || !main_rank](const std::string& s) {
    if (!quiet) std::fprintf(stderr, "%s\n", s.c_str());
  };
  Run r{o, hooks, dp, device, std::move(dir), std::move(say), open_splits(o)};
  prepare(r);

  const double t_run = now_s();
  EvalResult ev;
  double last_ips = 0.0;
  const int64_t epoch = run_epochs(r, ev, last_ips, t_run);
  const bool trained = r.state.start_epoch < o.epochs;
  if (!trained) {
    // Nothing left to train: report the checkpoint's own accuracy.
    ev = evaluate(*r.model, r.data.test, r.eval_setup());
  }
  if (r.teacher) r.teacher->finish(trained, r.data.test, r.eval_setup());
  const json summary = summary_json(r, epoch, ev, last_ips, r.state.wall_before + now_s() - t_run);
  r.dir.write_summary(summary);
  if (r.dp) {
    r.dp->detach_gradients();
    r.dp->barrier();  // rank 0 (the store's host) leaves last
  }
  return summary;
}

}  // namespace wrpn::train
