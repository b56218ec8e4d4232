"""Tokenize with audio_feat templates, end to end on the tiny corpus: the shards carry the frozen encoder's
vectors (float16 stored, float32 read, one per placeholder frame), a resumed run reuses the cached features,
a short training run through make_trainer takes the features from the shards and names the encoder in its
checkpoint, the audio sampler copes with a feature model, and the Pipeline on that checkpoint computes the
same features on the fly as the shards hold for the same audio."""

import functools
import json
import shutil

import pytest
import torch
import yaml
from safetensors import safe_open
from tok_helpers import make_corpus

from unisono.codec import Codec, CodecConfig
from unisono.data import tokenize as tk
from unisono.data.manifests import load_cuts
from unisono.data.shards import ShardReader, list_shards, read_shard
from unisono.errors import UnisonoError
from unisono.features import build_encoder
from unisono.inference import Pipeline
from unisono.options import GenerationOptions
from unisono.tasks import decode_example, load_templates
from unisono.train import launch
from unisono.vocab import Vocab

pytestmark = pytest.mark.usefixtures("one_thread")
FEAT_YAML = launch.Path(__file__).parents[1] / "configs" / "tasks" / "asr_feat.yaml"
SE_FEAT = {"version": 1, "tasks": {"se_feat": {
    "description": "noisy speech (as features) -> clean speech", "cuts_from": "se",
    "conditions": [{"name": "noisy", "modality": "audio_feat", "source": "recording.noisy"}],
    "target": {"name": "speech", "modality": "codec", "source": "audio"}}}}
TASKS = ["asr", "asr_codec_feat", "asr_feat", "se_feat", "tts"]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("feat")
    corpus = make_corpus(root / "corpus")
    torch.manual_seed(0)
    Codec(CodecConfig(encoder_channels=8, latent_dim=16, decoder_dim=32, decoder_blocks=1, num_codebooks=2,
                      codebook_size=64)).save_pretrained(root / "codec")
    (root / "se_feat.yaml").write_text(yaml.safe_dump(SE_FEAT))
    opts = dict(tasks=TASKS, splits=("train", "valid"), shard_size=2, bpe_size=300, progress=False,
                templates_paths=[str(FEAT_YAML), str(root / "se_feat.yaml")], feature_encoder="logmel")
    factory = functools.partial(tk.load_codec_dir, str(root / "codec"))
    stats = tk.tokenize_corpus(corpus, root / "shards", factory, **opts)
    return {"root": root, "corpus": corpus, "shards": root / "shards", "stats": stats, "opts": opts,
            "factory": factory, "templates": load_templates(opts["templates_paths"])}


def test_shards_carry_the_features(made):
    shards, stats = made["shards"], made["stats"]
    assert stats["skipped"] == [] and all(stats["per_task"][f"train/{t}"]["examples"] == 2 for t in TASKS)
    codec = made["factory"]()
    enc = build_encoder("logmel", codec)
    stored = json.loads((shards / "features.json").read_text())
    assert stored["encoder"] == enc.describe() and stored["stored_dtype"] == "float16"
    assert len(list((shards / ".feats" / "train").glob("*.safetensors"))) == 2 + 2  # speech cuts, noisy recordings
    path = list_shards(shards / "train", ["asr_feat"])[0]
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("audio_feat").dtype == torch.float16 and f.get_tensor("feat_offsets").shape == (3,)
    vocab = Vocab.load(shards / "vocab.json")
    cuts = {c.id: c for c in load_cuts(made["corpus"], "train")}
    seen = set()
    for ex in ShardReader(shards, tasks=["asr_feat", "asr_codec_feat", "se_feat", "asr"]):
        seen.add(ex["task"])
        n_place = int((ex["frames"][:, 0] == vocab.placeholder_id("audio_feat")).sum())
        if ex["task"] == "asr":
            assert "audio_feat" not in ex and n_place == 0
            continue
        assert ex["audio_feat"].dtype == torch.float32 and ex["audio_feat"].shape == (n_place, 80)
        cut = cuts[ex["id"]]
        rec = cut.custom["noisy"] if ex["task"] == "se_feat" else cut
        wav = torch.as_tensor(rec.load_audio())[0]
        fresh = enc.encode(wav, 16000)
        assert torch.equal(ex["audio_feat"], fresh.half().float())  # the whole recording, fp16-rounded
        _, segs = decode_example(vocab, ex)
        if ex["task"] == "asr_codec_feat":  # one source as codes and as features: as many frames
            assert segs[0].codes.shape[1] == segs[1].vectors.shape[0] == n_place
    assert seen == {"asr", "asr_feat", "asr_codec_feat", "se_feat"}


def test_a_resumed_run_reuses_the_cached_features(made, tmp_path):
    out = shutil.copytree(made["shards"], tmp_path / "shards")
    redo = list_shards(out / "train", ["asr_codec_feat"])[0]
    before = list(read_shard(redo))
    redo.unlink()
    again = tk.tokenize_corpus(made["corpus"], out, made["factory"], **made["opts"])
    assert again["shards_made_now"] == 1 and again["feature_seconds_now"] == 0 and again["encoded_seconds_now"] == 0
    after = list(read_shard(redo))
    assert [e["id"] for e in after] == [e["id"] for e in before]
    assert all(torch.equal(a["audio_feat"], b["audio_feat"]) and torch.equal(a["frames"], b["frames"])
               for a, b in zip(after, before))
    with pytest.raises(UnisonoError, match=r"holds features of logmel-v1:\w+, not logmel-v1:\w+ "):
        tk.tokenize_corpus(made["corpus"], out, made["factory"], **{**made["opts"],
                                                                       "feature_encoder": "logmel:n_mels=40"})


def test_feature_tasks_need_an_encoder_before_any_work(made, tmp_path):
    opts = {**made["opts"], "feature_encoder": None}
    with pytest.raises(UnisonoError, match=r"asr_codec_feat, asr_feat, se_feat read audio_feat conditions; pass "
                                           r"--feature-encoder NAME"):
        tk.tokenize_corpus(made["corpus"], tmp_path / "a", made["factory"], **opts)
    with pytest.raises(UnisonoError, match="unknown feature encoder 'nope'"):
        tk.tokenize_corpus(made["corpus"], tmp_path / "b", made["factory"], **{**opts, "feature_encoder": "nope"})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def trained(made):
    cfg = {"model": {"pattern": "delay", "d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 1024,
                     "feature_dim": "auto"},
           "train": {"max_steps": 3, "lr": 1e-3, "warmup_steps": 1, "max_frames": 1024, "save_every": 3,
                     "log_every": 1, "eval_every": 3, "eval_batches": 1, "cond_dropout": 0.1, "device": "cpu",
                     "sample_every": 3, "tensorboard": False}}
    path = made["root"] / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = made["root"] / "run"
    trainer = launch.make_trainer(path, run, shards=made["shards"], val_shards=made["shards"] / "valid")
    trainer.train(progress=False)
    return trainer, run / json.loads((run / "latest.json").read_text())["path"]


def test_training_takes_the_features_from_the_shards(made, trained):
    trainer, ckpt = trained
    desc = json.loads((made["shards"] / "features.json").read_text())["encoder"]
    vocab = Vocab.load(made["shards"] / "vocab.json")
    config = json.loads((ckpt / "config.json").read_text())
    assert config["feature_dim"] == 80 and config["feature_id"] == vocab.placeholder_id("audio_feat")
    assert config["feature_encoder"] == desc and (ckpt / "features.json").exists()
    log = [json.loads(line) for line in (trainer.out / "log.jsonl").read_text().splitlines()]
    assert any("loss_task/asr_feat" in r for r in log) and "val_loss/all" in log[-1]  # features in both
    assert all(r.get("skipped") is None for r in log)


def test_the_audio_sampler_passes_the_stored_features(made, trained, monkeypatch):
    trainer, _ = trained
    monkeypatch.setattr(launch, "load_templates", lambda: made["templates"])  # se_feat: audio_feat -> audio
    calls = []

    class Writer:
        def add_audio(self, tag, wav, step, sample_rate):
            calls.append((tag, wav.shape, sample_rate))

    sample = launch.audio_sampler(made["shards"], None, max_seconds=0.2)
    sample(trainer.model, 1, Writer())
    assert calls and calls[0][0] == "samples/se_feat" and calls[0][2] == 16000


def test_the_pipeline_computes_the_stored_features_on_the_fly(made, trained, tmp_path):
    _, ckpt = trained
    out = Pipeline.package(ckpt, made["shards"], tmp_path / "ckpt", templates=made["templates"])
    pipe = Pipeline.from_pretrained(out)
    assert {"asr_feat", "asr_codec_feat", "se_feat"} <= set(pipe.tasks)
    ex = next(iter(ShardReader(made["shards"], tasks=["asr_codec_feat"])))
    wav_path = made["corpus"] / "audio" / "train" / f"{ex['id']}.flac"
    prep = pipe.io("asr_codec_feat").prepare({"speech": str(wav_path)}, GenerationOptions())
    place = prep.prompt[:, 0] == pipe.vocab.placeholder_id("audio_feat")
    assert torch.equal(prep.prompt, ex["frames"][: prep.prompt.shape[0]])  # the training example's prefix
    assert torch.equal(prep.feats[place].half().float(), ex["audio_feat"])  # computed now = stored (fp16)
    assert not prep.feats[~place].any()
    text = pipe.generate("asr_feat", speech=str(wav_path), seed=0, max_duration=0.2)
    assert isinstance(text.text, str)


def test_the_command_line_stores_features(made, tmp_path, capsys):
    from unisono.cli import main

    out = tmp_path / "cli"
    assert main(["tokenize", "--data", str(made["corpus"]), "--codec", str(made["root"] / "codec"), "--out",
                 str(out), "--templates", str(FEAT_YAML), "--tasks", "asr_feat", "--splits", "train",
                 "--bpe-size", "300", "--jobs", "1", "--no-progress", "--feature-encoder", "logmel:n_mels=40"]) == 0
    assert "h to the feature encoder" in capsys.readouterr().out
    assert json.loads((out / "features.json").read_text())["encoder"]["dim"] == 40
    ex = next(iter(ShardReader(out, tasks=["asr_feat"])))
    assert ex["audio_feat"].shape[1] == 40


def test_whisper_features_in_the_shards(made, tmp_path):
    from transformers import WhisperConfig, WhisperModel

    cfg = WhisperConfig(vocab_size=64, d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, max_source_positions=25,
                        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=1)
    torch.manual_seed(0)
    WhisperModel(cfg).save_pretrained(tmp_path / "whisper")
    # no preprocessor_config.json: Whisper's log-mel over the model's 25 positions, 0.5 s windows
    spec = f"whisper_hf:model_dir={tmp_path / 'whisper'}"
    out = tmp_path / "shards"
    tk.tokenize_corpus(made["corpus"], out, made["factory"], **{**made["opts"], "tasks": ["asr_codec_feat"],
                                                               "splits": ("train",), "feature_encoder": spec})
    enc = build_encoder("whisper_hf", model_dir=str(tmp_path / "whisper"))
    assert json.loads((out / "features.json").read_text())["encoder"]["fingerprint"] == enc.fingerprint()
    vocab = Vocab.load(out / "vocab.json")
    cuts = {c.id: c for c in load_cuts(made["corpus"], "train")}
    for ex in ShardReader(out):
        _, segs = decode_example(vocab, ex)
        assert segs[0].codes.shape[1] == segs[1].vectors.shape[0] > 25  # over one window, as many frames as codes
        wav = torch.as_tensor(cuts[ex["id"]].load_audio())[0]
        assert torch.equal(ex["audio_feat"], enc.encode(wav, 16000).half().float())


RESYNTH = "resynth:encoder=logmel,num_codebooks=1"


def test_a_store_holds_features_of_the_codes(made, tmp_path):
    """resynth's features follow from the codes: the store keeps the codes, training computes the features as it
    starts, and the examples equal the shards' of the same encoder (float16 rounding apart: one decode per batch);
    another encoder is refused before any work."""
    from unisono.data.store import load_store, open_examples, store_path

    opts = {**made["opts"], "tasks": ["asr_feat", "se_feat", "asr_codec_feat"], "feature_encoder": RESYNTH}
    tk.tokenize_corpus(made["corpus"], tmp_path / "shards", made["factory"], **opts)
    tk.tokenize_corpus(made["corpus"], tmp_path / "store", made["factory"], store=True, **opts)
    with pytest.raises(UnisonoError, match="features of token store .* are not computed"):
        next(iter(open_examples(tmp_path / "store", tasks=["asr_feat"])))
    counts = launch.store_features(tmp_path / "store", tmp_path / "store" / "valid", {"device": "cpu"})
    assert [c["recordings"] for c in counts.values()] == [4, 4]  # speech cuts and noisy recordings, per split
    shards = {(e["task"], e["id"]): e for e in ShardReader(tmp_path / "shards")}
    stored = {(e["task"], e["id"]): e for e in open_examples(tmp_path / "store")}
    assert set(stored) == set(shards) and len(shards) == 6
    for key, ex in shards.items():
        assert torch.equal(stored[key]["frames"], ex["frames"]) and torch.equal(stored[key]["loss_mask"],
                                                                                ex["loss_mask"])
        assert torch.allclose(stored[key]["audio_feat"], ex["audio_feat"], atol=2e-2)
    store = load_store(store_path(tmp_path / "store"))
    assert launch.store_features(tmp_path / "store", None, {})[str(store.path)]["seconds"] == 0.0  # done once
    torch.manual_seed(5)
    Codec(CodecConfig(encoder_channels=8, latent_dim=16, decoder_dim=32, decoder_blocks=1, num_codebooks=2,
                      codebook_size=64)).save_pretrained(tmp_path / "other_codec")
    with pytest.raises(UnisonoError, match=r"the token store .* was trained on features of resynth-v1"):
        launch.store_features(tmp_path / "store", None, {"feature_codec": str(tmp_path / "other_codec")})
    with pytest.raises(UnisonoError, match="give the codec with --set train.feature_codec=DIR"):
        launch.store_features(tmp_path / "store", None, {"feature_codec": str(tmp_path / "nowhere")})
    with pytest.raises(UnisonoError, match=r"use an encoder of the codes \(--feature-encoder resynth"):
        tk.tokenize_corpus(made["corpus"], tmp_path / "refused", made["factory"], store=True,
                           **{**opts, "feature_encoder": "logmel"})
    assert not (tmp_path / "refused").exists()


def test_training_on_a_store_with_features(made, tmp_path):
    opts = {**made["opts"], "tasks": ["asr_feat", "tts"], "feature_encoder": RESYNTH}
    tk.tokenize_corpus(made["corpus"], tmp_path / "store", made["factory"], store=True, **opts)
    cfg = {"model": {"pattern": "delay", "d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 1024},
           "train": {"max_steps": 2, "lr": 1e-3, "warmup_steps": 1, "max_frames": 1024, "save_every": 2,
                     "log_every": 1, "eval_every": 2, "eval_batches": 1, "device": "cpu", "tensorboard": False}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    trainer = launch.make_trainer(tmp_path / "tiny.yaml", tmp_path / "run", shards=tmp_path / "store",
                                  val_shards=tmp_path / "store" / "valid")
    trainer.train(progress=False)
    ckpt = tmp_path / "run" / json.loads((tmp_path / "run" / "latest.json").read_text())["path"]
    config = json.loads((ckpt / "config.json").read_text())
    assert config["feature_encoder"]["name"] == "resynth" and config["feature_dim"] == 80
    # the GPU run's weights: a feature task joins at its cuts_from task's weight (only weighted tasks are read)
    import importlib.util

    script = launch.Path(__file__).parents[1] / "scripts" / "h200_lm.py"
    spec = importlib.util.spec_from_file_location("h200_lm", script)
    h200 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(h200)
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({"train": {"task_weights": {"tts": 3.0, "asr": 2.0}}}))
    assert h200.feature_task_weights(tmp_path / "store", tmp_path / "w.yaml") == {"tts": 3.0, "asr": 2.0,
                                                                                  "asr_feat": 2.0}
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("loss_task/asr_feat" in r for r in log) and "val_loss/all" in log[-1]  # features in both
