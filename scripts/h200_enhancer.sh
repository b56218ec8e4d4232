#!/usr/bin/env bash
# The enhancement stage (16 kHz mono codec decode -> 48 kHz stereo) trained on one GPU as one run that stops on a
# wall-clock budget (docs/codec.md, "The enhancement stage"):
#
#   bash scripts/h200_enhancer.sh PAIRS OUT [SECONDS] [SETS]
#
# PAIRS    a pair pack made here by `unisono codec enhancer-pairs` (ENHANCER=1 bash scripts/device_prepare.sh makes
#          .pack/enhancer; 47 MiB for 6 min of training pairs + 1 min held out)
# OUT      where the results go: enhancer/ (config.json + float32 model.safetensors: copy it to CHECKPOINT/enhancer),
#          log.jsonl (the loss curve), train_config.yaml, run.log; score it back here with benchmarks/enhancer_quality.py
#          (its resampling row needs soxr, which the GPU image lacks)
# SECONDS  training budget (default 420)
# SETS     space-separated --set values on unisono/configs/codec/h200_enhancer.yaml, e.g. "train.batch_size=32"
#
# Needs torch, numpy, pyyaml and tqdm only: no wheels (the pack holds codec codes and int16 references, decoded by
# the shipped codec on the GPU), so nothing is installed (WHEELS=0). DEVICE=cpu runs it on a CPU (the check before a
# GPU run, with SMOKE_STEPS=2 SECONDS=5). A 20-step smoke run comes first and stops everything on an error.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${1:?usage: h200_enhancer.sh PAIRS OUT [SECONDS] [SETS]}
OUT=${2:?usage: h200_enhancer.sh PAIRS OUT [SECONDS] [SETS]}
SECONDS_BUDGET=${3:-420}
SETS=()
for s in ${4:-}; do SETS+=(--set "$s"); done
CONFIG=${CONFIG:-unisono/configs/codec/h200_enhancer.yaml}
DEVICE=${DEVICE:-cuda}
export WHEELS=0
mkdir -p "$OUT"
source scripts/device_env.sh
{
  device_report
  echo "== smoke: ${SMOKE_STEPS:-20} steps"
  rm -rf /tmp/enh_smoke
  python3 -m unisono codec train-enhancer --config "$CONFIG" --pairs "$PAIRS" --out /tmp/enh_smoke --device "$DEVICE" \
    --steps "${SMOKE_STEPS:-20}" --no-progress --set train.log_every=10 --set train.disc_start=10 "${SETS[@]}"
  tail -n 1 /tmp/enh_smoke/log.jsonl
  echo "== train: $SECONDS_BUDGET s"
  rm -rf /tmp/enh_run
  python3 -m unisono codec train-enhancer --config "$CONFIG" --pairs "$PAIRS" --out /tmp/enh_run --device "$DEVICE" \
    --max-seconds "$SECONDS_BUDGET" --no-progress "${SETS[@]}"
  cp -r /tmp/enh_run/enhancer /tmp/enh_run/log.jsonl /tmp/enh_run/train_config.yaml "$OUT/"
  tail -n 1 "$OUT/log.jsonl"
  date -u
} 2>&1 | tee "$OUT/run.log"
