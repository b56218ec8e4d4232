"""Speaker similarity: cosine of ``resemblyzer`` utterance embeddings (its encoder ships with the package)."""

from __future__ import annotations

import threading

import numpy as np

from unisono.errors import UnisonoError
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate, is_silent

ENCODER_NAME = "resemblyzer VoiceEncoder (GE2E, 256-d)"

_ENCODER = None
_LOCK = threading.Lock()


def load_encoder():
    """The shared resemblyzer encoder on CPU (loaded once per process)."""
    global _ENCODER
    with _LOCK:
        if _ENCODER is None:
            try:
                from resemblyzer import VoiceEncoder  # noqa: PLC0415 (optional: resemblyzer)
            except ImportError as e:
                raise UnisonoError(
                    f"speaker similarity needs resemblyzer ({e}); install it with: "
                    "pip install webrtcvad-wheels librosa && pip install --no-deps resemblyzer"
                ) from None
            _ENCODER = VoiceEncoder(device="cpu", verbose=False)
        return _ENCODER


def speaker_embedding(wav, sample_rate: int) -> np.ndarray:
    """L2-normalised speaker embedding ``[256]`` of ``wav`` at ``sample_rate`` Hz; ``nan`` for silence."""
    x = at_rate(wav, sample_rate, EVAL_SAMPLE_RATE).astype(np.float32)
    if is_silent(x):
        return np.full(256, np.nan, dtype=np.float32)
    from resemblyzer import preprocess_wav  # noqa: PLC0415 (optional: resemblyzer)

    encoder = load_encoder()
    y = preprocess_wav(x)  # volume normalisation and long-silence trimming (webrtcvad)
    if y.size < EVAL_SAMPLE_RATE // 10:
        y = x  # the VAD removed (almost) everything: embed the raw clip rather than nothing
    emb = encoder.embed_utterance(y)  # already L2-normalised
    return np.asarray(emb, dtype=np.float32)


def speaker_similarity(wav_a, wav_b, sample_rate: int) -> float:
    """Cosine similarity of the speaker embeddings of two utterances (1 = same voice); ``nan`` if one is silent."""
    a, b = speaker_embedding(wav_a, sample_rate), speaker_embedding(wav_b, sample_rate)
    if np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
