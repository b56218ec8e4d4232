import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from tok_helpers import CodecTestDouble, make_corpus, make_test_codec

from unisono.data import tokenize as tk
from unisono.data.manifests import load_cuts
from unisono.data.shards import ShardReader, list_shards, read_shard, shard_metadata, write_shard
from unisono.errors import UnisonoError
from unisono.tasks import decode_example, load_templates
from unisono.vocab import Vocab

ALL = sorted(load_templates())
OPTS = dict(splits=("train", "valid"), shard_size=3, bpe_size=300, semantic_units=8, progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def tokenized(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    stats = tk.tokenize_corpus(corpus, out, make_test_codec, **OPTS)
    return out, stats


def test_load_cuts_resolves_relative_paths(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the corpus dir
    cuts = load_cuts(corpus, "train")
    cut = next(c for c in cuts if c.custom["kind"] == "mixture")
    assert cut.load_audio().shape[0] == 1
    assert cut.custom["mixture"].load_audio().shape[-1] == cut.custom["mixture"].num_samples
    assert cut.custom["enrollment"].sources[0].source.startswith(str(corpus.resolve()))
    assert [c.id for c in load_cuts(corpus / "manifests", "train")] == [c.id for c in cuts]
    with pytest.raises(UnisonoError, match="does not exist"):
        load_cuts(tmp_path, "train")


def test_every_task_gets_examples(tokenized):
    out, stats = tokenized
    for task in ALL:
        assert stats["per_task"][f"train/{task}"]["examples"] >= 2, task
    assert stats["per_task"]["train/audio_qa"]["examples"] == 2 * 2 * 3  # sound, music, scene x 2 cuts x 2 questions
    assert stats["skipped"] == []
    assert Vocab.load(out / "vocab.json") == Vocab.load(out / "train" / "vocab.json")
    assert json.loads((out / "stats.json").read_text())["per_task"] == stats["per_task"]


def test_examples_decode_back_to_the_corpus(tokenized, corpus):
    from unisono.text.tokenizers import TokenizerSet

    out, _ = tokenized
    vocab = Vocab.load(out / "vocab.json")
    toks = TokenizerSet.load(out / "tokenizers")
    cuts = {c.id: c for c in load_cuts(corpus, "train")}
    codec = make_test_codec()
    seen = set()
    for ex in ShardReader(out, tasks=["tts", "asr", "svs", "se", "audio_qa"]):
        task, segs = decode_example(vocab, ex)
        cut = cuts[ex["id"].split("#")[0]]
        seen.add(task)
        if task == "tts":
            assert toks.phones.decode(segs[0].ids) == cut.supervisions[0].custom["phones"]
            wav = torch.as_tensor(cut.load_audio())[None]
            assert torch.equal(segs[2].codes, codec.encode(wav)[0])
            # prompt: another cut of the same speaker (codes differ from the target's)
            assert segs[1].codes.shape[1] <= 150 and not torch.equal(segs[1].codes, segs[2].codes)
        if task == "asr":
            assert toks.bpe.decode(segs[1].ids) == cut.supervisions[0].text
        if task == "se":
            noisy = torch.as_tensor(cut.custom["noisy"].load_audio())[None]
            assert torch.equal(segs[0].codes, codec.encode(noisy)[0])
        if task == "audio_qa":
            j = int(ex["id"].split("#qa")[1])
            q, a = cut.custom["qa"][j]
            assert toks.bpe.decode(segs[1].ids) == q and toks.bpe.decode(segs[2].ids) == a
        if task == "svs":
            from unisono.text import midi

            notes = midi.decode_notes(segs[1].ids)
            assert [n[0] for n in notes] == [n[0] for n in cut.custom["params"]["notes"]]
            if cut.custom["params"]["notes"][0][3] == "hello":  # one note per word: the lyrics' own phones
                assert " | ".join(toks.phones.decode(n[3]) for n in notes) == cut.supervisions[0].custom["phones"]
            else:
                assert all(len(n[3]) > 0 for n in notes)
    assert seen == {"tts", "asr", "svs", "se", "audio_qa"}


def test_reasoning_examples_hold_the_plan_then_the_audio(tokenized, corpus):
    from unisono.reasoning import build_plan
    from unisono.text.tokenizers import TokenizerSet

    out, _ = tokenized
    vocab = Vocab.load(out / "vocab.json")
    toks = TokenizerSet.load(out / "tokenizers")
    cuts = {c.id: c for c in load_cuts(corpus, "train")}
    kinds = set()
    for ex in ShardReader(out / "train", tasks=["text_to_sound_reasoning", "text_to_music_reasoning"]):
        task, segs = decode_example(vocab, ex)
        cut = cuts[ex["id"]]
        kinds.add(cut.custom["kind"])
        plan = build_plan("music" if task == "text_to_music_reasoning" else "sound", cut)
        assert [s.modality for s in segs] == ["bpe", "bpe", "codec"]
        assert toks.bpe.decode(segs[0].ids) == cut.custom["caption"] and toks.bpe.decode(segs[1].ids) == plan
        assert torch.equal(segs[2].codes, make_test_codec().encode(torch.as_tensor(cut.load_audio())[None])[0])
    assert kinds == {"music", "sound"}  # the scene cuts of this fixture list no text_to_sound


def test_speaker_prompt_comes_from_another_cut_of_the_same_speaker(corpus):
    import random

    cuts = load_cuts(corpus, "train")
    codec = make_test_codec()
    maker = tk.CorpusExampleMaker(load_templates(), Vocab.build(["tts"], 2, 16, phones=5, bpe=300), None, codec, cuts)
    spec = load_templates()["tts"].conditions[1]
    for c in cuts:
        if c.custom["kind"] == "speech":
            other = maker.source(spec, c, random.Random(0))
            assert other.id != c.id and other.supervisions[0].speaker == c.supervisions[0].speaker
            seg = maker.segment(spec, c, 0, random.Random(0))  # the same choice, cropped to 3 s of codes
            assert seg.codes.shape[1] == min(150, codec.encode(torch.as_tensor(other.load_audio())[None]).shape[-1])


def test_shard_write_read_round_trip(tmp_path):
    v = Vocab.build(["asr", "tts"], 2, 16, phones=5, bpe=300)
    g = torch.Generator().manual_seed(0)
    exs = []
    for i in range(5):
        T = 4 + i
        exs.append({"id": f"c{i}", "task": "tts" if i % 2 else "asr",
                    "frames": torch.randint(0, v.size, (T, 2), generator=g),
                    "loss_mask": torch.rand(T, 2, generator=g) > 0.5,
                    "cond_mask": torch.rand(T, generator=g) > 0.5})
    exs[1]["text_emb"] = torch.randn(3, 4, generator=g)
    write_shard(tmp_path / "x-00000.safetensors", exs, v, skipped=[["bad", "why"]])
    back = list(read_shard(tmp_path / "x-00000.safetensors"))
    assert len(back) == 5
    for a, b in zip(exs, back):
        assert a["id"] == b["id"] and a["task"] == b["task"]
        for key in ("frames", "loss_mask", "cond_mask"):
            assert torch.equal(a[key], b[key]) and b[key].dtype == a[key].dtype
        assert ("text_emb" in b) == ("text_emb" in a)
    assert torch.equal(back[1]["text_emb"], exs[1]["text_emb"])
    assert shard_metadata(tmp_path / "x-00000.safetensors")["skipped"] == [["bad", "why"]]


def test_reader_splits_shards_over_ranks_and_workers(tokenized):
    out, _ = tokenized
    everything = [e["id"] + e["task"] for e in ShardReader(out)]
    assert len(everything) == len(set(everything))
    parts = [[e["id"] + e["task"] for e in ShardReader(out, rank=r, world_size=3)] for r in range(3)]
    assert sorted(sum(parts, [])) == sorted(everything) and all(parts)
    loader = torch.utils.data.DataLoader(
        ShardReader(out, tasks=["audio_qa", "caption"]), batch_size=None, num_workers=2
    )
    got = [e["id"] + e["task"] for e in loader]
    want = [e["id"] + e["task"] for e in ShardReader(out, tasks=["audio_qa", "caption"])]
    assert sorted(got) == sorted(want) and len(got) == len(set(got))
    shuffled = [e["id"] + e["task"] for e in ShardReader(out, shuffle=True, seed=1, buffer_size=8)]
    assert sorted(shuffled) == sorted(everything) and shuffled != everything
    with pytest.raises(UnisonoError, match="not in"):
        ShardReader(out, tasks=["karaoke"])
    with pytest.warns(UserWarning, match="some ranks read nothing"):
        ShardReader(out, tasks=["tts"], rank=0, world_size=8)


def test_a_corrupt_shard_is_skipped_with_a_warning_and_the_rest_is_read(tokenized, tmp_path):
    import shutil

    out, _ = tokenized
    copy = tmp_path / "shards"
    shutil.copytree(out, copy)
    train = copy / "train"
    shards = sorted(train.glob("*.safetensors"))
    whole = {e["id"] + e["task"] for e in ShardReader(copy)}
    victim = shards[0]
    lost = {e["id"] + e["task"] for e in read_shard(victim)}
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated
    reader = ShardReader(copy)
    with pytest.warns(UserWarning, match="unreadable"):
        got = {e["id"] + e["task"] for e in reader}
    assert got == whole - lost and lost
    assert list(reader.skipped) == [str(victim)] and "re-run `unisono tokenize`" in reader.skipped[str(victim)]


def test_reader_refuses_another_vocabulary(tokenized):
    out, _ = tokenized
    v = Vocab.load(out / "vocab.json")
    other = Vocab.build(list(v.tasks), v.num_codebooks, v.codebook_size + 1, phones=v.ranges["phones"].size,
                        bpe=v.ranges["bpe"].size, midi=v.ranges["midi"].size, semantic=v.ranges["semantic"].size)
    with pytest.raises(UnisonoError, match="vocabulary mismatch"):
        ShardReader(out, vocab=other)
    ShardReader(out, vocab=v)


def test_corrupt_inputs_are_skipped_with_a_reason(corpus, tmp_path):
    bad = tmp_path / "corpus"
    shutil.copytree(corpus, bad)
    (bad / "audio" / "train" / "train-noisy-000.noisy.flac").write_bytes(b"not audio at all")
    (bad / "audio" / "train" / "train-sound-001.flac").write_bytes(b"\x00" * 10)
    cuts = (bad / "manifests" / "train" / "cuts.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in cuts]
    for r in rows:
        if r["id"] == "train-speech_edit-000":
            del r["custom"]["params"]["original_span"]
    (bad / "manifests" / "train" / "cuts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = tk.tokenize_corpus(
        bad,
        tmp_path / "out",
        make_test_codec,
        tasks=["se", "text_to_sound", "caption", "speech_edit"],
        **{**OPTS, "splits": ("train",)},
    )
    skipped = {(s[1], s[2]): s[3] for s in stats["skipped"]}
    assert set(skipped) == {("se", "train-noisy-000"), ("text_to_sound", "train-sound-001"),
                            ("caption", "train-sound-001"), ("speech_edit", "train-speech_edit-000")}
    assert "cannot read audio" in skipped[("se", "train-noisy-000")]
    assert "original_span" in skipped[("speech_edit", "train-speech_edit-000")]
    assert stats["per_task"]["train/se"] == {"examples": 1, "skipped": 1}


def test_resume_after_interruption_makes_only_missing_shards(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"
    opts = {**OPTS, "splits": ("train",), "shard_size": 1}
    real = tk.make_shard
    calls = []

    def crash_on_third(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C while this shard was being made
        return real(job)

    monkeypatch.setattr(tk, "make_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        tk.tokenize_corpus(corpus, out, make_test_codec, tasks=["tts", "asr"], **opts)
    assert len(list_shards(out / "train")) == 2
    assert not list((out / "train").glob(".*tmp*"))
    # a run killed with SIGKILL while writing leaves its temporary file: the next run removes it
    stale = out / "train" / ".tts-00000.safetensors.x1y2.tmp.safetensors"
    stale.write_bytes(b"half a shard")
    assert "tts-00000.safetensors" not in [p.name for p in list_shards(out / "train")]
    monkeypatch.setattr(tk, "make_shard", real)
    stats = tk.tokenize_corpus(corpus, out, make_test_codec, tasks=["tts", "asr"], **opts)
    assert stats["shards_done_before"] == 2 and stats["shards_made_now"] == 2
    assert not stale.exists()
    assert stats["per_task"]["train/tts"]["examples"] == 2
    # a fresh run gives the same bytes as the resumed one
    fresh = tk.tokenize_corpus(corpus, tmp_path / "fresh", make_test_codec, tasks=["tts", "asr"], **opts)
    assert fresh["per_task"] == stats["per_task"]
    for p in list_shards(out / "train"):
        a, b = list(read_shard(p)), list(read_shard(tmp_path / "fresh" / "train" / p.name))
        assert [x["id"] for x in a] == [x["id"] for x in b]
        assert all(torch.equal(x["frames"], y["frames"]) for x, y in zip(a, b))
    # another plan into the same directory is refused; another split is added
    with pytest.raises(UnisonoError, match="another run"):
        tk.tokenize_corpus(corpus, out, make_test_codec, tasks=["tts"], **opts)
    more = tk.tokenize_corpus(corpus, out, make_test_codec, tasks=["tts", "asr"], **{**opts, "splits": ("valid",)})
    assert more["shards_made_now"] == 4 and len(list_shards(out / "valid")) == 4
    assert len(list(ShardReader(out, split="valid"))) == 4


def test_two_ranks_write_disjoint_shards(corpus, tmp_path):
    opts = {**OPTS, "splits": ("train",), "shard_size": 1}
    s0 = tk.tokenize_corpus(corpus, tmp_path / "o", make_test_codec, tasks=["asr", "se"], rank=0, world_size=2, **opts)
    s1 = tk.tokenize_corpus(corpus, tmp_path / "o", make_test_codec, tasks=["asr", "se"], rank=1, world_size=2, **opts)
    assert s0["shards_made_now"] == s1["shards_made_now"] == 2
    assert len(list_shards(tmp_path / "o" / "train")) == 4
    ids = sorted(e["id"] for e in ShardReader(tmp_path / "o"))
    assert len(ids) == 4 and len(set(ids)) == 4


@pytest.mark.slow
def test_parallel_workers_give_the_same_shards(corpus, tmp_path):
    opts = {**OPTS, "splits": ("train",), "shard_size": 1}
    tk.tokenize_corpus(corpus, tmp_path / "p", make_test_codec, tasks=["asr", "tts"], jobs=2, **opts)
    tk.tokenize_corpus(corpus, tmp_path / "s", make_test_codec, tasks=["asr", "tts"], jobs=1, **opts)
    for p in list_shards(tmp_path / "s" / "train"):
        a, b = list(read_shard(p)), list(read_shard(tmp_path / "p" / "train" / p.name))
        assert all(torch.equal(x["frames"], y["frames"]) for x, y in zip(a, b)) and len(a) == len(b)


def test_cli_tokenize_reports_a_missing_codec_and_inspect_prints(tokenized, tmp_path, capsys, corpus):
    from unisono.cli import main

    rc = main(["tokenize", "--data", str(corpus), "--codec", str(tmp_path / "nope"), "--out", str(tmp_path / "o"),
               "--tasks", "asr", "--no-progress"])
    assert rc == 2 and "error" in capsys.readouterr().err
    out, _ = tokenized
    assert main(["inspect", str(out), "--task", "tts", "--n", "2"]) == 0
    text = capsys.readouterr().out
    assert text.count("task=tts") == 2
    assert "h ə l ˈ oʊ | w ˈ ɜː l d" in text and "[target] speech (codec)" in text


def test_each_recording_is_encoded_once_per_run(corpus, tmp_path):
    tasks = ["audio_qa", "tts", "asr", "instruct_tts"]
    stats = tk.tokenize_corpus(corpus, tmp_path / "q", make_test_codec, tasks=tasks, **{**OPTS, "splits": ("train",)})
    cuts = [c for c in load_cuts(corpus, "train") if set(tasks) & set(c.custom["tasks"])]
    qa = [c for c in cuts if "audio_qa" in c.custom["tasks"]]
    assert stats["per_task"]["train/audio_qa"]["examples"] == sum(len(c.custom["qa"]) for c in qa) > len(qa)
    # every question of a cut, and tts/asr/instruct_tts and the prompts cut from the same speech: one encoding
    assert stats["encoded_seconds_now"] == pytest.approx(sum(c.duration for c in cuts), abs=0.01)
    # codes cached on disk: a resumed run that redoes a shard encodes nothing
    victim = next((tmp_path / "q" / "train").glob("tts-*.safetensors"))
    victim.unlink()
    again = tk.tokenize_corpus(corpus, tmp_path / "q", make_test_codec, tasks=tasks, **{**OPTS, "splits": ("train",)})
    assert again["shards_made_now"] == 1 and again["encoded_seconds_now"] == 0


def test_collate_pads_and_masks():
    from unisono.data.shards import collate_examples

    exs = [
        {
            "id": str(i),
            "task": "asr",
            "frames": torch.full((3 + i, 2), 7),
            "loss_mask": torch.ones(3 + i, 2, dtype=torch.bool),
            "cond_mask": torch.ones(3 + i, dtype=torch.bool),
        }
        for i in range(3)
    ]
    b = collate_examples(exs, pad_id=0)
    assert b["frames"].shape == (3, 5, 2) and b["lengths"].tolist() == [3, 4, 5]
    assert (b["frames"][0, 3:] == 0).all() and (b["frames"][0, :3] == 7).all()
    assert not b["loss_mask"][0, 3:].any() and b["loss_mask"][2].all()
    assert int(b["cond_mask"].sum()) == 12 and b["ids"] == ["0", "1", "2"]


def test_cli_tokenize_end_to_end_with_fewer_codebooks(corpus, tmp_path, monkeypatch, capsys):
    from unisono.cli import main
    from unisono.cli import tokenize as tokenize_cli

    monkeypatch.setattr(tokenize_cli, "load_codec_dir", lambda d: CodecTestDouble(num_codebooks=4))
    rc = main(["tokenize", "--data", str(corpus), "--codec", "any", "--out", str(tmp_path / "o"), "--tasks", "asr,tts",
               "--splits", "train", "--jobs", "1", "--num-codebooks", "2", "--bpe-size", "300", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "train/asr" in printed and "train/tts" in printed
    v = Vocab.load(tmp_path / "o" / "vocab.json")
    assert v.num_codebooks == 2
    exs = list(ShardReader(tmp_path / "o"))
    assert len(exs) == 4 and all(e["frames"].shape[1] == 2 for e in exs)


def test_reuse_a_vocabulary_and_add_a_task(corpus, tmp_path):
    import yaml

    from unisono.vocab import NUM_SPECIAL

    opts = {**OPTS, "splits": ("train",)}
    tk.tokenize_corpus(corpus, tmp_path / "a", make_test_codec, tasks=["asr"], **opts)
    base = Vocab.load(tmp_path / "a" / "vocab.json")
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"version": 1, "tasks": {"aaa_describe": {
        "conditions": [{"modality": "codec", "source": "audio"}],
        "target": {"modality": "bpe", "source": "custom.caption"}}}}))
    tk.tokenize_corpus(
        corpus,
        tmp_path / "b",
        make_test_codec,
        tasks=["asr", "aaa_describe"],
        templates_paths=[str(extra)],
        vocab_path=str(tmp_path / "a" / "vocab.json"),
        tokenizers_dir=str(tmp_path / "a" / "tokenizers"),
        **opts,
    )
    new = Vocab.load(tmp_path / "b" / "vocab.json")
    base.check_compatible(new)
    assert all(new.task_id(t) == base.task_id(t) for t in base.tasks)
    assert new.task_id("aaa_describe") == NUM_SPECIAL + len(base.tasks)  # next free slot, not sorted first
    # fitting fresh tokenizers on other text against that vocabulary is refused
    with pytest.raises(UnisonoError, match="vocabulary mismatch"):
        tk.tokenize_corpus(
            corpus,
            tmp_path / "c",
            make_test_codec,
            tasks=["asr"],
            vocab_path=str(tmp_path / "a" / "vocab.json"),
            **{**opts, "bpe_size": 280},
        )


def test_bad_text_other_rates_and_over_long_audio(corpus, tmp_path, monkeypatch):
    """Spaces for text and phones of another language are skipped with a reason; audio at another sample
    rate is resampled and kept; a recording over the length limit is skipped before it is read."""
    bad = tmp_path / "corpus"
    shutil.copytree(corpus, bad)
    mpath = bad / "manifests" / "valid" / "cuts.jsonl"
    rows = {r["id"]: r for r in map(json.loads, mpath.read_text().splitlines())}
    rows["valid-speech-000"]["supervisions"][0]["text"] = "   "
    rows["valid-speech-001"]["supervisions"][0]["custom"]["phones"] = "ʕ ʢ ʡ | ɧ ʜ ʘ"
    rec = rows["valid-noisy-000"]["custom"]["noisy"]
    x, sr = sf.read(bad / rec["sources"][0]["source"], dtype="float32")
    y = np.interp(np.arange(int(x.size * 44100 / sr)) * sr / 44100, np.arange(x.size), x).astype(np.float32)
    sf.write(bad / rec["sources"][0]["source"], y, 44100)
    rec.update(sampling_rate=44100, num_samples=y.size, duration=y.size / 44100)
    mpath.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
    stats = tk.tokenize_corpus(bad, tmp_path / "out", make_test_codec, tasks=["asr", "tts", "se"], **OPTS)
    skipped = {(s[1], s[2]): s[3] for s in stats["skipped"] if s[0] == "valid"}
    assert "text (only spaces)" in skipped[("asr", "valid-speech-000")]
    assert "outside the phone inventory" in skipped[("tts", "valid-speech-001")]
    assert ("asr", "valid-speech-001") not in skipped  # its text is fine; only its phones were replaced
    assert ("se", "valid-noisy-000") not in skipped and stats["per_task"]["valid/se"]["examples"] == 2
    assert "valid-noisy-000" in {x["id"] for x in ShardReader(tmp_path / "out", split="valid")}
    # the sound cuts are 0.6 s and 0.8 s long: under a 0.7 s limit the second is skipped, unread
    monkeypatch.setattr(tk, "MAX_SOURCE_SECONDS", 0.7)
    stats = tk.tokenize_corpus(bad, tmp_path / "out2", make_test_codec, tasks=["text_to_sound"], **OPTS)
    skipped = {(s[1], s[2]): s[3] for s in stats["skipped"] if s[0] == "valid"}
    assert set(skipped) == {("text_to_sound", "valid-sound-001")}
    assert "1 s long, over the 0.7 s limit" in skipped[("text_to_sound", "valid-sound-001")]
