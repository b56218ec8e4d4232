"""Your own data through Lhotse (docs/own-data.md): a CutSet and a Shar made with Lhotse's own API (text and
speaker only) tokenize into tts and asr examples, and fine-tune a checkpoint end to end."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from eval_audio import espeak
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.cut import MonoCut

from unisono.audio import resample
from unisono.cli import main
from unisono.data import own
from unisono.errors import UnisonoError
from unisono.inference import Pipeline
from unisono.tasks import load_templates
from unisono.text.g2p import WORD_SEP, phonemize

SENTENCES = {
    "anna": ["The red boat sails at dawn.", "A quiet garden smells of rain.", "She reads the long letter twice."],
    "ben": ["Bright lamps glow in the hall.", "The old clock stopped at noon.", "He paints the fence on Sunday."],
}


def lhotse_cuts(folder, rates=(16000, 22050)) -> CutSet:
    """Cuts as a Lhotse user makes them: a Recording per file (16 and 22.05 kHz), a supervision with text and
    speaker, nothing of unisono's."""
    folder.mkdir(parents=True, exist_ok=True)
    cuts = []
    for s, (speaker, texts) in enumerate(SENTENCES.items()):
        for i, text in enumerate(texts):
            rate = rates[(s + i) % len(rates)]
            path = folder / f"{speaker}-{i}.wav"
            sf.write(path, resample(espeak(text), 16000, rate), rate)
            rec = Recording.from_file(path, recording_id=f"{speaker}-{i}")
            sup = SupervisionSegment(id=rec.id, recording_id=rec.id, start=0.0, duration=rec.duration, text=text,
                                     speaker=speaker)
            cuts.append(MonoCut(id=rec.id, start=0.0, duration=rec.duration, channel=0, recording=rec,
                                supervisions=[sup]))
    return CutSet.from_cuts(cuts)


@pytest.fixture(scope="module")
def own_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    cuts = lhotse_cuts(root / "wav")
    cuts.to_file(root / "cuts.jsonl.gz")
    (root / "shar").mkdir()
    cuts.to_shar(root / "shar", fields={"recording": "flac"}, shard_size=4)
    return root


def test_a_lhotse_source_gets_tasks_phones_and_a_validation_part(own_sources):
    templates = load_templates()
    train = own.load_split(own_sources / "cuts.jsonl.gz", "train", templates)
    valid = own.load_split(own_sources / "cuts.jsonl.gz", "valid", templates)
    assert len(train) + len(valid) == 6 and len(valid) >= 1
    assert not {c.id for c in train} & {c.id for c in valid}
    assert own.load_split(own_sources / "cuts.jsonl.gz", "test", templates) == []
    # text + speaker with a second utterance: tts and asr, decided by the templates' sources
    assert {tuple(c.custom["tasks"]) for c in train} == {("asr", "tts")}
    sup = train[0].supervisions[0]
    assert sup.custom["phones"] == phonemize([sup.text])[0] and WORD_SEP in sup.custom["phones"]
    # the same split every time, and the Shar folder gives the same cuts
    again = own.load_split(own_sources / "shar", "train", templates)
    assert sorted(c.id for c in again) == sorted(c.id for c in train)
    # SPLIT=PATH gives a source to one split whole
    assert len(own.load_split(f"valid={own_sources / 'cuts.jsonl.gz'}", "valid", templates)) == 6


def test_a_speaker_alone_gets_no_tts_and_foreign_text_is_a_reason(tmp_path):
    templates = load_templates()
    rec = Recording.from_file(sf_write(tmp_path / "x.wav"), recording_id="x")
    solo = MonoCut(id="x", start=0.0, duration=rec.duration, channel=0, recording=rec, supervisions=[
        SupervisionSegment(id="x", recording_id="x", start=0.0, duration=rec.duration, text="Bonjour à tous.",
                           speaker="zoe", language="fr")])
    own.add_phones([solo])
    assert own.assign_tasks([solo], templates) == {"asr": 1}  # one utterance of zoe: no voice prompt, no tts
    assert "phones" not in (solo.supervisions[0].custom or {})  # French text: no English phones made


def sf_write(path):
    sf.write(path, np.zeros(8000, np.float32), 16000)
    return path


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(UnisonoError, match="does not exist"):
        own.parse_sources([str(tmp_path / "nope.jsonl.gz")])
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnisonoError, match="neither a unisono corpus"):
        own.load_split(tmp_path / "notes.txt", "train", load_templates())


def test_tokenize_and_fine_tune_a_checkpoint_on_own_data(own_sources, tiny_checkpoint, tmp_path, capsys):
    ck = tiny_checkpoint
    shards = tmp_path / "shards"
    # the checkpoint's vocabulary and tokenizers: the ids its model knows
    assert main(["tokenize", "--data", str(own_sources / "shar"), "--codec", str(ck / "codec"), "--out", str(shards),
                 "--vocab", str(ck / "vocab.json"), "--tokenizers", str(ck), "--tasks", "tts,asr",
                 "--no-progress"]) == 0
    printed = capsys.readouterr()
    assert "no test split" in printed.err and "train/tts" in printed.out  # the missing split: a note
    stats = json.loads((shards / "stats.json").read_text())
    made = {k: v["examples"] for k, v in stats["per_task"].items()}
    assert made["train/tts"] >= 3 and made["train/asr"] >= 3 and made["valid/asr"] >= 1
    config = tmp_path / "ft.yaml"
    config.write_text("model: {}\ntrain: {max_steps: 2, warmup_steps: 1, max_frames: 400, pool_size: 8, "
                      "log_every: 1, save_every: 2}\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--shards", str(shards), "--val-shards", str(shards / "valid"),
                 "--out", str(run), "--init-from", str(ck), "--no-progress"]) == 0
    latest = run / json.loads((run / "latest.json").read_text())["path"]
    tuned = Pipeline.package(latest, shards, tmp_path / "tuned", codec_dir=ck / "codec")
    pipe = Pipeline.from_pretrained(tuned)
    text = pipe.generate("asr", speech=(espeak("The red boat sails at dawn."), 16000), max_duration=1.0)
    assert isinstance(text.text, str)
    speech = pipe.generate("tts", text="A new sentence.", prompt=(espeak("Hello there."), 16000), max_duration=0.5)
    assert speech.sample_rate == 16000 and speech.wav.ndim == 1


def test_no_example_at_all_is_an_error_naming_the_reasons(own_sources, tiny_checkpoint, tmp_path, capsys):
    ck = tiny_checkpoint
    # the tasks need captions and noisy recordings this data has not got: nothing serves them
    rc = main(["tokenize", "--data", str(own_sources / "cuts.jsonl.gz"), "--codec", str(ck / "codec"),
               "--out", str(tmp_path / "s"), "--vocab", str(ck / "vocab.json"), "--tokenizers", str(ck),
               "--tasks", "caption,se", "--no-progress"])
    assert rc == 2 and "no example was made" in capsys.readouterr().err


def test_codec_training_reads_shar_and_manifests_together(own_sources):
    from unisono.codec.data import SegmentSampler, list_audio, read_item

    items = list_audio([own_sources / "shar", own_sources / "cuts.jsonl.gz"])
    assert len(items) == 12 and sum(it.cut is not None for it in items) == 6  # Shar audio is read through Lhotse
    shar_item = next(it for it in items if it.cut is not None)
    file_item = next(it for it in items if it.id == shar_item.id and it.cut is None)
    a, b = read_item(shar_item, 16000), read_item(file_item, 16000)
    assert a.shape == b.shape and np.abs(a - b).max() < 1e-3  # the same utterance (FLAC in the tar)
    part = read_item(shar_item, 16000, offset=0.2, duration=0.3)
    assert part.shape[0] == 4800 and np.abs(part - a[3200:8000]).max() < 1e-3
    batch = SegmentSampler(items, 16000, 8000, seed=0).batch(3)
    assert tuple(batch.shape) == (3, 1, 8000) and float(batch.abs().max()) > 0


def test_export_round_trips_through_lhotse(own_sources, tiny_checkpoint, tmp_path, capsys):
    from unisono.codec import load_codec

    out = tmp_path / "shar"
    assert main(["export", "--data", f"train={own_sources / 'cuts.jsonl.gz'}", "--codec",
                 str(tiny_checkpoint / "codec"), "--out", str(out), "--no-progress"]) == 0
    back = list(CutSet.from_shar(in_dir=out))
    assert sorted(c.id for c in back) == sorted(c.id for c in CutSet.from_file(own_sources / "cuts.jsonl.gz"))
    codec = load_codec(tiny_checkpoint / "codec")
    cut = next(c for c in back if c.id == "ben-1")
    codes = cut.load_custom("codes")  # [T, K] as Lhotse loads it
    wav = cut.load_audio()
    assert codes.shape[1] == codec.num_codebooks and abs(codes.shape[0] - cut.duration * codec.frame_rate) <= 1
    again = codec.encode(torch.from_numpy(resample(wav[0], cut.sampling_rate, 16000))[None, None])[0].T.numpy()
    n = min(len(codes), len(again))
    assert abs(len(codes) - len(again)) <= 1 and (codes[:n] == again[:n]).mean() > 0.9  # the codes of that audio
    assert cut.supervisions[0].text == "The old clock stopped at noon." and cut.supervisions[0].speaker == "ben"
    # an existing folder is refused before anything is written
    assert main(["export", "--data", str(own_sources / "cuts.jsonl.gz"), "--codec", str(tiny_checkpoint / "codec"),
                 "--out", str(out), "--no-progress"]) == 2
