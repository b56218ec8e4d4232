"""Pitch: F0 RMSE (in cents, on frames voiced in both) and voicing accuracy, from ``torchcrepe`` tiny.

``torchcrepe`` ships its weights but imports ``torchaudio`` at import time for file loading, which this
project never uses (and which has no build for the pinned torch). When torchaudio is absent, an empty
placeholder module is registered under that name for the duration of the import only, then removed (so
other libraries, such as Lhotse, still see that torchaudio is not installed); nothing of it is called.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import threading
import types

import numpy as np
import torch

from unisono.errors import UnisonoError
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate

F0_MODEL_NAME = "torchcrepe tiny (weighted-argmax decoding, seeded dither, 10 ms hop, periodicity threshold 0.5)"
HOP_LENGTH = 160  # samples at 16 kHz = 10 ms
FMIN, FMAX = 50.0, 1100.0  # Hz
_LOCK = threading.Lock()


def _import_torchcrepe():
    with _LOCK:
        if "torchcrepe" in sys.modules:
            return sys.modules["torchcrepe"]
        stub = "torchaudio" not in sys.modules and importlib.util.find_spec("torchaudio") is None
        if stub:
            sys.modules["torchaudio"] = types.ModuleType("torchaudio")  # placeholder, see module docstring
        try:
            import torchcrepe  # noqa: PLC0415 (optional: torchcrepe)
        except ImportError as e:
            raise UnisonoError(
                f"F0 metrics need torchcrepe ({e}); install it with: pip install --no-deps torchcrepe resampy"
            ) from None
        finally:
            if stub:
                del sys.modules["torchaudio"]
        return torchcrepe


def f0_track(wav, sample_rate: int, periodicity_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """F0 contour of ``wav`` at 100 frames/s: ``(f0_hz [T], voiced [T] bool)``; ``f0_hz`` is 0 where unvoiced.

    Deterministic (CPU, no dropout). Frames whose periodicity is below the threshold, or whose level is
    below -60 dB, are unvoiced.
    """
    tc = _import_torchcrepe()
    x = at_rate(wav, sample_rate, EVAL_SAMPLE_RATE).astype(np.float32)
    audio = torch.from_numpy(x)[None]
    # torchcrepe dithers its pitch bins with NumPy's global random state: seed it for this call only
    state = np.random.get_state()
    np.random.seed(0)
    try:
        with torch.inference_mode():
            pitch, periodicity = tc.predict(
                audio, EVAL_SAMPLE_RATE, HOP_LENGTH, FMIN, FMAX, model="tiny", decoder=tc.decode.weighted_argmax,
                return_periodicity=True, batch_size=512, device="cpu", pad=True,
            )
    finally:
        np.random.set_state(state)
    pitch, periodicity = pitch[0].numpy(), periodicity[0].numpy()
    # frame energy gate: silence is unvoiced whatever the network says
    n = pitch.size
    padded = np.pad(x, (HOP_LENGTH, HOP_LENGTH))
    rms = np.array([np.sqrt(np.mean(padded[i * HOP_LENGTH : i * HOP_LENGTH + 2 * HOP_LENGTH] ** 2)) for i in range(n)])
    voiced = (periodicity >= periodicity_threshold) & (rms > 1e-3)
    return np.where(voiced, pitch, 0.0).astype(np.float64), voiced


def f0_metrics(estimate, reference, sample_rate: int) -> dict[str, float]:
    """Compare the pitch of ``estimate`` with that of ``reference`` (both ``[S]`` at ``sample_rate`` Hz).

    Returns ``f0_rmse_cents`` (RMS of 1200*log2(f_est/f_ref) over frames voiced in both; ``nan`` if none),
    ``voicing_accuracy`` (share of frames whose voiced/unvoiced decision agrees) and ``voiced_frames``.
    The shorter track is padded as unvoiced.
    """
    fe, ve = f0_track(estimate, sample_rate)
    fr, vr = f0_track(reference, sample_rate)
    n = max(fe.size, fr.size)
    fe, fr = np.pad(fe, (0, n - fe.size)), np.pad(fr, (0, n - fr.size))
    ve, vr = np.pad(ve, (0, n - ve.size)), np.pad(vr, (0, n - vr.size))
    both = ve & vr
    if both.any():
        cents = 1200.0 * np.log2(fe[both] / fr[both])
        rmse = float(np.sqrt(np.mean(cents**2)))
    else:
        rmse = math.nan
    return {"f0_rmse_cents": rmse, "voicing_accuracy": float(np.mean(ve == vr)), "voiced_frames": int(both.sum())}
