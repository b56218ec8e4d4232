"""`unisono train --shards` on real token shards, and the checkpoint it writes used as a Pipeline."""

import json
from pathlib import Path

import numpy as np
import yaml

from unisono.cli import main
from unisono.inference import AudioOutput, Pipeline


def test_train_on_shards_writes_a_pipeline_checkpoint(tiny_checkpoint, tmp_path):
    shards = tiny_checkpoint.parent / "shards"
    cfg = {"model": {"pattern": "delay", "d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 1024},
           "train": {"max_steps": 4, "lr": 1e-3, "warmup_steps": 1, "max_frames": 2048, "save_every": 2,
                     "log_every": 1, "eval_every": 1000, "cond_dropout": 0.1, "device": "cpu",
                     "sample_every": 2}}
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--shards", str(shards), "--out", str(run), "--no-progress"]) == 0
    latest = run / json.loads((run / "latest.json").read_text())["path"]
    assert latest.name == "step_00000004"
    for f in ("config.json", "model.safetensors", "vocab.json", "tokenizers/phones.json", "codec.json"):
        assert (latest / f).exists(), f
    assert Path(json.loads((latest / "codec.json").read_text())["source"]).is_absolute()
    pipe = Pipeline.from_pretrained(latest)
    out = pipe.generate("se", seed=0, max_duration=0.3, noisy=(np.full(4000, 0.05, np.float32), 16000))
    assert isinstance(out, AudioOutput) and out.sample_rate == 16000
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = [
        EventAccumulator(str(p.parent), size_guidance={"audio": 0}).Reload() for p in (run / "tb").rglob("events.*")
    ]
    audio_tags = {t for ev in events for t in ev.Tags()["audio"]}
    assert any(t.startswith("samples/") for t in audio_tags), audio_tags


def test_set_and_max_seconds_override_the_config(tiny_checkpoint, tmp_path, capsys):
    shards = tiny_checkpoint.parent / "shards"
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({"model": {"d_model": 64, "n_layers": 2, "n_heads": 2, "max_seq_len": 1024},
                                        "train": {"max_steps": 100, "device": "cpu", "tensorboard": False}}))
    run = tmp_path / "run"
    args = ["train", "--config", str(cfg_path), "--shards", str(shards), "--out", str(run), "--no-progress",
            "--set", "model.d_model=32", "--set", "model.n_layers=1", "--set", "train.max_steps=3",
            "--set", "train.max_frames=2048", "--max-seconds", "600"]
    assert main(args) == 0
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["model"]["d_model"] == 32 and saved["model"]["n_layers"] == 1
    assert saved["train"]["max_steps"] == 3 and saved["train"]["max_seconds"] == 600
    assert json.loads((run / "throughput.json").read_text())["stopped_by"] == "max_steps"
    assert main(args[:8] + ["--set", "data.x=1"]) == 2
    assert "--set names sections ['data']" in capsys.readouterr().err
    assert main(args[:8] + ["--set", "train.lr"]) == 2
    assert "use SECTION.KEY=VALUE" in capsys.readouterr().err
