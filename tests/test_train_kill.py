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
    return [
        sys.executable,
        "-m",
        "unisono",
        "train",
        "--config",
        str(recipe),
        "--toy",
        "--out",
        str(out),
        "--no-progress",
    ]


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


KILLER = """
import os, signal, sys
import torch
import torch.optim
WHERE, N = sys.argv[1], int(sys.argv[2])
calls = [0]

def hit():
    calls[0] += 1
    if calls[0] == N:
        os.kill(os.getpid(), signal.SIGKILL)

if WHERE == "checkpoint":  # while the training state of a checkpoint is being written (its weights are)
    real_save = torch.save

    def save(*a, **k):
        hit()
        return real_save(*a, **k)

    torch.save = save
else:  # inside an optimizer step: after the backward pass, before the update
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        hit()
        return real_step(self, *a, **k)

    torch.optim.AdamW.step = step
from unisono.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("where,n", [("checkpoint", 3), ("step", 23)])
def test_sigkill_during_a_checkpoint_write_or_a_step_then_resume(tmp_path, where, n):
    """Killed at a chosen point: the half-written checkpoint never becomes the latest, and the resumed
    run's loss curve equals an uninterrupted one."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    subprocess.run(_cmd(recipe, tmp_path / "a"), env=_env(), check=True, capture_output=True, timeout=300)
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    argv = _cmd(recipe, tmp_path / "b")[3:]  # after `python -m unisono`
    r = subprocess.run([sys.executable, str(killer), where, str(n), *argv], env=_env(), capture_output=True,
                       timeout=300)
    assert r.returncode == -signal.SIGKILL
    latest = json.loads((tmp_path / "b" / "latest.json").read_text())
    ckdir = tmp_path / "b" / "checkpoints"
    if where == "checkpoint":  # the third save was cut short: the second one (step 10) stays the latest
        assert latest["step"] == 10 and list(ckdir.glob(".step_00000015.tmp"))
    else:  # killed in the update of step 23 (one optimizer step per training step): step 20 is the latest
        assert latest["step"] == 20
    assert (tmp_path / "b" / latest["path"] / "model.safetensors").is_file()
    subprocess.run(_cmd(recipe, tmp_path / "b"), env=_env(), check=True, capture_output=True, timeout=300)
    assert not list(ckdir.glob(".step_*.tmp"))
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(b) == list(range(1, 41))
    assert a == b
