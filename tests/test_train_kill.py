"""`unisono train` killed with SIGKILL and started again continues the same loss curve."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPE = """
model: {pattern: multiscale, d_model: 32, n_layers: 2, n_heads: 4, local_layers: 1, local_d_model: 16,
        local_heads: 2, max_seq_len: 256, num_streams: 2, vocab_size: 36, pad_id: 0}
train: {max_steps: 40, lr: 2.0e-3, warmup_steps: 5, max_frames: 64, pool_size: 16, save_every: 5, log_every: 1,
        cond_dropout: 0.2, grad_accum: 2, device: cpu, tensorboard: false, seed: 5}
"""


def _cmd(recipe, out):
    return [sys.executable, "-m", "unisono", "train", "--config", str(recipe), "--toy", "--out", str(out), "--no-progress"]


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _losses(out):
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    subprocess.run(_cmd(recipe, tmp_path / "a"), env=_env(), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(_cmd(recipe, tmp_path / "b"), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = tmp_path / "b" / "latest.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if latest.is_file() and json.loads(latest.read_text())["step"] >= 10:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(latest.read_text())["step"]
    assert 10 <= killed_at < 40, "the run finished before it could be killed"
    subprocess.run(_cmd(recipe, tmp_path / "b"), env=_env(), check=True, capture_output=True, timeout=300)
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(b) == list(range(1, 41))
    assert a == b
