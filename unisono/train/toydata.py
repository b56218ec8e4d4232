"""Small synthetic multi-task data for tests, smoke runs and benchmarks (no files needed).

Vocabulary layout used here (``V = 4 + K * codebook_size``): 0 pad, 1 end, 2 task ``copy``, 3 task
``count``, then K ranges of ``codebook_size`` codes, one per stream.

- ``copy``: ``[task] [cond: n random code frames] [target: the same n frames] [end]``
- ``count``: ``[task] [cond: one frame with a start value] [target: frames counting up from it] [end]``

The loss covers the target frames and the end frame.
"""

from __future__ import annotations

import torch

PAD, END, TASK_COPY, TASK_COUNT = 0, 1, 2, 3
SPECIALS = 4


def toy_vocab_size(num_streams: int, codebook_size: int) -> int:
    return SPECIALS + num_streams * codebook_size


def toy_stream_mask(num_streams: int, codebook_size: int) -> torch.Tensor:
    """``BoolTensor[K, V]``: stream k may emit its own codes or the end id."""
    v = toy_vocab_size(num_streams, codebook_size)
    mask = torch.zeros(num_streams, v, dtype=torch.bool)
    for k in range(num_streams):
        mask[k, SPECIALS + k * codebook_size : SPECIALS + (k + 1) * codebook_size] = True
    mask[:, END] = True
    return mask


def _codes(values: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Local code values ``[T, K]`` in [0, codebook_size) -> global ids."""
    k = values.shape[1]
    return SPECIALS + torch.arange(k)[None, :] * codebook_size + values


def _example(eid: str, task: str, task_id: int, cond: torch.Tensor, target: torch.Tensor) -> dict:
    k = cond.shape[1]
    frames = torch.cat([torch.full((1, k), task_id), cond, target, torch.full((1, k), END)])
    loss = torch.zeros_like(frames, dtype=torch.bool)
    loss[1 + cond.shape[0] :] = True
    cond_mask = torch.zeros(frames.shape[0], dtype=torch.bool)
    cond_mask[1 : 1 + cond.shape[0]] = True
    return {"id": eid, "task": task, "frames": frames, "loss_mask": loss, "cond_mask": cond_mask}


def toy_examples(n: int, num_streams: int, codebook_size: int, min_len: int = 3, max_len: int = 8,
                 seed: int = 0, tasks: tuple[str, ...] = ("copy", "count")) -> list[dict]:
    """``n`` examples, alternating between ``tasks``, with ``min_len..max_len`` target frames."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=g))
        if task == "copy":
            vals = torch.randint(0, codebook_size, (length, num_streams), generator=g)
            cond = _codes(vals, codebook_size)
            out.append(_example(f"copy-{i}", "copy", TASK_COPY, cond, cond.clone()))
        else:
            start = torch.randint(0, codebook_size, (1, num_streams), generator=g)
            vals = (start + torch.arange(length)[:, None]) % codebook_size
            out.append(_example(f"count-{i}", "count", TASK_COUNT, _codes(start, codebook_size),
                                _codes(vals, codebook_size)))
    return out
