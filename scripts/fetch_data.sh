#!/usr/bin/env bash
# Fetches the built-in data into data/ (git-ignored) from Debian's python3-sklearn package file,
# without installing the package:
#   data/digits/digits.csv.gz          the 1,797 8x8 handwritten digits (64 pixels 0..16, label)
#   data/sample_images/china.jpg       two 640x427 camera JPEGs, for the decoder tests
#   data/sample_images/flower.jpg
# Idempotent: does nothing when the files are already there.
# Environment: WRPN_DATA_DIR (default <repo>/data).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${WRPN_DATA_DIR:-$ROOT/data}"
log() { printf '[fetch_data] %s\n' "$*"; }
die() { printf '[fetch_data] error: %s\n' "$*" >&2; exit 1; }

DIGITS="$DATA/digits/digits.csv.gz"
IMAGES=(china.jpg flower.jpg)
EXPECTED_ROWS=1797

count_rows() { gzip -dc "$1" 2>/dev/null | grep -c . || true; }

have_all() {
  [[ -s "$DIGITS" ]] || return 1
  local f
  for f in "${IMAGES[@]}"; do [[ -s "$DATA/sample_images/$f" ]] || return 1; done
  [[ "$(count_rows "$DIGITS")" == "$EXPECTED_ROWS" ]]
}

if have_all; then
  log "data already present in $DATA"
  exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: the data comes from Debian's python3-sklearn"
command -v dpkg >/dev/null || die "dpkg not found: the data comes from Debian's python3-sklearn"
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# apt's download sandbox user must be able to write into the target directory.
[[ $(id -u) -eq 0 ]] && chown _apt "$TMP" 2>/dev/null || true

download() { (cd "$TMP" && apt-get download -q python3-sklearn >/dev/null 2>"$TMP/apt.err"); }
log "downloading python3-sklearn (package file only, not installed)"
if ! download; then
  log "apt-get download failed; updating the package lists and retrying"
  $SUDO apt-get update -qq || true
  download || { cat "$TMP/apt.err" >&2; die "could not download python3-sklearn"; }
fi
DEB="$(ls "$TMP"/python3-sklearn_*.deb 2>/dev/null | head -n1)"
[[ -n "$DEB" ]] || die "apt-get download left no python3-sklearn .deb in $TMP"

dpkg -x "$DEB" "$TMP/x"
PKG="$(find "$TMP/x" -type d -path '*/sklearn/datasets' | head -n1)"
[[ -n "$PKG" ]] || die "no sklearn/datasets directory in $(basename "$DEB")"

mkdir -p "$DATA/digits" "$DATA/sample_images"
SRC="$PKG/data/digits.csv.gz"
[[ -f "$SRC" ]] || die "$(basename "$DEB") has no sklearn/datasets/data/digits.csv.gz"
rows="$(count_rows "$SRC")"
[[ "$rows" == "$EXPECTED_ROWS" ]] || die "$SRC has $rows rows, expected $EXPECTED_ROWS"
cp "$SRC" "$DIGITS.tmp" && mv "$DIGITS.tmp" "$DIGITS"
for f in "${IMAGES[@]}"; do
  [[ -f "$PKG/images/$f" ]] || die "$(basename "$DEB") has no sklearn/datasets/images/$f"
  cp "$PKG/images/$f" "$DATA/sample_images/$f.tmp" && mv "$DATA/sample_images/$f.tmp" "$DATA/sample_images/$f"
done
log "wrote $DIGITS ($rows rows) and ${IMAGES[*]} to $DATA/sample_images"
