#!/usr/bin/env bash
# Prepares what a GPU-machine call carries beside the code (docs/codec.md, "Adversarial decoder training on a GPU"):
#   .whl/         soundfile, cffi, soxr, pycparser wheels for the machine's Python 3.12 (its image lacks them)
#   .pack/codec   training audio for the codec under a size budget (default 48 MiB), from a 5 h seed-1 corpus:
#                 CORPUS=ref (default) the shipped model's, espeak-ng alone (runs/ref/corpus, ~5 minutes to make on 2
#                 cores); CORPUS=mixed the default engine mix with natural voices (runs/mix/corpus, 22 minutes here beside test runs)
# Both are kept out of git through .git/info/exclude. Usage: [CORPUS=mixed] bash scripts/device_prepare.sh [MAX_MIB]
# For the language model's run (scripts/h200_lm.sh), LM_SHARDS=DIR bash scripts/device_prepare.sh copies the token
# shards of DIR (`unisono tokenize` output: vocab.json, tokenizers/, codec.json, train/, valid/) to .pack/lm, no wheels
# (its path needs none), and checks that they and the code travel under 64 MiB with unisono-small's LM weights out.
# DIR may be a token store (`unisono tokenize --format store`: train/store.safetensors, ~0.93 MiB per hour of audio
# at 4 codebooks, where shards take ~12 MiB; docs/tokens.md): the same files are copied, its .codes cache is not. A
# store whose asr/caption/audio_qa read Whisper features of the codec's resynthesis (resynth) also gets the Whisper
# encoder's weights (.pack/lm/whisper.safetensors, 7.9 MiB at int8) and .pack/lm/features.sets (docs/features.md).
# For the enhancement stage's run (scripts/h200_enhancer.sh), ENHANCER=1 bash scripts/device_prepare.sh [MAX_MIB] makes
# .pack/enhancer (`unisono codec enhancer-pairs` from the MIDI of CORPUS's corpus, default runs/ref/corpus; MAX_MIB
# default 48), no wheels (its path needs none), and checks the same 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_MIB=${1:-48}
exclude=$(git rev-parse --git-path info/exclude)  # .git/info/exclude, also from a worktree
mkdir -p "$(dirname "$exclude")"
for p in /.whl/ /.pack/; do grep -qxF "$p" "$exclude" 2>/dev/null || echo "$p" >> "$exclude"; done
small=unisono/assets/unisono-small/model.safetensors
# check_travel PACK HINT: the code (without unisono-small's LM weights) and PACK must travel under 64 MiB
check_travel() {
  local code pack
  code=$(git ls-files -co --exclude-standard -z | grep -zv "^$small\$" | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
  pack=$(du -sb "$1" | cut -f1)
  echo "travels: code $((code / 1048576)) MiB + $1 $((pack / 1048576)) MiB of 64 MiB (without $small)"
  if [ $((code + pack)) -gt $((64 * 1048576)) ]; then echo "too large to travel: $2" >&2; exit 1; fi
  echo "carry [\"$1\"]; move $small out of the tree for the call"
}
if [ -n "${LM_SHARDS:-}" ]; then
  [ -f "$LM_SHARDS/vocab.json" ] && [ -d "$LM_SHARDS/train" ] || { echo "LM_SHARDS=$LM_SHARDS: no vocab.json and train/ (not a shard root or token store)" >&2; exit 2; }
  rm -rf .pack/lm
  mkdir -p .pack/lm
  for part in vocab.json codec.json features.json tokenizers train valid; do
    if [ -e "$LM_SHARDS/$part" ]; then cp -rL "$LM_SHARDS/$part" .pack/lm/; fi
  done
  # a store with audio_feat tasks (resynth of whisper_torch): the encoder's weights travel, the features are computed there
  if [ -f .pack/lm/features.json ]; then python3 scripts/h200_lm.py features-pack .pack/lm --config "${CONFIG:-unisono/configs/lm/h200.yaml}"; fi
  check_travel .pack/lm "fewer shards, or a token store (unisono tokenize --format store)"
  exit 0
fi
if [ -n "${ENHANCER:-}" ]; then
  case "${CORPUS:-ref}" in ref) DIR=runs/ref/corpus ;; mixed) DIR=runs/mix/corpus ;; *) DIR=$CORPUS ;; esac
  [ -d "$DIR/midi" ] || { echo "$DIR/midi: no MIDI files (make the corpus with unisono synth first)" >&2; exit 2; }
  [ -f .pack/enhancer/pairs.json ] || python3 -m unisono codec enhancer-pairs --midi "$DIR" --out .pack/enhancer --max-mib "$MAX_MIB"
  check_travel .pack/enhancer "a smaller MAX_MIB"
  exit 0
fi
if ! compgen -G ".whl/soundfile-*.whl" >/dev/null; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl soundfile==0.13.1 cffi==2.0.0 soxr==1.0.0 pycparser==3.12
fi
CORPUS=${CORPUS:-ref}
case "$CORPUS" in
  ref) DIR=runs/ref/corpus; ENGINES=espeak; FONT=fluidr3; REAL=off ;;
  mixed) DIR=runs/mix/corpus; ENGINES=espeak=0.5,kokoro=0.2,piper=0.15,festival=0.05,flite=0.1; FONT=musescore; REAL=on ;;
  *) echo "CORPUS must be ref or mixed, not $CORPUS" >&2; exit 2 ;;
esac
if [ -d .pack/codec ] && [ "$(cat .pack/codec.source 2>/dev/null || echo ref)" != "$CORPUS" ]; then rm -rf .pack/codec; fi
if [ ! -d .pack/codec ]; then
  [ -f "$DIR/stats.json" ] || python3 -m unisono synth --out "$DIR" --hours 5 --seed 1 --workers 2 --quiet --engines "$ENGINES" --sound-font "$FONT" --real-sounds "$REAL"
  python3 -m unisono codec pack --data "$DIR" --out .pack/codec --max-mib "$MAX_MIB"
  echo "$CORPUS" > .pack/codec.source
fi
du -sh .whl .pack/codec
echo "carry [\".pack\", \".whl\"]; move $small out of the tree for the call"
