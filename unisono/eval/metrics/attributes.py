"""Attributes of sound and music read off the audio by signal analysis: tempo, key, event count.

No learned model: each estimator is a few lines of DSP that can be checked on synthetic signals.
- tempo: autocorrelation of a log-mel spectral-flux onset envelope, with a log-normal prior around
  120 BPM that breaks ties between a tempo and its octaves;
- key: a 12-bin chroma (STFT magnitude folded to pitch classes, 55-2000 Hz), correlated with the
  Krumhansl-Kessler major and minor profiles in all 24 rotations;
- event count: segments of a frame-energy envelope above an adaptive threshold, with gaps shorter than
  ``min_gap_s`` merged and blips shorter than ``min_event_s`` dropped.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from unisono.audio import mel_spectrogram
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#", "Cb": "B", "Fb": "E", "E#": "F", "B#": "C"}
# Krumhansl-Kessler key profiles, tonic first
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
ONSET_FPS = 100  # frames per second of the onset envelope


def onset_envelope(wav, sample_rate: int) -> np.ndarray:
    """Onset strength ``[T]`` at 100 frames/s: half-wave rectified log-mel flux, summed over 64 bands."""
    x = at_rate(wav, sample_rate).astype(np.float32)
    mel = mel_spectrogram(x, EVAL_SAMPLE_RATE, n_fft=1024, hop_length=EVAL_SAMPLE_RATE // ONSET_FPS, n_mels=64)
    flux = np.maximum(np.diff(mel, axis=1), 0.0).sum(axis=0)
    return np.concatenate([[0.0], flux]).astype(np.float64)


def estimate_tempo(
    wav, sample_rate: int, min_bpm: float = 40.0, max_bpm: float = 240.0, prior_bpm: float = 120.0
) -> float:
    """Tempo in beats per minute (``nan`` for audio without a periodic onset pattern)."""
    env = onset_envelope(wav, sample_rate)
    # smooth with a Gaussian (sigma 2 frames) so beats whose period is not a whole number of frames
    # still line up in the autocorrelation
    k = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    env = np.convolve(env, k / k.sum(), mode="same")
    env = env - env.mean()
    if not np.any(env):
        return float("nan")
    ac = np.correlate(env, env, mode="full")[env.size - 1 :]
    if ac[0] <= 0:
        return float("nan")
    ac = ac / ac[0]
    lo = int(math.floor(60.0 * ONSET_FPS / max_bpm))
    hi = min(int(math.ceil(60.0 * ONSET_FPS / min_bpm)), ac.size - 2)
    if hi <= lo:
        return float("nan")
    lags = np.arange(lo, hi + 1)
    bpm = 60.0 * ONSET_FPS / lags
    weight = np.exp(-0.5 * (np.log2(bpm / prior_bpm) / 1.0) ** 2)
    score = ac[lags] * weight
    k = int(np.argmax(score))
    lag = float(lags[k])
    if 0 < k < lags.size - 1:  # parabolic refinement on the autocorrelation
        a, b, c = ac[lags[k] - 1], ac[lags[k]], ac[lags[k] + 1]
        den = a - 2 * b + c
        if den < 0:
            lag += 0.5 * (a - c) / den
    return 60.0 * ONSET_FPS / lag


def chroma(wav, sample_rate: int, n_fft: int = 4096, fmin: float = 55.0, fmax: float = 2000.0) -> np.ndarray:
    """Pitch-class energy profile ``[12]`` (C first), summed over the clip and normalised to sum 1."""
    x = torch.from_numpy(at_rate(wav, sample_rate).astype(np.float32))
    spec = torch.stft(x, n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs().numpy()
    freqs = np.fft.rfftfreq(n_fft, 1.0 / EVAL_SAMPLE_RATE)
    keep = (freqs >= fmin) & (freqs <= fmax)
    pc = (np.round(12 * np.log2(freqs[keep] / 440.0)).astype(int) + 69) % 12
    energy = (spec[keep] ** 2).sum(axis=1)
    out = np.bincount(pc, weights=energy, minlength=12)
    total = out.sum()
    return out / total if total > 0 else out


def estimate_key(wav, sample_rate: int) -> tuple[str, str]:
    """``(tonic, mode)``, e.g. ``("A", "minor")``, by correlating the chroma with the 24 key profiles."""
    c = chroma(wav, sample_rate)
    best, best_r = ("C", "major"), -2.0
    for mode, prof in (("major", _MAJOR), ("minor", _MINOR)):
        for t in range(12):
            r = float(np.corrcoef(c, np.roll(prof, t))[0, 1])
            if r > best_r:
                best, best_r = (PITCH_CLASSES[t], mode), r
    return best


def canonical_key(tonic: str, mode: str | None = None) -> tuple[str, str]:
    """Normalise a key name: ``("Bb", "Major")`` -> ``("A#", "major")``; ``"A minor"`` / ``"Am"`` accepted as tonic."""
    t = tonic.strip()
    if mode is None:
        parts = t.replace("_", " ").split()
        if len(parts) == 2:
            t, mode = parts
        elif t.endswith("m") and len(t) > 1 and not t.endswith("maj"):
            t, mode = t[:-1], "minor"
        else:
            mode = "major"
    t = t[:1].upper() + t[1:].replace("♯", "#").replace("♭", "b")
    t = _FLATS.get(t, t)
    m = mode.strip().lower()
    m = {"maj": "major", "min": "minor", "ionian": "major", "aeolian": "minor"}.get(m, m)
    return t, m


def event_segments(wav, sample_rate: int, min_gap_s: float = 0.1, min_event_s: float = 0.03,
                   range_db: float = 30.0) -> list[tuple[float, float]]:
    """Sound events as ``[(start_s, end_s)]`` in time order: runs of frames (25 ms windows, 10 ms hop) louder
    than ``max(peak - range_db, noise floor + 10 dB)``, after merging gaps shorter than ``min_gap_s``;
    runs shorter than ``min_event_s`` are dropped. A flat envelope (a steady sound) is one event."""
    x = at_rate(wav, sample_rate)
    hop, win = EVAL_SAMPLE_RATE // 100, EVAL_SAMPLE_RATE // 40
    n = 1 + max(0, (x.size - win) // hop)
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, (0, win)), win)[::hop][:n]
    db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    peak = float(db.max())
    if peak < -80.0:
        return []
    floor = float(np.percentile(db, 10))
    thr = max(peak - range_db, floor + 10.0)
    if thr >= peak:  # flat envelope (steady sound): one event if it is audible at all
        return [(0.0, x.size / EVAL_SAMPLE_RATE)]
    active = db > thr
    # run-length segments
    edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(int), [0]])))
    segs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
    merged: list[list[int]] = []
    for a, b in segs:
        if merged and (a - merged[-1][1]) * hop / EVAL_SAMPLE_RATE < min_gap_s:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a * hop / EVAL_SAMPLE_RATE, b * hop / EVAL_SAMPLE_RATE) for a, b in merged
            if (b - a) * hop / EVAL_SAMPLE_RATE >= min_event_s]


def count_events(
    wav, sample_rate: int, min_gap_s: float = 0.1, min_event_s: float = 0.03, range_db: float = 30.0
) -> int:
    """Number of sound events (:func:`event_segments`)."""
    return len(event_segments(wav, sample_rate, min_gap_s, min_event_s, range_db))


def tempo_correct(estimated_bpm: float, true_bpm: float, tolerance: float = 0.08) -> bool:
    """True when the estimate is within ``tolerance`` (relative) of the true tempo (octave errors count as wrong)."""
    return math.isfinite(estimated_bpm) and abs(estimated_bpm - true_bpm) <= tolerance * true_bpm
