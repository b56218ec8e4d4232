"""The enhancement stage's training pairs and trainer (unisono.codec.enhance_data, unisono.codec.enhance_train,
unisono.data.enhance_pairs), on CPU with the shipped codec and a tiny enhancer."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import unisono
from unisono import checkpoint as C
from unisono.codec.enhance_data import (
    PairSampler,
    decode_inputs,
    load_pairs,
    pack_reference,
    unpack_reference,
    write_pairs,
)
from unisono.codec.enhance_train import load_enhancer_config, train_enhancer
from unisono.data.enhance_pairs import pan, sound_scene
from unisono.errors import UnisonoError

CODEC = C.codec_dir(C.DEFAULT_CHECKPOINT)
TINY_YAML = Path(unisono.__file__).parent / "configs" / "codec" / "enhancer_tiny.yaml"
TINY = {"model": {"width": 16, "latent_dim": 4}, "train": {"batch_size": 2, "segment_seconds": 0.2, "lr": 3e-3,
        "log_every": 5, "save_every": 10, "num_threads": 1, "disc_start": 15},
        "discriminator": {"periods": [2, 3], "n_ffts": [512], "channels": 2}}


def _clips(seed: int, n: int, seconds: float = 1.0):
    """Stereo test clips at 48 kHz: a chord whose right channel is quieter and brighter than its left."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 48000)) / 48000
    for i in range(n):
        f = rng.uniform(200, 400)
        low = 0.1 * np.sin(2 * np.pi * f * t)
        high = 0.02 * np.sin(2 * np.pi * 9000 * t)
        yield f"clip{i}", "music", np.stack([low, 0.6 * low + high]).astype(np.float32)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "pack"
    sources = {"train": {"music": _clips(0, 3), "sound": iter(())}, "test": {"music": _clips(1, 1), "sound": iter(())}}
    meta = write_pairs(out, CODEC, sources, {"train": 2**20, "test": 2**20}, progress=False)
    assert [len(m["items"]) for m in meta["splits"].values()] == [3, 1]
    return out


def test_pairs_round_trip_and_segments_stay_aligned(pack):
    items, meta = load_pairs(pack, "train")
    ref = np.round(next(_clips(0, 1))[2][:, :48000] * 32767).astype(np.int16)  # the first clip, as written
    assert np.array_equal(np.round(items[0]["ref"].numpy() * 32767).astype(np.int16), ref)
    rng = np.random.default_rng(0)
    loud = rng.integers(-32768, 32768, (2, 999)).astype(np.int16)  # full-scale jumps wrap in int16 and come back
    assert np.array_equal(unpack_reference(pack_reference(loud), 2), loud)
    assert meta["out_rate"] == 48000 and items[0]["ref"].shape == (2, 48000) and items[0]["codes"].dtype == torch.int64
    assert items[0]["codes"].shape[0] == meta["num_codebooks"]
    from unisono.codec import load_codec

    inputs = decode_inputs(load_codec(CODEC).eval(), items, 4)
    assert inputs[0].shape == (16000,)
    x, y = PairSampler(inputs, [it["ref"] for it in items], 1600, seed=0).batch(3)
    assert x.shape == (3, 1, 1600) and y.shape == (3, 2, 4800)
    with pytest.raises(UnisonoError, match="another codec"):
        load_pairs(pack, "train", fingerprint="0" * 16)
    with pytest.raises(UnisonoError, match="not a pair pack"):
        load_pairs(pack.parent, "train")


def test_training_lowers_the_loss_and_the_codec_stays_frozen(pack, tmp_path):
    torch.manual_seed(0)
    out = tmp_path / "enh"
    tr = train_enhancer(None, pack, out, CODEC, TINY, steps=30, progress=False)
    assert not any(p.requires_grad for p in tr.codec.parameters())
    trained = {id(p) for g in tr.opt_g.param_groups for p in g["params"]}
    assert trained == {id(p) for p in tr.enhancer.parameters()}  # the codec is in no optimizer
    first = np.mean([h["stft"] + 15 * h["mel"] for h in tr.history[:5]])
    last = np.mean([h["stft"] + 15 * h["mel"] for h in tr.history[-5:]])
    assert last < 0.85 * first, (first, last)
    assert "adv" in tr.history[-1] and "d_real" in tr.history[-1]  # the GAN started at step 15
    assert (out / "enhancer" / "model.safetensors").is_file() and (out / "log.jsonl").is_file()
    again = train_enhancer(None, pack, out, CODEC, TINY, steps=32, progress=False)  # resumes at 30
    assert again.step == 32 and len(again.history) == 2
    from unisono.codec import load_codec

    shipped = load_codec(CODEC).state_dict()
    assert all(torch.equal(v, shipped[k]) for k, v in again.codec.state_dict().items())  # not one weight moved


def test_config_errors_are_one_line():
    with pytest.raises(UnisonoError, match="unknown keys"):
        load_enhancer_config(None, {"model": {"widht": 3}})
    with pytest.raises(UnisonoError, match="unknown keys"):
        load_enhancer_config(None, {"train": {"stpes": 3}})
    with pytest.raises(UnisonoError, match="whole multiple"):
        load_enhancer_config(None, {"model": {"out_rate": 44100}})


def test_pan_and_sound_scenes_are_stereo():
    x = np.ones(480, np.float32)
    left = pan(x, -1.0)
    assert np.allclose(left[0], 1.0) and np.allclose(left[1, 29:], 0.0, atol=1e-6)  # hard left
    centre = pan(x, 0.0)
    assert np.allclose(centre[0], centre[1]) and np.isclose(centre[0, 0] ** 2 + centre[1, 0] ** 2, 1.0)
    right = pan(x, 0.5)
    assert right[0, :14].max() == 0.0 and right[1, 0] > 0  # the far (left) channel is late by 0.3 ms
    scene = sound_scene(np.random.default_rng(0), 1.0)
    assert scene.shape == (2, 48000) and not np.allclose(scene[0], scene[1])


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="FluidSynth is not installed")
def test_music_is_rendered_in_stereo(tmp_path):
    import mido

    from unisono.data.enhance_pairs import music_clips

    mid = mido.MidiFile()
    track = mido.MidiTrack()
    mid.tracks.append(track)
    for ch, (prog, note) in enumerate([(0, 60), (40, 67)]):
        track.append(mido.Message("program_change", channel=ch, program=prog, time=0))
        track.append(mido.Message("note_on", channel=ch, note=note, velocity=90, time=0))
    track.append(mido.Message("note_off", channel=0, note=60, time=960))
    track.append(mido.Message("note_off", channel=1, note=67, time=0))
    (tmp_path / "train").mkdir()
    mid.save(str(tmp_path / "train" / "m.mid"))
    (name, kind, wav), = list(music_clips(tmp_path, "train", seed=0))
    assert kind == "music" and wav.shape[0] == 2 and wav.shape[1] > 48000 // 2
    assert np.corrcoef(wav[0], wav[1])[0, 1] < 0.999  # placed channels: a stereo image


def test_cli_train_enhancer_help_and_a_missing_pack(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "unisono", "codec", *a], capture_output=True, text=True)  # noqa: E731
    assert run("train-enhancer", "--help").returncode == 0
    r = run("train-enhancer", "--pairs", str(tmp_path), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "not a pair pack" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_the_training_path_needs_no_soundfile_or_soxr(pack, tmp_path):
    """The GPU image has neither: the pack reader, the codec's decode and the trainer run without them."""
    code = ("import sys; sys.modules['soundfile'] = None; sys.modules['soxr'] = None\n"
            "from unisono.cli import main\n"
            f"sys.exit(main(['codec', 'train-enhancer', '--config', {str(TINY_YAML)!r}, "
            f"'--pairs', {str(pack)!r}, '--out', {str(tmp_path / 'o')!r}, '--steps', '2', '--no-progress', "
            "'--set', 'train.segment_seconds=0.1']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "enhancer saved" in r.stdout and (tmp_path / "o" / "enhancer" / "config.json").is_file()
