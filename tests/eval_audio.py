"""Test audio for the evaluation tests: espeak-ng speech at 16 kHz, tones, clicks, noise at a known SNR."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from unisono.audio import resample

SR = 16000


def espeak(text: str, voice: str = "en-us") -> np.ndarray:
    """Speech ``[S]`` float32 at 16 kHz from espeak-ng (skips the test when espeak-ng is missing)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    out = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(out), dtype="float32")
    return np.asarray(resample(x, sr, SR), dtype=np.float32)


def add_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """``x`` plus white Gaussian noise scaled to exactly ``snr_db`` dB signal-to-noise ratio."""
    n = np.random.default_rng(seed).standard_normal(x.size)
    n *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(n**2) / 10 ** (snr_db / 10))
    return (x + n).astype(np.float32)


def tone(freq_hz: float, dur_s: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(SR * dur_s)) / SR
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def clicks(bpm: float, dur_s: float = 8.0) -> np.ndarray:
    """Decaying noise bursts every beat at ``bpm``."""
    x = np.zeros(int(SR * dur_s))
    period = 60.0 / bpm
    for k in range(int(dur_s / period)):
        i = int(k * period * SR)
        burst = np.random.default_rng(k).standard_normal(400) * np.exp(-np.arange(400) / 80)
        x[i : i + 400] += burst[: x.size - i]
    return (0.5 * x).astype(np.float32)


def notes(midis: list[int], dur_s: float = 0.5) -> np.ndarray:
    """A melody of harmonic tones (3 partials), one per MIDI pitch."""
    t = np.arange(int(SR * dur_s)) / SR
    out = []
    for m in midis:
        f = 440.0 * 2 ** ((m - 69) / 12)
        out.append(sum(0.3 / h * np.sin(2 * np.pi * f * h * t) for h in (1, 2, 3)) * np.hanning(t.size))
    return np.concatenate(out).astype(np.float32)
