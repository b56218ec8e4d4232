import json

import pytest
import torch

from unisono.errors import UnisonoError
from unisono.lm import UnisonoLM
from unisono.train.data import split_by_task
from unisono.train.loop import lr_factor
from unisono.train.toydata import END, toy_examples, toy_stream_mask, toy_vocab_size
from unisono.train.trainer import TrainConfig, Trainer

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


# ------------------------------------------------------------------------------ the optimisation step
def _linear(w):
    m = torch.nn.Linear(len(w), 1, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([w]))
    return m


def _sgd_step(module, lr=1.0, **kw):
    from unisono.train.loop import OptimStep, StepSettings

    settings = StepSettings(lr=lr, total_steps=100, min_lr_ratio=1.0, **kw)
    return OptimStep(module, torch.optim.SGD(module.parameters(), lr=lr), settings, torch.device("cpu"))


def test_accumulated_micro_batches_equal_one_step_on_the_whole_batch():
    from unisono.train.data import collate

    ex = toy_examples(6, K, C, seed=4, max_len=7)
    counts = [int(e["loss_mask"].sum()) for e in ex]
    assert len({sum(counts[:2]), sum(counts[2:])}) == 2  # the micro-batches differ in loss tokens
    torch.manual_seed(0)
    base = UnisonoLM.from_config(model_cfg("delay"))

    def run(batches, weights):
        model = UnisonoLM.from_config(model_cfg("delay"))
        model.load_state_dict(base.state_dict())
        step = _sgd_step(model, lr=0.5, grad_clip=0.0)
        mbs = [collate(b, 0) for b in batches]
        r = step(mbs, lambda mb: model.loss(mb["frames"], mb["loss_mask"]), weights=weights)
        return r, model

    whole, m1 = run([ex], None)
    tokens = [float(sum(counts[:2])), float(sum(counts[2:]))]
    accum, m2 = run([ex[:2], ex[2:]], tokens)
    assert accum.loss == pytest.approx(whole.loss, rel=1e-5)
    assert accum.grad_norm == pytest.approx(whole.grad_norm, rel=1e-4)
    for (n, p), q in zip(m1.named_parameters(), m2.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n
    equal, _ = run([ex[:2], ex[2:]], None)  # weighting the micro-batches equally is another objective
    assert abs(equal.loss - whole.loss) > 1e-3


def test_gradient_norm_is_clipped():
    m = _linear([1.0, 1.0, 1.0, 1.0])
    step = _sgd_step(m, lr=1.0, grad_clip=1.0)
    x = torch.tensor([3.0, 4.0, 0.0, 0.0])
    r = step([x], lambda x: {"loss": m(x).sum()})
    assert r.grad_norm == pytest.approx(5.0) and not r.skipped and step.step == 1
    assert torch.allclose(m.weight, torch.tensor([[1 - 0.6, 1 - 0.8, 1.0, 1.0]]))  # moved by x / |x|


def test_a_non_finite_step_is_skipped_then_stops_the_run(caplog):
    m = _linear([2.0])
    step = _sgd_step(m, lr=0.5, max_skipped=1)
    one = torch.ones(1)

    def bad(x):
        return {"loss": m(x).sum() * float("nan")}

    def good(x):
        return {"loss": m(x).sum()}

    with caplog.at_level("WARNING", logger="unisono"):
        r = step([one], bad, batch="copy:7")
    assert r.skipped and step.step == 0 and step.skipped_in_row == 1 and m.weight.item() == 2.0
    assert m.weight.grad is None and "at step 1 in the batch [copy:7]" in caplog.text
    r = step([one], good)
    assert not r.skipped and step.step == 1 and step.skipped_in_row == 0 and m.weight.item() == pytest.approx(1.5)
    step([one], bad)
    with pytest.raises(UnisonoError, match=r"at step 2 in the batch \[b\]; stopping \(2 batches in a row"):
        step([one], bad, batch="b")
    stop = _sgd_step(_linear([1.0]), nonfinite="stop")
    with pytest.raises(UnisonoError, match="non-finite policy is 'stop'"):
        stop([one], lambda x: {"loss": torch.tensor(float("inf"), requires_grad=True)})


def test_lr_factor_values_and_the_schedule_of_the_step():
    from unisono.train.loop import OptimStep, StepSettings

    want = {0: 0.25, 3: 1.0, 4: 1.0, 8: 0.55, 12: 0.1, 20: 0.1}  # warm-up 4, cosine to 0.1 at 12
    for step, f in want.items():
        assert lr_factor(step, 4, 12, 0.1) == pytest.approx(f)
    assert lr_factor(10, 0, 20, 1.0) == 1.0
    m = _linear([0.0])
    step = OptimStep(m, torch.optim.SGD(m.parameters(), lr=2.0), StepSettings(lr=2.0, total_steps=12, warmup_steps=4),
                     torch.device("cpu"))
    lrs = [step([torch.ones(1)], lambda x: {"loss": m(x).sum()}).lr for _ in range(9)]
    assert lrs == pytest.approx([2.0 * lr_factor(i, 4, 12, 0.1) for i in range(9)])


def test_ema_follows_the_weights():
    m = _linear([1.0])
    step = _sgd_step(m, lr=0.5, ema_decay=0.9, grad_clip=0.0)
    for want_w, want_ema in ((0.5, 0.95), (0.0, 0.855)):
        step([torch.ones(1)], lambda x: {"loss": m(x).sum()})  # gradient 1: w falls by 0.5
        assert m.weight.item() == pytest.approx(want_w)
        assert step.ema.state_dict()["weight"].item() == pytest.approx(want_ema)  # 0.9 * ema + 0.1 * w


def test_make_optimizer_decays_matrices_only():
    from unisono.train.loop import make_optimizer

    model = UnisonoLM.from_config(model_cfg("delay"))
    model.bos.requires_grad_(False)
    opt = make_optimizer(model.named_parameters(), 1e-3, 0.1, no_decay=("tok_emb.weight",))
    decay, rest = opt.param_groups
    assert (decay["weight_decay"], rest["weight_decay"]) == (0.1, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() >= 2 for p in decay["params"]) and "tok_emb.weight" in {names[id(p)] for p in rest["params"]}
    assert "bos" not in {names[id(p)] for g in opt.param_groups for p in g["params"]}  # frozen: left out


def test_validation_loss_is_the_mean_token_cross_entropy():
    from unisono.train.data import collate
    from unisono.train.loop import budget_batches, validation_loss

    ex = toy_examples(8, K, C, seed=2, max_len=6)
    lengths = [e["frames"].shape[0] for e in ex]
    batches = budget_batches(ex, 2 * max(lengths), 100)
    assert [e for b in batches for e in b] == ex and all(len(b) * max(e["frames"].shape[0] for e in b) <=
                                                         2 * max(lengths) for b in batches)
    assert len(budget_batches(ex, 2 * max(lengths), 2)) == 2
    torch.manual_seed(0)
    model = UnisonoLM.from_config(model_cfg("delay")).train()
    got = validation_loss(model, {"all": lambda: iter(ex)}, 0, 2 * max(lengths), 100, "cpu", num_streams=K)
    with torch.no_grad():
        out = model.eval().loss(*(collate(ex, 0)[k] for k in ("frames", "loss_mask")))
    assert got["all"] == pytest.approx(float(out["stream_sum"].sum() / out["stream_count"].sum()), rel=1e-5)
