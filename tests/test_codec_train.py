import numpy as np
import pytest
import soundfile as sf
import torch

from unisono.codec import load_codec
from unisono.codec.data import list_audio
from unisono.codec.trainer import Trainer, load_config
from unisono.errors import UnisonoError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "model": dict(encoder_channels=4, latent_dim=16, decoder_dim=32, decoder_blocks=1, num_codebooks=2,
                  codebook_size=16, kmeans_iters=2),
    "train": dict(batch_size=2, segment_seconds=0.2, lr=3e-3, disc_start=10**6, log_every=5, sample_every=0,
                  save_every=1000, num_threads=0),
    "discriminator": dict(channels=2, periods=[2, 3], n_ffts=[256]),
}


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("wavs")
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    for i in range(4):
        f0 = rng.uniform(100, 250)
        x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 8)) * 0.1 * (1 + np.sin(2 * np.pi * 3 * t))
        sf.write(d / f"tone{i}.wav", x.astype(np.float32), 16000)
    (d / "notes.txt").write_text("not audio")
    return d


def test_list_audio_folder_and_errors(audio_dir, tmp_path):
    items = list_audio(audio_dir)
    assert [it.path.name for it in items] == [f"tone{i}.wav" for i in range(4)]
    with pytest.raises(UnisonoError):
        list_audio(tmp_path / "missing")
    with pytest.raises(UnisonoError):
        list_audio(tmp_path)  # empty folder


def test_list_audio_cuts_manifest(audio_dir, tmp_path):
    from lhotse import CutSet, Recording

    root = tmp_path / "corpus"
    (root / "manifests" / "test").mkdir(parents=True)
    (root / "audio").mkdir()
    import shutil

    shutil.copy(audio_dir / "tone0.wav", root / "audio" / "a.wav")
    rec = Recording.from_file(root / "audio" / "a.wav")
    rec.sources[0].source = "audio/a.wav"  # relative to the corpus dir, as the built-in corpus writes
    CutSet.from_cuts([rec.to_cut()]).to_file(root / "manifests" / "test" / "cuts.jsonl")
    for data in (root, root / "manifests" / "test" / "cuts.jsonl"):
        items = list_audio(data, "test")
        assert len(items) == 1 and items[0].path == root / "audio" / "a.wav" and items[0].duration == 1.0
    with pytest.raises(UnisonoError, match="no train split"):
        list_audio(root, "train")


def test_tiny_codec_mel_loss_falls(audio_dir, tmp_path):
    torch.manual_seed(0)
    tr = Trainer(load_config(None, TINY), audio_dir, tmp_path / "run", progress=False)
    hist = tr.fit(40)
    first = np.mean([h["mel"] for h in hist[:5]])
    last = np.mean([h["mel"] for h in hist[-5:]])
    assert last < 0.8 * first, (first, last)
    assert all(np.isfinite(h["loss"]) for h in hist)
    assert "perplexity_0" in hist[-1] and hist[-1]["perplexity_0"] >= 1.0
    codec = load_codec(tmp_path / "run")
    w = torch.from_numpy(sf.read(audio_dir / "tone0.wav", dtype="float32")[0])[None, None]
    assert torch.equal(codec.encode(w), tr.codec.eval().encode(w))


def test_gan_step_and_exact_resume(audio_dir, tmp_path):
    cfg = load_config(None, {**TINY, "train": {**TINY["train"], "disc_start": 1}})
    torch.manual_seed(0)
    a = Trainer(cfg, audio_dir, tmp_path / "a", progress=False)
    ha = a.fit(4)
    assert "adv" not in ha[0] and "adv" in ha[-1] and "fm" in ha[-1] and "disc" in ha[-1]
    torch.manual_seed(0)
    b = Trainer(cfg, audio_dir, tmp_path / "b", progress=False)
    b.fit(2)
    b.save()
    torch.manual_seed(123)  # a fresh process would have another RNG state
    c = Trainer(cfg, audio_dir, tmp_path / "b", progress=False)
    assert c.maybe_resume() and c.step == 2
    c.fit(4)
    for (ka, va), (kc, vc) in zip(a.codec.state_dict().items(), c.codec.state_dict().items()):
        assert ka == kc and torch.allclose(va, vc, atol=1e-6), ka


def test_config_errors(tmp_path):
    with pytest.raises(UnisonoError):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(UnisonoError, match="unknown keys"):
        load_config(None, {"train": {"stepz": 3}})
    with pytest.raises(UnisonoError):
        load_config(None, {"model": {"n_fft": 1000}})


@pytest.mark.filterwarnings("ignore:Detected call of")  # the schedule is stepped alone on purpose
def test_lr_warmup_then_decay(audio_dir, tmp_path):
    cfg = load_config(None, {**TINY, "train": {**TINY["train"], "warmup_steps": 4, "lr": 1e-3, "lr_decay": 0.5}})
    tr = Trainer(cfg, audio_dir, tmp_path / "w", progress=False)
    lrs = []
    for _ in range(6):
        lrs.append(tr.opt_g.param_groups[0]["lr"])
        tr.sched_g.step()
    assert np.allclose(lrs, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 5e-4])


def test_freeze_encoder_keeps_codes_and_trains_the_decoder(audio_dir, tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "f"
    Trainer(load_config(None, TINY), audio_dir, run, progress=False).fit(10)  # saved at the end
    w = torch.from_numpy(sf.read(audio_dir / "tone1.wav", dtype="float32")[0])[None, None]
    before = load_codec(run)
    codes = before.encode(w)
    cfg = load_config(None, {**TINY, "train": {**TINY["train"], "freeze_encoder": True}})
    tr = Trainer(cfg, audio_dir, run, progress=False)
    assert tr.maybe_resume() and tr.step == 10
    hist = tr.fit(40)[-30:]
    after = load_codec(run)
    assert torch.equal(after.encode(w), codes)  # codes keep their meaning
    for name, v in before.state_dict().items():
        same = torch.equal(v, after.state_dict()[name])
        assert same == (not name.startswith("decoder.")), name
    assert np.mean([h["mel"] for h in hist[-5:]]) < np.mean([h["mel"] for h in hist[:5]])


def test_a_new_decoder_on_frozen_codes(audio_dir, tmp_path):
    torch.manual_seed(0)
    run = tmp_path / "n"
    Trainer(load_config(None, TINY), audio_dir, run, progress=False).fit(6)
    w = torch.from_numpy(sf.read(audio_dir / "tone2.wav", dtype="float32")[0])[None, None]
    codes = load_codec(run).encode(w)
    other = {**TINY, "model": {**TINY["model"], "phase": "if", "decoder_dim": 24}}
    with pytest.raises(UnisonoError, match="freeze_encoder"):  # the whole codec may not change its decoder
        Trainer(load_config(None, other), audio_dir, run, progress=False).maybe_resume()
    with pytest.raises(UnisonoError, match="latent_dim"):  # the encoder may not change at all
        bad = {
            **other,
            "model": {**other["model"], "latent_dim": 8},
            "train": {**TINY["train"], "freeze_encoder": True},
        }
        Trainer(load_config(None, bad), audio_dir, run, progress=False).maybe_resume()
    tr = Trainer(load_config(None, {**other, "train": {**TINY["train"], "freeze_encoder": True}}), audio_dir, run,
                 progress=False)
    assert tr.maybe_resume()
    tr.fit(10)
    after = load_codec(run)
    assert after.config.phase == "if" and after.config.decoder_dim == 24
    assert torch.equal(after.encode(w), codes)


def test_a_parameter_free_decoder_change_keeps_the_trained_decoder(audio_dir, tmp_path):
    """harmonic_phase has no weights of its own: decoder-only training goes on with the trained decoder."""
    torch.manual_seed(0)
    run = tmp_path / "p"
    model = {**TINY["model"], "harmonics": 8}
    Trainer(load_config(None, {**TINY, "model": model}), audio_dir, run, progress=False).fit(4)
    before = load_codec(run).decoder.state_dict()
    cfg = load_config(None, {**TINY, "model": {**model, "harmonic_phase": "minimum"},
                             "train": {**TINY["train"], "freeze_encoder": True}})
    tr = Trainer(cfg, audio_dir, run, progress=False)
    assert tr.maybe_resume() and tr.step == 4
    assert all(torch.equal(v, tr.codec.decoder.state_dict()[k]) for k, v in before.items())
    tr.fit(6)
    assert load_codec(run).config.harmonic_phase == "minimum"


def test_harmonic_decoder_learns_the_f0_of_its_input(audio_dir, tmp_path):
    torch.manual_seed(0)
    cfg = load_config(None, {**TINY, "model": {**TINY["model"], "harmonics": 8, "causal": False}})
    hist = Trainer(cfg, audio_dir, tmp_path / "h", progress=False).fit(60)
    assert all("f0" in h and np.isfinite(h["f0"]) for h in hist)
    assert np.mean([h["f0"] for h in hist[-5:]]) < 0.7 * np.mean([h["f0"] for h in hist[:5]])


def test_decoder_only_training_with_an_f0_codebook(audio_dir, tmp_path):
    torch.manual_seed(0)
    model = {**TINY["model"], "harmonics": 8, "causal": False, "f0_codebook": True, "num_codebooks": 3,
             "codebook_size": 64, "encoder": "stft", "encoder_dim": 16, "encoder_blocks": 1}
    run = tmp_path / "f0c"
    Trainer(load_config(None, {**TINY, "model": model}), audio_dir, run, progress=False).fit(6)
    w = torch.from_numpy(sf.read(audio_dir / "tone3.wav", dtype="float32")[0])[None, None]
    codes = load_codec(run).encode(w)
    assert int((codes[0, 0] > 0).sum()) > 40  # a voiced tone: F0 codes
    cfg = load_config(None, {**TINY, "model": model, "train": {**TINY["train"], "freeze_encoder": True}})
    tr = Trainer(cfg, audio_dir, run, progress=False)
    assert tr.maybe_resume()
    hist = tr.fit(16)
    assert torch.equal(load_codec(run).encode(w), codes) and np.isfinite(hist[-1]["mel"])


def test_a_new_run_from_a_trained_codec_stops_on_its_wall_clock_budget(audio_dir, tmp_path):
    """--init: the run starts from the codec's weights (its config as the model section); train.max_seconds stops
    it, saved, with the last step in log.jsonl."""
    import json

    from unisono.codec.trainer import train

    torch.manual_seed(0)
    base = tmp_path / "base"
    Trainer(load_config(None, TINY), audio_dir, base, progress=False).fit(4)
    before = load_codec(base)
    w = torch.from_numpy(sf.read(audio_dir / "tone1.wav", dtype="float32")[0])[None, None]
    over = {"train": {**TINY["train"], "freeze_encoder": True, "max_seconds": 1.5, "log_every": 1000,
                      "decoder_codebooks": 2, "preload": True},
            "discriminator": TINY["discriminator"]}
    tr = train(None, audio_dir, tmp_path / "run", over, steps=10**6, progress=False, init=base)
    assert 0 < tr.step < 10**6 and len(tr.history) == tr.step  # stopped by the budget, not by the step count
    after = load_codec(tmp_path / "run")
    assert after.config.to_dict() == before.config.to_dict()
    assert torch.equal(after.encode(w), before.encode(w))
    changed = {k for k, v in before.state_dict().items() if not torch.equal(v, after.state_dict()[k])}
    assert changed and all(k.startswith("decoder.") for k in changed)
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == tr.step and np.isfinite(lines[-1]["mel"]) and "perplexity_1" in lines[-1]
    # running it again resumes that run with its own config: --init is not needed (nor harmful)
    again = train(None, audio_dir, tmp_path / "run", over, steps=tr.step + 2, progress=False)
    assert again.step == tr.step + 2
    again = train(None, audio_dir, tmp_path / "run", over, steps=tr.step + 3, progress=False, init=base)
    assert again.step == tr.step + 3
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == tr.step + 3
    # a log line written after the last save (a kill between the two) is dropped when the run resumes
    with open(tmp_path / "run" / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": tr.step + 50, "mel": 1.0}) + "\n" + '{"step": 9')
    train(None, audio_dir, tmp_path / "run", over, steps=tr.step + 4, progress=False)
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == tr.step + 4 and tr.step + 50 not in steps
    # a fresh run into the folder (its training state deleted) starts the log anew
    (tmp_path / "run" / "train_state.pt").unlink()
    train(None, audio_dir, tmp_path / "run", over, steps=1, progress=False, init=base)
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()] == [1]


def test_init_errors(audio_dir, tmp_path):
    from unisono.codec.trainer import train

    torch.manual_seed(0)
    base = tmp_path / "base"
    Trainer(load_config(None, TINY), audio_dir, base, progress=False).fit(2)
    with pytest.raises(UnisonoError, match="not a codec directory"):
        train(None, audio_dir, tmp_path / "a", TINY, steps=1, progress=False, init=tmp_path / "nothing")
    with pytest.raises(UnisonoError, match="latent_dim"):  # the encoder may not change
        train(None, audio_dir, tmp_path / "b", {**TINY, "model": {"latent_dim": 8}}, steps=1, progress=False, init=base)
    with pytest.raises(UnisonoError, match="freeze_encoder"):  # a decoder change needs decoder-only training
        train(
            None, audio_dir, tmp_path / "c", {**TINY, "model": {"decoder_dim": 24}}, steps=1, progress=False, init=base
        )
    assert not (tmp_path / "b" / "model.safetensors").exists()
    with pytest.raises(UnisonoError, match="same directory"):
        train(None, audio_dir, base, TINY, steps=1, progress=False, init=base)
    with pytest.raises(UnisonoError, match="max_seconds"):
        load_config(None, {"train": {"max_seconds": -5}})
    with pytest.raises(UnisonoError, match="decoder_codebooks"):
        Trainer(load_config(None, {**TINY, "train": {**TINY["train"], "decoder_codebooks": 2}}), audio_dir,
                tmp_path / "d", progress=False)
    with pytest.raises(UnisonoError, match="decoder_codebooks"):
        Trainer(load_config(None, {**TINY, "train": {**TINY["train"], "decoder_codebooks": 3, "freeze_encoder": True}}),
                audio_dir, tmp_path / "e", progress=False)


def test_preloaded_segments_equal_the_segments_read_from_files(audio_dir):
    from unisono.codec.data import SegmentSampler

    items = list_audio(audio_dir)
    a = SegmentSampler(items, 16000, 3200, seed=3)
    b = SegmentSampler(items, 16000, 3200, seed=3, preload=True)
    for _ in range(3):
        assert torch.equal(a.batch(4), b.batch(4))


def test_pack_audio_keeps_to_its_budget(audio_dir, tmp_path, capsys):
    from unisono.cli import main
    from unisono.codec.data import pack_audio

    items = list_audio(audio_dir)
    one = pack_audio(items[:1], tmp_path / "one", 10**7, 16000, progress=False)["bytes"]
    stats = pack_audio(items, tmp_path / "p", int(2.5 * one), 16000, progress=False)
    files = sorted((tmp_path / "p").glob("*.flac"))
    assert stats["files"] == len(files) == 2 and sum(f.stat().st_size for f in files) == stats["bytes"] <= 2.5 * one
    assert stats["seconds"] == 2.0 and not (tmp_path / "p.partial").exists()
    x, sr = sf.read(files[0], dtype="float32")
    assert sr == 16000 and x.shape == (16000,)
    assert len(list_audio(tmp_path / "p")) == 2  # usable as --data
    with pytest.raises(UnisonoError, match="exists"):
        pack_audio(items, tmp_path / "p", 10**7, 16000, progress=False)
    with pytest.raises(UnisonoError, match="not one file"):
        pack_audio(items, tmp_path / "tiny", 100, 16000, progress=False)
    assert not (tmp_path / "tiny").exists() and not (tmp_path / "tiny.partial").exists()
    assert main(["codec", "pack", "--data", str(audio_dir), "--out", str(tmp_path / "cli"), "--max-mib", "1"]) == 0
    assert "4 files" in capsys.readouterr().out


def test_decoder_merge_script(audio_dir, tmp_path):
    """scripts/codec_decoder_merge.py puts trained decoder weights into a codec: same codes, the new decoder."""
    import importlib.util
    from pathlib import Path

    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location(
        "codec_decoder_merge", Path(__file__).resolve().parents[1] / "scripts" / "codec_decoder_merge.py")
    merge = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merge)
    torch.manual_seed(0)
    Trainer(load_config(None, TINY), audio_dir, tmp_path / "a", progress=False).fit(2)
    codec = load_codec(tmp_path / "a")
    new = {k: v + 0.01 for k, v in codec.state_dict().items() if k.startswith("decoder.") and v.is_floating_point()}
    save_file(new, str(tmp_path / "dec.safetensors"))
    out = merge.merge(tmp_path / "a", tmp_path / "dec.safetensors", tmp_path / "m", "float32")
    merged = load_codec(out).state_dict()
    for k, v in codec.state_dict().items():
        assert torch.equal(merged[k], new[k] if k in new else v), k
    save_file({k: v for k, v in list(new.items())[1:]}, str(tmp_path / "short.safetensors"))
    assert merge.main(["--codec", str(tmp_path / "a"), "--decoder", str(tmp_path / "short.safetensors"),
                       "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_bf16_discriminators_give_the_float32_losses_within_bf16_precision(audio_dir, tmp_path):
    seen = []
    cfgs = [load_config(None, {**TINY, "train": {**TINY["train"], "disc_start": 0, "amp": amp}})
            for amp in ("none", "bf16")]
    logs = []
    for i, cfg in enumerate(cfgs):
        torch.manual_seed(0)
        tr = Trainer(cfg, audio_dir, tmp_path / str(i), progress=False)
        conv = tr.disc.mpd.discs[0].convs[0]
        hook = conv.register_forward_hook(lambda m, a, out, amp=cfg["train"]["amp"]: seen.append((amp, out.dtype)))
        logs.append(tr.train_step(tr.sampler.batch(2)))
        hook.remove()
    assert {d for a, d in seen if a == "none"} == {torch.float32} and {d for a, d in seen if a == "bf16"} == {
        torch.bfloat16
    }
    for k in ("disc", "adv", "fm", "mel"):
        a, b = float(logs[0][k]), float(logs[1][k])
        assert np.isfinite(b) and abs(a - b) <= 0.05 * abs(a) + 1e-3, (k, a, b)
    with pytest.raises(UnisonoError, match="amp"):
        Trainer(load_config(None, {**TINY, "train": {**TINY["train"], "amp": "fp8"}}), audio_dir, tmp_path / "x")
