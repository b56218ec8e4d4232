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
