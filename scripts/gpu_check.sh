#!/usr/bin/env bash
# Builds and checks wrpn on a machine with an NVIDIA GPU and no network.
#
#   scripts/gpu_check.sh --prepare     (on a networked machine) fetch the .deb files the build
#                                      needs into third_party/debs/ and the datasets into data/
#   scripts/gpu_check.sh [OUT_DIR]     (on the GPU machine) unpack those .debs into the build
#                                      folder (never into /), build against this machine's
#                                      python3 torch with CUDA for the local GPU, run every test
#                                      including the CUDA ones, run the benchmark; logs and JSON
#                                      go to OUT_DIR (default $OUT, else gpu_check_out/).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEBS=(catch2 libfmt-dev libfmt9 nlohmann-json3-dev libcli11-dev zlib1g-dev zlib1g libgloo-dev)

if [[ "${1:-}" == "--prepare" ]]; then
  set -e
  mkdir -p third_party/debs
  (cd third_party/debs && apt-get download "${DEBS[@]}" 2>/dev/null) || {
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    (cd third_party/debs && apt-get download "${DEBS[@]}")
  }
  if [[ -x scripts/fetch_data.sh ]]; then scripts/fetch_data.sh; fi
  ls -la third_party/debs
  exit 0
fi

OUT_DIR="${1:-${OUT:-$ROOT/gpu_check_out}}"
mkdir -p "$OUT_DIR"
BUILD=build-gpu
DEPS="$ROOT/$BUILD/third_party/root"
PY="${WRPN_GPU_PYTHON:-python3}"
status=0
step() { printf '\n=== %s ===\n' "$*" | tee -a "$OUT_DIR/summary.txt"; }

step "machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  nvcc --version | tail -2
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
} 2>&1 | tee -a "$OUT_DIR/summary.txt"

step "unpack build dependencies into $DEPS"
mkdir -p "$DEPS"
shopt -s nullglob
debs=(third_party/debs/*.deb)
if ((${#debs[@]} == 0)); then
  echo "no .deb files in third_party/debs: run scripts/gpu_check.sh --prepare on a networked machine" \
    | tee -a "$OUT_DIR/summary.txt"
  exit 2
fi
for f in "${debs[@]}"; do dpkg -x "$f" "$DEPS"; done

step "configure and build"
TORCH_PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
ARCH="$("$PY" -c 'import torch; p = torch.cuda.get_device_capability(); print(f"{p[0]}.{p[1]}")' 2>/dev/null || echo 9.0)"
FMT_DIR="$(dirname "$(find "$DEPS" -name fmt-config.cmake | head -1)")"
NLOHMANN_DIR="$(dirname "$(find "$DEPS" -name nlohmann_jsonConfig.cmake | head -1)")"
CATCH_DIR="$(dirname "$(find "$DEPS" -name Catch2Config.cmake | head -1)")"
CLI11_DIR="$(dirname "$(find "$DEPS" -name CLI11Config.cmake | head -1)")"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DWRPN_WITH_CUDA=ON \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DTORCH_CUDA_ARCH_LIST="$ARCH" \
  -Dfmt_DIR="$FMT_DIR" -Dnlohmann_json_DIR="$NLOHMANN_DIR" -DCatch2_DIR="$CATCH_DIR" \
  -DCLI11_DIR="$CLI11_DIR" -DZLIB_ROOT="$DEPS/usr" -DWRPN_WITH_IMAGE_CODECS=OFF \
  -DWRPN_GLOO_INCLUDE_DIR="$DEPS/usr/include" \
  -DWRPN_PYTHON="$(command -v "$PY")" >"$OUT_DIR/configure.log" 2>&1 \
  || { tail -40 "$OUT_DIR/configure.log"; exit 1; }
cmake --build "$BUILD" -j "$(nproc)" >"$OUT_DIR/build.log" 2>&1 \
  || { grep -E "error|Error" "$OUT_DIR/build.log" | head -40; exit 1; }
echo "build OK"

step "tests (CUDA included)"
ctest --test-dir "$BUILD" --output-on-failure -j 8 --timeout 900 \
  --output-junit "$OUT_DIR/ctest.xml" >"$OUT_DIR/ctest.log" 2>&1 || status=1
grep -E "tests passed|Skipped|Failed|\*\*\*" "$OUT_DIR/ctest.log" | tail -40 | tee -a "$OUT_DIR/summary.txt"

step "ResNet-34 (small stem) 2x 4/4 on Fashion-MNIST, 3 epochs on the GPU"
if [[ -f data/fashion_mnist/train-images-idx3-ubyte.gz ]]; then
  "$BUILD/examples/wrpn_train" --model resnet34_small --dataset fashion_mnist --width 2 \
    --weight-bits 4 --act-bits 4 --init quant_aware --lr 0.01 --epochs 3 --warmup-epochs 0.5 --batch-size 128 \
    --device cuda \
    --run-dir "$OUT_DIR/resnet34_small_fashion" >"$OUT_DIR/resnet34_small_fashion.log" 2>&1 \
    || status=1
  tail -8 "$OUT_DIR/resnet34_small_fashion.log" | tee -a "$OUT_DIR/summary.txt"
  cp "$OUT_DIR/resnet34_small_fashion/summary.json" "$OUT_DIR/resnet34_small_fashion.summary.json" \
    2>/dev/null || true
  rm -f "$OUT_DIR"/resnet34_small_fashion/*.ckpt  # keep what comes back small
else
  echo "data/fashion_mnist is missing: carry data/ (scripts/gpu_check.sh --prepare fetches it)" \
    | tee -a "$OUT_DIR/summary.txt"
  status=1
fi

step "data-parallel on NCCL: ResNet-20 2x 4/4 on digits, one process per GPU (torchrun)"
NGPU="$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)"
if [[ "$NGPU" -ge 1 ]]; then
  worlds=(1)
  [[ "$NGPU" -gt 1 ]] && worlds+=("$NGPU")
  for n in "${worlds[@]}"; do
    run="$OUT_DIR/nccl_world$n"
    timeout 600 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$n" --no-python \
      "$BUILD/examples/wrpn_train" --model resnet20 --width 2 --weight-bits 4 --act-bits 4 \
      --epochs 3 --batch-size 128 --device cuda --dist-timeout 120 --quiet --run-dir "$run" \
      >"$run.log" 2>&1 || status=1
    tail -3 "$run.log" | tee -a "$OUT_DIR/summary.txt"
    "$PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); print("world", s["world_size"], s["backend"], "top-1", s["final_top1"], "images/s", round(s["train_images_per_second"], 1))' \
      "$run/summary.json" 2>&1 | tee -a "$OUT_DIR/summary.txt" || status=1
    rm -f "$run"/*.ckpt
  done
else
  echo "no CUDA device seen by $PY" | tee -a "$OUT_DIR/summary.txt"
  status=1
fi

step "integer inference on CUDA (GEMM engine) against fp32 and cuDNN bf16"
if [[ -x "$BUILD/benchmarks/wrpn_inferbench" ]]; then
  "$BUILD/benchmarks/wrpn_inferbench" --device cuda --batch 1,256 --rounds 7 \
    --json "$OUT_DIR/inferbench_cuda.json" >"$OUT_DIR/inferbench_cuda.log" 2>&1 || status=1
  tail -20 "$OUT_DIR/inferbench_cuda.log" | tee -a "$OUT_DIR/summary.txt"
fi

step "benchmark"
if [[ -x "$BUILD/benchmarks/wrpn_bench" ]]; then
  "$BUILD/benchmarks/wrpn_bench" --device all --json "$OUT_DIR/bench.json" \
    >"$OUT_DIR/bench.log" 2>&1 || status=1
  tail -60 "$OUT_DIR/bench.log"
fi
exit $status
