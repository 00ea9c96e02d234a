#!/usr/bin/env bash
# Builds the library, the programs, the C++ tests and the fuzz targets with AddressSanitizer and
# UndefinedBehaviorSanitizer (clang; the fuzz targets with libFuzzer) into build-sanitize/, CPU
# only, and runs the C++ tests there. Extra arguments go to ctest (e.g. -R data).
#   - LibTorch is not instrumented: ASan still checks every access wrpn's code makes, and its
#     interceptors see every allocation; leak reports are limited to wrpn's code
#     (scripts/sanitize/lsan.supp suppresses LibTorch's process-lifetime allocations).
#   - UBSan: every check except vptr and function (both need RTTI of LibTorch's types across
#     uninstrumented libraries); any finding stops the test (-fno-sanitize-recover).
#   - Left out: the Python tests and the install test (they load libwrpn.so into a process
#     without the sanitizer runtime), CUDA, and the benchmarks.
# Environment: WRPN_SANITIZE_DIR (default build-sanitize), WRPN_JOBS (default nproc),
#              WRPN_TEST_JOBS (default nproc).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DIR="${WRPN_SANITIZE_DIR:-build-sanitize}"
JOBS="${WRPN_JOBS:-$(nproc)}"
log() { printf '[sanitize] %s\n' "$*"; }
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1

WRPN_SETUP_BUILD=0 scripts/setup.sh
if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  log "installing Debian's clang and its sanitizer runtimes"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang libclang-rt-dev >/dev/null
fi
TORCH_PREFIX="$(.venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')"
SAN="-fsanitize=address,undefined -fno-sanitize=vptr,function -fno-sanitize-recover=undefined"
FLAGS="$SAN -fsanitize=fuzzer-no-link -fno-omit-frame-pointer -O1 -g1"
if [[ ! -f "$DIR/CMakeCache.txt" ]]; then
  log "configuring $DIR (clang, ASan + UBSan, libFuzzer targets)"
  mkdir -p "$DIR"
  cmake -S . -B "$DIR" -DCMAKE_BUILD_TYPE=Sanitize \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_C_FLAGS_SANITIZE="$FLAGS" -DCMAKE_CXX_FLAGS_SANITIZE="$FLAGS" \
    -DCMAKE_EXE_LINKER_FLAGS="$SAN" -DCMAKE_SHARED_LINKER_FLAGS="$SAN" \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DWRPN_WITH_CUDA=OFF -DWRPN_FUZZ=ON \
    -DWRPN_BUILD_BENCHMARKS=OFF -DWRPN_PYTHON= >"$DIR/configure.log" 2>&1 \
    || { cat "$DIR/configure.log"; exit 1; }
fi
log "building $DIR with $JOBS jobs"
cmake --build "$DIR" -j "$JOBS"

export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_odr_violation=0:${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$ROOT/scripts/sanitize/lsan.supp:print_suppressions=0:${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
log "running the tests under ASan + UBSan"
ctest --test-dir "$DIR" --output-on-failure -j "${WRPN_TEST_JOBS:-$(nproc)}" \
  -E '^(python\.|install\.)' "$@"
log "clean: no sanitizer finding"
