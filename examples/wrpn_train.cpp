// wrpn_train: trains a zoo model at any precision on digits, Fashion-MNIST, CIFAR-10 or an image
// folder. Writes metrics.jsonl, summary.json and atomic last/best checkpoints into --run-dir;
// --resume continues an interrupted run to the result it would have reached; a run directory has
// one owner at a time and a fresh run never replaces a previous one without --overwrite. Under
// torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set) it trains data-parallel on c10d.

#include <c10/util/Exception.h>
#include <wrpn/cli/flags.h>
#include <wrpn/cli/program.h>
#include <wrpn/train/distributed.h>
#include <wrpn/train/trainer.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

namespace {

std::string message_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

/// A data-parallel rank that failed: says why (naming the rank to blame), tells the others,
/// and exits at once; a process group torn down by destructors could wait on dead peers.
[[noreturn]] void fail_rank(wrpn::train::DataParallel& dp, const std::exception& e) {
  const std::string what = message_of(e);
  // A failed collective or store request may be a peer's fault; any other error is this rank's.
  const bool comm = dynamic_cast<const c10::DistError*>(&e) != nullptr ||
                    what.find("gloo/") != std::string::npos ||
                    what.find("NCCL") != std::string::npos ||
                    what.find("Timed out") != std::string::npos;
  std::string msg = comm ? dp.explain_failure(what) : std::string();
  if (msg.empty()) {
    dp.report_failure(what);
    msg = "rank " + std::to_string(dp.rank()) + ": " + what;
  }
  std::cerr << "error: " << msg << std::endl;
  std::fflush(nullptr);
  std::_Exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  return wrpn::cli::run_main([&] {
    wrpn::train::TrainOptions o;
    wrpn::cli::load_config_arg(argc, argv, o);
    CLI::App app{"Train a wide reduced-precision network (WRPN, arXiv 1709.01134)", "wrpn_train"};
    wrpn::cli::take_last_value(app);
    const wrpn::cli::TrainFlags flags(app, o);
    if (const auto rc = wrpn::cli::parse(app, argc, argv)) return *rc;
    flags.finish();
    wrpn::cli::install_stop_handler();
    wrpn::train::DataParallelOptions dpo;
    dpo.backend = o.dist_backend;
    dpo.timeout_s = o.dist_timeout;
    const auto dp =
        wrpn::train::DataParallel::from_environment(wrpn::train::resolve_device(o.device), dpo);
    nlohmann::json summary;
    try {
      summary = wrpn::train::fit(o, {}, dp);
    } catch (const std::exception& e) {
      if (!dp) throw;
      fail_rank(*dp, e);
    }
    if (!dp || dp->is_main()) std::cout << summary.dump(2) << std::endl;
    return summary.value("completed", false) ? 0 : 3;
  });
}
