"""Audio as the server sends it: 16-bit WAV, FLAC or raw PCM (little-endian; mono ``[S]``, or ``[C, S]`` with
interleaved channels: the enhancement stage's 48 kHz stereo), an open-ended WAV header for streams, and the
time-scaling behind the OpenAI route's ``speed`` (:func:`time_stretch`)."""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/pcm"}


def pcm16(wav: np.ndarray) -> bytes:
    """``wav [S]`` (or ``[C, S]``: channels interleaved) float in [-1, 1] -> 16-bit little-endian PCM bytes
    (clipped, rounded; x 32767): the one conversion, so WAV, FLAC, raw PCM and streamed chunks carry the same
    samples."""
    x = np.asarray(wav)
    return np.round(np.clip(x.T if x.ndim == 2 else x, -1, 1) * 32767).astype("<i2").tobytes()


def wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    """``wav [S]`` float at ``sample_rate`` Hz -> a 16-bit mono WAV file."""
    return audio_bytes(wav, sample_rate, "wav")


def audio_bytes(wav: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """``wav [S]`` (or ``[C, S]``) float at ``sample_rate`` Hz -> a 16-bit ``fmt`` file: ``wav``, ``flac``, or
    ``pcm`` (raw samples, no header: the rate travels in the ``X-Sample-Rate`` header)."""
    if fmt == "pcm":
        return pcm16(wav)
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"audio format must be one of {', '.join(MEDIA_TYPES)}, got {fmt!r}")
    buf = io.BytesIO()
    channels = wav.shape[0] if wav.ndim == 2 else 1
    sf.write(buf, np.frombuffer(pcm16(wav), "<i2").reshape(-1, channels), sample_rate, format=fmt.upper(),
             subtype="PCM_16")
    return buf.getvalue()


def wav_header(sample_rate: int, channels: int = 1) -> bytes:
    """A 16-bit WAV header with open-ended sizes (for a response whose length is not known yet)."""
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * 2 * channels, 2 * channels, 16) + b"data" + \
        struct.pack("<I", 0xFFFFFFFF)


def time_stretch(wav: np.ndarray, speed: float, sample_rate: int, frame_s: float = 0.03,
                 search_s: float = 0.008) -> np.ndarray:
    """``wav [S]`` float played ``speed`` times as fast at the same pitch: ``[round(S / speed)]`` float32.

    WSOLA (waveform-similarity overlap-add): Hann frames of ``frame_s`` seconds laid down every half frame of
    output, each read near its nominal place in the input (``speed`` x the output position), shifted by up to
    ``search_s`` seconds to where it best continues the frame before it (cross-correlation), so periods line up
    and the pitch is kept. ``speed`` 1 returns ``wav`` unchanged."""
    if speed == 1.0 or wav.size == 0:
        return wav
    if wav.ndim == 2:  # each channel alike (the same frames: WSOLA's choices differ little between close channels)
        return np.stack([time_stretch(c, speed, sample_rate, frame_s, search_s) for c in wav])
    frame = max(4, 2 * int(frame_s * sample_rate / 2))
    hop, tol = frame // 2, max(1, int(search_s * sample_rate))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)  # periodic Hann: halves overlap-add to 1
    n_out = max(1, int(round(wav.size / speed)))
    n_frames = n_out // hop + 1
    x = np.pad(np.asarray(wav, dtype=np.float64), (tol, 2 * frame + 2 * tol + int(np.ceil(hop * speed))))
    out = np.zeros(n_frames * hop + frame)
    weight = np.zeros_like(out)
    prev = None
    for k in range(n_frames):
        nominal = int(round(k * hop * speed)) + tol  # in x's coordinates: tol of padding in front
        if prev is None:
            pos = nominal
        else:
            follow = x[prev + hop : prev + hop + frame]  # what would naturally come after the last frame
            corr = np.correlate(x[nominal - tol : nominal + tol + frame], follow, mode="valid")  # [2 tol + 1]
            pos = nominal - tol + int(np.argmax(corr))
        out[k * hop : k * hop + frame] += window * x[pos : pos + frame]
        weight[k * hop : k * hop + frame] += window
        prev = pos
    out = out[:n_out] / np.maximum(weight[:n_out], 1e-3)  # the edges, where fewer frames overlap
    return out.astype(np.float32)
