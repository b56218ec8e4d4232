"""One vocabulary for every modality: fixed, named id ranges, saved as ``vocab.json``.

Layout (ids ascending; the order of the ranges is fixed in this module, never taken from a config):

==============  =========================================================================
range           content
==============  =========================================================================
``special``     128 ids: ``<pad>`` (0), ``<start>``, ``<end>``, ``<mask>``, ``<unk>``,
                ``<cond_start>``/``<cond_end>``, ``<text_emb>``, then ``<{m}_start>``/``<{m}_end>``
                for every modality ``m``, then the placeholders added since (``<audio_feat>``),
                then reserved ids
``task``        64 ids, one per task (``<task:tts>`` ...); a new task takes the next free id
``phones``      the phone inventory (IPA symbols, ``|`` word boundary, ``<unk>`` phone)
``bpe``         the BPE tokenizer's vocabulary
``midi``        score tokens: 128 pitches, rest, duration steps (see :mod:`unisono.text.midi`)
``semantic``    k-means units
``codec_0`` ..  one range of ``codebook_size`` ids per codec codebook
==============  =========================================================================

Two vocabularies are compatible (a checkpoint can read shards) only if every range, every special id,
every shared task id, the codebook count and the tokenizer fingerprints agree:
:meth:`Vocab.check_compatible` raises :class:`UnisonoError` naming the first difference otherwise.

Specials added to a later version take reserved ids: ``<audio_feat_start>`` (20), ``<audio_feat_end>`` (21)
and ``<audio_feat>`` (22) were ``<reserved_0>`` .. ``<reserved_2>`` before. A reserved id keeps its name
``<reserved_{id - 20}>`` in every version, and :meth:`Vocab.from_dict` accepts a stored ``vocab.json`` whose
specials name an id reserved where this version has a new special there (an older file): every stored id
keeps its meaning, the new specials are simply unused by that file's shards. A stored name this version
does not know at an id (a newer file) is refused.

Frames: a sequence is ``frames [T, K]``. Audio frames hold one code per stream. A non-audio token
occupies a frame by itself; with ``fill="pad"`` (the default) it sits in stream 0 and the other
streams hold ``<pad>`` (never trained on); with ``fill="repeat"`` it is copied into every stream.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from unisono.errors import UnisonoError
from unisono.fileio import read_json, write_json

FORMAT_VERSION = 1
NUM_SPECIAL = 128
NUM_TASK_SLOTS = 64
FILL_MODES = ("pad", "repeat")
# the safetensors metadata key under which a model's weights record the layout they were trained with
LAYOUT_KEY = "unisono_vocab_layout"

# Modalities whose tokens are discrete ids in a range of their own, in layout order.
TOKEN_MODALITIES = ("phones", "bpe", "midi", "semantic")
# Every modality a template may use (new ones are appended: their start/end ids follow the older ones).
# ``codec`` spans K ranges; ``text_emb`` and ``audio_feat`` are continuous: their frames hold a placeholder
# (``<text_emb>``, ``<audio_feat>``) and the vectors travel beside the frames in the example dict.
MODALITIES = ("codec", "phones", "bpe", "midi", "semantic", "text_emb", "audio_feat")
# continuous modality -> the placeholder special that fills its frames
CONTINUOUS_MODALITIES = {"text_emb": "<text_emb>", "audio_feat": "<audio_feat>"}

_BASE_SPECIALS = ("<pad>", "<start>", "<end>", "<mask>", "<unk>", "<cond_start>", "<cond_end>", "<text_emb>")
# placeholders of continuous modalities added after the first layout, in the order they took reserved ids
_ADDED_PLACEHOLDERS = ("<audio_feat>",)
# the first id that was reserved in the first layout (format_version 1 with six modalities); a reserved id is
# named after its offset from here in every version, so the names of the ids still reserved never change
_FIRST_RESERVED_V1 = len(_BASE_SPECIALS) + 2 * 6


def special_names() -> list[str]:
    """The 128 special token names in id order (fixed by this module)."""
    names = list(_BASE_SPECIALS)
    for m in MODALITIES:
        names += [f"<{m}_start>", f"<{m}_end>"]
    names += list(_ADDED_PLACEHOLDERS)
    names += [f"<reserved_{i - _FIRST_RESERVED_V1}>" for i in range(len(names), NUM_SPECIAL)]
    return names


def _reserved_name(token_id: int) -> str | None:
    """The name id ``token_id`` had while it was reserved (None: it never was)."""
    return f"<reserved_{token_id - _FIRST_RESERVED_V1}>" if token_id >= _FIRST_RESERVED_V1 else None


def _check_stored_specials(stored: dict) -> None:
    """Raise :class:`UnisonoError` unless ``stored`` (a ``vocab.json``'s ``specials``: name -> id) gives every id
    this version's name, or the reserved name of an id where this version has a special added since."""
    mine = special_names()
    if not isinstance(stored, dict) or sorted(stored.values()) != list(range(NUM_SPECIAL)):
        raise UnisonoError("vocab.json's specials do not cover the special ids once each; the file is corrupt")
    for name, tid in stored.items():
        if name != mine[tid] and name != _reserved_name(tid):
            raise UnisonoError(f"vocab.json names special id {tid} {name!r} where this unisono has {mine[tid]!r}; "
                               "it was written by a newer unisono (upgrade) or edited")


@dataclass(frozen=True)
class Range:
    """A half-open id range ``[start, start + size)``."""

    name: str
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size

    def __contains__(self, token_id: int) -> bool:
        return self.start <= int(token_id) < self.stop


class Vocab:
    """The one id layout of a tokenized corpus and of every checkpoint trained on it.

    Build with :meth:`Vocab.build` (sizes from the tokenizers and the codec) or :meth:`Vocab.load`.
    """

    def __init__(
        self,
        sizes: dict[str, int],
        num_codebooks: int,
        codebook_size: int,
        tasks: dict[str, int],
        fill: str = "pad",
        fingerprints: dict[str, str] | None = None,
    ):
        if fill not in FILL_MODES:
            raise UnisonoError(f"fill must be one of {FILL_MODES}, got {fill!r}")
        if num_codebooks < 1 or codebook_size < 1:
            raise UnisonoError(f"a codec needs >= 1 codebook of >= 1 code, got {num_codebooks} x {codebook_size}")
        for m in TOKEN_MODALITIES:
            if int(sizes.get(m, 0)) < 0:
                raise UnisonoError(f"range size of {m} must be >= 0, got {sizes[m]}")
        self.num_codebooks = int(num_codebooks)
        self.codebook_size = int(codebook_size)
        self.fill = fill
        self.fingerprints = dict(sorted((fingerprints or {}).items()))
        self.specials = {name: i for i, name in enumerate(special_names())}
        for name, tid in tasks.items():
            if not 0 <= tid < NUM_TASK_SLOTS:
                raise UnisonoError(f"task {name!r} has slot {tid}; slots are 0..{NUM_TASK_SLOTS - 1}")
        if len(set(tasks.values())) != len(tasks):
            raise UnisonoError("two tasks share one task id in the vocabulary; rebuild vocab.json")
        self.tasks = dict(sorted(tasks.items(), key=lambda kv: kv[1]))  # name -> slot
        self.ranges: dict[str, Range] = {}
        start = 0
        for name, size in [("special", NUM_SPECIAL), ("task", NUM_TASK_SLOTS)] + [
            (m, int(sizes.get(m, 0))) for m in TOKEN_MODALITIES
        ] + [(f"codec_{k}", self.codebook_size) for k in range(self.num_codebooks)]:
            self.ranges[name] = Range(name, start, size)
            start += size
        self.size = start
        self._names: dict[int, str] | None = None

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def build(
        cls,
        tasks,
        num_codebooks: int,
        codebook_size: int,
        phones: int = 0,
        bpe: int = 0,
        midi: int = 0,
        semantic: int = 0,
        fill: str = "pad",
        fingerprints: dict[str, str] | None = None,
    ) -> Vocab:
        """A new layout; task ids are given in sorted name order (independent of any config order)."""
        names = sorted(set(tasks))
        if len(names) > NUM_TASK_SLOTS:
            raise UnisonoError(f"at most {NUM_TASK_SLOTS} tasks fit in one vocabulary, got {len(names)}")
        sizes = {"phones": phones, "bpe": bpe, "midi": midi, "semantic": semantic}
        return cls(sizes, num_codebooks, codebook_size, {n: i for i, n in enumerate(names)}, fill, fingerprints)

    def with_task(self, name: str) -> Vocab:
        """A copy with task ``name`` added at the next free slot (every other id unchanged)."""
        if name in self.tasks:
            return self
        used = set(self.tasks.values())
        free = next((i for i in range(NUM_TASK_SLOTS) if i not in used), None)
        if free is None:
            raise UnisonoError(f"all {NUM_TASK_SLOTS} task slots are taken; cannot add task {name!r}")
        tasks = dict(self.tasks)
        tasks[name] = free
        return Vocab(self._sizes(), self.num_codebooks, self.codebook_size, tasks, self.fill, self.fingerprints)

    def _sizes(self) -> dict[str, int]:
        return {m: self.ranges[m].size for m in TOKEN_MODALITIES}

    def to_dict(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "size": self.size,
            "fill": self.fill,
            "num_codebooks": self.num_codebooks,
            "codebook_size": self.codebook_size,
            "ranges": {n: [r.start, r.size] for n, r in self.ranges.items()},
            "specials": self.specials,
            "tasks": self.tasks,
            "fingerprints": self.fingerprints,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        if d.get("format_version") != FORMAT_VERSION:
            raise UnisonoError(
                f"vocab.json has format_version {d.get('format_version')!r}, this unisono reads {FORMAT_VERSION}; "
                "re-run `unisono tokenize` with this version"
            )
        try:
            sizes = {m: int(d["ranges"][m][1]) for m in TOKEN_MODALITIES}
            v = cls(sizes, d["num_codebooks"], d["codebook_size"], d["tasks"], d["fill"], d.get("fingerprints"))
        except KeyError as e:
            raise UnisonoError(f"vocab.json lacks the field {e}; it was not written by unisono") from None
        # The stored layout must be exactly the one this code derives (specials: or an older version's names for
        # the ids reserved there, see the module docstring): anything else is a foreign file.
        _check_stored_specials(d.get("specials"))
        if v.to_dict() != {**d, "fingerprints": v.fingerprints, "tasks": v.tasks, "specials": v.specials}:
            raise UnisonoError(
                "vocab.json's ranges or specials do not match its sizes; the file was edited or is corrupt"
            )
        return v

    def layout_fingerprint(self) -> str:
        """16 hex digits that change with any id's meaning: ranges, specials, task ids, fill, codebooks and the
        tokenizer fingerprints (a model's weights record it under :data:`LAYOUT_KEY`); read off :meth:`layout_dict`, so
        a vocabulary written before a new special took a reserved id keeps its fingerprint."""
        text = json.dumps(self.layout_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def layout_dict(self) -> dict:
        """:meth:`to_dict` with the specials named as the first layout named them (every id from 20 on as
        ``<reserved_{id - 20}>``): the form a hash of the layout reads (``unisono.data.shards.vocab_hash``), so
        a layout hashes as it did before specials were added to reserved ids (shards made then still read)."""
        d = self.to_dict()
        d["specials"] = {(name if i < _FIRST_RESERVED_V1 else _reserved_name(i)): i
                         for name, i in self.specials.items()}
        return d

    def save(self, path: str | os.PathLike) -> Path:
        write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        path = Path(path)
        if path.is_dir():
            path = path / "vocab.json"
        return cls.from_dict(read_json(path))

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={r.size}" for n, r in self.ranges.items() if not n.startswith("codec_"))
        return f"Vocab(size={self.size}, {parts}, codec={self.num_codebooks}x{self.codebook_size}, fill={self.fill})"

    # ---------------------------------------------------------------------------- compatibility
    def check_compatible(self, other: Vocab, what: str = "these shards", mine: str = "this checkpoint") -> None:
        """Raise :class:`UnisonoError` unless ``other`` assigns every id the same meaning as ``self``.

        Tasks present in only one of the two are allowed (a checkpoint may know more tasks than a
        shard set uses); a task present in both must have the same id.
        """
        a, b = self.to_dict(), other.to_dict()
        hint = "re-tokenize with the checkpoint's vocab.json (unisono tokenize --vocab) or train a new model"
        for key in ("fill", "num_codebooks", "codebook_size"):
            if a[key] != b[key]:
                raise UnisonoError(
                    f"vocabulary mismatch: {mine} has {key}={a[key]}, {what} have {key}={b[key]}; {hint}"
                )
        for name in a["ranges"]:
            if a["ranges"][name] != b["ranges"][name]:
                raise UnisonoError(
                    f"vocabulary mismatch: range {name!r} is [start, size]={a['ranges'][name]} in {mine} "
                    f"but {b['ranges'][name]} in {what}; {hint}"
                )
        if a["specials"] != b["specials"]:
            raise UnisonoError(f"vocabulary mismatch: special tokens differ between {mine} and {what}; {hint}")
        for name in set(a["tasks"]) & set(b["tasks"]):
            if a["tasks"][name] != b["tasks"][name]:
                raise UnisonoError(
                    f"vocabulary mismatch: task {name!r} has id {a['tasks'][name]} in {mine} but "
                    f"{b['tasks'][name]} in {what}; {hint}"
                )
        for key in set(a["fingerprints"]) & set(b["fingerprints"]):
            if a["fingerprints"][key] != b["fingerprints"][key]:
                raise UnisonoError(
                    f"vocabulary mismatch: the {key} tokenizer of {mine} differs from the one of {what} "
                    f"(same sizes, other symbols); {hint}"
                )

    # ------------------------------------------------------------------------------------ ids
    @property
    def pad_id(self) -> int:
        return self.specials["<pad>"]

    def special_id(self, name: str) -> int:
        if not name.startswith("<"):
            name = f"<{name}>"
        try:
            return self.specials[name]
        except KeyError:
            raise UnisonoError(f"unknown special token {name!r}") from None

    def task_id(self, name: str) -> int:
        try:
            return self.ranges["task"].start + self.tasks[name]
        except KeyError:
            raise UnisonoError(
                f"task {name!r} is not in this vocabulary (known: {', '.join(self.tasks)}); "
                "re-run `unisono tokenize` with it"
            ) from None

    def task_name(self, token_id: int) -> str:
        slot = int(token_id) - self.ranges["task"].start
        for name, s in self.tasks.items():
            if s == slot:
                return name
        raise UnisonoError(f"id {token_id} is not a task id of this vocabulary")

    def _check_modality(self, modality: str) -> None:
        if modality not in MODALITIES:
            raise UnisonoError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")

    def start_id(self, modality: str) -> int:
        self._check_modality(modality)
        return self.specials[f"<{modality}_start>"]

    def end_id(self, modality: str) -> int:
        """The token that ends a segment (and a generated target) of ``modality``."""
        self._check_modality(modality)
        return self.specials[f"<{modality}_end>"]

    def modality_range(self, modality: str, codebook: int = 0) -> Range:
        """The id range of ``modality`` (for ``codec``: of codebook ``codebook``)."""
        self._check_modality(modality)
        if modality == "codec":
            if not 0 <= codebook < self.num_codebooks:
                raise UnisonoError(f"codebook {codebook} out of range 0..{self.num_codebooks - 1}")
            return self.ranges[f"codec_{codebook}"]
        if modality in CONTINUOUS_MODALITIES:
            return Range(modality, self.placeholder_id(modality), 1)
        return self.ranges[modality]

    def placeholder_id(self, modality: str) -> int:
        """The special that fills the frames of a continuous modality (``<text_emb>``, ``<audio_feat>``)."""
        self._check_modality(modality)
        if modality not in CONTINUOUS_MODALITIES:
            raise UnisonoError(f"{modality} is not a continuous modality ({', '.join(CONTINUOUS_MODALITIES)} are)")
        return self.specials[CONTINUOUS_MODALITIES[modality]]

    def to_global(self, modality: str, local, codebook: int = 0):
        """Local token ids (0-based within the modality) -> vocabulary ids; bounds-checked."""
        r = self.modality_range(modality, codebook)
        t = torch.as_tensor(local, dtype=torch.long)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= r.size):
            raise UnisonoError(f"{modality} ids must lie in 0..{r.size - 1}, got {int(t.min())}..{int(t.max())}")
        return t + r.start

    def to_local(self, modality: str, ids, codebook: int = 0):
        r = self.modality_range(modality, codebook)
        t = torch.as_tensor(ids, dtype=torch.long)
        if t.numel() and (int(t.min()) < r.start or int(t.max()) >= r.stop):
            raise UnisonoError(f"ids outside the {r.name} range [{r.start}, {r.stop})")
        return t - r.start

    def range_of(self, token_id: int) -> str:
        """Name of the range that holds ``token_id``."""
        for name, r in self.ranges.items():
            if token_id in r:
                return name
        raise UnisonoError(f"id {token_id} is outside the vocabulary (size {self.size})")

    def name_of(self, token_id: int) -> str:
        """A readable name: ``<end>``, ``<task:tts>``, ``codec_1:517``, ``semantic:12``, ``phones:5``."""
        token_id = int(token_id)
        rng = self.range_of(token_id)
        if rng == "special":
            return special_names()[token_id]
        if rng == "task":
            try:
                return f"<task:{self.task_name(token_id)}>"
            except UnisonoError:
                return f"<task:?{token_id - self.ranges['task'].start}>"
        return f"{rng}:{token_id - self.ranges[rng].start}"

    # -------------------------------------------------------------------------- generation masks
    def generation_mask(self, modality: str) -> torch.Tensor:
        """``BoolTensor[K, V]``: the ids stream k may emit while generating a target of ``modality``.

        Codec: stream k emits codebook k's codes; every stream may emit ``<codec_end>`` (fill
        ``repeat``) or stream 0 emits it and the others ``<pad>`` (fill ``pad``). Token modalities:
        stream 0 emits the modality's ids or its end token; the other streams emit ``<pad>`` (fill
        ``pad``) or the same ids (fill ``repeat``).
        """
        self._check_modality(modality)
        if modality in CONTINUOUS_MODALITIES:
            raise UnisonoError(f"{modality} is a continuous condition; it cannot be a generation target")
        K, V = self.num_codebooks, self.size
        mask = torch.zeros(K, V, dtype=torch.bool)
        end = self.end_id(modality)
        for k in range(K):
            if modality == "codec":
                r = self.ranges[f"codec_{k}"]
                mask[k, r.start : r.stop] = True
                if self.fill == "repeat" or k == 0:
                    mask[k, end] = True
                else:
                    mask[k, self.pad_id] = True
            else:
                r = self.ranges[modality]
                if self.fill == "repeat" or k == 0:
                    mask[k, r.start : r.stop] = True
                    mask[k, end] = True
                else:
                    mask[k, self.pad_id] = True
        return mask

    def codec_codes(self, frames: torch.Tensor) -> torch.Tensor:
        """Generated audio ``frames [T, K]`` (global ids) -> codec ``codes [K, T]`` (local ids); an id outside
        a stream's codebook range (``<pad>`` beside an end frame) becomes code 0."""
        frames = torch.as_tensor(frames, dtype=torch.long)
        rows = []
        for k in range(self.num_codebooks):
            r = self.modality_range("codec", k)
            col = frames[:, k]
            rows.append(torch.where((col >= r.start) & (col < r.stop), col - r.start, torch.zeros_like(col)))
        return torch.stack(rows) if rows else frames.new_zeros((0, frames.shape[0]))

    def token_frame(self, token_id: int) -> torch.Tensor:
        """``LongTensor[K]``: a frame that holds one non-audio token (filled per :attr:`fill`)."""
        if self.fill == "repeat":
            return torch.full((self.num_codebooks,), int(token_id), dtype=torch.long)
        f = torch.full((self.num_codebooks,), self.pad_id, dtype=torch.long)
        f[0] = int(token_id)
        return f
