#!/usr/bin/env bash
# Fetches the built-in data into data/ (git-ignored) from Debian's package files, without
# installing the packages (apt-get download + dpkg -x):
#   python3-sklearn:
#     data/digits/digits.csv.gz          the 1,797 8x8 handwritten digits (64 pixels 0..16, label)
#     data/sample_images/china.jpg       two 640x427 camera JPEGs, for the decoder tests
#     data/sample_images/flower.jpg
#   dataset-fashion-mnist:
#     data/fashion_mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz
#                                        Fashion-MNIST: 60,000 training and 10,000 test 28x28 images
#   r-cran-janeaustenr:
#     data/austen/<novel>.txt            Jane Austen's six novels, one line of the text a line, read
#                                        out of the package's R lazy-load database by
#                                        scripts/austen_text.py (no R needed)
# Idempotent: a dataset already there (and whole) is not fetched again.
# Environment: WRPN_DATA_DIR (default <repo>/data).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${WRPN_DATA_DIR:-$ROOT/data}"
log() { printf '[fetch_data] %s\n' "$*"; }
die() { printf '[fetch_data] error: %s\n' "$*" >&2; exit 1; }

DIGITS="$DATA/digits/digits.csv.gz"
IMAGES=(china.jpg flower.jpg)
EXPECTED_ROWS=1797
FASHION="$DATA/fashion_mnist"
FASHION_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
  t10k-labels-idx1-ubyte.gz)
# Uncompressed sizes: 16-byte image headers + 28*28 bytes an image, 8-byte label headers + 1 a label.
declare -A FASHION_BYTES=(
  [train-images-idx3-ubyte.gz]=47040016 [train-labels-idx1-ubyte.gz]=60008
  [t10k-images-idx3-ubyte.gz]=7840016 [t10k-labels-idx1-ubyte.gz]=10008)

AUSTEN="$DATA/austen"
# Lines of each novel in janeaustenr 1.0.0.
declare -A AUSTEN_LINES=(
  [sensesensibility]=12624 [prideprejudice]=13030 [mansfieldpark]=15349 [emma]=16235
  [northangerabbey]=7856 [persuasion]=8328)

count_rows() { gzip -dc "$1" 2>/dev/null | grep -c . || true; }
gz_bytes() { gzip -dc "$1" 2>/dev/null | wc -c || true; }

have_digits() {
  [[ -s "$DIGITS" ]] || return 1
  local f
  for f in "${IMAGES[@]}"; do [[ -s "$DATA/sample_images/$f" ]] || return 1; done
  [[ "$(count_rows "$DIGITS")" == "$EXPECTED_ROWS" ]]
}

have_fashion() {
  local f
  for f in "${FASHION_FILES[@]}"; do
    [[ -s "$FASHION/$f" ]] || return 1
    [[ "$(gz_bytes "$FASHION/$f")" == "${FASHION_BYTES[$f]}" ]] || return 1
  done
}

have_austen() {
  local n
  for n in "${!AUSTEN_LINES[@]}"; do
    [[ -s "$AUSTEN/$n.txt" ]] || return 1
    [[ "$(wc -l < "$AUSTEN/$n.txt")" == "${AUSTEN_LINES[$n]}" ]] || return 1
  done
}

if have_digits && have_fashion && have_austen; then
  log "data already present in $DATA"
  exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found: the data comes from Debian's packages"
command -v dpkg >/dev/null || die "dpkg not found: the data comes from Debian's packages"
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
# apt's download sandbox user must be able to write into the target directory.
[[ $(id -u) -eq 0 ]] && chown _apt "$TMP" 2>/dev/null || true

UPDATED=0
# extract <package>: downloads the package file and unpacks it into $TMP/<package>; prints that dir.
extract() {
  local pkg="$1" deb
  download() { (cd "$TMP" && apt-get download -q "$pkg" >/dev/null 2>"$TMP/apt.err"); }
  log "downloading $pkg (package file only, not installed)" >&2
  if ! download; then
    if [[ $UPDATED == 0 ]]; then
      log "apt-get download failed; updating the package lists and retrying" >&2
      $SUDO apt-get update -qq >&2 || true
      UPDATED=1
    fi
    download || { cat "$TMP/apt.err" >&2; die "could not download $pkg"; }
  fi
  deb="$(ls "$TMP/${pkg}"_*.deb 2>/dev/null | head -n1)"
  [[ -n "$deb" ]] || die "apt-get download left no $pkg .deb in $TMP"
  dpkg -x "$deb" "$TMP/$pkg"
  echo "$TMP/$pkg"
}

# Copies $1 to $2 through a temporary file, so an interrupted copy leaves no partial file.
install_file() { cp "$1" "$2.tmp" && mv "$2.tmp" "$2"; }

if ! have_digits; then
  X="$(extract python3-sklearn)"
  PKG="$(find "$X" -type d -path '*/sklearn/datasets' | head -n1)"
  [[ -n "$PKG" ]] || die "no sklearn/datasets directory in python3-sklearn"
  mkdir -p "$DATA/digits" "$DATA/sample_images"
  SRC="$PKG/data/digits.csv.gz"
  [[ -f "$SRC" ]] || die "python3-sklearn has no sklearn/datasets/data/digits.csv.gz"
  rows="$(count_rows "$SRC")"
  [[ "$rows" == "$EXPECTED_ROWS" ]] || die "$SRC has $rows rows, expected $EXPECTED_ROWS"
  install_file "$SRC" "$DIGITS"
  for f in "${IMAGES[@]}"; do
    [[ -f "$PKG/images/$f" ]] || die "python3-sklearn has no sklearn/datasets/images/$f"
    install_file "$PKG/images/$f" "$DATA/sample_images/$f"
  done
  log "wrote $DIGITS ($rows rows) and ${IMAGES[*]} to $DATA/sample_images"
fi

if ! have_fashion; then
  X="$(extract dataset-fashion-mnist)"
  SRC="$X/usr/share/datasets/fashion-mnist"
  [[ -d "$SRC" ]] || die "dataset-fashion-mnist has no usr/share/datasets/fashion-mnist/"
  mkdir -p "$FASHION"
  for f in "${FASHION_FILES[@]}"; do
    [[ -f "$SRC/$f" ]] || die "dataset-fashion-mnist has no $f"
    n="$(gz_bytes "$SRC/$f")"
    [[ "$n" == "${FASHION_BYTES[$f]}" ]] ||
      die "$f in dataset-fashion-mnist holds $n bytes uncompressed, expected ${FASHION_BYTES[$f]}"
    install_file "$SRC/$f" "$FASHION/$f"
  done
  log "wrote ${FASHION_FILES[*]} to $FASHION"
fi

if ! have_austen; then
  X="$(extract r-cran-janeaustenr)"
  PKG="$(find "$X" -type d -path '*/site-library/janeaustenr' | head -n1)"
  [[ -n "$PKG" ]] || die "r-cran-janeaustenr has no site-library/janeaustenr directory"
  command -v python3 >/dev/null || die "python3 is needed to read janeaustenr's R data"
  mkdir -p "$AUSTEN"
  python3 "$ROOT/scripts/austen_text.py" "$PKG" "$TMP/austen" >/dev/null ||
    die "could not read the novels out of $PKG/data/Rdata.rdb"
  for n in "${!AUSTEN_LINES[@]}"; do
    lines="$(wc -l < "$TMP/austen/$n.txt")"
    [[ "$lines" == "${AUSTEN_LINES[$n]}" ]] ||
      die "$n from r-cran-janeaustenr has $lines lines, expected ${AUSTEN_LINES[$n]}"
    install_file "$TMP/austen/$n.txt" "$AUSTEN/$n.txt"
  done
  log "wrote the six novels to $AUSTEN"
fi
