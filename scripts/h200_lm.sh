#!/usr/bin/env bash
# The language model's training on one GPU as one run that stops on a wall-clock budget (docs/lm.md, "Training on a
# lent H200"):
#
#   bash scripts/h200_lm.sh SHARDS OUT [SECONDS]
#
# SHARDS   token shards made here by `unisono tokenize` (a root with train/ and vocab.json, optionally valid/), or a
#          token store (`unisono tokenize --format store`, the same root layout, ~13x smaller; docs/tokens.md), carried
#          beside the code (scripts/device_prepare.sh with LM_SHARDS= copies them to .pack/lm)
# OUT      where the results go (at most 8 files come back from a lent machine): model.safetensors.00, .01, ... (the
#          weights, float16 or int8 + scales under 60 MiB, parts under 16 MiB), result.json (configs, vocabulary,
#          tokens/s, MFU, validation loss per task, the generation-speed row), log.jsonl (the loss curve), loss.png
#          (when matplotlib is there), run.log
# SECONDS  the training budget (default 420); the whole run takes about 100 s more (smoke, compile, export, speed)
#
# Phases: a smoke run (a few eager steps, a checkpoint written, read back and resumed) that stops everything on an
# error; training until the budget (unisono/configs/lm/h200.yaml: bf16 autocast, fused AdamW, torch.compile with an
# eager fallback, length-bucketed batches made in a background thread); the export of the last weights with their
# validation loss; generation speed at batch 1 and 16 beside a MusicGen decoder of the same sizes.
# Environment: CONFIG (default unisono/configs/lm/h200.yaml), SET (space-separated SECTION.KEY=VALUE overrides, for
# the smoke run and training), VAL_SHARDS (default SHARDS/valid when it exists; else validation reads the training
# shards), DEVICE (cuda; DEVICE=cpu with a tiny SET is the check before a GPU run, tests/test_h200_lm.py),
# PRECISION (auto: float16 when it fits 60 MiB, else int8), SMOKE_STEPS (6), GEN_SECONDS (5 s of audio per row),
# GEN_BATCHES ("1 16"), GEN_TIMEOUT (90 s), WORK (/tmp/unisono_lm: the run directories), WHEELS (scripts/device_env.sh).
# Back here: `python scripts/h200_lm.py join OUT LM_DIR --shards SHARDS --checkpoint CKPT`, then `unisono eval`.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS=${1:?usage: h200_lm.sh SHARDS OUT [SECONDS]}
OUT=${2:?usage: h200_lm.sh SHARDS OUT [SECONDS]}
SECONDS_BUDGET=${3:-420}
CONFIG=${CONFIG:-unisono/configs/lm/h200.yaml}
DEVICE=${DEVICE:-cuda}
WORK=${WORK:-/tmp/unisono_lm}
VAL_SHARDS=${VAL_SHARDS-}
if [ -z "$VAL_SHARDS" ] && [ -d "$SHARDS/valid" ]; then VAL_SHARDS=$SHARDS/valid; fi
[ -f "$SHARDS/vocab.json" ] || { echo "h200_lm.sh: $SHARDS has no vocab.json: not a tokenized shard root" >&2; exit 2; }
[ -f "$CONFIG" ] || { echo "h200_lm.sh: config $CONFIG does not exist" >&2; exit 2; }
[[ "$SECONDS_BUDGET" =~ ^[0-9]+$ ]] || { echo "h200_lm.sh: SECONDS must be a whole number, not $SECONDS_BUDGET" >&2; exit 2; }
# a store of resynth features: the --set values of scripts/h200_lm.py features-pack (weights and codec that travel)
if [ -f "$SHARDS/features.sets" ]; then SET="$(cat "$SHARDS/features.sets") ${SET:-}"; fi
SETS=()
for s in ${SET:-}; do SETS+=(--set "$s"); done
VAL_ARGS=()
if [ -n "$VAL_SHARDS" ]; then VAL_ARGS=(--val-shards "$VAL_SHARDS"); fi
mkdir -p "$OUT" "$WORK"
WHEELS=${WHEELS:-0}  # the language model's path imports no soundfile/soxr: the carried wheels are the codec run's
source scripts/device_env.sh
{
  device_report
  echo "== smoke: ${SMOKE_STEPS:-6} steps, checkpoint write, read, resume"
  python3 scripts/h200_lm.py smoke "$CONFIG" "$SHARDS" --work "$WORK/smoke" --device "$DEVICE" \
    --steps "${SMOKE_STEPS:-6}" "${SETS[@]}"
  echo "== training: $SECONDS_BUDGET s"
  rm -rf "$WORK/run"
  python3 -m unisono train --config "$CONFIG" --shards "$SHARDS" "${VAL_ARGS[@]}" --out "$WORK/run" \
    --max-seconds "$SECONDS_BUDGET" --no-progress --set "train.device=$DEVICE" "${SETS[@]}"
  tail -n 1 "$WORK/run/log.jsonl"
  echo "== export"
  python3 scripts/h200_lm.py export "$WORK/run" "$OUT" --shards "$SHARDS" "${VAL_ARGS[@]}" --device "$DEVICE" \
    --precision "${PRECISION:-auto}"
  echo "== generation speed (batches ${GEN_BATCHES:-1 16}, ${GEN_SECONDS:-5} s of audio each)"
  latest=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['path'])" "$WORK/run/latest.json")
  # shellcheck disable=SC2086  # GEN_BATCHES is a list of numbers
  if timeout "${GEN_TIMEOUT:-90}" python3 benchmarks/lm_speed.py --checkpoint "$WORK/run/$latest" --device "$DEVICE" \
      --batches ${GEN_BATCHES:-1 16} --seconds "${GEN_SECONDS:-5}" --json "$WORK/generation.json"; then
    python3 scripts/h200_lm.py add "$OUT/result.json" generation "$WORK/generation.json"
  else
    echo "generation speed: failed or timed out (the weights and the training results are in $OUT)"
  fi
  ls -l "$OUT"
  date -u
} 2>&1 | tee "$OUT/run.log"
