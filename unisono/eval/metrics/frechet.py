"""Frechet distance between two sets of embeddings (Gaussian fit of each set), and a cheap audio embedding.

FD = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). With :func:`mel_stats_embedding` this is a
"Frechet mel-statistics distance" (not FAD with VGGish, which needs weights this project cannot fetch).
"""

from __future__ import annotations

import numpy as np

from unisono.audio import mel_spectrogram
from unisono.errors import UnisonoError
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate

EMBEDDING_NAME = "mel statistics (mean and std over time of 64 log-mel bands, 1024-point STFT at 16 kHz), 128-d"


def mel_stats_embedding(wav, sample_rate: int) -> np.ndarray:
    """``[128]`` embedding: per-band mean and standard deviation over time of a 64-band log-mel spectrogram."""
    x = at_rate(wav, sample_rate, EVAL_SAMPLE_RATE).astype(np.float32)
    mel = mel_spectrogram(x, EVAL_SAMPLE_RATE, n_fft=1024, hop_length=256, n_mels=64)  # [64, T]
    return np.concatenate([mel.mean(axis=1), mel.std(axis=1)]).astype(np.float64)


def gaussian_stats(embeddings) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` of ``embeddings [N, D]`` (N >= 2)."""
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] < 2:
        raise UnisonoError(f"a Frechet distance needs at least 2 embeddings [N, D] per set, got shape {e.shape}")
    return e.mean(axis=0), np.cov(e, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(emb_a, emb_b) -> float:
    """Frechet distance between the Gaussian fits of ``emb_a [N, D]`` and ``emb_b [M, D]`` (0 for equal sets)."""
    mu_a, s_a = gaussian_stats(emb_a)
    mu_b, s_b = gaussian_stats(emb_b)
    if mu_a.shape != mu_b.shape:
        raise UnisonoError(f"embedding sizes differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    # Tr((S_a S_b)^(1/2)) = Tr((R S_b R)^(1/2)) with R = S_a^(1/2): both symmetric, so eigh is exact and stable
    r = _psd_sqrt(s_a)
    trace_covmean = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r @ s_b @ r), 0.0, None))))
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * trace_covmean)
    return max(fd, 0.0)
