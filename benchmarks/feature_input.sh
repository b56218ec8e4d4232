#!/usr/bin/env bash
# Issue 21's comparison: asr, caption and audio_qa reading the audio as codec tokens or as continuous features, on
# one training budget, scored on the test split. Resumable: a finished step of an arm is kept.
#
#   bash benchmarks/feature_input.sh [ARM ...]        (default: codes logmel whisper resynth)
#
# Arms (the audio condition of the three templates; configs/tasks/asr_feat.yaml for the feature ones):
#   codes    codec tokens, 4 codebooks of unisono-small's codec (the shipped templates)
#   logmel   the project's own log-mel (80-d, 50 Hz; no pretrained weights)
#   whisper  Whisper tiny.en's encoder (CTranslate2, int8; 384-d, 50 Hz) on the original audio
#   resynth  Whisper tiny.en's encoder in torch (whisper_torch, int8 weights) on the codec's resynthesis at 4
#            codebooks: what a GPU machine that holds only a token store computes (docs/features.md)
# Each arm: `unisono tokenize` (unisono-small's vocab and tokenizers) -> `unisono train` (configs/lm/cpu.yaml,
# STEPS steps, the asr/caption/audio_qa task weights of the reference recipe, seed 0) -> package (float32) ->
# `unisono eval --split test --n N`. Environment: CORPUS (default runs/mix/corpus: made with the default engine
# mix when absent, ~22 min here), OUT (runs/feat21), STEPS (500), N (40), THREADS (torch threads per arm, 2).
# Results: OUT/eval_ARM/metrics.json, OUT/run_ARM/log.jsonl (validation loss, seconds per step); the table in
# docs/results.md, "Continuous audio input".
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:-runs/mix/corpus}
OUT=${OUT:-runs/feat21}
STEPS=${STEPS:-500}
N=${N:-40}
THREADS=${THREADS:-2}
ASSET=unisono/assets/unisono-small
ARMS=("$@")
[ ${#ARMS[@]} -gt 0 ] || ARMS=(codes logmel whisper resynth)
for arm in "${ARMS[@]}"; do
  case "$arm" in codes|logmel|whisper|resynth) ;; *) echo "unknown arm $arm (codes, logmel, whisper, resynth)" >&2; exit 2 ;; esac
done
if [ ! -f "$CORPUS/stats.json" ]; then
  python3 -m unisono synth --out "$CORPUS" --hours 5 --seed 1 --workers 2 --quiet \
    --engines espeak=0.5,kokoro=0.2,piper=0.15,festival=0.05,flite=0.1 --sound-font musescore --real-sounds on
fi
export OMP_NUM_THREADS=$THREADS
for arm in "${ARMS[@]}"; do
  S=$OUT/s_$arm RUN=$OUT/run_$arm PKG=$OUT/pkg_$arm EV=$OUT/eval_$arm
  case "$arm" in
    codes) TASKS=asr,caption,audio_qa; ENC=() ;;
    logmel) TASKS=asr_feat,caption_feat,audio_qa_feat; ENC=(--feature-encoder logmel) ;;
    whisper) TASKS=asr_feat,caption_feat,audio_qa_feat; ENC=(--feature-encoder whisper_tiny_en) ;;
    resynth) TASKS=asr_feat,caption_feat,audio_qa_feat
             ENC=(--feature-encoder 'resynth:encoder=whisper_torch,num_codebooks=4,encoder_params={"precision": "int8"}') ;;
  esac
  IFS=, read -r T_ASR T_CAP T_QA <<<"$TASKS"
  echo "== $arm: tokenize ($(date +%T))"
  python3 -m unisono tokenize --data "$CORPUS" --codec "$ASSET/codec" --out "$S" --tasks "$TASKS" \
    --templates configs/tasks/asr_feat.yaml --vocab "$ASSET/vocab.json" --tokenizers "$ASSET" --num-codebooks 4 \
    --splits train,valid --jobs 1 --no-progress "${ENC[@]}"
  echo "== $arm: train $STEPS steps ($(date +%T))"
  python3 -m unisono train --config configs/lm/cpu.yaml --shards "$S" --val-shards "$S/valid" --out "$RUN" \
    --max-steps "$STEPS" --set "train.task_weights={$T_ASR: 2.0, $T_CAP: 1.0, $T_QA: 0.5}" \
    --set train.eval_every="$STEPS" --set train.save_every="$STEPS" --no-progress
  CK=$(printf "%s/checkpoints/step_%08d" "$RUN" "$STEPS")
  if [ ! -f "$PKG/config.json" ]; then
    python3 -c "import sys; from unisono.inference.pipeline import Pipeline; from unisono.tasks import load_templates
Pipeline.package(sys.argv[1], sys.argv[2], sys.argv[3], codec_dir=sys.argv[4],
                 templates=load_templates(['configs/tasks/asr_feat.yaml']))" "$CK" "$S" "$PKG" "$ASSET/codec"
  fi
  echo "== $arm: eval ($(date +%T))"
  python3 -m unisono eval --data "$CORPUS" --split test --tasks "$TASKS" --n "$N" --checkpoint "$PKG" --out "$EV" \
    --threads "$THREADS" --quiet
done
echo "done ($(date +%T)): $OUT/eval_*/metrics.json"
