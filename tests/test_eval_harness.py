"""The evaluation harness: audio-dir mode, resuming from the item cache, corpus mode with plug-in generators."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from eval_audio import SR, add_noise, espeak

from unisono.audio import save
from unisono.cli import main as cli_main
from unisono.errors import UnisonoError
from unisono.eval import metrics as metrics_mod
from unisono.eval.corpus import TrainPriorSystem, copy_input_system, evaluate_corpus, load_corpus_cuts, reference_system
from unisono.eval.harness import evaluate_dirs
from unisono.eval.metrics import parse_metric_list
from unisono.eval.metrics.pesq_wb import pesq_wb

TEXT_A = "The birch canoe slid on the smooth planks of the lake."
TEXT_B = "Please call Stella and ask her to bring these things with her."


@pytest.fixture(scope="module")
def speech():
    return {"a": espeak(TEXT_A), "b": espeak(TEXT_B), "a_f3": espeak(TEXT_A, "en-us+f3")}


@pytest.fixture
def dirs(tmp_path, speech):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    save(ref / "same.wav", speech["a"], SR)
    save(gen / "same.wav", speech["a"], SR)
    save(ref / "noisy.flac", speech["a"], SR)
    save(gen / "noisy.wav", add_noise(speech["a"], 10.0, seed=3), SR)
    save(ref / "wrong.wav", speech["a"], SR)
    save(gen / "wrong.wav", speech["b"], SR)
    save(gen / "orphan.wav", speech["b"], SR)  # no reference: skipped and listed
    for name in ("same", "noisy", "wrong"):
        (ref / f"{name}.txt").write_text(TEXT_A)
    return gen, ref, tmp_path / "out"


def test_audio_dir_mode_scores_and_reports(dirs):
    gen, ref, out = dirs
    res = evaluate_dirs(gen, ref, ["wer", "pesq", "sisdr", "mel"], out, progress=False)
    items = res["items"]["generated"]
    assert sorted(items) == ["noisy", "same", "wrong"]
    assert res["unmatched_outputs"] == ["orphan"]
    assert items["same"]["pesq_wb"] > 4.5 and items["same"]["mel_distance"] < 0.01
    assert items["noisy"]["si_sdr_db"] == pytest.approx(10.0, abs=0.3)  # 16-bit files: tiny quantisation error
    assert items["wrong"]["wer"] > 0.7 and items["same"]["wer"] < items["wrong"]["wer"]
    # the ceiling: the reference audio through the same recogniser
    ref_items = res["items"]["reference"]
    assert set(ref_items["same"]) == {"wer", "cer", "_transcript"}
    assert ref_items["same"]["wer"] == items["same"]["wer"]
    table = res["tasks"]["audio"]["systems"]
    assert table["generated"]["pesq_wb"]["n"] == 3
    assert table["generated"]["wer"]["mean"] == pytest.approx(np.mean([items[k]["wer"] for k in items]))
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["items"]["generated"]["same"]["pesq_wb"] == items["same"]["pesq_wb"]
    assert "faster-whisper" in on_disk["evaluators"]["wer"]["packages"]
    report = (out / "report.md").read_text()
    assert "| pesq_wb (higher is better) |" in report and "reference (ceiling)" in report
    page = (out / "report.html").read_text()
    shown = res["examples"]["audio"]
    assert sorted(shown) == ["noisy", "same"]  # the first two pairs by name
    for o in shown["noisy"]["outputs"]:
        assert (out / o["audio"]).exists() and f"src='{o['audio']}'" in page


def test_resume_uses_cache_and_recomputes_changed_items(dirs, monkeypatch, speech):
    gen, ref, out = dirs
    first = evaluate_dirs(gen, ref, ["sisdr", "mel"], out, progress=False)
    calls = []
    real = metrics_mod.METRICS["sisdr"]
    monkeypatch.setitem(metrics_mod.METRICS, "sisdr", real.__class__(
        real.name, real.description, real.needs, real.output,
        lambda o, r: calls.append(r.item_id) or real.fn(o, r), real.higher_is_better))
    again = evaluate_dirs(gen, ref, ["sisdr", "mel"], out, progress=False)
    assert calls == [] and again["items"] == first["items"]  # all cached, same numbers
    save(gen / "same.wav", add_noise(speech["a"], 0.0, seed=5), SR)  # change one output
    changed = evaluate_dirs(gen, ref, ["sisdr", "mel"], out, progress=False)
    assert calls == ["same"]
    assert changed["items"]["generated"]["same"]["si_sdr_db"] == pytest.approx(0.0, abs=0.3)
    # a corrupt cache entry is recomputed, not fatal
    (out / "items" / "generated" / "noisy.json").write_text("{not json")
    evaluate_dirs(gen, ref, ["sisdr"], out, progress=False)
    assert calls == ["same", "noisy"]


def test_audio_dir_errors(tmp_path, dirs):
    gen, ref, out = dirs
    with pytest.raises(UnisonoError, match="unknown metric"):
        parse_metric_list("wer,nonsense")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnisonoError, match="no file of"):
        evaluate_dirs(gen, empty, ["sisdr"], out, progress=False)
    for t in ref.glob("*.txt"):
        t.unlink()
    with pytest.raises(UnisonoError, match="--text"):
        evaluate_dirs(gen, ref, ["wer"], out, progress=False)
    manifest = tmp_path / "texts.jsonl"
    manifest.write_text("".join(json.dumps({"id": k, "text": TEXT_A}) + "\n" for k in ("same", "noisy", "wrong")))
    res = evaluate_dirs(gen, ref, ["wer"], tmp_path / "out2", text_path=manifest, ceiling=False, progress=False)
    assert "reference" not in res["items"] and res["items"]["generated"]["wrong"]["wer"] > 0.7
    assert cli_main(["eval", "--audio-dir", str(gen), "--ref-dir", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert cli_main(["eval", "--audio-dir", str(gen), "--ref-dir", str(ref), "--metric", "sisdr",
                     "--out", str(tmp_path / "out3"), "--quiet"]) == 0
    assert (tmp_path / "out3" / "report.md").exists()


def test_bad_outputs_are_skipped_with_a_reason_and_the_run_goes_on(dirs, speech, monkeypatch):
    """A corrupt, empty, over-long or wrong-rate output, or a broken reference, costs only its own item."""
    import soundfile as sf

    from unisono.eval import harness

    gen, ref, out = dirs
    for name in ("corrupt", "empty", "long", "rate8k", "badref"):
        save(ref / f"{name}.wav", speech["a"], SR)
        (ref / f"{name}.txt").write_text(TEXT_A)
    (gen / "corrupt.wav").write_bytes(b"RIFF\x00\x00junk" * 10)
    sf.write(gen / "empty.wav", np.zeros(0, dtype=np.float32), SR)
    monkeypatch.setattr(harness, "MAX_EVAL_SECONDS", 6.0)
    sf.write(gen / "long.wav", np.tile(speech["a"], 4), SR)  # over the (lowered) limit
    import soxr

    sf.write(gen / "rate8k.wav", soxr.resample(speech["a"], SR, 8000), 8000)  # resampled, then scored
    save(gen / "badref.wav", speech["a"], SR)
    (ref / "badref.wav").write_bytes(b"not audio at all")
    res = evaluate_dirs(gen, ref, ["sisdr", "mel"], out, progress=False)
    skipped = res["skipped"]["generated"]
    assert set(skipped) == {"corrupt", "empty", "long", "badref"}, skipped
    assert "empty" in skipped["empty"] and "long" in skipped["long"] and skipped["badref"].startswith("reference")
    assert set(res["items"]["generated"]) == {"same", "noisy", "wrong", "rate8k"}
    assert np.isfinite(res["items"]["generated"]["rate8k"]["mel_distance"])  # read at 8 kHz, scored at 16 kHz
    report = (out / "report.md").read_text()
    assert "## Skipped items" in report and "corrupt" in report


def _rec(rel: str, n: int) -> dict:
    rid = rel.rsplit("/", 1)[-1].removesuffix(".flac")
    return {"id": rid, "sources": [{"type": "file", "channels": [0], "source": rel}], "sampling_rate": SR,
            "num_samples": n, "duration": n / SR, "channel_ids": [0]}


def _cut(cid: str, split: str, kind: str, tasks: list, wav: np.ndarray, root, text=None, speaker=None, roles=None,
         qa=None, params=None) -> dict:
    rel = f"audio/{split}/{cid}.flac"
    save(root / rel, wav, SR)
    custom = {"kind": kind, "tasks": tasks, "split": split, "params": params or {}}
    for role, rwav in (roles or {}).items():
        rrel = f"audio/{split}/{cid}.{role}.flac"
        save(root / rrel, rwav, SR)
        custom[role] = _rec(rrel, rwav.size)
    if qa:
        custom["qa"] = qa
    sup = [{"id": cid, "recording_id": cid, "start": 0.0, "duration": wav.size / SR, "channel": 0, "text": text,
            "speaker": speaker, "language": "en"}] if text else []
    return {"id": cid, "start": 0.0, "duration": wav.size / SR, "channel": 0, "recording": _rec(rel, wav.size),
            "supervisions": sup, "custom": custom, "type": "MonoCut"}


@pytest.fixture
def tiny_corpus(tmp_path, speech):
    root = tmp_path / "corpus"
    qa = [["Is the speaker male or female?", "male"]]
    test = [
        _cut("speech-0", "test", "speech", ["tts", "audio_qa"], speech["a"], root, TEXT_A, "en-us", qa=qa),
        _cut("speech-1", "test", "speech", ["tts"], speech["b"], root, TEXT_B, "en-us"),
        _cut("noisy-0", "test", "noisy", ["se"], speech["a"], root, TEXT_A, "en-us",
             roles={"noisy": add_noise(speech["a"], 5.0, seed=1)}, params={"snr_db": 5.0}),
        _cut("noisy-1", "test", "noisy", ["se"], speech["b"], root, TEXT_B, "en-us",
             roles={"noisy": add_noise(speech["b"], 0.0, seed=2)}, params={"snr_db": 0.0}),
    ]
    train = [_cut("speech-9", "train", "speech", ["tts"], speech["a_f3"], root, TEXT_A, "en-us+f3",
                  qa=[["Is the speaker male or female?", "female"]])]
    for split, rows in (("test", test), ("train", train)):
        (root / "manifests" / split).mkdir(parents=True)
        (root / "manifests" / split / "cuts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_corpus_mode_with_plugged_generators(tiny_corpus, tmp_path):
    cuts = load_corpus_cuts(tiny_corpus, "test")
    assert cuts[2].custom["noisy"].load_audio().shape[-1] == cuts[2].num_samples  # roles load from resolved paths
    seen = []

    def silent_model(task, cut):  # a trivial "model": silence of the right length, or a fixed answer
        seen.append((task, cut.id))
        if task == "audio_qa":
            assert cut.custom["qa"][0][0].startswith("Is the speaker")
            return "male"
        return np.zeros(cut.num_samples, dtype=np.float32), SR

    systems = {"model": silent_model, "reference": reference_system, "copy_input": copy_input_system,
               "train_prior": TrainPriorSystem(tiny_corpus)}
    out = tmp_path / "eval"
    res = evaluate_corpus(tiny_corpus, out, systems, tasks=["se", "tts", "audio_qa"], progress=False)
    se = res["tasks"]["se"]["systems"]
    direct = np.mean([pesq_wb(c.custom["noisy"].load_audio()[0], c.load_audio()[0], SR) for c in cuts[2:]])
    assert se["copy_input"]["pesq_wb"]["mean"] == pytest.approx(direct, abs=0.02)
    assert se["reference"]["pesq_wb"]["mean"] > 4.5 > se["copy_input"]["pesq_wb"]["mean"]
    assert se["reference"]["stoi"]["mean"] > se["copy_input"]["stoi"]["mean"] > se["model"]["stoi"]["mean"]
    assert se["model"]["si_sdr_db"]["mean"] == -math.inf or se["model"]["si_sdr_db"]["n"] == 0
    assert se["copy_input"]["si_sdr_db"]["mean"] == pytest.approx(2.5, abs=0.5)  # SNRs 5 and 0 dB
    tts = res["tasks"]["tts"]["systems"]
    assert "copy_input" not in tts and tts["model"]["wer"]["mean"] == 1.0
    assert math.isnan(tts["model"]["speaker_sim"]["mean"]) and tts["model"]["speaker_sim"]["n"] == 0
    assert tts["reference"]["speaker_sim"]["n"] == 2  # prompt = the other en-us sentence
    qa = res["tasks"]["audio_qa"]["systems"]
    assert qa["model"]["qa_acc"]["mean"] == 1.0 and qa["train_prior"]["qa_acc"]["mean"] == 0.0
    report = (out / "report.md").read_text()
    assert "## se" in report and "copy the input (baseline)" in report
    # listening examples: every system's output for the first items, linked from report.html
    page = (out / "report.html").read_text()
    ex = res["examples"]["se"]["noisy-0"]["outputs"]
    assert [o["system"] for o in ex] == ["model", "reference", "copy_input"]
    for o in ex:
        assert (out / o["audio"]).exists() and f"src='{o['audio']}'" in page
    assert res["examples"]["audio_qa"]["speech-0.q0"]["outputs"][0] == {"system": "model", "text": "male"}
    # resume: nothing is generated again
    n_calls = len(seen)
    assert n_calls == 5  # each item generated once: the listening examples reuse the scored outputs
    again = evaluate_corpus(tiny_corpus, out, systems, tasks=["se", "tts", "audio_qa"], progress=False)
    assert len(seen) == n_calls + 5  # scoring is cached; only the examples are generated again
    assert json.dumps(again["tasks"], sort_keys=True) == json.dumps(res["tasks"], sort_keys=True)  # nan-safe
    with pytest.raises(UnisonoError, match="unknown task"):
        evaluate_corpus(tiny_corpus, out, systems, tasks=["dance"], progress=False)


def test_cli_corpus_mode_errors(tiny_corpus, tmp_path, capsys):
    out = str(tmp_path / "o")
    assert cli_main(["eval", "--data", str(tiny_corpus), "--checkpoint", str(tmp_path), "--out", out]) == 2
    assert "is not a complete unisono checkpoint" in capsys.readouterr().err
    assert cli_main(["eval", "--data", str(tmp_path / "nope"), "--out", out]) == 2
    assert "cuts.jsonl" in capsys.readouterr().err
    assert cli_main(["eval", "--out", out]) == 2
    assert cli_main(["eval", "--data", str(tiny_corpus), "--tasks", "se", "--out", out, "--quiet"]) == 0
    assert "## se" in (tmp_path / "o" / "report.md").read_text()


def test_corpus_sound_classifier_and_train_prior(tmp_path):
    """text_to_sound: the event classifier is trained on the train split's reference audio, saved, and reused."""
    from eval_audio import clicks, tone

    root = tmp_path / "corpus"

    def sound(kind_seed: int, event: str) -> np.ndarray:
        rng = np.random.default_rng(kind_seed)
        if event == "hum":
            return tone(150 + 100 * rng.random(), 1.0)
        if event == "hiss":
            return add_noise(np.full(SR, 1e-3, np.float32), -20.0, seed=kind_seed)
        return clicks(90 + 60 * rng.random(), 1.0)

    rows = {"train": [], "test": []}
    for split, seeds in (("train", range(4)), ("test", range(100, 102))):
        for s in seeds:
            for ev in ("hum", "hiss", "tick"):
                rows[split].append(_cut(f"sound-{ev}-{s}", split, "sound", ["text_to_sound"], sound(s, ev), root,
                                        f"a {ev}", params={"event": ev, "count": 1}))
                rows[split][-1]["custom"]["caption"] = f"a {ev}"
    for split, r in rows.items():
        (root / "manifests" / split).mkdir(parents=True)
        (root / "manifests" / split / "cuts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in r))
    out = tmp_path / "eval"
    systems = {"reference": reference_system, "train_prior": TrainPriorSystem(root)}
    res = evaluate_corpus(root, out, systems, tasks=["text_to_sound"], progress=False, examples=0)
    t = res["tasks"]["text_to_sound"]["systems"]
    assert t["reference"]["event_acc"]["mean"] == 1.0 and t["reference"]["event_acc"]["n"] == 6
    assert t["reference"]["fd"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert t["train_prior"]["fd"]["mean"] > 0.0
    assert (out / "classifiers" / "event.safetensors").exists()
    assert res["classifiers"]["event"]["classes"] == 3 and res["classifiers"]["event"]["n_train"] == 12
    assert json.loads((out / "classifiers" / "event.json").read_text())["classes"] == ["hiss", "hum", "tick"]
    # "all" adds the reasoning task served by the text_to_sound cuts; a sample of n is the same cuts for both
    from unisono.eval.corpus import load_corpus_cuts, select_cuts

    cuts = load_corpus_cuts(root, "test")
    assert [c.id for c in select_cuts(cuts, "text_to_sound_reasoning", 4, 0)] == \
        [c.id for c in select_cuts(cuts, "text_to_sound", 4, 0)]
    res = evaluate_corpus(root, out, systems, n=4, progress=False, examples=0)
    assert set(res["tasks"]) == {"text_to_sound", "text_to_sound_reasoning"}
    t = res["tasks"]["text_to_sound_reasoning"]["systems"]
    assert t["reference"]["event_acc"]["mean"] == 1.0 and t["reference"]["event_acc"]["n"] == 4
    assert "train_prior" in t


def test_aggregate_gives_mean_and_median_and_ignores_nan():
    from unisono.eval.harness import ItemResult, aggregate

    items = [
        ItemResult(f"i{j}", {"wer": w, "_transcript": "x"}) for j, w in enumerate([1.0, 1.0, 1.25, 20.0, math.nan])
    ]
    agg = aggregate(items)
    assert set(agg) == {"wer"}  # values starting with "_" are extras, not metrics
    assert agg["wer"]["n"] == 4 and agg["wer"]["n_items"] == 5
    assert agg["wer"]["mean"] == pytest.approx(23.25 / 4)
    assert agg["wer"]["median"] == pytest.approx(1.125)  # one looping transcript does not move it


def test_the_train_prior_answers_a_feature_task_as_the_task_whose_cuts_it_serves(tmp_path):
    """caption_feat and audio_qa_feat (configs/tasks/asr_feat.yaml, cuts_from caption / audio_qa) get the same
    baseline answer as caption and audio_qa."""
    from unisono.tasks import load_templates

    root = tmp_path / "corpus"
    rows = []
    for i, (cap, ans) in enumerate((("a hum", "yes"), ("a hiss", "yes"), ("a tick", "no"))):
        rows.append(_cut(f"sound-{i}", "train", "sound", ["caption", "audio_qa"], np.zeros(SR, np.float32), root,
                         cap, params={"event": cap[2:], "count": 1}))
        rows[-1]["custom"].update(caption=cap, qa=[["is there a sound?", ans]])
    (root / "manifests" / "train").mkdir(parents=True)
    (root / "manifests" / "train" / "cuts.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    feat = Path(__file__).resolve().parents[1] / "unisono" / "configs" / "tasks" / "asr_feat.yaml"
    prior = TrainPriorSystem(root, templates=load_templates([feat]))
    cut = load_corpus_cuts(root, "train")[2]
    assert prior("audio_qa_feat", cut) == prior("audio_qa", cut) == "yes"
    assert prior("caption_feat", cut) == prior("caption", cut) in ("a hum", "a hiss", "a tick")
