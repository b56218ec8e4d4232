"""The token store: a tokenized corpus kept per recording, compactly, assembled into examples as they are read.

Token shards (:mod:`unisono.data.shards`) hold every example's frames, so a recording's codes are stored once per
task that reads them (a speech cut: tts, asr, instruct_tts; prompts: again). The store keeps each recording's codes
once, the text-side token ids of each cut (phones, BPE, MIDI, semantic units: computed when it is built) and the
cut metadata the templates read (speaker, kind, condition recordings, mask spans); a reader builds the examples
from them with the task templates through the one assembler (:class:`unisono.data.examples.ExampleMaker`), the same
examples ``unisono tokenize`` writes to shards, bit for bit (tested). Reading needs torch, numpy, safetensors and
the standard library: no soundfile, soxr, lhotse, espeak or codec (the GPU image has none of them).

Layout: ``STORE/{split}/store.safetensors`` (beside ``vocab.json``, ``codec.json`` and ``tokenizers/`` at the root,
as a shard directory has them), one safetensors file of ``uint8`` blobs:

- ``codes.{k}``: codebook k of every stored recording, concatenated (``uint16`` values ``< codebook_size``),
  packed by the method that made it smallest when it was written (:data:`METHODS`: 10-bit packing, or
  ``uint16`` + LZMA / bzip2, optionally delta coded; codebook 0, the codec's F0 track, packs to ~4 bits a frame);
- ``tokens``: every text-side segment's global token ids concatenated, packed the same way;
- ``meta``: LZMA-compressed JSON: the recordings (key and frame count, in stream order; a recording read only
  for a fixed-length window from its start keeps only those frames), the cuts, each cut's segments (offset and
  length in ``tokens``, or the reason it has none), the items per task (``[cut_id, variant]``), the skipped
  items with their reasons, the task templates, the seed, the codec's rates;
- safetensors metadata: ``format``, ``vocab`` (the hash of the vocab.json it was made with), the packing
  methods and value counts.

A store is written to a temporary name and renamed when complete: a store file is always whole.
"""

from __future__ import annotations

import bz2
import json
import lzma
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from unisono.data.examples import ExampleMaker, recording_key
from unisono.data.shards import (
    STORE_FILE,
    ShardReader,
    list_shards,
    reader_share,
    resolve_split_dir,
    task_of_shard,
    vocab_hash,
)
from unisono.encode import SegmentEncoder
from unisono.errors import UnisonoError
from unisono.fileio import atomic_path
from unisono.tasks import Segment, SegmentSpec, parse_templates
from unisono.vocab import Vocab

STORE_FORMAT = "unisono-store-1"
# raw LZMA2 tuned for 2-byte symbols (no literal context, 2-byte alignment): ~5-10 % smaller than the defaults
_LZMA = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 1, "pb": 1}]


# ------------------------------------------------------------------------------------------------ packing
def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """``values uint16 [N]`` (each ``< 2**bits``) packed into ``ceil(N * bits / 8)`` bytes, most significant bit
    first."""
    v = np.ascontiguousarray(values, dtype=">u2")
    b = np.unpackbits(v.view(np.uint8).reshape(-1, 2), axis=1)[:, 16 - bits:]
    return np.packbits(b.reshape(-1)).tobytes()


def unpack_bits(blob: bytes, bits: int, n: int) -> np.ndarray:
    """The inverse of :func:`pack_bits`: ``uint16 [n]``."""
    b = np.unpackbits(np.frombuffer(blob, dtype=np.uint8))[: n * bits].reshape(n, bits)
    full = np.zeros((n, 16), dtype=np.uint8)
    full[:, 16 - bits:] = b
    return np.packbits(full, axis=1).view(">u2").reshape(n).astype(np.uint16)


def _delta(v: np.ndarray) -> np.ndarray:
    return np.diff(v, prepend=np.uint16(0)).astype(np.uint16)  # wraps modulo 2**16


def _undelta(d: np.ndarray) -> np.ndarray:
    return np.cumsum(d, dtype=np.uint16)


# method -> (pack(values uint16 [N], bits) -> bytes, unpack(bytes, bits, n) -> uint16 [n])
METHODS = {
    "bits": (pack_bits, unpack_bits),
    "u16-lzma": (lambda v, b: lzma.compress(v.astype("<u2").tobytes(), format=lzma.FORMAT_RAW, filters=_LZMA),
                 lambda z, b, n: np.frombuffer(lzma.decompress(z, format=lzma.FORMAT_RAW, filters=_LZMA), "<u2")),
    "u16-bz2": (lambda v, b: bz2.compress(v.astype("<u2").tobytes(), 9),
                lambda z, b, n: np.frombuffer(bz2.decompress(z), "<u2")),
    "delta-u16-lzma": (lambda v, b: METHODS["u16-lzma"][0](_delta(v), b),
                       lambda z, b, n: _undelta(METHODS["u16-lzma"][1](z, b, n))),
}


def pack_stream(values: np.ndarray, bits: int, methods=None) -> tuple[str, bytes, dict[str, int]]:
    """``(method, blob, sizes)``: ``values uint16 [N]`` packed by the smallest of ``methods`` (default: all of
    :data:`METHODS`); ``sizes``: bytes per method tried."""
    values = np.ascontiguousarray(values, dtype=np.uint16)
    if values.size and int(values.max()) >= 2**bits:
        raise UnisonoError(f"a value {int(values.max())} does not fit {bits} bits")
    blobs = {m: METHODS[m][0](values, bits) for m in (methods or METHODS)}
    best = min(blobs, key=lambda m: (len(blobs[m]), m))
    return best, blobs[best], {m: len(b) for m, b in blobs.items()}


def unpack_stream(method: str, blob: bytes, bits: int, n: int) -> np.ndarray:
    """``uint16 [n]`` packed by :func:`pack_stream` with ``method``."""
    if method not in METHODS:
        raise UnisonoError(f"unknown packing method {method!r}")
    out = np.asarray(METHODS[method][1](bytes(blob), bits, n), dtype=np.uint16)
    if out.shape != (n,):
        raise UnisonoError(f"a {method} stream holds {out.size} values, not {n}")
    return out


def bits_for(size: int) -> int:
    """Bits that hold the values ``0 .. size - 1``."""
    return max(1, math.ceil(math.log2(max(2, size))))


def segment_key(spec: SegmentSpec, variant: int) -> str:
    """Where a cut's text-side segment is filed: ``MODALITY|SOURCE|VARIANT`` (the variant only for qa sources)."""
    return f"{spec.modality}|{spec.source}|{variant if spec.source_kind == 'qa' else 0}"


def segment_ids(vocab: Vocab, seg: Segment) -> list[int]:
    """A phones, bpe, midi or semantic segment's ids as global ids (what the store files)."""
    if seg.modality == "midi":
        return [int(vocab.to_global(m, i)) for m, i in seg.ids]
    return [int(x) for x in vocab.to_global(seg.modality, list(seg.ids))]


def ids_segment(vocab: Vocab, modality: str, ids: list[int]) -> Segment:
    """The inverse of :func:`segment_ids`."""
    if modality == "midi":
        return Segment("midi", ids=[(vocab.range_of(g), int(vocab.to_local(vocab.range_of(g), g))) for g in ids])
    return Segment(modality, ids=[int(x) for x in vocab.to_local(modality, torch.tensor(ids, dtype=torch.long))])


# ------------------------------------------------------------------------------------------------ writing
def check_store_tasks(templates: dict, selected: list[str], codes_features: bool = False) -> None:
    """A one-line error, before any work, for a selected task the store cannot hold: text_emb segments, audio_feat
    segments unless their encoder computes them from the codes (``codes_features``: ``resynth``, whose features
    are computed from the stored codes as training starts), or semantic units of a speaker prompt (a random window
    of a random utterance)."""
    for t in selected:
        for s in templates[t].segments:
            if s.modality == "audio_feat" and not codes_features:
                raise UnisonoError(f"task {t} has an audio_feat segment; the token store holds codes and token ids "
                                   "only: use an encoder of the codes (--feature-encoder resynth:...), or tokenize "
                                   "it as shards (--format shards)")
            if s.modality == "text_emb":
                raise UnisonoError(f"task {t} has a {s.modality} segment; the token store holds codes and token ids "
                                   "only: tokenize it as shards (--format shards)")
            if s.modality == "semantic" and s.source_kind == "speaker_prompt":
                raise UnisonoError(f"task {t} reads semantic units of a speaker prompt; the token store cannot hold "
                                   "them: tokenize it as shards (--format shards)")


def check_no_mix(out: Path, splits, store: bool) -> None:
    """Shards and a store never share a split directory (a reader could not tell which to read)."""
    for s in splits:
        if store and list_shards(out / s):
            raise UnisonoError(f"{out / s} holds token shards; make the store in a new --out (copy or link "
                               f"{out / '.codes'} there to reuse the codes)")
        if not store and (out / s / STORE_FILE).exists():
            raise UnisonoError(f"{out / s} holds a token store; make shards in a new --out")


def write_store(path: str | os.PathLike, vocab: Vocab, recordings: dict, meta: dict,
                segments: dict[str, dict[str, list[int] | str]]) -> dict:
    """Write one split's store atomically. ``recordings``: key -> ``codes [K, T]`` (int; < codebook size) or the
    reason (str) it could not be encoded; ``segments``: cut id -> segment key -> global ids or a reason;
    ``meta``: the rest of the meta JSON (cuts, items, skipped, templates, seed, codec, ...). Returns the bytes
    per part (``codes.{k}``, ``tokens``, ``meta``, ``file``) and the bytes per packing method tried."""
    K, bits = vocab.num_codebooks, bits_for(vocab.codebook_size)
    keys = sorted(k for k, v in recordings.items() if not isinstance(v, str))
    arrays = [np.asarray(recordings[k], dtype=np.int64).reshape(K, -1) for k in keys]
    cat = np.concatenate(arrays, axis=1) if arrays else np.zeros((K, 0), dtype=np.int64)
    if cat.size and (cat.min() < 0 or cat.max() >= vocab.codebook_size):
        raise UnisonoError(f"codes outside 0..{vocab.codebook_size - 1} cannot be stored")
    flat, index = [], {}
    for cid, segs in sorted(segments.items()):
        index[cid] = {}
        for skey, ids in sorted(segs.items()):
            index[cid][skey] = ids if isinstance(ids, str) else [sum(len(x) for x in flat), len(ids)]
            if not isinstance(ids, str):
                flat.append(ids)
    tokens = np.array([i for ids in flat for i in ids], dtype=np.int64)
    tbits = bits_for(vocab.size)
    if tbits > 16:
        raise UnisonoError(f"a vocabulary of {vocab.size} ids does not fit the store's 16-bit token ids")
    tensors, methods, tried = {}, {}, {}
    for k in range(K):
        m, blob, tried[f"codes.{k}"] = pack_stream(cat[k].astype(np.uint16), bits)
        tensors[f"codes.{k}"], methods[f"codes.{k}"] = np.frombuffer(blob, np.uint8).copy(), m
    m, blob, tried["tokens"] = pack_stream(tokens.astype(np.uint16), tbits)
    tensors["tokens"], methods["tokens"] = np.frombuffer(blob, np.uint8).copy(), m
    full = {**meta, "recordings": [[k, int(a.shape[1])] for k, a in zip(keys, arrays)],
            "failed": {k: v for k, v in recordings.items() if isinstance(v, str)}, "segments": index,
            "num_codebooks": K, "code_bits": bits, "token_bits": tbits, "num_tokens": int(tokens.size)}
    tensors["meta"] = np.frombuffer(lzma.compress(json.dumps(full, sort_keys=True).encode(), preset=9), np.uint8).copy()
    st_meta = {"format": STORE_FORMAT, "vocab": vocab_hash(vocab), "methods": json.dumps(methods)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=st_meta)
    sizes = {name: int(t.size) for name, t in tensors.items()}
    sizes["file"] = Path(path).stat().st_size
    return {"bytes": sizes, "methods": methods, "tried": tried, "frames": int(cat.shape[1])}


# ------------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class StoredRecording:
    """A condition recording of a stored cut: its id and the key of its codes."""

    id: str
    store_key: str


@dataclass(frozen=True)
class StoredSupervision:
    speaker: str | None
    text: str | None = None


@dataclass
class StoredCut:
    """What the assembler reads of a cut (duck-typing a Lhotse cut): ``id``, ``custom`` (``kind``, the condition
    recordings by role), ``supervisions`` (the speaker), ``duration`` (seconds), ``store_key``."""

    id: str
    store_key: str
    duration: float
    custom: dict = field(default_factory=dict)
    supervisions: list = field(default_factory=list)


def _damaged(path, why) -> UnisonoError:
    return UnisonoError(f"token store {path} is damaged ({why}); rebuild it with `unisono tokenize --format store`")


class TokenStore:
    """One split's store file, read and unpacked (``codes`` stay ``int16 [K, sum T]`` in memory)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            t = load_file(str(self.path))
            with safe_open(str(self.path), framework="np") as f:
                st_meta = dict(f.metadata() or {})
        except Exception as e:  # safetensors raises its own error types for a damaged file
            raise _damaged(self.path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        if st_meta.get("format") != STORE_FORMAT:
            raise UnisonoError(f"{self.path} is not a unisono token store (format {st_meta.get('format')!r})")
        self.vocab_hash = st_meta.get("vocab")
        try:
            methods = json.loads(st_meta["methods"])
            self.meta = json.loads(lzma.decompress(t["meta"].tobytes()))
            K, bits = int(self.meta["num_codebooks"]), int(self.meta["code_bits"])
            n = sum(int(x[1]) for x in self.meta["recordings"])
            codes = np.stack([unpack_stream(methods[f"codes.{k}"], t[f"codes.{k}"].tobytes(), bits, n)
                              for k in range(K)]) if K else np.zeros((0, n), np.uint16)
            self.tokens = unpack_stream(methods["tokens"], t["tokens"].tobytes(), int(self.meta["token_bits"]),
                                        int(self.meta["num_tokens"]))
        except UnisonoError as e:
            raise _damaged(self.path, e) from None
        except (KeyError, ValueError, TypeError, lzma.LZMAError, OSError, EOFError) as e:
            raise _damaged(self.path, f"{type(e).__name__}: {e}") from None
        self.codes_all = torch.from_numpy(codes.astype(np.int16))
        self.makers: dict[str, StoreExampleMaker] = {}  # vocab hash -> the assembler on this store
        self.features: dict[str, torch.Tensor] | None = None  # key -> HalfTensor[T, D], set by compute_features
        self.features_of: str | None = None  # the fingerprint of the encoder that made them
        self.index, off = {}, 0
        for key, n_frames in self.meta["recordings"]:
            self.index[key] = (off, off + int(n_frames))
            off += int(n_frames)

    def codes(self, key: str) -> torch.Tensor:
        """``codes LongTensor[K, T]`` of the recording ``key`` (:func:`unisono.data.examples.recording_key`)."""
        if key in self.index:
            a, b = self.index[key]
            return self.codes_all[:, a:b].long()
        raise UnisonoError(self.meta["failed"].get(key) or f"the token store holds no codes of {key}")

    def feature(self, key: str) -> torch.Tensor:
        """``feats HalfTensor[T, D]`` of the recording ``key``, computed from its codes by :func:`compute_features`."""
        if self.features is None:
            raise UnisonoError(f"the audio features of token store {self.path} are not computed: training computes "
                               "them from the codes as it starts (unisono.data.store.compute_features)")
        if key not in self.features:
            raise UnisonoError(f"token store {self.path} holds no features of {key}; rebuild it for this task")
        return self.features[key]

    def segment(self, cut_id: str, key: str) -> list[int]:
        """The global ids of segment ``key`` (:func:`segment_key`) of cut ``cut_id`` (its reason as an error)."""
        entry = self.meta["segments"].get(cut_id, {}).get(key)
        if isinstance(entry, str):
            raise UnisonoError(entry)
        if entry is None:
            raise UnisonoError(f"the token store holds no {key} of cut {cut_id}; rebuild it for this task")
        return self.tokens[entry[0] : entry[0] + entry[1]].astype(np.int64).tolist()

    def cuts(self) -> list[StoredCut]:
        out = []
        for c in self.meta["cuts"]:
            custom = {"kind": c.get("kind"), **{r: StoredRecording(k, k) for r, k in (c.get("rec") or {}).items()}}
            out.append(StoredCut(c["id"], c["key"], float(c.get("dur", 0.0)), custom,
                                 [StoredSupervision(c.get("spk"))] if c.get("spk") is not None else []))
        return out


_LOADED: dict = {}  # (path, size, mtime) -> TokenStore: one unpacking per process for every reader of a file
_KEEP = 4  # stores kept unpacked (train and valid of a run; ~90 MB each at 40 h and 4 codebooks)


def load_store(path: str | os.PathLike) -> TokenStore:
    """The :class:`TokenStore` of ``path``, unpacked once per process (and again when the file changes); the last
    :data:`_KEEP` stores read stay in memory."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _LOADED:
        for old in [k for k in _LOADED if k[0] == key[0]] + list(_LOADED)[: max(0, len(_LOADED) - _KEEP + 1)]:
            _LOADED.pop(old, None)
        _LOADED[key] = TokenStore(p)
    else:
        _LOADED[key] = _LOADED.pop(key)  # most recently used last
    return _LOADED[key]


class StoreExampleMaker(ExampleMaker):
    """The example assembler on a :class:`TokenStore`: codes, token ids and cut metadata from the store, the
    templates and the seed it was built with; ``vocab``: the split's vocabulary."""

    def __init__(self, store: TokenStore, vocab: Vocab):
        meta = store.meta
        codec = SimpleNamespace(sample_rate=int(meta["codec"]["sample_rate"]),
                                frame_rate=float(meta["codec"]["frame_rate"]))
        templates = parse_templates({"tasks": meta["templates"]})
        super().__init__(templates, vocab, SegmentEncoder(vocab, None, codec), store.cuts(), int(meta["seed"]))
        self.store = store

    def codes(self, obj, spec) -> torch.Tensor:
        return self.store.codes(recording_key(obj, spec))

    def feats(self, obj, spec) -> torch.Tensor:
        return self.store.feature(recording_key(obj, spec))

    def recording(self, cut, role: str):
        rec = cut.custom.get(role)
        if not isinstance(rec, StoredRecording):
            raise UnisonoError(f"cut {cut.id} has no condition recording {role!r}")
        return rec

    def text_segment(self, spec, cut, variant: int) -> Segment:
        if spec.modality == "text_emb":
            raise UnisonoError(f"segment {spec.name} is text_emb; the token store holds no text vectors")
        return ids_segment(self.vocab, spec.modality, self.store.segment(cut.id, segment_key(spec, variant)))

    def semantic_segment(self, spec, cut, rng) -> Segment:
        return ids_segment(self.vocab, "semantic", self.store.segment(cut.id, segment_key(spec, 0)))

    def span(self, spec, cut, variant: int):
        entry = self.store.meta.get("spans", {}).get(cut.id, {}).get(segment_key(spec, variant))
        if isinstance(entry, str) or entry is None:
            raise UnisonoError(entry or f"the token store holds no {spec.source} of cut {cut.id}")
        return entry


@torch.no_grad()
def compute_features(store: TokenStore, encoder, batch: int = 16, progress=None) -> dict:
    """Compute the audio features of every recording that the store's ``audio_feat`` segments read
    (``meta["feature_keys"]``) from its codes with ``encoder`` (one of :data:`unisono.features.CODES_ENCODERS`, on
    the device it was moved to), recordings of one length ``batch`` at a time; kept as float16 on the CPU in
    ``store.features``. Done once per store and encoder. ``progress``: a callable given the recordings done.
    Returns ``{"recordings", "frames", "seconds"}``."""
    import time  # noqa: PLC0415

    keys = store.meta.get("feature_keys") or []
    fp = encoder.fingerprint()
    if store.features is not None and store.features_of == fp:
        return {"recordings": len(store.features), "frames": sum(int(t.shape[0]) for t in store.features.values()),
                "seconds": 0.0}
    t0 = time.perf_counter()
    by_length: dict[int, list[str]] = {}
    for k in keys:
        by_length.setdefault(store.index[k][1] - store.index[k][0], []).append(k)
    feats: dict[str, torch.Tensor] = {}
    for length in sorted(by_length):
        group = by_length[length]
        for i in range(0, len(group), batch):
            part = group[i : i + batch]
            out = encoder.encode_codes_batch(torch.stack([store.codes(k) for k in part]))
            for k, f in zip(part, out.half().cpu()):
                feats[k] = f.clone()
            if progress is not None:
                progress(len(part))
    store.features, store.features_of = feats, fp
    return {"recordings": len(feats), "frames": sum(int(t.shape[0]) for t in feats.values()),
            "seconds": round(time.perf_counter() - t0, 2)}


def store_path(directory: str | os.PathLike, split: str = "train") -> Path | None:
    """The store file of ``directory`` (a split directory or a tokenized root, then its ``split``); None when it
    has none (e.g. a shard directory). A directory holding both shards and a store is an error."""
    d = Path(directory)
    for cand in (d, d / split):
        if (cand / STORE_FILE).is_file():
            if list_shards(cand):
                raise UnisonoError(f"{cand} holds both token shards and a token store; keep one (tokenize the store "
                                   "into its own --out)")
            return cand / STORE_FILE
    return None


class StoreReader(torch.utils.data.IterableDataset):
    """Stream the examples of a token store, assembled as they are read: ``for ex in StoreReader(dir): ...``.

    The same arguments and behaviour as :class:`unisono.data.shards.ShardReader`: ``dir`` is a split directory or a
    root (then ``split``); items (task, cut, variant) are dealt round-robin to ``rank`` of ``world_size`` and then
    to the DataLoader workers; ``tasks`` keeps those tasks; ``shuffle`` shuffles the items with ``seed`` + the
    epoch (:meth:`set_epoch`); without it they come in the shards' order (task by task, cuts by id). ``vocab``
    (e.g. a checkpoint's) is checked against the store's vocab.json."""

    def __init__(self, dir, rank: int = 0, world_size: int = 1, tasks=None, split: str = "train",
                 shuffle: bool = False, seed: int = 0, buffer_size: int = 1000, vocab: Vocab | None = None):
        super().__init__()
        if not 0 <= rank < world_size:
            raise UnisonoError(f"rank must lie in 0..world_size-1, got rank={rank}, world_size={world_size}")
        path = store_path(dir, split)
        if path is None:
            raise UnisonoError(f"no token store ({STORE_FILE}) in {dir}")
        self.path, self.dir = path, path.parent
        vocab_path = self.dir / "vocab.json"
        if not vocab_path.exists():
            raise UnisonoError(f"{vocab_path} is missing; {self.dir} is not a complete token store")
        self.vocab = Vocab.load(vocab_path)
        if vocab is not None:
            vocab.check_compatible(self.vocab, what=f"the token store in {self.dir}", mine="the given vocabulary")
        store = load_store(path)
        if store.vocab_hash != vocab_hash(self.vocab):
            raise UnisonoError(f"token store {path} was made with another vocabulary than {vocab_path}; rebuild it")
        if int(store.meta["num_codebooks"]) != self.vocab.num_codebooks:
            raise UnisonoError(f"token store {path} holds {store.meta['num_codebooks']} codebooks, {vocab_path} "
                               f"{self.vocab.num_codebooks}; rebuild it")
        have = store.meta["items"]
        self.tasks = None if tasks is None else sorted(set(tasks))
        if self.tasks is not None:
            unknown = [t for t in self.tasks if t not in self.vocab.tasks]
            if unknown:
                raise UnisonoError(f"tasks {unknown} are not in {vocab_path} (known: {', '.join(self.vocab.tasks)})")
        self.items = [(t, c, int(v)) for t in sorted(have) if self.tasks is None or t in self.tasks for c, v in have[t]]
        if not self.items:
            raise UnisonoError(f"no examples in {path}" + (f" for tasks {self.tasks}" if self.tasks else ""))
        self.rank, self.world_size, self.shuffle, self.seed = rank, world_size, shuffle, seed
        self.epoch = 0
        self.skipped: dict[str, str] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def my_items(self) -> list[tuple[str, str, int]]:
        return reader_share(self.items, self.shuffle, self.seed + self.epoch, self.rank, self.world_size)

    def __iter__(self) -> Iterator[dict]:
        store = load_store(self.path)
        maker = store.makers.get(vocab_hash(self.vocab))  # one per store: every task's reader, every epoch
        if maker is None:
            maker = store.makers[vocab_hash(self.vocab)] = StoreExampleMaker(store, self.vocab)
        for task, cut_id, variant in self.my_items():
            yield maker.make(task, cut_id, variant)


def open_examples(directory: str | os.PathLike, **kwargs) -> ShardReader | StoreReader:
    """A reader of the examples in ``directory``: a :class:`StoreReader` when it holds a token store, else a
    :class:`~unisono.data.shards.ShardReader` (same arguments)."""
    split = kwargs.get("split", "train")
    return StoreReader(directory, **kwargs) if store_path(directory, split) else ShardReader(directory, **kwargs)


def tasks_in(directory: str | os.PathLike, split: str = "train") -> list[str]:
    """The tasks with examples in ``directory`` (a store or shard directory)."""
    path = store_path(directory, split)
    if path is not None:
        return sorted(t for t, items in load_store(path).meta["items"].items() if items)
    return sorted({task_of_shard(p) for p in list_shards(resolve_split_dir(directory, split))})
