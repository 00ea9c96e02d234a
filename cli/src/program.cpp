#include <c10/util/Exception.h>
#include <unistd.h>
#include <wrpn/cli/program.h>
#include <wrpn/train/trainer.h>

#include <csignal>
#include <cstdlib>
#include <exception>
#include <iostream>

namespace wrpn::cli {
namespace {

void on_signal(int) {
  static volatile std::sig_atomic_t count = 0;
  if (++count > 1) std::_Exit(130);
  train::request_stop();
  const char msg[] =
      "\nstopping after this epoch (its checkpoint is kept); press again to quit now\n";
  (void)!::write(2, msg, sizeof msg - 1);
}

}  // namespace

int run_main(const std::function<int()>& body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
  }
  return 1;
}

void install_stop_handler() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  // Progress piped into `head` (or a closed terminal) must not kill the run: writes to a closed
  // pipe then fail with EPIPE, the progress is lost and the run goes on writing its files.
  std::signal(SIGPIPE, SIG_IGN);
}

}  // namespace wrpn::cli
