"""Log-spectral distance (LSD, dB) between an estimate and a reference, over the whole band and over the
high band alone (the band a super-resolution system has to create). Lower is better; 0 for identical audio."""

from __future__ import annotations

import numpy as np

from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate, pad_to_same


def _power(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``[frames, n_fft // 2 + 1]`` power spectrogram (Hann window)."""
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    n = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    return np.abs(np.fft.rfft(x[idx] * np.hanning(n_fft)[None, :], axis=-1)) ** 2


def log_spectral_distance(estimate, reference, sample_rate: int, low_hz: float = 0.0, high_hz: float | None = None,
                          n_fft: int = 512, hop: int = 128, dynamic_range_db: float = 80.0) -> float:
    """Mean over frames of ``sqrt(mean over bins in [low_hz, high_hz] of (dB_ref - dB_est)^2)``.

    Both signals are taken to 16 kHz and the shorter is zero-padded. Powers are floored at
    ``dynamic_range_db`` below the reference's loudest bin, so an empty band costs at most about that
    much (not the depth of a numerical zero). Frames where the reference is below the floor in the whole
    band are skipped (``nan`` if every frame is)."""
    est = at_rate(estimate, sample_rate, name="estimate")
    ref = at_rate(reference, sample_rate, name="reference")
    est, ref = pad_to_same(est, ref)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / EVAL_SAMPLE_RATE)
    band = (freqs >= low_hz) & (freqs <= (high_hz if high_hz is not None else EVAL_SAMPLE_RATE / 2))
    pa, pb = _power(est, n_fft, hop), _power(ref, n_fft, hop)
    floor = max(float(pb.max()), 1e-20) * 10.0 ** (-dynamic_range_db / 10.0)
    a = 10.0 * np.log10(np.maximum(pa[:, band], floor))
    b = 10.0 * np.log10(np.maximum(pb[:, band], floor))
    live = (pb[:, band] > floor).any(axis=1)
    if not live.any():
        return float("nan")
    per_frame = np.sqrt(np.mean((a[live] - b[live]) ** 2, axis=1))
    return float(per_frame.mean())
