#!/usr/bin/env bash
# Sets up (if needed) and runs the whole test suite through CTest. Extra arguments go to ctest,
# e.g. scripts/test.sh -L cuda or scripts/test.sh -R quantize.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
BUILD_DIR="${WRPN_BUILD_DIR:-build}"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${WRPN_TEST_JOBS:-$(nproc)}" "$@"
