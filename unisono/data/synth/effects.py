"""Degradations: coloured noise, hum, mixing at a signal-to-noise ratio, and room reverberation."""

from __future__ import annotations

import numpy as np

from . import tools

NOISE_TYPES = ("white", "pink", "brown", "babble", "hum")
ROOMS = {  # sox reverb: reverberance %, HF damping %, room scale %, pre-delay ms, tail padding s
    "small": (25, 50, 25, 0, 0.4),
    "medium": (50, 50, 55, 5, 0.8),
    "large": (75, 40, 85, 15, 1.2),
    "hall": (95, 30, 100, 30, 1.6),
}


def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise: ``white`` (flat), ``pink`` (1/f power), ``brown`` (1/f^2 power)."""
    white = rng.standard_normal(n)
    if kind == "white":
        y = white
    else:
        spec = np.fft.rfft(white)
        f = np.arange(spec.size, dtype=np.float64)
        f[0] = 1.0
        exponent = {"pink": 0.5, "brown": 1.0}[kind]
        y = np.fft.irfft(spec / f**exponent, n)
    y = y - y.mean()
    return (y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def hum(n: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum (50 or 60 Hz with harmonics) plus a little hiss, unit RMS."""
    base = 50.0 if rng.random() < 0.5 else 60.0
    t = np.arange(n) / sample_rate
    y = sum((0.6**k) * np.sin(2 * np.pi * base * (k + 1) * t + rng.uniform(0, 2 * np.pi)) for k in range(6))
    y = y + 0.05 * rng.standard_normal(n)
    return (y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Loop or cut ``x`` to ``n`` samples."""
    if x.size >= n:
        return x[:n]
    reps = int(np.ceil(n / max(x.size, 1)))
    return np.tile(x, reps)[:n]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``noise`` (looped/cut to the signal's length) so that signal/noise power is ``snr_db``.

    Returns ``(mixture, scaled_noise)``; the mixture is ``signal + scaled_noise`` exactly.
    """
    noise = fit_length(noise, signal.size)
    gain = rms(signal) / (rms(noise) + 1e-12) / (10.0 ** (snr_db / 20.0))
    scaled = (noise * gain).astype(np.float32)
    return (signal + scaled).astype(np.float32), scaled


def peak_safe(*signals: np.ndarray, peak: float = 0.95) -> list[np.ndarray]:
    """Scale several signals by one common gain so that none of them clips (keeps their ratios)."""
    top = max(float(np.max(np.abs(s))) if s.size else 0.0 for s in signals)
    g = peak / top if top > peak else 1.0
    return [(s * g).astype(np.float32) for s in signals]


def reverberate(x: np.ndarray, sample_rate: int, room: str) -> tuple[np.ndarray, np.ndarray]:
    """Add reverberation of ``room`` with sox; returns ``(wet, dry)`` padded to the same length."""
    reverberance, damping, scale, predelay, tail = ROOMS[room]
    pad = int(tail * sample_rate)
    dry = np.concatenate([x, np.zeros(pad, dtype=np.float32)])
    wet = tools.sox_effect(
        dry, sample_rate, ["reverb", str(reverberance), str(damping), str(scale), "100", str(predelay)]
    )
    wet = fit_length(wet, dry.size)
    return wet.astype(np.float32), dry.astype(np.float32)
