#!/usr/bin/env bash
# The tests marked `slow` (kill -9 of the trainer, FSDP2 on 2 processes, the tiny recipe end to end, ...):
# excluded from the default suite and CI, run here.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pytest -q -m slow "$@"
