"""A NaN/Inf loss is reported with its batch's tasks and ids, and handled by the config's policy."""

import json

import pytest
import torch

from unisono.errors import UnisonoError
from unisono.train.data import split_by_task
from unisono.train.toydata import toy_examples, toy_vocab_size
from unisono.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
K, C = 2, 8


def make(tmp_path, **train):
    mcfg = dict(vocab_size=toy_vocab_size(K, C), num_streams=K, pad_id=0, pattern="delay", d_model=32, n_layers=1,
                n_heads=2, max_seq_len=128)
    tc = dict(max_steps=6, lr=1e-3, warmup_steps=1, max_frames=64, pool_size=4, save_every=3, log_every=1,
              tensorboard=False, **train)
    return Trainer(mcfg, tc, tmp_path / "run", split_by_task(toy_examples(8, K, C, seed=0)))


def poison(trainer, calls=(2,)):
    """Make the loss NaN on the given forward calls (1-based)."""
    real = trainer.wrapped.forward
    n = {"calls": 0}

    def forward(frames, loss_mask):
        n["calls"] += 1
        out = real(frames, loss_mask)
        if n["calls"] in calls:
            out = {**out, "loss": out["loss"] * float("nan")}
        return out

    trainer.wrapped.forward = forward


def test_skip_policy_skips_the_batch_and_keeps_weights_finite(tmp_path, caplog):
    tr = make(tmp_path, nonfinite="skip")
    poison(tr)
    with caplog.at_level("WARNING", logger="unisono"):
        tr.train(progress=False)
    assert tr.step == 6 and len(tr.skipped_batches) == 1
    assert ":" in tr.skipped_batches[0]  # task:id of each example of the batch
    assert [r.name for r in caplog.records] == ["unisono"] and "non-finite loss" in caplog.text
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and all(r["loss"] == r["loss"] for r in log)


def test_stop_policy_names_the_batch_and_leaves_the_checkpoint_intact(tmp_path):
    tr = make(tmp_path, nonfinite="stop")
    poison(tr, calls=(5,))
    with pytest.raises(UnisonoError, match=r"non-finite loss .* at step 5 in the batch \[(copy|count):"):
        tr.train(progress=False)
    latest = json.loads((tmp_path / "run" / "latest.json").read_text())
    assert latest["step"] == 3
    resumed = make(tmp_path, nonfinite="stop")
    assert resumed.train(progress=False)["step"] == 6  # the run resumes from the intact checkpoint


def test_too_many_skips_in_a_row_stop_the_run(tmp_path):
    tr = make(tmp_path, nonfinite="skip", max_skipped=2)
    poison(tr, calls=range(1, 100))
    with pytest.raises(UnisonoError, match="3 batches in a row were skipped"):
        tr.train(progress=False)


def test_bad_policy_is_refused(tmp_path):
    with pytest.raises(UnisonoError, match="nonfinite must be 'skip' or 'stop'"):
        make(tmp_path, nonfinite="ignore")


def test_unwritable_run_dir_fails_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    tr = Trainer(dict(vocab_size=toy_vocab_size(K, C), num_streams=K, pad_id=0, pattern="delay", d_model=32,
                      n_layers=1, n_heads=2, max_seq_len=128),
                 dict(max_steps=2, tensorboard=False), blocker / "run", split_by_task(toy_examples(4, K, C, seed=0)))
    with pytest.raises(UnisonoError, match="cannot write to the run directory"):
        tr.train(progress=False)
    assert tr.step == 0


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    tr = make(tmp_path)
    real = tr.save
    calls = {"n": 0}

    def full_disk():
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real()

    monkeypatch.setattr(tr, "save", full_disk)
    with pytest.raises(UnisonoError, match=r"step 6 \(No space left on device\).*step_00000003"):
        tr.train(progress=False)
    assert json.loads((tmp_path / "run" / "latest.json").read_text())["step"] == 3
