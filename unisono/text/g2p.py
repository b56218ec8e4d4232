"""Grapheme-to-phoneme conversion with espeak-ng (through phonemizer's in-process backend).

Phone strings use one format everywhere in unisono: IPA phones separated by single spaces, words
separated by ``" | "``, stress marks (ˈ primary, ˌ secondary) as phones of their own, e.g.
``"h ə l ˈ oʊ | w ˈ ɜː l d"``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from unisono.errors import MissingToolError, UnisonoError

WORD_SEP = " | "
STRESS = ("ˈ", "ˌ")
_STRESS_RE = re.compile(r"([ˈˌ])(?=\S)")


@lru_cache(maxsize=8)
def _backend(language: str, punctuation: bool = False):
    try:
        from phonemizer.backend import EspeakBackend  # noqa: PLC0415 (phonemizer loads espeak-ng when first used)
        from phonemizer.backend.espeak.wrapper import EspeakWrapper  # noqa: F401, PLC0415
    except ImportError as e:  # pragma: no cover - phonemizer is a core dependency
        raise UnisonoError(f"phonemizer is not installed ({e}); run ./setup.sh") from None
    try:
        return EspeakBackend(language, with_stress=True, preserve_punctuation=punctuation,
                             language_switch="remove-flags")
    except RuntimeError as e:
        if "espeak" in str(e).lower() and "not installed" in str(e).lower():
            raise MissingToolError("espeak-ng", "espeak-ng", "phonemes") from None
        raise UnisonoError(f"espeak-ng cannot phonemize language {language!r}: {e}") from None


def phonemize(texts: list[str], language: str = "en-us") -> list[str]:
    """IPA phone strings for ``texts`` (one per text, same order; empty text gives ``""``)."""
    from phonemizer.separator import Separator  # noqa: PLC0415 (phonemizer loads espeak-ng when first used)

    if isinstance(texts, str):
        raise TypeError("phonemize takes a list of strings")
    backend = _backend(language)
    out = backend.phonemize(
        list(texts), separator=Separator(phone=" ", word=WORD_SEP, syllable=None), strip=True, njobs=1
    )
    return [normalize_phones(p) for p in out]


def ipa(text: str, language: str = "en-us") -> str:
    """espeak-ng's IPA of ``text`` as one string, with stress marks and punctuation kept and no phone separators
    (what neural TTS front ends such as Kokoro's and Piper's read), e.g. ``"həlˈoʊ, wˈɜːld."``."""
    if not text.strip():
        raise UnisonoError("cannot phonemize empty text")
    return _backend(language, True).phonemize([text], strip=True, njobs=1)[0]


def normalize_phones(phones: str) -> str:
    """Split stress marks off their vowels and collapse whitespace: ``"w ˈɜː"`` -> ``"w ˈ ɜː"``."""
    phones = _STRESS_RE.sub(r"\1 ", phones)
    words = [" ".join(w.split()) for w in phones.split("|")]
    return WORD_SEP.join(w for w in words if w)


def phone_list(phones: str) -> list[str]:
    """Phones of a phone string, with ``"|"`` marking word boundaries: ``["h", "ə", "|", "w", ...]``."""
    return phones.split()
