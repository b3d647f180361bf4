#!/usr/bin/env bash
# One prepared GPU run (about 9 minutes on one H100/H200-class GPU): ResNet-20 W1/A1
# SLB, STE and fp on CIFAR-10's 50,000 training images (../shared/data), every 5th
# image of each class held apart for the test accuracy, the same train.py recipes as
# the CPU table in BENCHMARKS.md, at EPOCHS epochs (default 12: three runs of about
# 2.5 minutes each after a start-up of about 20 s). Prints the table and writes the
# JSON report to ${OUT:-runs/gpu_cifar10}/cifar10.json.
#
# Usage (from the repository root, after `pip install -e .`):
#   bash benchmarks/gpu_cifar10.sh                      # the tarball in ../shared/data
#   TARBALL=/path/cifar10-train.tar.gz EPOCHS=20 bash benchmarks/gpu_cifar10.sh
#   MODEL=vgg_small EPOCHS=8 bash benchmarks/gpu_cifar10.sh   # VGG-Small W1/A1
# Tests run it on CPU with a tiny tarball and STEPS_PER_EPOCH=1 (tests/test_benchmarks.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-runs/gpu_cifar10}"
TARBALL="${TARBALL:-../shared/data/cifar10-train.tar.gz}"
EPOCHS="${EPOCHS:-12}"
SEEDS="${SEEDS:-0}"
CONFIGS="${CONFIGS:-fp,slb:1/1,ste:1/1}"
MODEL="${MODEL:-resnet20}"  # or vgg_small
PY="${PYTHON:-python}"
export TF_CPP_MIN_LOG_LEVEL=2
if [ ! -f "$TARBALL" ]; then
  echo "gpu_cifar10.sh: no CIFAR-10 tarball at $TARBALL (set TARBALL=...)" >&2
  exit 2
fi
mkdir -p "$OUT_DIR"
DATA_ROOT="$(mktemp -d)"
trap 'rm -rf "$DATA_ROOT"' EXIT
tar xzf "$TARBALL" -C "$DATA_ROOT"
DATA="$(find "$DATA_ROOT" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT_DIR/gpu.txt" 2>/dev/null || echo "no nvidia-smi" > "$OUT_DIR/gpu.txt"
EXTRA=()
if [ -n "${STEPS_PER_EPOCH:-}" ]; then EXTRA+=(--steps_per_epoch="$STEPS_PER_EPOCH"); fi
if [ -n "${BATCH_SIZE:-}" ]; then EXTRA+=(--batch_size="$BATCH_SIZE"); fi
"$PY" benchmarks/cifar10.py --data="$DATA" --model="$MODEL" --epochs="$EPOCHS" --seeds="$SEEDS" \
  --configs="$CONFIGS" --runs_dir="$OUT_DIR/runs" --out="$OUT_DIR/cifar10.json" "${EXTRA[@]}"
echo "JSON written to $OUT_DIR/cifar10.json"
