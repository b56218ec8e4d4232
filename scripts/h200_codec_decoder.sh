#!/usr/bin/env bash
# Codec training on one GPU as one run that stops on a wall-clock budget (docs/codec.md, "Adversarial decoder
# training on a GPU"): by default adversarial decoder-only training of the shipped codec; with
# CONFIG=unisono/configs/codec/h200_codec.yaml INIT= a whole new codec (the real path, not the checkout's configs/ link).
#
#   bash scripts/h200_codec_decoder.sh PACK OUT [SECONDS] [VARIANTS]
#
# PACK      a folder of training audio made here by `unisono codec pack --data CORPUS --out PACK --max-mib 48`
# OUT       where the results go: VARIANT.decoder.safetensors (the decoder's float32 weights; a new codec:
#           VARIANT.codec.tar, its config and float16 weights), VARIANT.log.jsonl (the loss curve), run.log
# SECONDS   training budget of each variant (default 420); the variants run at the same time on the one GPU, which
#           shares it among them (the step is GPU-bound: 3 variants made 3.5 steps/s each, one alone 9.5-11)
# VARIANTS  space-separated NAME:SET,SET,... (default "main:", the config as it is): each a `--set` list on
#           unisono/configs/codec/h200_decoder.yaml, e.g. "a:loss.mel=45 b:train.lr=5e-4,train.disc_lr=5e-4"; at most 2
#           variants with SPEED=1 (the default), 3 with SPEED=0: $OUT may return 8 files
#
# The GPU machine's Python lacks soundfile and soxr: wheels in .whl/ (see docs/codec.md) are installed first if present
# (WHEELS=0 skips them, DEVICE=cpu runs it on a CPU: the check before a GPU run).
# A 20-step smoke run comes first and stops everything on an error. Put the decoder back into a codec with
# `python scripts/codec_decoder_merge.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=${1:?usage: h200_codec_decoder.sh PACK OUT [SECONDS] [VARIANTS]}
OUT=${2:?usage: h200_codec_decoder.sh PACK OUT [SECONDS] [VARIANTS]}
SECONDS_BUDGET=${3:-420}
VARIANTS=${4:-"main:"}
INIT=${INIT-unisono/assets/unisono-small/codec}  # the codec to start from; INIT= (empty): a new codec
CONFIG=${CONFIG:-unisono/configs/codec/h200_decoder.yaml}
INIT_ARGS=()
if [ -n "$INIT" ]; then INIT_ARGS=(--init "$INIT"); fi
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
source scripts/device_env.sh
{
  device_report
  python3 -c "import soundfile, soxr"  # the codec's training reads audio: the carried wheels
  echo "== smoke: ${SMOKE_STEPS:-20} steps"
  rm -rf /tmp/codec_smoke
  python3 -m unisono codec train --config "$CONFIG" "${INIT_ARGS[@]}" --data "$PACK" --out /tmp/codec_smoke \
    --device "$DEVICE" --steps "${SMOKE_STEPS:-20}" --no-progress --set train.log_every=10 ${SMOKE_SET:-}
  tail -n 1 /tmp/codec_smoke/log.jsonl
  if [ "${SPEED:-1}" = 1 ]; then  # the step's speed with the discriminators in float32 and in bfloat16, same run
    for amp in none bf16; do
      python3 benchmarks/codec_train_speed.py --config "$CONFIG" "${INIT_ARGS[@]}" --data "$PACK" --device "$DEVICE" \
        --steps 10 --warmup 3 --rows 0 --set train.amp=$amp ${SMOKE_SET:-} --json "$OUT/speed_$amp.json" | tail -n 8
    done
  fi
  echo "== variants: $VARIANTS ($SECONDS_BUDGET s each, at the same time)"
  pids=()
  for v in $VARIANTS; do
    name=${v%%:*}
    sets=()
    IFS=, read -ra kv <<<"${v#*:}"
    for s in "${kv[@]}"; do sets+=(--set "$s"); done
    rm -rf "/tmp/codec_$name"
    python3 -m unisono codec train --config "$CONFIG" "${INIT_ARGS[@]}" --data "$PACK" --out "/tmp/codec_$name" \
      --device "$DEVICE" --max-seconds "$SECONDS_BUDGET" --no-progress "${sets[@]}" >"$OUT/$name.stdout" 2>&1 &
    pids+=($!)
  done
  status=0
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  for v in $VARIANTS; do
    name=${v%%:*}
    echo "== $name"; tail -n 3 "$OUT/$name.stdout"; rm -f "$OUT/$name.stdout"
    if [ -f "/tmp/codec_$name/log.jsonl" ]; then
      cp "/tmp/codec_$name/log.jsonl" "$OUT/$name.log.jsonl"
      tail -n 1 "$OUT/$name.log.jsonl"
    fi
    if [ -f "/tmp/codec_$name/model.safetensors" ] && [ -n "$INIT" ]; then  # the decoder alone, float32
      python3 - "/tmp/codec_$name" "$OUT/$name.decoder.safetensors" <<'EOF'
import sys
from unisono.weights import load_weights, save_weights
state = load_weights(sys.argv[1] + "/model.safetensors")
save_weights({k: v for k, v in state.items() if k.startswith("decoder.")}, sys.argv[2])
EOF
    elif [ -f "/tmp/codec_$name/model.safetensors" ]; then  # a new codec: config and float16 weights in one tar
      python3 -c "import sys; from unisono.codec import Codec; \
Codec.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[1], 'float16')" "/tmp/codec_$name"
      tar -C "/tmp/codec_$name" -cf "$OUT/$name.codec.tar" config.json model.safetensors train_config.yaml
    fi
  done
  date -u
  exit $status
} 2>&1 | tee "$OUT/run.log"
