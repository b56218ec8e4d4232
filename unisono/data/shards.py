"""Token shards: the training examples of a tokenized corpus, in streamable files.

Layout of a shard directory (one per split)::

    SHARDS/{split}/vocab.json                       the id layout (also at SHARDS/vocab.json)
    SHARDS/{split}/{task}-{index:05d}.safetensors   one shard: the examples of one task
    SHARDS/features.json                            the feature encoder of the audio_feat vectors (when any)

A shard is one safetensors file (no pickle, readable from any language, memory-mappable, one request
on object storage) holding the examples packed end to end:

- ``frames``: ``int16`` (``int32`` when the vocabulary has >= 32768 ids) ``[sum T, K]``;
- ``loss_mask``: ``uint8 [sum T, K]``; ``cond_mask``: ``uint8 [sum T]``;
- ``offsets``: ``int64 [n + 1]``, example i is rows ``offsets[i]:offsets[i+1]``;
- optionally ``text_emb`` ``float32 [sum N, D]`` with ``emb_offsets`` ``int64 [n + 1]``;
- optionally ``audio_feat`` ``float16 [sum N, D]`` (half the bytes; read back as float32) with ``feat_offsets``
  ``int64 [n + 1]``: the vectors of each example's ``<audio_feat>`` frames, in frame order;
- metadata: ``format``, ``ids`` and ``tasks`` (JSON lists), ``vocab`` (a hash of vocab.json),
  ``skipped`` (JSON list of ``[cut_id, reason]``).

A shard is written to a temporary name and renamed when complete, so a file with the final name is
always whole: an interrupted run leaves no partial shard, and the next run skips the finished ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from unisono.errors import UnisonoError
from unisono.fileio import atomic_path
from unisono.vocab import Vocab

SHARD_FORMAT = "unisono-shard-1"
SUFFIX = ".safetensors"
# continuous vectors an example may carry: key -> (offsets key, stored dtype); read back as float32
VECTORS = {"text_emb": ("emb_offsets", torch.float32), "audio_feat": ("feat_offsets", torch.float16)}
STORE_FILE = "store.safetensors"  # SPLIT/store.safetensors: a token store (unisono.data.store), never a shard
FEATURES_FILE = "features.json"  # SHARDS/features.json: {"encoder": describe()} of the encoder of audio_feat vectors


def vocab_hash(vocab: Vocab) -> str:
    """16 hex digits identifying the id layout (:meth:`Vocab.layout_dict`: specials added to reserved ids since
    the first layout do not change it, so older shards keep their hash)."""
    return hashlib.sha256(json.dumps(vocab.layout_dict(), sort_keys=True).encode()).hexdigest()[:16]


def shard_name(task: str, index: int) -> str:
    return f"{task}-{index:05d}{SUFFIX}"


def task_of_shard(path: str | os.PathLike) -> str:
    return Path(path).name[: -len(SUFFIX)].rsplit("-", 1)[0]


def write_shard(path: str | os.PathLike, examples: list[dict], vocab: Vocab, skipped: list | None = None) -> Path:
    """Write ``examples`` (example dicts) to one shard file, atomically."""
    K = vocab.num_codebooks
    dtype = torch.int16 if vocab.size < 2**15 else torch.int32
    lengths = [int(e["frames"].shape[0]) for e in examples]
    offsets = torch.zeros(len(examples) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(lengths, dtype=torch.int64).cumsum(0) if lengths else offsets[1:]
    def cat(key, shape_tail, dt):
        if not examples:
            return torch.zeros((0, *shape_tail), dtype=dt)
        return torch.cat([e[key].to(dt) for e in examples]).contiguous()
    tensors = {
        "frames": cat("frames", (K,), dtype),
        "loss_mask": cat("loss_mask", (K,), torch.uint8),
        "cond_mask": torch.cat([e.get("cond_mask", torch.zeros(len(e["frames"]), dtype=torch.bool)).to(torch.uint8)
                                for e in examples]).contiguous() if examples else torch.zeros(0, dtype=torch.uint8),
        "offsets": offsets,
    }
    for key, (off_key, dt) in VECTORS.items():
        if any(key in e for e in examples):
            tensors[key], tensors[off_key] = _pack_vectors([e.get(key) for e in examples], key, dt)
    meta = {
        "format": SHARD_FORMAT,
        "ids": json.dumps([e["id"] for e in examples]),
        "tasks": json.dumps([e["task"] for e in examples]),
        "vocab": vocab_hash(vocab),
        "skipped": json.dumps(skipped or []),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def _pack_vectors(vectors: list, key: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(packed [sum N, D] in dtype, offsets int64 [n + 1])`` of per-example ``[N, D]`` vectors (None: none)."""
    dims = {int(x.shape[1]) for x in vectors if x is not None}
    if len(dims) != 1:
        raise UnisonoError(f"the {key} vectors of one shard have sizes {sorted(dims)}; one encoder makes them all")
    dim = dims.pop()
    vectors = [x if x is not None else torch.zeros(0, dim) for x in vectors]
    off = torch.zeros(len(vectors) + 1, dtype=torch.int64)
    off[1:] = torch.tensor([x.shape[0] for x in vectors]).cumsum(0)
    return torch.cat(vectors).to(dtype).contiguous(), off


def shard_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a shard (ids, tasks, skipped decoded from JSON), without reading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise UnisonoError(
            f"shard {path} is unreadable ({e}); delete it and re-run `unisono tokenize` to redo it"
        ) from None
    if meta.get("format") != SHARD_FORMAT:
        raise UnisonoError(f"{path} is not a unisono shard (format {meta.get('format')!r})")
    for key in ("ids", "tasks", "skipped"):
        meta[key] = json.loads(meta[key])
    return meta


def read_shard(path: str | os.PathLike) -> Iterator[dict]:
    """The examples of one shard, in order."""
    meta = shard_metadata(path)
    try:
        t = load_file(str(path))
    except Exception as e:
        raise UnisonoError(
            f"shard {path} is unreadable ({e}); delete it and re-run `unisono tokenize` to redo it"
        ) from None
    off = t["offsets"].tolist()
    voff = {key: t[off_key].tolist() for key, (off_key, _) in VECTORS.items() if off_key in t}
    for i, (ex_id, task) in enumerate(zip(meta["ids"], meta["tasks"])):
        a, b = off[i], off[i + 1]
        ex = {
            "id": ex_id,
            "task": task,
            "frames": t["frames"][a:b].long(),
            "loss_mask": t["loss_mask"][a:b].bool(),
            "cond_mask": t["cond_mask"][a:b].bool(),
        }
        for key, vo in voff.items():
            if vo[i + 1] > vo[i]:
                ex[key] = t[key][vo[i] : vo[i + 1]].float()
        yield ex


def resolve_split_dir(directory: str | os.PathLike, split: str = "train") -> Path:
    d = Path(directory)
    if not d.is_dir():
        raise UnisonoError(f"shard directory {d} does not exist; run `unisono tokenize` first")
    if not any(d.glob(f"*{SUFFIX}")) and (d / split).is_dir():
        d = d / split
    return d


def list_shards(directory: str | os.PathLike, tasks=None) -> list[Path]:
    """Complete shards of ``directory`` (sorted by name), optionally of ``tasks`` only."""
    paths = sorted(p for p in Path(directory).glob(f"*{SUFFIX}") if not p.name.startswith(".") and p.name != STORE_FILE)
    if tasks is not None:
        tasks = set(tasks)
        paths = [p for p in paths if task_of_shard(p) in tasks]
    return paths


def reader_share(items: list, shuffle: bool, seed: int, rank: int, world_size: int) -> list:
    """This reader's part of ``items`` (shards or examples): shuffled with ``seed`` (the reader's seed + epoch)
    when ``shuffle``, then every ``world_size``-th from ``rank``, then every DataLoader worker's own part."""
    items = list(items)
    if shuffle:
        random.Random(seed).shuffle(items)
    items = items[rank::world_size]
    info = torch.utils.data.get_worker_info()
    if info is not None:
        items = items[info.id :: info.num_workers]
    return items


class ShardReader(torch.utils.data.IterableDataset):
    """Stream the examples of a shard directory: ``for ex in ShardReader(dir): ...``.

    ``dir`` is a split directory (``SHARDS/train``) or a tokenized corpus root (then ``split`` is
    used). Shards are dealt round-robin to ``rank`` of ``world_size`` processes and then to the
    DataLoader workers of that process, so every shard is read by exactly one worker of one rank.
    ``tasks`` keeps only those tasks. ``shuffle`` shuffles the shard order and the examples (within a
    buffer of ``buffer_size``) with ``seed`` + the epoch set by :meth:`set_epoch`.
    ``vocab`` (a :class:`Vocab`, e.g. a checkpoint's) is checked against the shards' vocab.json.
    A shard that cannot be read (truncated, corrupt) is skipped with a warning and its reason kept in
    ``skipped`` ({path: reason}); the other shards are read as usual. A shard of another vocabulary is
    an error (the data would be read wrong, not just lost).
    """

    def __init__(self, dir, rank: int = 0, world_size: int = 1, tasks=None, split: str = "train",
                 shuffle: bool = False, seed: int = 0, buffer_size: int = 1000, vocab: Vocab | None = None):
        super().__init__()
        if not 0 <= rank < world_size:
            raise UnisonoError(f"rank must lie in 0..world_size-1, got rank={rank}, world_size={world_size}")
        self.dir = resolve_split_dir(dir, split)
        vocab_path = self.dir / "vocab.json"
        if not vocab_path.exists():
            raise UnisonoError(f"{vocab_path} is missing; {self.dir} is not a complete shard directory")
        self.vocab = Vocab.load(vocab_path)
        if vocab is not None:
            vocab.check_compatible(self.vocab, what=f"the shards in {self.dir}", mine="the given vocabulary")
        self.rank, self.world_size = rank, world_size
        self.tasks = None if tasks is None else sorted(set(tasks))
        if self.tasks is not None:
            unknown = [t for t in self.tasks if t not in self.vocab.tasks]
            if unknown:
                raise UnisonoError(f"tasks {unknown} are not in {vocab_path} (known: {', '.join(self.vocab.tasks)})")
        self.shuffle, self.seed, self.buffer_size = shuffle, seed, buffer_size
        self.epoch = 0
        self.skipped: dict[str, str] = {}
        self.shards = list_shards(self.dir, self.tasks)
        if not self.shards:
            raise UnisonoError(f"no shards in {self.dir}" + (f" for tasks {self.tasks}" if self.tasks else ""))
        self._hash = vocab_hash(self.vocab)
        if len(self.shards) < world_size:
            warnings.warn(
                f"{len(self.shards)} shard(s) in {self.dir} for {world_size} ranks: some ranks read nothing; "
                "re-tokenize with a smaller --shard-size", stacklevel=2)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def my_shards(self) -> list[Path]:
        return reader_share(self.shards, self.shuffle, self.seed + self.epoch, self.rank, self.world_size)

    def __iter__(self) -> Iterator[dict]:
        rng = random.Random((self.seed + self.epoch) * 1000 + self.rank)
        buf: list[dict] = []
        for path in self.my_shards():
            try:
                meta = shard_metadata(path)
                examples = list(read_shard(path))
            except UnisonoError as e:
                if str(path) not in self.skipped:
                    warnings.warn(f"skipping {e}", stacklevel=2)
                self.skipped[str(path)] = str(e)
                continue
            if meta["vocab"] != self._hash:
                raise UnisonoError(
                    f"shard {path} was made with another vocabulary than {self.dir / 'vocab.json'}; re-tokenize"
                )
            for ex in examples:
                if self.tasks is not None and ex["task"] not in self.tasks:
                    continue
                if not self.shuffle:
                    yield ex
                    continue
                buf.append(ex)
                if len(buf) >= self.buffer_size:
                    yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf


def collate_examples(examples: list[dict], pad_id: int = 0) -> dict:
    """Pad a list of examples into a batch.

    Returns ``frames LongTensor[B, T, K]`` (padded with ``pad_id``), ``loss_mask BoolTensor[B, T, K]``
    and ``cond_mask BoolTensor[B, T]`` (False on padding), ``lengths LongTensor[B]``, ``ids`` and
    ``tasks`` (lists); ``text_emb`` stays a list (``None`` where an example has none).
    """
    if not examples:
        raise UnisonoError("cannot collate an empty batch")
    B = len(examples)
    T = max(int(e["frames"].shape[0]) for e in examples)
    K = int(examples[0]["frames"].shape[1])
    frames = torch.full((B, T, K), pad_id, dtype=torch.long)
    loss = torch.zeros(B, T, K, dtype=torch.bool)
    cond = torch.zeros(B, T, dtype=torch.bool)
    for i, e in enumerate(examples):
        n = e["frames"].shape[0]
        frames[i, :n] = e["frames"]
        loss[i, :n] = e["loss_mask"]
        if "cond_mask" in e:
            cond[i, :n] = e["cond_mask"]
    return {
        "ids": [e["id"] for e in examples],
        "tasks": [e["task"] for e in examples],
        "frames": frames,
        "loss_mask": loss,
        "cond_mask": cond,
        "lengths": torch.tensor([e["frames"].shape[0] for e in examples], dtype=torch.long),
        "text_emb": [e.get("text_emb") for e in examples],
    }
