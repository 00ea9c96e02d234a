#!/usr/bin/env bash
# Checks that every C++/CUDA source in the tree matches .clang-format (clang-format --dry-run
# -Werror). Exit 0: clean; 1: files differ (listed, with `clang-format -i FILE` to fix them);
# prints "WRPN_SKIP: ..." and exits 0 when clang-format is not installed.
# Usage: scripts/check_format.sh [--fix]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CF="${CLANG_FORMAT:-clang-format}"
if ! command -v "$CF" >/dev/null 2>&1; then
  echo "WRPN_SKIP: clang-format not found (Debian: apt-get install clang-format); format not checked"
  exit 0
fi
mapfile -t files < <(find kernels wrpn models train cli examples benchmarks tests \
  \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) -type f 2>/dev/null | sort)
if [[ "${1:-}" == "--fix" ]]; then
  "$CF" -i "${files[@]}"
  echo "formatted ${#files[@]} files"
  exit 0
fi
bad=()
for f in "${files[@]}"; do
  "$CF" --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  echo "${#bad[@]} of ${#files[@]} files differ from .clang-format ($("$CF" --version)):"
  printf '  %s\n' "${bad[@]}"
  echo "fix with: scripts/check_format.sh --fix"
  exit 1
fi
echo "format: ${#files[@]} files match .clang-format"
