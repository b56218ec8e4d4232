"""The set of modality tokenizers of one tokenized corpus, saved in ``SHARDS/tokenizers/``.

Files: ``phones.json`` (phone inventory), ``bpe.json`` (BPE tokenizer), ``semantic.json`` +
``semantic.safetensors`` (k-means units, when a task uses them), ``text_emb.json`` (the text encoder's
directory, when a task uses continuous text embeddings), ``terms.json`` (the sound event classes and
instruments of the training corpus, :class:`unisono.reasoning.Terms`; listen-and-revise compares them).
"""

from __future__ import annotations

import os
from pathlib import Path

from unisono.errors import UnisonoError
from unisono.fileio import read_json, write_json
from unisono.reasoning import Terms
from unisono.text import midi
from unisono.text.bpe import BPETokenizer
from unisono.text.g2p import phonemize
from unisono.text.phones import PhoneTokenizer


class TokenizerSet:
    def __init__(self, phones: PhoneTokenizer, bpe: BPETokenizer, semantic=None, text_emb=None,
                 terms: Terms | None = None):
        self.phones, self.bpe, self.semantic, self.text_emb = phones, bpe, semantic, text_emb
        self.terms = terms
        self._syllables: dict[str, list[int]] = {}

    def sizes(self) -> dict[str, int]:
        return {
            "phones": self.phones.size,
            "bpe": self.bpe.size,
            "midi": midi.SIZE,
            "semantic": self.semantic.size if self.semantic is not None else 0,
        }

    def fingerprints(self) -> dict[str, str]:
        f = {"phones": self.phones.fingerprint(), "bpe": self.bpe.fingerprint()}
        if self.semantic is not None:
            f["semantic"] = self.semantic.fingerprint()
        return f

    def syllable_phones(self, syllables: list[str]) -> None:
        """Phonemize (and cache) the syllables of a score in one espeak-ng call."""
        todo = sorted({s for s in syllables if s not in self._syllables})
        if todo:
            for s, p in zip(todo, phonemize(todo)):
                self._syllables[s] = self.phones.encode(p)

    def phonemize_syllable(self, syllable: str) -> list[int]:
        if syllable not in self._syllables:
            self.syllable_phones([syllable])
        return self._syllables[syllable]

    def save(self, directory: str | os.PathLike) -> None:
        d = Path(directory)
        self.phones.save(d / "phones.json")
        self.bpe.save(d / "bpe.json")
        if self.semantic is not None:
            self.semantic.save(d)
        if self.text_emb is not None:
            write_json(d / "text_emb.json", self.text_emb.config())
        if self.terms is not None:
            write_json(d / Terms.FILE, self.terms.to_dict())

    @classmethod
    def load(cls, directory: str | os.PathLike, codec=None) -> TokenizerSet:
        d = Path(directory)
        if not (d / "phones.json").exists():
            raise UnisonoError(f"{d} holds no tokenizers (phones.json missing); run `unisono tokenize` first")
        semantic = text_emb = None
        if (d / "semantic.json").exists():
            from unisono.text.semantic import SemanticTokenizer  # noqa: PLC0415 (needs transformers (HuBERT) when used)

            semantic = SemanticTokenizer.load(d, codec=codec)
        if (d / "text_emb.json").exists():
            from unisono.text.embed import TextEmbedder  # noqa: PLC0415 (needs transformers when used)

            cfg = read_json(d / "text_emb.json")
            text_emb = TextEmbedder(cfg["model_dir"], cfg.get("max_tokens", 64))
        terms = Terms.from_dict(read_json(d / Terms.FILE), str(d / Terms.FILE)) if (d / Terms.FILE).exists() else None
        return cls(PhoneTokenizer.load(d / "phones.json"), BPETokenizer.load(d / "bpe.json"), semantic, text_emb,
                   terms)
