import json

import pytest
import torch

from unisono.errors import UnisonoError
from unisono.lm import UnisonoLM
from unisono.train.data import split_by_task
from unisono.train.toydata import END, toy_examples, toy_stream_mask, toy_vocab_size
from unisono.train.loop import lr_factor
from unisono.train.trainer import Trainer, TrainConfig

K, C = 3, 16


def model_cfg(pattern):
    return dict(vocab_size=toy_vocab_size(K, C), num_streams=K, pad_id=0, pattern=pattern, d_model=64, n_layers=2,
                n_heads=4, local_layers=1, local_d_model=32, local_heads=2, max_seq_len=128)


@pytest.fixture(autouse=True)
def one_thread():
    # tiny models gain nothing from a second thread, and lose much when the cores are shared
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


OVERFIT_LOSS = 0.3  # nats per token, from ~4.0 at initialisation (ln 52)


@pytest.mark.parametrize("pattern", ["multiscale", "delay", "flat"])
def test_tiny_model_overfits_each_task(pattern, tmp_path):
    ex = toy_examples(8, K, C, seed=0)
    tc = dict(max_steps=120, lr=3e-3, warmup_steps=10, max_frames=512, pool_size=8, save_every=0, log_every=1,
              tensorboard=False, weight_decay=0.0)
    tr = Trainer(model_cfg(pattern), tc, tmp_path / "run", split_by_task(ex))
    m = tr.train(progress=False)
    assert m["loss_task/copy"] < OVERFIT_LOSS and m["loss_task/count"] < OVERFIT_LOSS
    first = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert first["loss"] > 2.0
    # the trained model continues a training prompt correctly with greedy decoding
    e = ex[1] if pattern != "multiscale" else ex[0]
    t0 = int(e["cond_mask"].nonzero()[-1]) + 1
    model = UnisonoLM.from_pretrained(tmp_path / "run" / "checkpoints" / "step_00000120")
    out = model.generate(e["frames"][None, :t0], 20, stream_mask=toy_stream_mask(K, C), end_id=END, temperature=0)
    target = e["frames"][t0:]
    assert out.shape[1] == target.shape[0]
    assert (out[0] == target).float().mean() > 0.9


def run_cfg(**kw):
    base = dict(max_steps=8, lr=2e-3, warmup_steps=2, max_frames=48, pool_size=5, grad_accum=2, save_every=4,
                log_every=1, cond_dropout=0.3, task_weights={"copy": 2.0, "count": 1.0}, ema_decay=0.9, seed=3)
    base.update(kw)
    return base


class Killed(Exception):
    pass


def test_resume_after_kill_gives_the_same_loss_curve(tmp_path):
    ex = toy_examples(16, K, C, seed=1, max_len=6)
    val = toy_examples(6, K, C, seed=9, max_len=6)
    vocab = tmp_path / "vocab.json"
    vocab.write_text('{"size": 52}')

    def trainer(out, **kw):
        return Trainer(model_cfg("delay"), run_cfg(**kw), out, split_by_task(ex), val_sources=split_by_task(val),
                       vocab_json=vocab)

    full = trainer(tmp_path / "a", eval_every=4)
    full.train(progress=False)

    def kill(model, step, writer):
        if step == 6:
            raise Killed

    b = Trainer(model_cfg("delay"), run_cfg(eval_every=4, sample_every=1), tmp_path / "b", split_by_task(ex),
                val_sources=split_by_task(val), vocab_json=vocab, sample_fn=kill)
    with pytest.raises(Killed):
        b.train(progress=False)
    assert json.loads((tmp_path / "b" / "latest.json").read_text())["step"] == 4
    trainer(tmp_path / "b", eval_every=4).train(progress=False)

    rows = lambda d: [json.loads(r) for r in (d / "log.jsonl").read_text().splitlines()]
    ra, rb = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert [r["step"] for r in rb] == list(range(1, 9))
    for x, y in zip(ra, rb):
        assert x["loss"] == y["loss"] and x["lr"] == y["lr"]
        assert x.get("val_loss/copy") == y.get("val_loss/copy")
    assert "val_loss/copy" in ra[3] and "val_loss/count" in ra[7] and "loss_stream/2" in ra[0]
    ck = tmp_path / "b" / "checkpoints" / "step_00000008"
    assert (ck / "vocab.json").read_text() == '{"size": 52}'
    ma = UnisonoLM.from_pretrained(tmp_path / "a" / "checkpoints" / "step_00000008")
    mb = UnisonoLM.from_pretrained(ck)
    for (n, p), q in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(p, q), n
    ema = UnisonoLM.from_pretrained(ck / "ema")
    assert not torch.equal(ema.head_w, mb.head_w)
    assert (tmp_path / "a" / "tb").is_dir() and any((tmp_path / "a" / "tb").iterdir())


def test_lr_schedule_and_config_errors():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert 0.1 < lr_factor(55, 10, 100, 0.1) < 1.0
    with pytest.raises(UnisonoError, match="unknown keys"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
