"""The language model's GPU run (scripts/h200_lm.sh): its Python path runs on the GPU image, which lacks soundfile,
soxr and lhotse (tests/gpu_image/sitecustomize.py makes them unimportable in a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unisono.errors import UnisonoError

ROOT = Path(__file__).resolve().parents[1]
GPU_IMAGE = Path(__file__).resolve().parent / "gpu_image"


def gpu_image_env() -> dict:
    """The environment of a subprocess that imports as on the GPU image (this checkout first on the path)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(GPU_IMAGE), str(ROOT)])}


def test_the_blocker_blocks():
    code = "import importlib.util; assert importlib.util.find_spec('soxr') is None; import soundfile"
    r = subprocess.run([sys.executable, "-c", code], env=gpu_image_env(), capture_output=True, text=True)
    assert r.returncode != 0 and "ModuleNotFoundError: import of soundfile halted" in r.stderr, r.stderr


def test_the_training_path_imports_without_soundfile_soxr_lhotse():
    code = "import unisono.train.launch, unisono.train.trainer, unisono.cli.train, unisono.cli; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], env=gpu_image_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


SCRIPT = ROOT / "scripts" / "h200_lm.sh"
TINY = ("model.d_model=32 model.n_layers=1 model.n_heads=2 model.max_seq_len=1024 train.max_frames=2048 "
        "train.pool_size=16 train.task_weights=null train.warmup_steps=2 train.log_every=1 train.eval_every=4 "
        "train.eval_batches=2")


def h200_lm():
    """scripts/h200_lm.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("h200_lm", ROOT / "scripts" / "h200_lm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_scripts_parse():
    for name in ("h200_lm.sh", "device_env.sh", "h200_codec_decoder.sh", "device_prepare.sh"):
        r = subprocess.run(["bash", "-n", str(ROOT / "scripts" / name)], capture_output=True, text=True)
        assert r.returncode == 0, (name, r.stderr)


def test_bad_input_is_refused_before_any_work(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), str(tmp_path), str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and "has no vocab.json" in r.stderr
    assert not (tmp_path / "out").exists()


def test_export_splits_rounds_validates_and_joins_into_a_checkpoint(tiny_checkpoint, tmp_path):
    """A tiny run exported with a small return budget: int8 chosen (float16 would not fit), the weights cut into
    parts, joined back here and packaged into a checkpoint the pipeline loads."""
    import yaml

    from unisono.inference import Pipeline
    from unisono.train.launch import make_trainer
    from unisono.weights import read_metadata

    shards = tiny_checkpoint.parent / "shards"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 1024},
                                   "train": {"max_steps": 2, "max_frames": 2048, "device": "cpu", "eval_batches": 2,
                                             "tensorboard": False}}))
    make_trainer(cfg, tmp_path / "run", shards=shards).train(progress=False)
    mod = h200_lm()
    out = tmp_path / "out"
    result = mod.export(str(tmp_path / "run"), str(out), str(shards), None, "cpu", "auto", max_mib=0.15,
                        part_mib=0.04)
    w = result["weights"]
    assert w["precision"] == "int8" and len(w["parts"]) == 3
    assert all((out / p["file"]).stat().st_size <= 0.04 * 2**20 for p in w["parts"])
    assert set(result["val_loss"]) == {"tts", "vc"} and result["val_source"].startswith("training shards")
    assert result["step"] == 2 and result["model_config"]["d_model"] == 32 and result["vocab"]["size"] > 0
    assert (out / "log.jsonl").is_file()
    ckpt = mod.join(str(out), str(tmp_path / "lm"), str(shards), str(tmp_path / "ckpt"))
    assert read_metadata(ckpt / "model.safetensors")["unisono_precision"] == "int8"
    pipe = Pipeline.from_pretrained(ckpt)
    assert pipe.lm.num_parameters() == w["parameters"]
    (out / w["parts"][1]["file"]).write_bytes(b"x")
    with pytest.raises(UnisonoError, match="sha256 differs"):
        mod.join(str(out), str(tmp_path / "lm2"))
    with pytest.raises(UnisonoError, match="more than --max-mib"):
        mod.export(str(tmp_path / "run"), str(tmp_path / "out2"), str(shards), None, "cpu", "float16", max_mib=0.1,
                   part_mib=15)


@pytest.mark.slow
def test_the_gpu_command_runs_on_a_cpu_as_on_the_gpu_image(tiny_checkpoint, tmp_path):
    """The exact command of the GPU run, DEVICE=cpu with a tiny model and a 3 s budget, soundfile, soxr and lhotse
    unimportable: every file of OUT (20-25 s on 2 shared cores)."""
    shards = tiny_checkpoint.parent / "shards"
    out = tmp_path / "out"
    env = {**gpu_image_env(), "DEVICE": "cpu", "WORK": str(tmp_path / "work"), "SET": TINY, "SMOKE_STEPS": "2",
           "GEN_SECONDS": "0.1"}
    r = subprocess.run(["bash", str(SCRIPT), str(shards), str(out), "3"], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert {"model.safetensors.00", "result.json", "log.jsonl", "run.log"} <= set(names) and len(names) <= 8
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())
    result = json.loads((out / "result.json").read_text())
    tp = result["throughput"]
    assert tp["stopped_by"] == "max_seconds" and tp["all"]["tokens_per_s"] > 0 and tp["all"]["mfu"] > 0
    assert tp["peak_tflops"] == 790 and set(result["val_loss"]) == {"tts", "vc"}
    gen = result["generation"]
    for b in (1, 16):
        assert gen[f"frames_per_s_unisono_b{b}"] > 0 and gen[f"frames_per_s_musicgen_b{b}"] > 0
    log = (out / "run.log").read_text()
    assert "smoke: ok" in log and "stopped on the wall-clock budget" in log


def test_features_pack_carries_a_codec_that_git_does_not_track(tmp_path, monkeypatch):
    """A store tokenized with a codec trained under runs/ (git-ignored) gets that codec copied, byte for byte (so its
    fingerprint holds), into the pack; a tracked codec is named where it is."""
    import importlib.util
    import shutil

    import unisono.whisper_torch as wt

    spec = importlib.util.spec_from_file_location("h200_lm", ROOT / "scripts" / "h200_lm.py")
    h200 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(h200)
    shipped = ROOT / "unisono" / "assets" / "unisono-small" / "codec"
    assert h200._tracked(shipped / "model.safetensors", ROOT)
    assert not h200._tracked(tmp_path / "x", ROOT) and not h200._tracked(ROOT / "runs" / "x", ROOT)

    def fake_export(out, precision="float16"):
        Path(out).write_bytes(b"w")
        return {"path": str(out), "bytes": 1, "fingerprint": "whisper_torch:test"}

    monkeypatch.setattr(wt, "export_encoder", fake_export)
    monkeypatch.setattr(h200, "feature_task_weights", lambda d, config: {"asr": 2.0, "asr_feat": 2.0})
    trained = tmp_path / "codec"  # outside the repository: as untracked as runs/
    shutil.copytree(shipped, trained)
    pack = ROOT / "runs" / f"test_pack_{os.getpid()}"
    try:
        pack.mkdir(parents=True)
        desc = {"name": "resynth", "fingerprint": "resynth:x", "params": {"encoder": "whisper_torch"}}
        (pack / "features.json").write_text(json.dumps({"encoder": desc}))
        for codec, where in ((trained, pack / "codec"), (shipped, shipped)):
            (pack / "codec.json").write_text(json.dumps({"source": str(codec)}))
            sets = h200.features_pack(str(pack)).read_text()
            assert f"train.feature_codec={where.relative_to(ROOT)} " in sets
        assert (pack / "codec" / "model.safetensors").read_bytes() == (trained / "model.safetensors").read_bytes()
    finally:
        shutil.rmtree(pack, ignore_errors=True)
