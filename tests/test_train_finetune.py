"""`unisono finetune`: a new task id without disturbing the old ones, LoRA, frozen layers, stability.

A tiny delay-pattern model is first trained on two synthetic codec tasks (copy: the target repeats the
condition; shift: the target is the condition + 3 in every codebook), then taught a third (negate:
every code c becomes 15 - c) from shards made with its vocabulary plus the new task.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from unisono.data.shards import shard_name, write_shard
from unisono.errors import UnisonoError
from unisono.lm import LMConfig, UnisonoLM
from unisono.tasks import Segment, band_limit, build_example, load_templates, parse_templates
from unisono.train.finetune import FinetuneConfig, finetune, freeze_layers
from unisono.train.lora import LoRALinear, add_lora, merge_lora
from unisono.vocab import Vocab

K, CB = 2, 16
TEMPLATES = """
version: 1
tasks:
  {name}:
    description: synthetic {name}
    conditions:
      - {{name: x, modality: codec, source: recording.x}}
    target: {{name: y, modality: codec, source: audio}}
"""
OLD = ("copy", "shift")
NEW = "negate"
MARGIN_NATS = 0.1  # old tasks' validation loss (nats/token) may rise by at most this much, with replay


def _target(task: str, x: torch.Tensor) -> torch.Tensor:
    if task == "copy":
        return x.clone()
    if task == "shift":
        return (x + 3) % CB
    return CB - 1 - x  # negate


def _examples(vocab: Vocab, task: str, n: int, seed: int) -> list[dict]:
    tpl = parse_templates(yaml.safe_load(TEMPLATES.format(name=task)))[task]
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        t = 6
        x = torch.randint(0, CB, (K, t), generator=g)
        segs = [Segment("codec", codes=x), Segment("codec", codes=_target(task, x))]
        out.append(build_example(vocab, tpl, segs, f"{task}-{seed}-{i}"))
    return out


def _write_shards(root: Path, vocab: Vocab, tasks, n_train=96, n_valid=24) -> Path:
    for split, n, seed in (("train", n_train, 1), ("valid", n_valid, 2)):
        vocab.save(root / split / "vocab.json")
        for task in tasks:
            write_shard(root / split / shard_name(task, 0), _examples(vocab, task, n, seed + 10 * len(task)), vocab)
    vocab.save(root / "vocab.json")
    return root


def _train_base(vocab: Vocab, shards: Path, out: Path, steps: int = 250) -> Path:
    from unisono.data.shards import ShardReader
    from unisono.train.data import collate

    torch.manual_seed(0)
    model = UnisonoLM.from_config(LMConfig(vocab_size=vocab.size, num_streams=K, pad_id=vocab.pad_id, pattern="delay",
                                           d_model=48, n_layers=2, n_heads=2, max_seq_len=128))
    data = list(ShardReader(shards / "train"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(data), (16,), generator=g).tolist()
        mb = collate([data[i] for i in idx], vocab.pad_id)
        loss = model.loss(mb["frames"], mb["loss_mask"])["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out, vocab_json=shards / "vocab.json")
    tasks = {t: yaml.safe_load(TEMPLATES.format(name=t))["tasks"][t] for t in OLD}
    (out / "tasks.yaml").write_text(yaml.safe_dump({"version": 1, "tasks": tasks}))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ft")
    base_vocab = Vocab.build(list(OLD), num_codebooks=K, codebook_size=CB, bpe=8)
    old_shards = _write_shards(root / "old", base_vocab, OLD)
    ckpt = _train_base(base_vocab, old_shards, root / "ckpt")
    new_vocab = base_vocab.with_task(NEW)
    new_shards = _write_shards(root / "new", new_vocab, [NEW])
    tpl = root / f"{NEW}.yaml"
    tpl.write_text(TEMPLATES.format(name=NEW))
    return {"root": root, "ckpt": ckpt, "old": old_shards, "new": new_shards, "tpl": tpl, "vocab": base_vocab}


def _run(s, out, **kw):
    kw.setdefault("steps", 60)
    kw.setdefault("max_frames", 512)
    cfg = FinetuneConfig(task=NEW, templates=[str(s["tpl"])], replay=str(s["old"]), seed=0, **kw)
    return finetune(s["ckpt"], s["new"], s["root"] / out, cfg, progress=False)


# ----------------------------------------------------------------------------------- vocabulary
def test_new_task_keeps_every_old_id_and_the_model_size(setup):
    r = _run(setup, "lora", lora_rank=4, replay_weight=0.5, lr=3e-3)
    assert r["val_loss_after"][NEW] < 0.8 * r["val_loss_before"][NEW]  # LoRA learns the new task too
    out = setup["root"] / "lora"
    base, new = setup["vocab"], Vocab.load(out / "vocab.json")
    for t in OLD:
        assert new.task_id(t) == base.task_id(t)
    assert new.task_id(NEW) == base.ranges["task"].start + len(OLD)  # the next free slot
    assert {n: (r_.start, r_.size) for n, r_ in new.ranges.items()} == \
        {n: (r_.start, r_.size) for n, r_ in base.ranges.items()}
    a, b = UnisonoLM.from_pretrained(setup["ckpt"]), UnisonoLM.from_pretrained(out)
    assert a.tok_emb.weight.shape == b.tok_emb.weight.shape and a.head_w.shape == b.head_w.shape
    # LoRA: the embedding table changed in the new task's row only; the heads not at all
    changed = (a.tok_emb.weight != b.tok_emb.weight).any(dim=1).nonzero().flatten().tolist()
    assert changed == [new.task_id(NEW)]
    assert torch.equal(a.head_w, b.head_w)
    assert r["parameters_trainable"] < 0.2 * r["parameters_total"]
    templates = load_templates([out / "tasks.yaml"])
    assert NEW in templates and set(OLD) <= set(templates)


# ----------------------------------------------------------------------------------------- LoRA
@pytest.mark.parametrize("pattern", ["delay", "multiscale"])
def test_lora_starts_as_the_base_model_and_only_adapters_learn(pattern):
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=60, num_streams=2, pad_id=0, pattern=pattern, d_model=32, n_layers=2, n_heads=2,
                   local_layers=1, max_seq_len=64)
    model = UnisonoLM.from_config(cfg)
    frames = torch.randint(6, 60, (2, 7, 2))
    frames[:, 1, 0] = 5  # the "task token" whose embedding row may learn
    ref = model(frames).detach()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = add_lora(model, rank=4)
    assert len(names) == 4 * (2 + (1 if pattern == "multiscale" else 0))  # wqkv, wo, w13, w2 per layer
    model.train_only_embedding_rows([5])
    assert model.free_embedding_rows == [5]
    assert model.trainable_parameters() == 32 + sum(p.numel() for n, p in model.named_parameters() if 'lora_' in n)
    assert torch.equal(model(frames), ref)  # B = 0: exactly the base model
    mask = torch.ones_like(frames, dtype=torch.bool)
    model.loss(frames, mask)["loss"].backward()
    for n, p in model.named_parameters():
        if "lora_" in n:
            assert p.requires_grad and p.grad is not None
        elif n == "tok_emb.weight":
            rows = p.grad.abs().sum(1).nonzero().flatten().tolist()
            assert rows == [5]  # only the new task token's row
        else:
            assert p.grad is None, n
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    opt.step()
    for n, p in model.named_parameters():
        if "lora_" not in n and n != "tok_emb.weight":
            assert torch.equal(p, base[n.replace(".base.", ".")]), n


def test_merged_lora_equals_the_adapted_forward():
    torch.manual_seed(1)
    model = UnisonoLM.from_config(LMConfig(vocab_size=50, num_streams=2, pad_id=0, pattern="delay", d_model=32,
                                           n_layers=2, n_heads=2, max_seq_len=64))
    keys = set(model.state_dict())
    add_lora(model, rank=3, alpha=6.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0.0, 0.05)
    frames = torch.randint(1, 50, (2, 6, 2))
    adapted = model(frames).detach()
    assert merge_lora(model) == 8
    assert set(model.state_dict()) == keys  # a plain checkpoint again
    merged = model(frames).detach()
    assert (merged - adapted).abs().max() < 1e-5
    assert (merged - adapted).abs().max() < 1e-3 * adapted.abs().max()


def test_lora_linear_starts_as_its_base_and_merges_into_it():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    x = torch.randn(3, 6)
    want = base(x).detach()
    lora = LoRALinear(base, rank=2, alpha=4.0)
    assert lora.scale == 2.0 and torch.equal(lora(x), want)  # B = 0: exactly the base layer
    assert set(lora.state_dict()) == {"base.weight", "base.bias", "lora_a", "lora_b"}  # state of its own
    assert [n for n, p in lora.named_parameters() if p.requires_grad] == ["lora_a", "lora_b"]
    with torch.no_grad():
        lora.lora_b.normal_()
    adapted = lora(x).detach()
    assert not torch.allclose(adapted, want)
    assert torch.allclose(adapted, want + 2.0 * x @ lora.lora_a.T @ lora.lora_b.T, atol=1e-5)
    merged = lora.merged()
    assert merged is base and torch.allclose(merged(x), adapted, atol=1e-5)
    with pytest.raises(UnisonoError, match="rank must be >= 1"):
        LoRALinear(torch.nn.Linear(2, 2), 0)


def test_an_adapted_model_saves_and_loads_its_adapters():
    cfg = LMConfig(vocab_size=50, num_streams=2, pad_id=0, pattern="delay", d_model=32, n_layers=1, n_heads=2)
    torch.manual_seed(2)
    a = UnisonoLM.from_config(cfg)
    add_lora(a, rank=2)
    with torch.no_grad():
        for m in a.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0.0, 0.1)
    b = UnisonoLM.from_config(cfg)
    add_lora(b, rank=2)
    b.load_state_dict(a.state_dict())  # the resumable state of a LoRA run
    frames = torch.randint(1, 50, (1, 5, 2))
    assert torch.equal(a(frames), b(frames))
    assert sum(k.endswith("lora_a") for k in a.state_dict()) == 4


def test_freeze_layers_bounds():
    model = UnisonoLM.from_config(LMConfig(vocab_size=50, num_streams=2, pad_id=0, d_model=32, n_layers=2, n_heads=2))
    with pytest.raises(UnisonoError, match="0..2"):
        freeze_layers(model, 3)
    frozen = freeze_layers(model, 1)
    assert frozen and all(n.startswith("layer0.") for n in frozen)


def test_frozen_layers_do_not_change(setup):
    r = _run(setup, "frozen", freeze_layers=1, steps=20)
    a, b = UnisonoLM.from_pretrained(setup["ckpt"]), UnisonoLM.from_pretrained(setup["root"] / "frozen")
    sa, sb = a.state_dict(), b.state_dict()
    for n in sa:
        if n.startswith("backbone.layers.0."):
            assert torch.equal(sa[n], sb[n]), n
    assert not torch.equal(sa["backbone.layers.1.ffn.w2.weight"], sb["backbone.layers.1.ffn.w2.weight"])
    assert r["mode"] == "freeze"
    layer0 = sum(v.numel() for n, v in sa.items() if n.startswith("backbone.layers.0."))
    assert r["parameters_trainable"] == r["parameters_total"] - layer0


# ------------------------------------------------------------------------------------ stability
def test_new_task_is_learned_and_old_tasks_stay_within_margin(setup):
    """Full fine-tuning with replay (half of the examples from the old tasks): the new task's validation loss
    falls by more than 70 %, and each old task's rises by at most MARGIN_NATS (its perplexity by at most
    exp(0.1) - 1 = 10.5 %). Without replay the same run breaks this margin (docs/finetune.md)."""
    r = _run(setup, "stab-full", replay_weight=0.5, steps=160, lr=1e-3)
    before, after = r["val_loss_before"], r["val_loss_after"]
    assert set(before) == {NEW, *OLD}
    assert after[NEW] < 0.3 * before[NEW], (before, after)
    for t in OLD:
        assert after[t] <= before[t] + MARGIN_NATS, (t, before, after)
        assert math.isclose(r["old_tasks_val_loss_relative_change"][t], (after[t] - before[t]) / before[t])
    assert r["steps"] == 160 and r["train_seconds"] > 0 and r["parameters_trainable"] == r["parameters_total"]
    assert set(r["examples_seen"]) == {NEW, *OLD} and r["examples_seen"][NEW] > 0


# ----------------------------------------------------------------------------------------- errors
def test_bad_inputs_are_one_line_errors(setup, tmp_path):
    s = setup

    def cfg(task=NEW, templates=(s["tpl"],), **kw):
        return FinetuneConfig(task=task, templates=[str(t) for t in templates], **kw)

    with pytest.raises(UnisonoError, match="already exists") as e:
        finetune(s["ckpt"], s["new"], tmp_path / "o", cfg("copy"), progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(UnisonoError, match=f"no template for task '{NEW}'"):
        finetune(s["ckpt"], s["new"], tmp_path / "o", cfg(templates=()), progress=False)
    other = _write_shards(tmp_path / "other", Vocab.build(["copy", NEW], num_codebooks=K, codebook_size=32, bpe=8),
                          [NEW], n_train=4, n_valid=2)
    with pytest.raises(UnisonoError, match="vocabulary mismatch") as e:
        finetune(s["ckpt"], other, tmp_path / "o", cfg(), progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(UnisonoError, match=f"hold no task '{NEW}'"):
        finetune(s["ckpt"], s["old"], tmp_path / "o", cfg(), progress=False)
    with pytest.raises(UnisonoError, match="one of --lora-rank and --freeze-layers"):
        finetune(s["ckpt"], s["new"], tmp_path / "o", cfg(lora_rank=2, freeze_layers=1), progress=False)
    with pytest.raises(UnisonoError, match="not a complete unisono checkpoint"):
        finetune(tmp_path, s["new"], tmp_path / "o", cfg(), progress=False)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_cli_reports_errors_without_traceback(setup, capsys):
    from unisono.cli import main

    rc = main(["finetune", "--checkpoint", str(setup["ckpt"]), "--task", "copy", "--shards", str(setup["new"]),
               "--out", str(setup["root"] / "x"), "--templates", str(setup["tpl"])])
    err = capsys.readouterr().err
    assert rc != 0 and "already exists" in err and "Traceback" not in err


# ------------------------------------------------------------------------ the worked task: superres
def test_resample_option_band_limits_and_is_validated():
    sr = 16000
    t = np.arange(sr) / sr
    wav = torch.tensor(0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 6000 * t), dtype=torch.float32)[
        None
    ]
    y = band_limit(wav, sr, 8000)
    assert y.shape == wav.shape
    spec = np.abs(np.fft.rfft(y[0, 2000:-2000].numpy()))
    f = np.fft.rfftfreq(wav.shape[-1] - 4000, 1 / sr)
    assert spec[np.abs(f - 6000) < 20].max() < 1e-3 * spec[np.abs(f - 1000) < 20].max()  # 6 kHz gone, 1 kHz kept
    assert torch.equal(band_limit(wav, sr, None), wav) and torch.equal(band_limit(wav, sr, 16000), wav)
    tpl = load_templates([Path(__file__).resolve().parents[1] / "configs" / "tasks" / "superres.yaml"])["superres"]
    assert tpl.conditions[0].resample == 8000 and tpl.kinds == ("speech",) and tpl.target.resample is None
    bad = {"version": 1, "tasks": {"t": {"conditions": [{"modality": "bpe", "source": "text", "resample": 8000}],
                                         "target": {"modality": "codec", "source": "audio"}}}}
    with pytest.raises(UnisonoError, match="audio sources only"):
        parse_templates(bad)
    bad["tasks"]["t"]["conditions"] = [{"modality": "codec", "source": "audio", "resample": "8k"}]
    with pytest.raises(UnisonoError, match="whole number of Hz"):
        parse_templates(bad)


def test_log_spectral_distance_measures_the_missing_high_band():
    from unisono.eval.metrics import Reference, score

    rng = np.random.default_rng(0)
    ref = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    narrow = band_limit(torch.from_numpy(ref)[None], 16000, 8000)[0].numpy()
    same = score("lsd", ref, Reference("a", audio=ref))
    assert same["lsd_db"] == 0.0 and same["lsd_high_db"] == 0.0
    v = score("lsd", narrow, Reference("a", audio=ref))
    from unisono.eval.metrics.lsd import log_spectral_distance

    low = log_spectral_distance(narrow, ref, 16000, high_hz=3500.0)
    assert v["lsd_high_db"] > 20.0 and low < 1.0 and v["lsd_db"] > low


def test_superres_end_to_end_on_the_built_in_corpus(tiny_checkpoint, tmp_path):
    """tokenize (checkpoint's vocab + tokenizers + superres template) -> finetune -> Pipeline -> generate."""
    from unisono.data.tokenize import load_codec_dir, tokenize_corpus
    from unisono.inference import Pipeline

    ck = Path(tiny_checkpoint)
    tpl = Path(__file__).resolve().parents[1] / "configs" / "tasks" / "superres.yaml"
    shards = tmp_path / "sr"
    extra = tmp_path / "extra.yaml"  # another new template, not selected: it must not take a slot
    extra.write_text(yaml.safe_dump({"version": 1, "tasks": {"aaa_unused": {
        "conditions": [{"modality": "codec", "source": "audio"}], "target": {"modality": "bpe", "source": "text"}}}}))
    st = tokenize_corpus(ck.parent / "corpus", shards, functools.partial(load_codec_dir, str(ck / "codec")),
                         tasks=["superres"], splits=("train", "valid"), templates_paths=[str(extra), str(tpl)],
                         vocab_path=str(ck / "vocab.json"), tokenizers_dir=str(ck), progress=False, jobs=1)
    assert st["per_task"]["train/superres"]["examples"] > 0 and not st["skipped"]
    base = Vocab.load(ck / "vocab.json")
    sv = Vocab.load(shards / "vocab.json")
    assert {t: sv.tasks[t] for t in base.tasks} == base.tasks and set(sv.tasks) == set(base.tasks) | {"superres"}
    assert sv.tasks["superres"] == min(set(range(64)) - set(base.tasks.values()))
    r = finetune(ck, shards, tmp_path / "ck_sr", FinetuneConfig(task="superres", templates=[str(tpl)], lora_rank=2,
                                                                steps=3, max_frames=512), progress=False)
    assert r["task_id"] == sv.task_id("superres") and "superres" in r["val_loss_after"]
    pipe = Pipeline.from_pretrained(tmp_path / "ck_sr")
    assert pipe.tasks["superres"].inputs == {"narrowband": "audio"}
    assert pipe.templates["superres"].conditions[0].resample == 8000
    out = pipe.generate("superres", narrowband=(np.zeros(4000, np.float32), 8000), max_duration=0.5)
    assert out.sample_rate == 16000 and out.wav.ndim == 1 and out.info["frames"] > 0


# ------------------------------------------------------------------------------ settings and resume
REPO = Path(__file__).resolve().parents[1]


def test_finetune_config_from_yaml_resolves_paths_and_refuses_unknown_keys(tmp_path):
    cfg = FinetuneConfig.load(REPO / "unisono" / "configs" / "finetune" / "superres_lora.yaml")
    assert (cfg.task, cfg.lora_rank, cfg.replay_weight, cfg.steps, cfg.mode) == ("superres", 8, 0.25, 2000, "lora")
    assert cfg.templates == [
        str(REPO / "unisono" / "configs" / "tasks" / "superres.yaml")
    ]  # read from the file's folder
    assert cfg.validate().step_settings().warmup_steps == 20
    f = tmp_path / "ft.yaml"
    f.write_text("task: negate\nreplay: old_shards\nlearning_rate: 1.0e-3\n")
    with pytest.raises(UnisonoError, match=r"unknown keys \['learning_rate'\]") as e:
        FinetuneConfig.load(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)
    f.write_text("task: negate\nreplay: old_shards\nnonfinite: ignore\n")
    assert FinetuneConfig.load(f).replay == str(tmp_path / "old_shards")
    with pytest.raises(UnisonoError, match="nonfinite must be 'skip' or 'stop'"):
        FinetuneConfig.load(f).validate()
    with pytest.raises(UnisonoError, match="no task to fine-tune"):
        FinetuneConfig().validate()


def test_cli_flags_override_the_config_file(tmp_path):
    import argparse

    from unisono.cli.finetune import add_arguments, config_from_args

    f = tmp_path / "ft.yaml"
    f.write_text("task: negate\nlora_rank: 8\nsteps: 40\nlr: 2.0e-3\n")
    p = argparse.ArgumentParser()
    add_arguments(p)
    base = ["--checkpoint", "c", "--shards", "s", "--out", "o", "--config", str(f)]
    cfg = config_from_args(p.parse_args(base + ["--steps", "7"]))
    assert (cfg.task, cfg.lora_rank, cfg.steps, cfg.lr) == ("negate", 8, 7, 2e-3)
    cfg = config_from_args(p.parse_args(base + ["--freeze-layers", "1"]))  # a mode flag replaces the file's mode
    assert (cfg.lora_rank, cfg.freeze_layers, cfg.mode) == (0, 1, "freeze")
    assert config_from_args(p.parse_args(base[:6])) == FinetuneConfig()


def test_an_interrupted_finetune_resumes_from_its_saved_step(setup, monkeypatch, interrupt_at_step):
    kw = {"lora_rank": 4, "replay_weight": 0.5, "lr": 3e-3, "steps": 12, "save_every": 5}
    full = _run(setup, "res-full", **kw)
    interrupt_at_step(8)  # in step 8: the state of step 5 is the last saved one
    with pytest.raises(KeyboardInterrupt):
        _run(setup, "res", **kw)
    monkeypatch.undo()
    out, state_dir = setup["root"] / "res", setup["root"] / "res.resume"
    assert not out.exists() and torch.load(state_dir / "state.pt", weights_only=True)["optim"]["step"] == 5
    with pytest.raises(UnisonoError, match=r"differs in \['lr'\]"):  # another run's state is not taken
        _run(setup, "res", **{**kw, "lr": 1e-3})
    r = _run(setup, "res", **kw)
    assert full["resumed_from_step"] is None and r["resumed_from_step"] == 5
    assert len(r["train_losses"]) == 12 and r["train_losses"] == full["train_losses"]  # the same batches
    assert r["val_loss_before"] == full["val_loss_before"] and r["examples_seen"] == full["examples_seen"]
    a, b = UnisonoLM.from_pretrained(setup["root"] / "res-full"), UnisonoLM.from_pretrained(out)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n
    assert not state_dir.exists()  # removed once the run completed


def test_cli_runs_from_a_config_file(setup, capsys):
    from unisono.cli import main

    f = setup["root"] / "cfg" / "negate.yaml"
    f.parent.mkdir(exist_ok=True)
    f.write_text(f"task: {NEW}\ntemplates: [../{setup['tpl'].name}]\nlora_rank: 2\nsteps: 3\nmax_frames: 512\n"
                 "save_every: 0\n")
    out = setup["root"] / "cli-cfg"
    assert main(["finetune", "--config", str(f), "--checkpoint", str(setup["ckpt"]), "--shards", str(setup["new"]),
                 "--out", str(out), "--steps", "2", "--no-progress"]) == 0
    r = json.loads((out / "finetune_report.json").read_text())
    assert (r["task"], r["mode"], r["lora_rank"], r["steps"], len(r["train_losses"])) == (NEW, "lora", 2, 2, 2)
    assert r["config"]["templates"] == [str(setup["tpl"].resolve())]
    assert f"{NEW} (new)" in capsys.readouterr().out
