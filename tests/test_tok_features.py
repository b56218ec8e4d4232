"""Tokenize with audio_feat templates, end to end on the tiny corpus: the shards carry the frozen encoder's
vectors (float16 stored, float32 read, one per placeholder frame), a resumed run reuses the cached features."""

import functools
import json
import shutil
from pathlib import Path

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
from unisono.tasks import decode_example, load_templates
from unisono.vocab import Vocab

pytestmark = pytest.mark.usefixtures("one_thread")
FEAT_YAML = Path(__file__).parents[1] / "configs" / "tasks" / "asr_feat.yaml"
SE_FEAT = {"version": 1, "tasks": {"se_feat": {
    "description": "noisy speech (as features) -> clean speech", "cuts_from": "se",
    "conditions": [{"name": "noisy", "modality": "audio_feat", "source": "recording.noisy"}],
    "target": {"name": "speech", "modality": "codec", "source": "audio"}}}}
TASKS = ["asr", "asr_codec_feat", "asr_feat", "se_feat", "tts"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
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


def test_shards_carry_the_features(setup):
    shards, stats = setup["shards"], setup["stats"]
    assert stats["skipped"] == [] and all(stats["per_task"][f"train/{t}"]["examples"] == 2 for t in TASKS)
    codec = setup["factory"]()
    enc = build_encoder("logmel", codec)
    stored = json.loads((shards / "features.json").read_text())
    assert stored["encoder"] == enc.describe() and stored["stored_dtype"] == "float16"
    assert len(list((shards / ".feats" / "train").glob("*.safetensors"))) == 2 + 2  # speech cuts, noisy recordings
    path = list_shards(shards / "train", ["asr_feat"])[0]
    with safe_open(str(path), framework="pt") as f:
        assert f.get_tensor("audio_feat").dtype == torch.float16 and f.get_tensor("feat_offsets").shape == (3,)
    vocab = Vocab.load(shards / "vocab.json")
    cuts = {c.id: c for c in load_cuts(setup["corpus"], "train")}
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


def test_a_resumed_run_reuses_the_cached_features(setup, tmp_path):
    out = shutil.copytree(setup["shards"], tmp_path / "shards")
    redo = list_shards(out / "train", ["asr_codec_feat"])[0]
    before = list(read_shard(redo))
    redo.unlink()
    again = tk.tokenize_corpus(setup["corpus"], out, setup["factory"], **setup["opts"])
    assert again["shards_made_now"] == 1 and again["feature_seconds_now"] == 0 and again["encoded_seconds_now"] == 0
    after = list(read_shard(redo))
    assert [e["id"] for e in after] == [e["id"] for e in before]
    assert all(torch.equal(a["audio_feat"], b["audio_feat"]) and torch.equal(a["frames"], b["frames"])
               for a, b in zip(after, before))
    with pytest.raises(UnisonoError, match=r"holds features of logmel-v1:\w+, not logmel-v1:\w+ "):
        tk.tokenize_corpus(setup["corpus"], out, setup["factory"], **{**setup["opts"],
                                                                       "feature_encoder": "logmel:n_mels=40"})


def test_feature_tasks_need_an_encoder_before_any_work(setup, tmp_path):
    opts = {**setup["opts"], "feature_encoder": None}
    with pytest.raises(UnisonoError, match=r"asr_codec_feat, asr_feat, se_feat read audio_feat conditions; pass "
                                           r"--feature-encoder NAME"):
        tk.tokenize_corpus(setup["corpus"], tmp_path / "a", setup["factory"], **opts)
    with pytest.raises(UnisonoError, match="unknown feature encoder 'nope'"):
        tk.tokenize_corpus(setup["corpus"], tmp_path / "b", setup["factory"], **{**opts, "feature_encoder": "nope"})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_command_line_stores_features(setup, tmp_path, capsys):
    from unisono.cli import main

    out = tmp_path / "cli"
    assert main(["tokenize", "--data", str(setup["corpus"]), "--codec", str(setup["root"] / "codec"), "--out",
                 str(out), "--templates", str(FEAT_YAML), "--tasks", "asr_feat", "--splits", "train",
                 "--bpe-size", "300", "--jobs", "1", "--no-progress", "--feature-encoder", "logmel:n_mels=40"]) == 0
    assert "h to the feature encoder" in capsys.readouterr().out
    assert json.loads((out / "features.json").read_text())["encoder"]["dim"] == 40
    ex = next(iter(ShardReader(out, tasks=["asr_feat"])))
    assert ex["audio_feat"].shape[1] == 40
