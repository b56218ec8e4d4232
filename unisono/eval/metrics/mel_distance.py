"""Multi-scale log-mel distance: mean L1 between log-mel spectrograms at several STFT sizes (lower is better)."""

from __future__ import annotations

import numpy as np

from unisono.audio import mel_spectrogram
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate, pad_to_same

# (n_fft, hop_length, n_mels) per scale, at 16 kHz
SCALES: tuple[tuple[int, int, int], ...] = ((256, 64, 40), (512, 128, 64), (1024, 256, 80), (2048, 512, 128))


def mel_distance(estimate, reference, sample_rate: int, scales=SCALES, eps: float = 1e-5) -> float:
    """Mean over ``scales`` of the mean absolute difference of natural-log mel magnitudes.

    Signals are resampled to 16 kHz and the shorter is zero-padded. 0 for identical audio; the log
    floor ``eps`` bounds the distance for silence.
    """
    est = at_rate(estimate, sample_rate, name="estimate").astype(np.float32)
    ref = at_rate(reference, sample_rate, name="reference").astype(np.float32)
    est, ref = pad_to_same(est, ref)
    total = 0.0
    for n_fft, hop, n_mels in scales:
        a = mel_spectrogram(est, EVAL_SAMPLE_RATE, n_fft=n_fft, hop_length=hop, n_mels=n_mels, eps=eps)
        b = mel_spectrogram(ref, EVAL_SAMPLE_RATE, n_fft=n_fft, hop_length=hop, n_mels=n_mels, eps=eps)
        total += float(np.mean(np.abs(a - b)))
    return total / len(scales)
