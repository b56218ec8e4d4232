"""The trainer's GPU speed features, checked on a CPU: model FLOPs per step, torch.compile's eager fallback, batches
made ahead in a thread (same batches, same resume), the wall-clock budget that sizes the schedule, fused AdamW."""

import json

import pytest
import torch

from unisono.errors import UnisonoError
from unisono.lm import LMConfig, UnisonoLM
from unisono.train import speed
from unisono.train.data import collate, split_by_task
from unisono.train.loop import make_optimizer
from unisono.train.toydata import toy_examples, toy_vocab_size
from unisono.train.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
K, C = 2, 8


def mcfg(**kw):
    return dict(vocab_size=toy_vocab_size(K, C), num_streams=K, pad_id=0, pattern="delay", d_model=32, n_layers=2,
                n_heads=2, max_seq_len=128, **kw)


def trainer(out, examples=None, **train):
    tc = dict(max_steps=6, lr=2e-3, warmup_steps=1, max_frames=48, pool_size=5, save_every=3, log_every=1,
              tensorboard=False, cond_dropout=0.3, seed=2)
    tc.update(train)
    return Trainer(mcfg(), tc, out, split_by_task(examples or toy_examples(12, K, C, seed=1, max_len=6)))


def rows(run):
    return [json.loads(r) for r in (run / "log.jsonl").read_text().splitlines()]


def test_flops_of_a_step_follow_the_formula():
    model = UnisonoLM.from_config(LMConfig(**mcfg()))
    ex = toy_examples(3, K, C, seed=0, max_len=6)
    mb = collate(ex, 0)
    count = speed.FlopCount(model)
    body = sum(p.numel() for n, p in model.named_parameters() if n.startswith("backbone."))
    assert count.body == body and count.head == model.cfg.vocab_size * 32 and count.layers == 2
    lengths = [e["frames"].shape[0] for e in ex]
    want = 6 * body * sum(lengths) + 6 * count.head * int(mb["loss_mask"].sum()) \
        + 12 * 2 * 32 * sum(t * t for t in lengths)
    assert count([mb]) == pytest.approx(want)
    assert count([mb, mb]) == pytest.approx(2 * want)


def test_a_failing_compile_falls_back_to_eager_and_trains_the_same(tmp_path, monkeypatch, caplog):
    eager = trainer(tmp_path / "eager", compile=False)
    eager.train(progress=False)

    def broken(fn):
        def run(*a, **kw):
            raise RuntimeError("inductor says no\nsecond line")
        return run

    monkeypatch.setattr(speed.torch, "compile", broken)
    tr = trainer(tmp_path / "compiled", compile=True)
    assert tr.compiler.active and tr.compile_note == "on"
    with caplog.at_level("WARNING", logger="unisono"):
        tr.train(progress=False)
    assert "torch.compile failed at step 1 (RuntimeError: inductor says no)" in caplog.text
    assert not tr.compiler.active and tr.compile_note.startswith("fell back to eager at step 1")
    assert [r["loss"] for r in rows(tmp_path / "compiled")] == [r["loss"] for r in rows(tmp_path / "eager")]
    assert json.loads((tmp_path / "compiled" / "throughput.json").read_text())["compile"] == tr.compile_note


def test_compile_is_off_on_a_cpu_unless_asked_and_validation_stays_eager(tmp_path, monkeypatch):
    assert trainer(tmp_path / "a").compiler is None  # auto: a GPU only
    calls = []
    monkeypatch.setattr(speed.torch, "compile", lambda fn: (lambda x: calls.append(x.shape) or fn(x)))
    tr = trainer(tmp_path / "b", compile=True, max_steps=2)
    tr.train(progress=False)
    assert len(calls) == 2  # one per training step
    with torch.no_grad():
        tr.wrapped(**{k: v for k, v in collate(toy_examples(2, K, C, seed=3), 0).items()
                      if k in ("frames", "loss_mask")})
    assert len(calls) == 2  # no compiled pass without gradients
    with pytest.raises(UnisonoError, match="compile must be true, false or auto"):
        TrainConfig.from_dict({"compile": "yes"})


def test_prefetched_batches_are_the_same_and_resume_the_same(tmp_path):
    plain = trainer(tmp_path / "plain", prefetch=False)
    plain.train(progress=False)
    ahead = trainer(tmp_path / "ahead", prefetch=True)
    ahead.train(progress=False)
    assert [r["loss"] for r in rows(tmp_path / "ahead")] == [r["loss"] for r in rows(tmp_path / "plain")]

    class Killed(Exception):
        pass

    def kill(model, step, writer):
        if step == 5:
            raise Killed

    cut = trainer(tmp_path / "cut", prefetch=True, sample_every=1)  # killed after the checkpoint of step 3
    cut.sample_fn = kill
    with pytest.raises(Killed):
        cut.train(progress=False)
    assert json.loads((tmp_path / "cut" / "latest.json").read_text())["step"] == 3
    trainer(tmp_path / "cut", prefetch=True).train(progress=False)
    assert [r["loss"] for r in rows(tmp_path / "cut")] == [r["loss"] for r in rows(tmp_path / "plain")]


def test_the_wall_clock_budget_stops_saves_and_sizes_the_schedule(tmp_path):
    tr = trainer(tmp_path / "run", max_steps=10**6, max_seconds=1.5, save_every=0, warmup_steps=2, log_every=1000)
    last = tr.train(progress=False)
    assert 5 < tr.step < 10**6
    assert json.loads((tmp_path / "run" / "latest.json").read_text())["step"] == tr.step
    assert rows(tmp_path / "run")[-1]["step"] == tr.step  # the last update is logged
    assert tr.optim.settings.total_steps < 2 * tr.step  # the cosine was sized to the budget, not to max_steps
    assert last["lr"] < 0.5 * 2e-3
    tp = json.loads((tmp_path / "run" / "throughput.json").read_text())
    assert tp["stopped_by"] == "max_seconds" and tp["all"]["steps"] == tr.step and tp["all"]["tokens"] > 0
    assert tp["all"]["tflops"] > 0 and tp["peak_tflops"] is None and "mfu" not in tp["all"]


def test_mfu_against_the_given_peak(tmp_path):
    tr = trainer(tmp_path / "run", max_steps=3, peak_tflops=0.001)
    tr.train(progress=False)
    r = rows(tmp_path / "run")[-1]
    assert r["mfu"] == pytest.approx(r["tflops"] / 0.001)
    tp = json.loads((tmp_path / "run" / "throughput.json").read_text())
    assert tp["all"]["mfu"] == pytest.approx(tp["all"]["tflops"] / 0.001) and tp["stopped_by"] == "max_steps"


def test_wall_clock_estimates_the_steps_left():
    clock = speed.WallClock(100.0, step=0, skip=1)
    assert clock.steps_left(1) is None  # marks the rate's start
    clock.mark = (1, clock.start + 10.0)  # step 1 at 10 s; now is ~0 s after the start: no time spent yet
    assert clock.steps_left(1) is None
    assert speed.WallClock(0, 0).steps_left(50) is None and not speed.WallClock(0, 0).over()


def test_fused_adamw_is_asked_for():
    m = torch.nn.Linear(4, 4)
    assert make_optimizer(m.named_parameters(), 1e-3, 0.1, fused=True).defaults["fused"] is True
    assert not make_optimizer(m.named_parameters(), 1e-3, 0.1).defaults.get("fused")


@pytest.mark.slow
def test_the_compiled_transformer_trains_as_the_eager_one(tmp_path):
    """torch.compile for real (about a minute on a CPU): batches of several lengths and sizes, no fallback, the loss
    curve of the eager run to float tolerance."""
    eager = trainer(tmp_path / "eager", compile=False, max_steps=5)
    eager.train(progress=False)
    tr = trainer(tmp_path / "compiled", compile=True, max_steps=5)
    tr.train(progress=False)
    assert tr.compile_note == "on"
    a, b = rows(tmp_path / "eager"), rows(tmp_path / "compiled")
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-4)
