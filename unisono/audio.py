"""Audio I/O and features: the one place where unisono reads, writes, resamples and measures audio.

Conventions:
- waveforms are float32 in [-1, 1]; a single clip is ``[C, S]`` (C channels, S samples), a batch is
  ``[B, C, S]``; every function that takes a waveform accepts a NumPy array or a torch tensor and
  returns the same kind it was given;
- ``sample_rate`` is always in Hz;
- files are written atomically (see :mod:`unisono.fileio`): an interrupted write leaves no partial file.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from unisono.errors import UnisonoError
from unisono.fileio import atomic_path

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def _soundfile():
    """The soundfile module, imported when a file is read or written (the training path needs none)."""
    import soundfile  # noqa: PLC0415 (soundfile: not on the GPU image)

    return soundfile


def _soxr():
    """The soxr module, imported when audio is resampled."""
    import soxr  # noqa: PLC0415 (soxr: not on the GPU image)

    return soxr


def _to_numpy(wav) -> tuple[np.ndarray, bool]:
    if isinstance(wav, torch.Tensor):
        return wav.detach().to("cpu", torch.float32).numpy(), True
    return np.asarray(wav, dtype=np.float32), False


def _like(x: np.ndarray, was_torch: bool):
    return (
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if was_torch else x.astype(np.float32, copy=False)
    )


def info(path: str | os.PathLike):
    """Header of an audio file (sample rate, channels, frames) without reading the samples."""
    path = Path(path)
    if not path.exists():
        raise UnisonoError(f"audio file {path} does not exist")
    sf = _soundfile()
    try:
        return sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as e:
        raise UnisonoError(f"cannot read {path} as audio ({e}); use a WAV, FLAC or OGG file") from None


def load(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    mono: bool = True,
    offset: float = 0.0,
    duration: float | None = None,
) -> tuple[torch.Tensor, int]:
    """Read an audio file as ``(wav [C, S] float32 tensor, sample_rate in Hz)``.

    ``sample_rate``: resample to this rate (Hz) if the file has another one. ``mono``: average the
    channels to one. ``offset`` and ``duration`` (seconds) read a part of the file.
    """
    path = Path(path)
    file_info = info(path)
    start = int(round(offset * file_info.samplerate))
    stop = None if duration is None else start + int(round(duration * file_info.samplerate))
    sf = _soundfile()
    try:
        data, sr = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise UnisonoError(f"cannot decode {path} ({e}); the file may be truncated or corrupt") from None
    if data.shape[0] == 0:
        raise UnisonoError(f"{path} contains no audio samples")
    wav = data.T  # [C, S]
    if mono:
        wav = wav.mean(axis=0, keepdims=True)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return torch.from_numpy(np.ascontiguousarray(wav)), int(sr)


def save(path: str | os.PathLike, wav, sample_rate: int, subtype: str | None = None) -> Path:
    """Write ``wav`` ([S] or [C, S]) to ``path`` atomically; the format follows the file extension.

    Samples are clipped to [-1, 1]. ``subtype`` defaults to 16-bit PCM (``"PCM_16"``).
    """
    path = Path(path)
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise UnisonoError(f"cannot write audio to {path}: use one of {', '.join(AUDIO_EXTENSIONS)}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise UnisonoError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    x, _ = _to_numpy(wav)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise UnisonoError(f"expected a waveform [S] or [C, S], got shape {tuple(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise UnisonoError(f"refusing to write {path}: the waveform contains NaN or Inf")
    x = np.clip(x, -1.0, 1.0)
    fmt = path.suffix.lower().lstrip(".").upper()
    if subtype is None:
        subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    with atomic_path(path) as tmp:
        _soundfile().write(str(tmp), x.T, int(sample_rate), subtype=subtype, format=fmt)
    return path


def resample(wav, orig_sr: int, new_sr: int, quality: str = "HQ"):
    """Resample ``wav`` ([S] or [C, S]) from ``orig_sr`` to ``new_sr`` Hz with soxr."""
    if orig_sr == new_sr:
        return wav
    x, was_torch = _to_numpy(wav)
    soxr = _soxr()
    if x.ndim == 1:
        y = soxr.resample(x, orig_sr, new_sr, quality=quality)
    else:
        y = soxr.resample(np.ascontiguousarray(x.T), orig_sr, new_sr, quality=quality).T
    return _like(y, was_torch)


def to_mono(wav):
    """Average the channels of ``wav [C, S]`` into ``[1, S]``."""
    x, was_torch = _to_numpy(wav)
    if x.ndim == 1:
        x = x[None]
    return _like(x.mean(axis=0, keepdims=True), was_torch)


def rms_dbfs(wav) -> float:
    """Root-mean-square level in dB relative to full scale; -inf for digital silence."""
    x, _ = _to_numpy(wav)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else float("-inf")


def normalize_loudness(wav, target_dbfs: float = -23.0, peak: float = 0.99):
    """Scale ``wav`` to an RMS level of ``target_dbfs`` dBFS, then lower it if a peak exceeds ``peak``.

    RMS is a simple stand-in for LUFS that needs no filters; silence is returned unchanged.
    """
    x, was_torch = _to_numpy(wav)
    level = rms_dbfs(x)
    if not math.isfinite(level):
        return wav
    y = x * (10.0 ** ((target_dbfs - level) / 20.0))
    top = float(np.max(np.abs(y)))
    if top > peak:
        y = y * (peak / top)
    return _like(y, was_torch)


def hz_to_mel(f):
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=32)
def _mel_filterbank_np(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, freqs.size), dtype=np.float64)
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        rise = (freqs - lo) / max(mid - lo, 1e-9)
        fall = (hi - freqs) / max(hi - mid, 1e-9)
        fb[i] = np.maximum(0.0, np.minimum(rise, fall)) * (2.0 / max(hi - lo, 1e-9))  # equal-area triangles
    return fb.astype(np.float32)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """Triangular mel filters ``[n_mels, n_fft // 2 + 1]`` (HTK mel scale, equal-area)."""
    fmax = sample_rate / 2.0 if fmax is None else fmax
    return torch.from_numpy(_mel_filterbank_np(int(sample_rate), int(n_fft), int(n_mels), float(fmin), float(fmax)))


@lru_cache(maxsize=64)
def _mel_filterbank_on(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float, device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:
    """:func:`mel_filterbank` kept on ``device``: a loss that calls :func:`mel_spectrogram` every step on a GPU
    copies it there once, not once per call (each copy from host memory waits for the queued GPU work)."""
    with torch.inference_mode(False):  # a tensor made under inference_mode could not be saved for backward later
        return mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax).to(device, dtype)


def mel_spectrogram(
    wav,
    sample_rate: int,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 80,
    win_length: int | None = None,
    fmin: float = 0.0,
    fmax: float | None = None,
    log: bool = True,
    eps: float = 1e-5,
):
    """Mel spectrogram of ``wav [..., S]`` -> ``[..., n_mels, frames]`` (natural log of magnitude if ``log``).

    Differentiable when given a torch tensor; frames are centred (``frames = S // hop_length + 1``).
    """
    was_torch = isinstance(wav, torch.Tensor)
    x = wav if was_torch else torch.from_numpy(np.asarray(wav, dtype=np.float32))
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    win_length = win_length or n_fft
    window = torch.hann_window(win_length, device=x.device, dtype=x.dtype)
    pad_mode = "reflect" if x.shape[-1] > n_fft // 2 else "constant"
    spec = torch.stft(x, n_fft, hop_length, win_length, window, center=True, pad_mode=pad_mode, return_complex=True)
    mag = spec.abs()
    fb = _mel_filterbank_on(int(sample_rate), int(n_fft), int(n_mels), float(fmin),
                            float(sample_rate / 2.0 if fmax is None else fmax), x.device, x.dtype)
    mel = torch.matmul(fb, mag)
    if log:
        mel = torch.log(mel.clamp_min(eps))
    mel = mel.reshape(*lead, n_mels, mel.shape[-1])
    return mel if was_torch else mel.numpy()
