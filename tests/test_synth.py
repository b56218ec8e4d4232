"""Contracts of the built-in corpus generator (`unisono synth`)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from unisono.data.synth import build, music, sounds, tools
from unisono.data.synth import text as T
from unisono.data.synth import voices as V
from unisono.errors import UnisonoError

HOURS, SEED = 0.01, 3
ALL_TASKS = {"tts", "vc", "se", "tse", "svs", "text_to_sound", "text_to_music", "audio_edit", "dereverb",
             "instruct_tts", "speech_edit", "asr", "caption", "audio_qa"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    build.synthesize(out, hours=HOURS, seed=SEED, workers=2, progress=False)
    return out


def cuts_of(corpus: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (corpus / "manifests" / split / "cuts.jsonl").read_text().splitlines()]


def all_cuts(corpus):
    return {s: cuts_of(corpus, s) for s in build.SPLITS}


def read(corpus, rec):
    x, sr = sf.read(corpus / rec["sources"][0]["source"], dtype="float32")
    return x, sr


def snr_db(signal, noise):
    return 10 * np.log10(np.sum(signal.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2))


def manifest_bytes(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "manifests").rglob("*.jsonl"))}


def test_same_seed_gives_byte_identical_manifests(corpus, tmp_path):
    build.synthesize(tmp_path, hours=HOURS, seed=SEED, workers=1, progress=False)  # other worker count too
    assert manifest_bytes(tmp_path) == manifest_bytes(corpus)
    assert (tmp_path / "stats.json").read_bytes() == (corpus / "stats.json").read_bytes()


def test_every_task_has_examples_in_every_split(corpus):
    stats = json.loads((corpus / "stats.json").read_text())
    assert set(stats["hours_per_task"]) == ALL_TASKS
    for task, per_split in stats["cuts_per_task"].items():
        assert all(per_split[s] >= 1 for s in build.SPLITS), (task, per_split)
    assert stats["jobs"]["failed"] == 0


def test_sentences_disjoint_and_voices_instruments_held_out(corpus):
    cuts = all_cuts(corpus)
    texts = {s: {c["supervisions"][0]["text"].lower() for c in cs if c["custom"]["kind"] != "singing"
                 and "speaker" in c["supervisions"][0]} for s, cs in cuts.items()}
    assert (
        not (texts["train"] & texts["valid"])
        and not (texts["train"] & texts["test"])
        and not (texts["valid"] & texts["test"])
    )
    held_voices = {v.id for vs in V.HELD_OUT_BY_ENGINE.values() for v in vs}
    held_instr = set(music.HELD_OUT_INSTRUMENTS)
    for split in ("train", "valid"):
        for c in cuts[split]:
            assert c["supervisions"][0].get("speaker") not in held_voices
            assert c["custom"]["params"].get("instrument") not in held_instr
            for key in ("source_voice", "interferer_voice"):
                assert c["custom"]["params"].get(key) not in held_voices


def test_audio_is_16k_mono_non_silent_and_durations_match(corpus):
    for split, cs in all_cuts(corpus).items():
        for c in cs:
            recs = [c["recording"]] + [v for v in c["custom"].values() if isinstance(v, dict) and "sources" in v]
            for rec in recs:
                x, sr = read(corpus, rec)
                assert sr == 16000 and x.ndim == 1
                assert x.size == rec["num_samples"]
                assert 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))) > -50, rec["id"]
                assert np.max(np.abs(x)) < 1.0
            assert c["custom"]["split"] == split
    leftovers = [p for p in corpus.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_every_speaker_has_another_utterance_for_a_prompt(corpus):
    for split, cs in all_cuts(corpus).items():
        speakers = [c["supervisions"][0]["speaker"] for c in cs if c["custom"]["kind"] == "speech"]
        for spk in set(speakers):
            assert speakers.count(spk) >= 2, (split, spk)


def by_kind(corpus, kind):
    return [c for cs in all_cuts(corpus).values() for c in cs if c["custom"]["kind"] == kind]


def test_noisy_and_mixture_pairs_have_declared_ratios(corpus):
    for c in by_kind(corpus, "noisy"):
        clean, _ = read(corpus, c["recording"])
        noisy, _ = read(corpus, c["custom"]["noisy"])
        assert abs(snr_db(clean, noisy - clean) - c["custom"]["params"]["snr_db"]) < 0.5
    for c in by_kind(corpus, "mixture"):
        target, _ = read(corpus, c["recording"])
        mixture, _ = read(corpus, c["custom"]["mixture"])
        assert abs(snr_db(target, mixture - target) - c["custom"]["params"]["sir_db"]) < 0.5
        enrollment, _ = read(corpus, c["custom"]["enrollment"])
        assert enrollment.size != target.size or not np.allclose(enrollment, target)


def test_reverb_adds_a_tail_to_the_dry_signal(corpus):
    for c in by_kind(corpus, "reverb"):
        dry, _ = read(corpus, c["recording"])
        wet, _ = read(corpus, c["custom"]["reverberant"])
        assert dry.size == wet.size
        end = int(np.flatnonzero(np.abs(dry) > 1e-3)[-1])  # where the dry speech ends (a small room's tail is
        tail = slice(end, end + int(0.1 * 16000))             # below 16-bit resolution by the end of the file)
        assert np.sum(wet[tail] ** 2) > 10 * np.sum(dry[tail] ** 2) + 1e-9


def test_speech_edit_keeps_audio_outside_the_edited_words(corpus):
    for c in by_kind(corpus, "speech_edit"):
        p = c["custom"]["params"]
        edited, _ = read(corpus, c["recording"])
        original, _ = read(corpus, c["custom"]["original"])
        start = int(p["edit_span"][0] * 16000)
        assert start == int(p["original_span"][0] * 16000)
        assert np.max(np.abs(edited[:start] - original[:start]), initial=0.0) < 2e-4  # same samples (16-bit)
        assert c["supervisions"][0]["text"] != p["original_text"]
        for old, new in p["edited_words"]:
            assert new.lower() in c["supervisions"][0]["text"].lower()
            assert old.lower() in p["original_text"].lower()


def test_singing_follows_its_notes(corpus):
    hits = total = 0
    for c in by_kind(corpus, "singing"):
        x, _ = read(corpus, c["recording"])
        for pitch, start, end, _syl in c["custom"]["params"]["notes"]:
            seg = x[int(start * 16000) : int(end * 16000)]
            f0 = V.estimate_f0(seg, 16000)
            total += 1
            hits += f0 > 0 and abs(12 * np.log2(f0 / V.midi_to_hz(pitch))) < 1.0
        mid = mido.MidiFile(corpus / c["custom"]["params"]["midi"])
        assert sum(m.type == "note_on" for m in mid) == len(c["custom"]["params"]["notes"])
    assert hits / total > 0.7


def test_captions_and_instructions_match_parameters(corpus):
    for c in by_kind(corpus, "music"):
        p, cap = c["custom"]["params"], c["custom"]["caption"]
        assert p["instrument"].lower() in cap.lower() and f"{p['key']} {p['mode']}" in cap
        assert str(p["tempo_bpm"]) in cap and (("drums" in cap) == p["drums"])
        mid = mido.MidiFile(corpus / p["midi"])
        tempos = [m.tempo for m in mid if m.type == "set_tempo"]
        programs = [m.program for m in mid if m.type == "program_change"]
        assert round(mido.tempo2bpm(tempos[0])) == p["tempo_bpm"] and programs == [p["program"]]
    for c in by_kind(corpus, "scene") + by_kind(corpus, "audio_edit"):
        cap = c["custom"]["caption"]
        events = c["custom"]["params"]["events"]
        times = [float(t) for t in re.findall(r"at (\d+\.\d) s", cap)]
        assert times == [e["start"] for e in events]
        positions = [cap.lower().index(sounds.scene_phrase(e["event"])) for e in events]
        assert positions == sorted(positions)
    for c in by_kind(corpus, "audio_edit"):
        p = c["custom"]["params"]
        name = p["edited_event"].replace("_", " ")
        assert name in c["custom"]["instruction"] and c["custom"]["instruction"].startswith(p["edit"].capitalize())
        names = [e["event"] for e in p["events"]]
        assert (p["edited_event"] in names) == (p["edit"] == "add")
    for c in by_kind(corpus, "speech"):
        p, ins = c["custom"]["params"], c["custom"]["instruction"]
        assert p["gender"] in ins and p["accent"] in ins
        assert V.pitch_word(p["pitch"]) in ins and V.speed_word(p["speed"]) in ins
        phones = c["supervisions"][0]["custom"]["phones"]
        n_words = len(c["supervisions"][0]["text"].split())
        assert n_words - 4 <= len(phones.split(" | ")) <= n_words  # espeak-ng joins some function words
    for c in by_kind(corpus, "sound"):
        p = c["custom"]["params"]
        qa = dict(map(tuple, c["custom"]["qa"]))
        if "count" in p:
            assert qa["How many times does it sound?"] == sounds.NUMBER_WORDS[p["count"]]


def test_interrupted_run_resumes_to_the_same_corpus(corpus, tmp_path, monkeypatch):
    real = build.run_job
    calls = {"n": 0}

    def flaky(job, out):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(job, out)

    monkeypatch.setattr(build, "run_job", flaky)
    with pytest.raises(KeyboardInterrupt):
        build.synthesize(tmp_path, hours=HOURS, seed=SEED, workers=1, progress=False)
    assert not (tmp_path / "manifests").exists()
    assert len(list((tmp_path / "items").glob("*.json"))) == 5
    monkeypatch.setattr(build, "run_job", real)
    # damage one finished item: its audio disappears, so it must be made again
    victim = sorted((tmp_path / "audio").rglob("*.flac"))[0]
    victim.unlink()
    build.synthesize(tmp_path, hours=HOURS, seed=SEED, workers=1, progress=False)
    assert manifest_bytes(tmp_path) == manifest_bytes(corpus)
    assert victim.exists()


def test_kill_9_then_resume_leaves_no_partial_files(corpus, tmp_path):
    import os
    import signal
    import time

    cmd = [sys.executable, "-m", "unisono", "synth", "--out", str(tmp_path), "--hours", str(HOURS), "--seed",
           str(SEED), "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).parents[1], start_new_session=True)
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "items").glob("*.json"))) < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "manifests").exists()
    for rec in (tmp_path / "items").glob("*.json"):  # every record is complete JSON naming complete audio
        for f in build.record_files(json.loads(rec.read_text())):
            sf.read(tmp_path / f)
    subprocess.run(cmd, cwd=Path(__file__).parents[1], check=True)
    assert manifest_bytes(tmp_path) == manifest_bytes(corpus)
    assert [p for p in tmp_path.rglob("*") if ".tmp" in p.name] == []


def test_other_options_in_the_same_directory_are_refused(corpus):
    with pytest.raises(UnisonoError, match="already holds a corpus made with --hours 0.01 --seed 3"):
        build.synthesize(corpus, hours=HOURS, seed=SEED + 1, progress=False)


def test_missing_tool_is_a_one_line_error_naming_the_package(tmp_path):
    env_path = tmp_path / "bin"
    env_path.mkdir()
    (env_path / "python3").symlink_to(sys.executable)
    proc = subprocess.run([str(env_path / "python3"), "-m", "unisono", "synth", "--out", str(tmp_path / "c")],
                          capture_output=True, text=True, env={"PATH": str(env_path)}, cwd=Path(__file__).parents[1])
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("unisono synth: error: espeak-ng was not found (needed for speech synthesis); "
                                   "install it with: apt-get install espeak-ng")


def test_missing_sound_font_names_its_package(monkeypatch):
    monkeypatch.setattr(tools, "SOUND_FONT_CANDIDATES", ("/nonexistent/a.sf2",))
    monkeypatch.delenv("UNISONO_SOUNDFONT", raising=False)
    tools.sound_font.cache_clear()
    try:
        with pytest.raises(UnisonoError, match="apt-get install fluid-soundfont-gm"):
            tools.sound_font()
    finally:
        tools.sound_font.cache_clear()


def test_generator_breadth():
    rng = np.random.default_rng(0)
    sentences = {T.render(T.generate(rng)) for _ in range(25000)}
    assert len(sentences) >= 20000
    assert len(T.vocabulary()) >= 2000
    assert len(V.ALL_VOICES) >= 20 and len({v.id for v in V.ALL_VOICES}) == len(V.ALL_VOICES)
    assert len(sounds.EVENTS) >= 15
    assert {T.split_of(s) for s in list(sentences)[:200]} == {"train", "valid", "test"}


def test_bad_hours_is_a_clear_error():
    with pytest.raises(UnisonoError, match="--hours must be positive"):
        build.make_plan(0, 1)


def test_a_failing_job_is_skipped_and_reported(tmp_path, monkeypatch):
    from unisono.data.synth import kinds

    real = kinds.MAKERS["sound"]

    def flaky(job, rng):
        if job.id == "sound-00001":
            raise UnisonoError("espeak-ng failed (simulated)")
        return real(job, rng)

    monkeypatch.setitem(kinds.MAKERS, "sound", flaky)
    stats = build.synthesize(tmp_path, hours=HOURS, seed=SEED, workers=1, progress=False)
    assert stats["jobs"]["failed"] == 1 and stats["failures"] == {"sound-00001": "espeak-ng failed (simulated)"}
    ids = {c["id"] for s in build.SPLITS for c in cuts_of(tmp_path, s)}
    assert "sound-00001" not in ids and "sound-00000" in ids
