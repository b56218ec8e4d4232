"""Phone tokenizer: IPA phone strings (the :mod:`unisono.text.g2p` format) <-> phone ids.

The inventory is built from the phones of a corpus and saved with it (``phones.json``). Id 0 is
``<unk>`` (any symbol outside the inventory encodes to it), id 1 is ``|`` (word boundary); the other
symbols follow in sorted order, so the same set of phones always gives the same ids.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from unisono.errors import UnisonoError
from unisono.fileio import read_json, write_json
from unisono.text.g2p import WORD_SEP, phone_list

UNK = "<unk>"
WORD = "|"


class PhoneTokenizer:
    """Phone string (``"h ə l ˈ oʊ | w ˈ ɜː l d"``) <-> list of local ids in ``0..size-1``."""

    def __init__(self, symbols: list[str]):
        if symbols[:2] != [UNK, WORD] or len(set(symbols)) != len(symbols):
            raise UnisonoError("a phone inventory must start with '<unk>', '|' and hold each symbol once")
        self.symbols = list(symbols)
        self._ids = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def fit(cls, phone_strings: Iterable[str], min_count: int = 1) -> PhoneTokenizer:
        """An inventory of every phone seen at least ``min_count`` times (sorted, so order-free)."""
        counts = Counter(p for s in phone_strings for p in phone_list(s) if p not in (WORD, UNK))
        return cls([UNK, WORD] + sorted(p for p, c in counts.items() if c >= min_count))

    @property
    def size(self) -> int:
        return len(self.symbols)

    @property
    def unk_id(self) -> int:
        return 0

    def encode(self, phones: str) -> list[int]:
        """Ids of a phone string; symbols outside the inventory become ``<unk>`` (id 0)."""
        return [self._ids.get(p, 0) for p in phone_list(phones)]

    def count_unknown(self, phones: str) -> int:
        return sum(p not in self._ids for p in phone_list(phones))

    def decode(self, ids: Iterable[int]) -> str:
        """The phone string of ``ids`` (``|`` ids become the `` | `` word separator)."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.size:
                raise UnisonoError(f"phone id {i} outside 0..{self.size - 1}")
            out.append(self.symbols[i])
        return " ".join(out).replace(f" {WORD} ", WORD_SEP)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.symbols, ensure_ascii=False).encode()).hexdigest()[:16]

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, {"type": "phones", "symbols": self.symbols})

    @classmethod
    def load(cls, path: str | os.PathLike) -> PhoneTokenizer:
        d = read_json(Path(path))
        if d.get("type") != "phones":
            raise UnisonoError(f"{path} is not a phone inventory (type {d.get('type')!r})")
        return cls(d["symbols"])
