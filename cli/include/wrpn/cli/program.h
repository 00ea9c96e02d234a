#pragma once
/// What every program's main does around its work: errors as one line and exit code 1, and a
/// graceful stop on SIGINT/SIGTERM.

#include <functional>

namespace wrpn::cli {

/// Runs `body`, turning exceptions into a one-line message on stderr and exit code 1.
int run_main(const std::function<int()>& body);

/// SIGINT/SIGTERM: the first asks a running wrpn::train::fit() to stop after its epoch (its
/// checkpoint is kept), a second exits at once.
void install_stop_handler();

}  // namespace wrpn::cli
