#!/usr/bin/env bash
# Sets up a fresh machine and builds wrpn into build/ (Release). Idempotent: a second run only
# rebuilds what changed.
#   - Debian -dev packages the build needs (Catch2, fmt, nlohmann_json, ccache, image codecs)
#   - .venv/ with torch==2.11.0 from PyPI (LibTorch is taken from it)
#   - the headers of c10d's Gloo backend (Debian's libgloo-dev, unpacked into third_party/root)
#   - the built-in digits dataset (from Debian's python3-sklearn package file, not installed)
#   - cmake configure + build; CUDA kernels too whenever nvcc is found (no GPU needed)
# Environment: WRPN_BUILD_DIR (default build), WRPN_BUILD_TYPE (default Release),
#              WRPN_JOBS (default nproc), WRPN_SKIP_APT=1 to skip the package step,
#              WRPN_SETUP_BUILD=0 to stop before the build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${WRPN_BUILD_DIR:-build}"
BUILD_TYPE="${WRPN_BUILD_TYPE:-Release}"
JOBS="${WRPN_JOBS:-$(nproc)}"
TORCH_VERSION="2.11.0"
log() { printf '[setup] %s\n' "$*"; }
# ccache: paths under the checkout hash as relative ones, so every clone shares the cache.
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1

# 1. Debian packages (only the missing ones).
APT_PACKAGES=(cmake g++ catch2 libfmt-dev nlohmann-json3-dev ccache python3-venv
              zlib1g-dev libjpeg-dev libpng-dev libcli11-dev)
if [[ "${WRPN_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# 1b. Headers of c10d's Gloo backend: Debian's libgloo-dev, unpacked (not installed) into
#     third_party/root; the torch wheel ships none, and its libtorch_cpu holds the code.
GLOO_DEB_DIR=third_party/debs
if [[ ! -f third_party/root/usr/include/gloo/config.h && ! -f /usr/include/gloo/config.h ]]; then
  mkdir -p "$GLOO_DEB_DIR" third_party/root
  if ! ls "$GLOO_DEB_DIR"/libgloo-dev_*.deb >/dev/null 2>&1; then
    log "downloading Debian's libgloo-dev (headers only, not installed)"
    (cd "$GLOO_DEB_DIR" && apt-get download -q libgloo-dev >/dev/null 2>&1) || {
      SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
      $SUDO apt-get update -qq || true
      (cd "$GLOO_DEB_DIR" && apt-get download -q libgloo-dev >/dev/null)
    }
  fi
  dpkg -x "$(ls "$GLOO_DEB_DIR"/libgloo-dev_*.deb | head -n1)" third_party/root
  [[ -f third_party/root/usr/include/gloo/config.h ]] || { echo "libgloo-dev has no gloo/config.h" >&2; exit 1; }
fi

# 2. Python virtual environment with LibTorch.
PY=.venv/bin/python
if [[ ! -x "$PY" ]]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  log "installing torch==$TORCH_VERSION into .venv (pip's cache makes later runs fast)"
  "$PY" -m pip install -q "torch==$TORCH_VERSION" numpy
fi
TORCH_PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"

# 3. Data (optional pieces live in their own script).
if [[ -x scripts/fetch_data.sh ]]; then scripts/fetch_data.sh; fi

# 4. Configure and build (WRPN_SETUP_BUILD=0: stop here, for scripts that build elsewhere).
if [[ "${WRPN_SETUP_BUILD:-1}" == 0 ]]; then
  log "done (no build: WRPN_SETUP_BUILD=0)"
  exit 0
fi
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  log "configuring $BUILD_DIR ($BUILD_TYPE)"
  mkdir -p "$BUILD_DIR"
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DWRPN_PYTHON="$ROOT/$PY" >"$BUILD_DIR/configure.log" 2>&1 \
    || { cat "$BUILD_DIR/configure.log"; exit 1; }
fi
log "building $BUILD_DIR with $JOBS jobs"
cmake --build "$BUILD_DIR" -j "$JOBS"
log "done: $BUILD_DIR"
