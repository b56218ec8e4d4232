"""Training data for the language model: task mixing, length-bucketed token-budget batches, collation.

An example is a dict ``{"id": str, "task": str, "frames": LongTensor[T, K], "loss_mask": BoolTensor[T, K]}``
with an optional ``cond_mask: BoolTensor[T]`` marking the condition frames (for condition dropout) and an optional
``audio_feat: FloatTensor[N, D]``, the vectors of its N ``<audio_feat>`` placeholder frames in frame order
(:func:`unisono.tasks.build_example`); :func:`collate` spreads them into ``feats [B, T, D]`` beside the frames.

Everything here is deterministic given a seed and keeps a small ``state_dict`` so that a resumed run
sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from unisono.errors import UnisonoError

Source = Callable[[], Iterable[dict]]  # a factory: each call starts the source again from its beginning


def check_example(ex: dict, num_streams: int | None = None) -> None:
    for key in ("id", "task", "frames", "loss_mask"):
        if key not in ex:
            raise UnisonoError(
                f"training example {ex.get('id', '?')!r} has no {key!r}; was it made by the task templates?"
            )
    f, m = ex["frames"], ex["loss_mask"]
    if f.dim() != 2 or m.shape != f.shape:
        raise UnisonoError(
            f"example {ex['id']!r}: frames must be [T, K] and loss_mask the same shape, got {tuple(f.shape)} "
            f"and {tuple(m.shape)}"
        )
    if num_streams is not None and f.shape[1] != num_streams:
        raise UnisonoError(f"example {ex['id']!r} has {f.shape[1]} streams but the model has {num_streams}")


def split_by_task(examples: Iterable[dict]) -> dict[str, Source]:
    """In-memory helper: group a list of examples into one restartable source per task."""
    groups: dict[str, list[dict]] = {}
    for ex in examples:
        groups.setdefault(ex["task"], []).append(ex)
    return {task: (lambda xs=xs: iter(xs)) for task, xs in groups.items()}


def rank_split(source: Source, rank: int, world_size: int) -> Source:
    """Every ``world_size``-th example of ``source``, starting at ``rank``."""
    return lambda: itertools.islice(iter(source()), rank, None, world_size)


class TaskMixture:
    """An endless stream of examples: each draw picks a task with probability proportional to its weight.

    A task's source restarts (a new epoch) when it runs out. ``state_dict`` holds the random state and
    how many examples of each task were read in the current epoch; loading it re-reads the sources up
    to those positions.
    """

    def __init__(self, sources: dict[str, Source], weights: dict[str, float] | None = None, seed: int = 0):
        if not sources:
            raise UnisonoError("no training data: the task sources are empty")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(sources))
        if unknown:
            raise UnisonoError(f"task weights name tasks with no data: {unknown}; tasks with data: {sorted(sources)}")
        self.tasks = sorted(t for t in sources if weights.get(t, 1.0) > 0)
        if not self.tasks:
            raise UnisonoError("every task has weight 0; give at least one task a positive weight")
        w = np.array([float(weights.get(t, 1.0)) for t in self.tasks])
        self.probs = w / w.sum()
        self.sources = sources
        self.rng = np.random.default_rng(seed)
        self.epoch = {t: 0 for t in self.tasks}
        self.count = {t: 0 for t in self.tasks}
        self._its: dict[str, Iterator[dict]] = {}

    def _iter(self, task: str) -> Iterator[dict]:
        if task not in self._its:
            self._its[task] = iter(self.sources[task]())
        return self._its[task]

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        task = self.tasks[int(self.rng.choice(len(self.tasks), p=self.probs))]
        try:
            ex = next(self._iter(task))
        except StopIteration:
            self._its[task] = iter(self.sources[task]())
            self.epoch[task] += 1
            self.count[task] = 0
            try:
                ex = next(self._its[task])
            except StopIteration:
                raise UnisonoError(f"the data source of task {task!r} yields no examples") from None
        self.count[task] += 1
        return ex

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "epoch": dict(self.epoch), "count": dict(self.count)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.epoch = dict(state["epoch"])
        self.count = dict(state["count"])
        self._its = {}
        for task, n in self.count.items():
            it = self._iter(task)
            for _ in range(n):  # fast-forward to the saved position
                next(it)


class TokenBudgetBatcher:
    """Length-bucketed batches under a token budget.

    Reads a pool of ``pool_size`` examples, sorts it by length, cuts it into batches whose padded
    size ``len(batch) * max_frames_in_batch`` stays within ``max_frames``, and yields those batches in
    a random order. An example longer than the budget is cropped to ``max_frames`` frames from its end
    (keeping the target) and batched alone.
    """

    def __init__(self, mixture: TaskMixture, max_frames: int, pool_size: int = 256, seed: int = 0):
        if max_frames < 1 or pool_size < 1:
            raise UnisonoError("max_frames and pool_size must be positive")
        self.mixture, self.max_frames, self.pool_size, self.seed = mixture, max_frames, pool_size, seed
        self.pool_index = 0
        self.pos = 0
        self._batches: list[list[dict]] = []
        self._pool_start: dict | None = None

    def _fill(self) -> None:
        self._pool_start = self.mixture.state_dict()
        pool = [next(self.mixture) for _ in range(self.pool_size)]
        pool = [crop_example(ex, self.max_frames) for ex in pool]
        order = sorted(range(len(pool)), key=lambda i: (pool[i]["frames"].shape[0], i))
        batches, cur, cur_max = [], [], 0
        for i in order:
            n = pool[i]["frames"].shape[0]
            if cur and (len(cur) + 1) * max(cur_max, n) > self.max_frames:
                batches.append(cur)
                cur, cur_max = [], 0
            cur.append(pool[i])
            cur_max = max(cur_max, n)
        if cur:
            batches.append(cur)
        rng = np.random.default_rng([self.seed, self.pool_index])
        self._batches = [batches[j] for j in rng.permutation(len(batches))]
        self.pos = 0

    def __iter__(self):
        return self

    def __next__(self) -> list[dict]:
        if self.pos >= len(self._batches):
            if self._batches:
                self.pool_index += 1
            self._fill()
        self.pos += 1
        return self._batches[self.pos - 1]

    def state_dict(self) -> dict:
        return {"pool_start": self._pool_start, "pool_index": self.pool_index, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pool_index = state["pool_index"]
        if state["pool_start"] is None:
            self._batches, self.pos = [], 0
            return
        self.mixture.load_state_dict(state["pool_start"])
        self._fill()
        self.pos = state["pos"]


def crop_example(ex: dict, max_frames: int) -> dict:
    """``ex`` cut to its last ``max_frames`` frames (``frames``, ``loss_mask``, ``cond_mask``); as it is when
    shorter. ``audio_feat`` vectors stay: the placeholder frames kept are the last ones, and :func:`collate` takes
    the last vectors for them."""
    if ex["frames"].shape[0] <= max_frames:
        return ex
    out = dict(ex)
    for key in ("frames", "loss_mask", "cond_mask"):
        if key in out:
            out[key] = out[key][-max_frames:]
    return out


def condition_frames(ex: dict) -> torch.Tensor:
    """``BoolTensor[T]``: the condition frames (``cond_mask``, else every frame before the first loss frame)."""
    if ex.get("cond_mask") is not None:
        return ex["cond_mask"].bool()
    has_loss = ex["loss_mask"].bool().any(-1)
    t = ex["frames"].shape[0]
    first = int(has_loss.nonzero()[0]) if bool(has_loss.any()) else t
    return torch.arange(t) < first


def collate(batch: list[dict], pad_id: int, cond_dropout: float = 0.0,
            generator: torch.Generator | None = None, feature_id: int | None = None) -> dict:
    """Right-pad examples to ``frames [B, T, K]``, ``loss_mask [B, T, K]``; drop conditions with prob ``cond_dropout``.

    A dropped condition has its frames replaced by ``pad_id`` (the unconditional input of guidance). With
    ``feature_id`` (the model's ``<audio_feat>`` placeholder id, ``LMConfig.feature_id``) and examples that carry
    ``audio_feat`` vectors, ``feats [B, T, D]`` (float32) holds each example's vectors at its placeholder frames
    (frames whose stream 0 is ``feature_id``) and zeros elsewhere: at padding, and at the frames of a dropped
    condition (its placeholders are ``pad_id`` then, so its features are gone too). Without such examples
    ``feats`` is None.
    """
    t = max(ex["frames"].shape[0] for ex in batch)
    k = batch[0]["frames"].shape[1]
    frames = torch.full((len(batch), t, k), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), t, k), dtype=torch.bool)
    drops = (
        torch.rand(len(batch), generator=generator) < cond_dropout
        if cond_dropout > 0
        else torch.zeros(len(batch), dtype=torch.bool)
    )
    for i, ex in enumerate(batch):
        n = ex["frames"].shape[0]
        f = ex["frames"].long()
        if drops[i]:
            f = f.masked_fill(condition_frames(ex)[:, None], pad_id)
        frames[i, :n] = f
        mask[i, :n] = ex["loss_mask"].bool()
    return {
        "frames": frames,
        "loss_mask": mask,
        "feats": dense_features(batch, frames, feature_id),
        "tasks": [ex["task"] for ex in batch],
        "ids": [ex["id"] for ex in batch],
        "num_frames": sum(ex["frames"].shape[0] for ex in batch),
        "lengths": [int(ex["frames"].shape[0]) for ex in batch],
        "cond_dropped": drops,
    }


def model_inputs(mb: dict, device: torch.device | str) -> dict[str, torch.Tensor]:
    """The keyword inputs of ``UnisonoLM.loss`` for a batch made by :func:`collate`, on ``device``: ``frames``,
    ``loss_mask`` and, when the batch has features, ``feats``."""
    out = {"frames": mb["frames"].to(device), "loss_mask": mb["loss_mask"].to(device)}
    if mb.get("feats") is not None:
        out["feats"] = mb["feats"].to(device)
    return out


def dense_features(batch: list[dict], frames: torch.Tensor, feature_id: int | None) -> torch.Tensor | None:
    """``feats FloatTensor[B, T, D]`` for the collated ``frames [B, T, K]`` of ``batch``: example b's ``audio_feat``
    vectors at its frames whose stream 0 is ``feature_id``, zeros elsewhere; None when no example has vectors.
    An example cropped from the front (:func:`crop_example`) keeps its last placeholder frames and gets its last
    vectors."""
    with_vectors = [ex for ex in batch if ex.get("audio_feat") is not None]
    if not with_vectors:
        return None
    if feature_id is None:
        raise UnisonoError(f"example {with_vectors[0]['id']!r} has audio_feat vectors but the model reads no audio "
                           "features; give the model feature_dim and feature_id (see docs/lm.md)")
    dims = {int(ex["audio_feat"].shape[-1]) for ex in with_vectors}
    if len(dims) > 1:
        raise UnisonoError(f"the examples of a batch have audio_feat vectors of sizes {sorted(dims)}; one encoder "
                           "makes them all")
    feats = torch.zeros(*frames.shape[:2], dims.pop())
    for i, ex in enumerate(batch):
        rows = (frames[i, :, 0] == feature_id).nonzero().squeeze(-1)  # dropped conditions hold pad_id here
        vec = ex.get("audio_feat")
        have = 0 if vec is None else int(vec.shape[0])
        held = int((ex["frames"][:, 0] == feature_id).sum())
        if held > have:
            raise UnisonoError(f"example {ex['id']!r} has {held} audio_feat frames but {have} vectors")
        if len(rows):
            feats[i, rows] = vec[vec.shape[0] - len(rows):].float()
    return feats
