"""The language model's GPU run (scripts/h200_lm.sh): its Python path runs on the GPU image, which lacks soundfile,
soxr and lhotse (tests/gpu_image/sitecustomize.py makes them unimportable in a subprocess)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_IMAGE = Path(__file__).resolve().parent / "gpu_image"


def gpu_image_env() -> dict:
    """The environment of a subprocess that imports as on the GPU image (this checkout first on the path)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(GPU_IMAGE), str(ROOT)])}


def test_the_blocker_blocks():
    r = subprocess.run([sys.executable, "-c", "import soundfile"], env=gpu_image_env(), capture_output=True, text=True)
    assert r.returncode != 0 and "not on the GPU image" in r.stderr


def test_the_training_path_imports_without_soundfile_soxr_lhotse():
    code = "import unisono.train.launch, unisono.train.trainer, unisono.cli.train, unisono.cli; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], env=gpu_image_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
