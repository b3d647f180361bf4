#!/usr/bin/env bash
# One prepared GPU run (< 8 minutes on one H100/V100-class GPU): VGG-Small step-time
# ratios at batch 100 (the rebuttal's setting) for SLB W1/W2/W4 against STE and fp,
# images per second, with and without XLA and mixed precision, plus peak GPU memory
# per configuration (each in its own process). Writes JSON under ${OUT:-runs/gpu}.
#
# Usage (from the repository root, after `pip install -e .`):
#   bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-runs/gpu}"
mkdir -p "$OUT_DIR"
export TF_CPP_MIN_LOG_LEVEL=2
PY="${PYTHON:-python}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT_DIR/gpu.txt" || true
COMMON=(--model=vgg_small --batch_size=100 --wbits=1,2,4 --abits=32 --warmup=5 --rounds=30)
"$PY" benchmarks/step_time.py "${COMMON[@]}" --memory --out="$OUT_DIR/step_time_f32.json"
"$PY" benchmarks/step_time.py "${COMMON[@]}" --jit_compile --out="$OUT_DIR/step_time_f32_xla.json"
"$PY" benchmarks/step_time.py "${COMMON[@]}" --mixed_precision --out="$OUT_DIR/step_time_mp.json"
"$PY" benchmarks/step_time.py "${COMMON[@]}" --mixed_precision --jit_compile --out="$OUT_DIR/step_time_mp_xla.json"
echo "JSON written to $OUT_DIR"
