"""Signal metrics on inputs with a known answer: identical audio, silence, noise at a known SNR."""

import math

import numpy as np
import pytest
import torch
from eval_audio import SR, add_noise, clicks, espeak, notes, tone

from unisono.errors import UnisonoError
from unisono.eval.metrics.attributes import canonical_key, count_events, estimate_key, estimate_tempo, tempo_correct
from unisono.eval.metrics.bleu import corpus_bleu, sentence_bleu
from unisono.eval.metrics.frechet import frechet_distance, mel_stats_embedding
from unisono.eval.metrics.mel_distance import mel_distance
from unisono.eval.metrics.pesq_wb import pesq_wb
from unisono.eval.metrics.qa import answer_correct, qa_accuracy
from unisono.eval.metrics.sisdr import si_sdr
from unisono.eval.metrics.stoi import stoi
from unisono.eval.metrics.wer import cer, normalize_text, wer


@pytest.fixture(scope="module")
def speech():
    return espeak("The quick brown fox jumps over the lazy dog near the river bank.")


def test_si_sdr_known_snr(rng):
    x = rng.standard_normal(SR).astype(np.float32)
    for snr in (0.0, 10.0, 20.0):
        assert si_sdr(add_noise(x, snr, seed=1), x) == pytest.approx(snr, abs=0.2)
    assert si_sdr(x, x) >= 100.0
    assert si_sdr(3.0 * x, x) >= 100.0  # gain does not matter
    assert si_sdr(np.zeros_like(x), x) == -math.inf
    assert math.isnan(si_sdr(x, np.zeros_like(x)))
    assert si_sdr(torch.from_numpy(x)[None], x) >= 100.0  # torch [1, S] accepted


def test_pesq_stoi_order_with_snr(speech):
    p_same = pesq_wb(speech, speech, SR)
    assert p_same > 4.5
    ps = [pesq_wb(add_noise(speech, snr), speech, SR) for snr in (0, 10, 30)]
    assert ps[0] < ps[1] < ps[2] < p_same
    assert pesq_wb(np.zeros_like(speech), speech, SR) < 1.2  # silence scores at the bottom of the scale
    assert math.isnan(pesq_wb(speech, np.zeros_like(speech), SR))
    s_same = stoi(speech, speech, SR)
    assert s_same == pytest.approx(1.0, abs=1e-6)
    ss = [stoi(add_noise(speech, snr), speech, SR) for snr in (-5, 5, 20)]
    assert ss[0] < ss[1] < ss[2] < s_same + 1e-9
    assert stoi(1e-4 * np.random.default_rng(1).standard_normal(speech.size), speech, SR) < ss[0]


def test_pesq_resamples_other_rates(speech):
    from unisono.audio import resample

    x48 = resample(speech, SR, 48000)
    assert pesq_wb(x48, x48, 48000) > 4.5


def test_mel_distance(speech):
    assert mel_distance(speech, speech, SR) == 0.0
    d = [mel_distance(add_noise(speech, snr), speech, SR) for snr in (0, 10, 30)]
    assert d[0] > d[1] > d[2] > 0
    assert mel_distance(np.zeros_like(speech), speech, SR) > d[0]


def test_bad_waveforms_are_clear_errors():
    with pytest.raises(UnisonoError, match="empty"):
        si_sdr(np.zeros(0), np.ones(10))
    with pytest.raises(UnisonoError, match="NaN"):
        mel_distance(np.full(100, np.nan), np.ones(100), SR)
    with pytest.raises(UnisonoError, match="shape"):
        si_sdr(np.zeros((2, 2, 2)), np.ones(10))


def test_wer_cer_known_transcripts():
    ref = "The quick brown fox jumps over the lazy dog."
    assert wer("the quick brown fox jumps over the lazy dog", ref) == 0.0  # case and punctuation ignored
    assert wer("the quick brown cat jumps over the lazy dog", ref) == pytest.approx(1 / 9)
    assert wer("quick brown fox jumps over the lazy dog", ref) == pytest.approx(1 / 9)
    assert wer("", ref) == 1.0
    assert wer("completely different words here", ref) == pytest.approx(1.0)
    assert cer("the quick brown fox jumps over the lazy dog", ref) == 0.0
    assert 0 < cer("the quick brown fix jumps over the lazy dog", ref) < 0.05
    assert normalize_text("Don't STOP -- well-known, ‘café’!") == "don't stop well known cafe"


def test_bleu_known_values():
    ref = "a cat sits on the mat by the door"
    assert corpus_bleu([ref], [ref]) == pytest.approx(1.0)
    assert corpus_bleu(["dog runs fast"], [ref]) == 0.0
    # 6-word hypothesis: unigram precision 6/6, bigram 4/5, trigram 2/4, 4-gram 1/3; brevity exp(1 - 9/6)
    hyp = "a cat sits on a mat"
    expected = math.exp(1 - 9 / 6) * math.exp(
        (math.log(5 / 6) + math.log(3 / 5) + math.log(2 / 4) + math.log(1 / 3)) / 4
    )
    assert corpus_bleu([hyp], [ref]) == pytest.approx(expected, rel=1e-9)
    assert 0 < sentence_bleu("a cat on the mat", ref) < 1
    assert corpus_bleu([hyp], [[ref, hyp]]) == pytest.approx(1.0)  # best of several references


def test_qa_accuracy():
    assert answer_correct("Three.", "3")
    assert answer_correct("the piano", "piano")
    assert answer_correct("Yes, it is", "yes")
    assert not answer_correct("no", "yes")
    assert not answer_correct("two dogs", "2")
    assert qa_accuracy(["yes", "4", "violin"], ["yes", "four", "cello"]) == pytest.approx(2 / 3)


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 4))
    a -= a.mean(axis=0)  # zero mean, so scaling changes the covariance only
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shifted = a + np.array([2.0, 0, 0, 0])
    assert frechet_distance(shifted, a) == pytest.approx(4.0, rel=1e-6)  # mean shift only: |d|^2
    scaled = a * 2.0
    # same mean, covariance 4 S: FD = Tr(S) + Tr(4S) - 2 Tr(2S) = Tr(S)
    assert frechet_distance(scaled, a) == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-6)
    with pytest.raises(UnisonoError):
        frechet_distance(a[:1], a)
    e_tone = np.stack([mel_stats_embedding(tone(220 * (1 + 0.01 * i)), SR) for i in range(6)])
    e_noise = np.stack([mel_stats_embedding(add_noise(tone(220), -10, seed=i), SR) for i in range(6)])
    e_tone2 = np.stack([mel_stats_embedding(tone(221 * (1 + 0.01 * i)), SR) for i in range(6)])
    assert frechet_distance(e_tone2, e_tone) < frechet_distance(e_noise, e_tone)


def test_tempo_estimator_on_click_tracks():
    for bpm in (70, 100, 128, 160):
        est = estimate_tempo(clicks(bpm), SR)
        assert tempo_correct(est, bpm, tolerance=0.02), (bpm, est)
    assert not tempo_correct(60.0, 120.0)
    assert math.isnan(estimate_tempo(np.zeros(SR * 4), SR))


def test_key_estimator_on_scales():
    assert estimate_key(notes([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60]), SR) == ("C", "major")
    assert estimate_key(notes([57, 60, 64, 57, 59, 60, 62, 64, 65, 64, 62, 60, 59, 57, 64, 57]), SR) == ("A", "minor")
    g_major = [m + 7 for m in [60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60]]
    assert estimate_key(notes(g_major), SR) == ("G", "major")
    assert canonical_key("Bb", "Major") == ("A#", "major")
    assert canonical_key("Am") == ("A", "minor")
    assert canonical_key("F# minor") == ("F#", "minor")


def test_event_count():
    rng = np.random.default_rng(0)
    for starts in ([0.3], [0.3, 1.2, 2.1], [0.2, 0.7, 1.3, 1.9, 2.5]):
        x = np.zeros(SR * 3, dtype=np.float32)
        for s in starts:
            x[int(s * SR) : int(s * SR) + 3000] = 0.3 * rng.standard_normal(3000)
        assert count_events(x, SR) == len(starts)
        assert count_events(x + 0.003 * rng.standard_normal(x.size), SR) == len(starts)  # with a noise floor
    assert count_events(np.zeros(SR), SR) == 0
    assert count_events(tone(440, 2.0), SR) == 1
