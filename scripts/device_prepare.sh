#!/usr/bin/env bash
# Prepares what a GPU-machine call carries beside the code (docs/codec.md, "Adversarial decoder training on a GPU"):
#   .whl/         soundfile, cffi, soxr, pycparser wheels for the machine's Python 3.12 (its image lacks them)
#   .pack/codec   training audio for the codec under a size budget (default 48 MiB), from the 5 h seed-1 corpus
#                 (runs/ref/corpus, synthesized first when missing: about 5 minutes on 2 cores)
# Both are kept out of git through .git/info/exclude. Usage: bash scripts/device_prepare.sh [MAX_MIB]
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
if [ ! -d .pack/codec ]; then
  [ -f runs/ref/corpus/stats.json ] || python3 -m unisono synth --out runs/ref/corpus --hours 5 --seed 1 --workers 2 --quiet --engines espeak
  python3 -m unisono codec pack --data runs/ref/corpus --out .pack/codec --max-mib "$MAX_MIB"
fi
du -sh .whl .pack/codec
echo "carry [\".pack\", \".whl\"]; move unisono/assets/unisono-small/model.safetensors out of the tree for the call"
