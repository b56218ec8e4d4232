#!/usr/bin/env bash
# Prepares what a GPU-machine call carries beside the code (docs/codec.md, "Adversarial decoder training on a GPU"):
#   .whl/         soundfile, cffi, soxr, pycparser wheels for the machine's Python 3.12 (its image lacks them)
#   .pack/codec   training audio for the codec under a size budget (default 48 MiB), from a 5 h seed-1 corpus:
#                 CORPUS=ref (default) the shipped model's, espeak-ng alone (runs/ref/corpus, ~5 minutes to make on 2
#                 cores); CORPUS=mixed the default engine mix with natural voices (runs/mix/corpus, 22 minutes here beside test runs)
# Both are kept out of git through .git/info/exclude. Usage: [CORPUS=mixed] bash scripts/device_prepare.sh [MAX_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_MIB=${1:-48}
mkdir -p .git/info
for p in /.whl/ /.pack/; do grep -qxF "$p" .git/info/exclude 2>/dev/null || echo "$p" >> .git/info/exclude; done
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
echo "carry [\".pack\", \".whl\"]; move unisono/assets/unisono-small/model.safetensors out of the tree for the call"
