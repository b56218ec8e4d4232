"""Sampling from next-token logits: temperature, top-k, top-p, vocabulary masks, classifier-free guidance."""

from __future__ import annotations

import functools

import torch

from unisono.errors import UnisonoError


def cfg_mix(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on log-probabilities: ``u + scale * (c - u)`` (``[B, V]`` each)."""
    lc = torch.log_softmax(cond_logits.float(), dim=-1)
    lu = torch.log_softmax(uncond_logits.float(), dim=-1)
    return lu + scale * (lc - lu)


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to ``-inf`` every logit outside the top-k, then outside the smallest set of mass >= top-p."""
    logits = logits.float()
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_l, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_l, dim=-1)
        before = probs.cumsum(-1) - probs  # mass strictly before each token
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    widths: list[int] | None = None,
) -> torch.Tensor:
    """Draw one token per row from ``logits [B, V]`` -> ``[B]``, or one per row and stream from
    ``logits [B, M, V]`` -> ``[B, M]``; ``temperature <= 0`` means greedy.

    ``generator`` may be one generator for the batch or one per row (then each row's draw depends on its
    own generator only, so a row samples the same whatever else is in the batch). For ``[B, M, V]`` the
    draws are those of M calls on ``[B, V]``, stream after stream; ``widths`` (M ints) says that stream m
    has only its first ``widths[m]`` columns (the rest is padding, -inf), and the draws are then those of
    M calls on ``[B, widths[m]]``.
    """
    logits = logits.float()
    if not torch.isfinite(logits).any(-1).all():
        raise UnisonoError("every token is masked out for some row; check the stream mask and end id")
    if temperature <= 0 or top_k == 1:
        return logits.argmax(-1)
    logits = filter_logits(logits / temperature, top_k, top_p)
    probs = torch.softmax(logits, dim=-1)
    # the exponential race: argmax(p / E) with E ~ Exp(1) i.i.d. picks token i with probability p_i
    # (what torch.multinomial does for one sample, and the same draws)
    return (probs / race_noise(probs.shape, generator, widths, probs.device)).argmax(-1)


def race_noise(shape: torch.Size, generator, widths: list[int] | None, device) -> torch.Tensor:
    """Exp(1) noise of ``shape`` ([B, V] or [B, M, V]) drawn in the order of stream-by-stream calls (see
    :func:`sample_next`); +inf where ``widths`` marks padding."""
    per_row = isinstance(generator, (list, tuple))
    if len(shape) == 2 or widths is None or all(w == shape[-1] for w in widths):
        if per_row:  # row i: its streams one after another, all from its own generator
            return torch.stack([torch.empty(shape[1:], device=device).exponential_(generator=g) for g in generator])
        if len(shape) == 2:
            return torch.empty(shape, device=device).exponential_(generator=generator)
        return (
            torch.empty(shape[1], shape[0], shape[2], device=device).exponential_(generator=generator).transpose(0, 1)
        )
    b, total = shape[0], sum(widths)
    if per_row:
        flat = torch.cat([torch.empty(total, device=device).exponential_(generator=g) for g in generator])
    else:
        flat = torch.empty(b * total, device=device).exponential_(generator=generator)
    flat = torch.cat([flat, flat.new_full((1,), float("inf"))])
    return flat[_race_index(b, tuple(widths), shape[-1], per_row, str(device))]


@functools.lru_cache(maxsize=64)
def _race_index(b: int, widths: tuple[int, ...], vm: int, per_row: bool, device: str) -> torch.Tensor:
    """Index [B, M, Vm] into the flat noise of :func:`race_noise` (its last entry, +inf, for padding)."""
    total = sum(widths)
    idx = torch.full((b, len(widths), vm), b * total, dtype=torch.long)
    rows = torch.arange(b)[:, None]
    off = 0
    for m, w in enumerate(widths):
        j = torch.arange(w)[None, :]
        idx[:, m, :w] = rows * total + off + j if per_row else b * off + rows * w + j
        off += w
    return idx.to(device)
