"""Helpers shared by the metric modules: waveform coercion and length alignment.

Every metric takes mono waveforms as NumPy arrays or torch tensors (``[S]``, ``[1, S]`` or ``[C, S]``,
averaged to mono) at a stated ``sample_rate`` in Hz, and returns plain Python floats.
"""

from __future__ import annotations

import numpy as np
import torch

from unisono.audio import resample
from unisono.errors import UnisonoError

EVAL_SAMPLE_RATE = 16000  # Hz; every evaluator here works on 16 kHz mono audio


def mono_np(wav, name: str = "wav") -> np.ndarray:
    """``wav`` ([S] or [C, S], NumPy or torch) -> float64 mono ``[S]``."""
    if isinstance(wav, torch.Tensor):
        x = wav.detach().to("cpu", torch.float64).numpy()
    else:
        x = np.asarray(wav, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise UnisonoError(f"{name}: expected a waveform [S] or [C, S], got shape {tuple(x.shape)}")
    if x.size == 0:
        raise UnisonoError(f"{name}: the waveform is empty")
    if not np.all(np.isfinite(x)):
        raise UnisonoError(f"{name}: the waveform contains NaN or Inf")
    return x


def at_rate(wav, sample_rate: int, target: int = EVAL_SAMPLE_RATE, name: str = "wav") -> np.ndarray:
    """Mono float64 ``[S']`` resampled from ``sample_rate`` to ``target`` Hz."""
    x = mono_np(wav, name)
    if sample_rate != target:
        x = np.asarray(resample(x.astype(np.float32), int(sample_rate), int(target)), dtype=np.float64)
    return x


def pad_to_same(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad the shorter of two ``[S]`` signals at the end, so missing audio counts as an error."""
    n = max(a.size, b.size)
    return np.pad(a, (0, n - a.size)), np.pad(b, (0, n - b.size))


def is_silent(x: np.ndarray, floor: float = 1e-6) -> bool:
    """True when the peak amplitude is below ``floor`` (digital silence)."""
    return float(np.max(np.abs(x))) < floor
