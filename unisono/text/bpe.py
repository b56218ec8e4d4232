"""BPE text tokenizer (the ``tokenizers`` library), trained on the corpus text.

Used for transcripts, captions, instructions, questions and answers. Byte-level, so any text encodes
(no unknown tokens) and ``decode(encode(text)) == text`` for text without leading/trailing spaces.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from unisono.errors import UnisonoError
from unisono.fileio import write_text


def _lib():
    try:
        import tokenizers  # noqa: PLC0415 (optional: tokenizers)
    except ImportError:
        raise UnisonoError(
            "the `tokenizers` package is missing; install it with: pip install 'unisono[text]'"
        ) from None
    return tokenizers


class BPETokenizer:
    """Text <-> list of local ids in ``0..size-1``."""

    def __init__(self, tokenizer):
        self._tok = tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2) -> BPETokenizer:
        """Train a byte-level BPE on ``texts``; the result is deterministic for the same texts."""
        tk = _lib()
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
            special_tokens=[],
        )
        texts = sorted({t for t in texts if t})
        if not texts:
            raise UnisonoError("no text to train the BPE tokenizer on; the corpus has no transcripts or captions")
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @property
    def size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.size]
        if bad:
            raise UnisonoError(f"BPE id {bad[0]} outside 0..{self.size - 1}")
        return self._tok.decode(ids)

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        return [self._tok.id_to_token(int(i)) for i in ids]

    def to_str(self) -> str:
        return self._tok.to_str()

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_str().encode()).hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> None:
        write_text(path, self.to_str())

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        tk = _lib()
        try:
            return cls(tk.Tokenizer.from_file(str(path)))
        except Exception as e:  # the library raises a bare Exception for a bad file
            raise UnisonoError(f"cannot load the BPE tokenizer {path}: {e}") from None
