"""Sampling from next-token logits: temperature, top-k, top-p, vocabulary masks, classifier-free guidance."""

from __future__ import annotations

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
) -> torch.Tensor:
    """Draw one token per row from ``logits [B, V]`` -> ``[B]``; ``temperature <= 0`` means greedy.

    ``generator`` may be one generator for the batch or one per row (then each row's draw depends on its
    own generator only, so a row samples the same whatever else is in the batch)."""
    logits = logits.float()
    if not torch.isfinite(logits).any(-1).all():
        raise UnisonoError("every token is masked out for some row; check the stream mask and end id")
    if temperature <= 0 or top_k == 1:
        return logits.argmax(-1)
    logits = filter_logits(logits / temperature, top_k, top_p)
    probs = torch.softmax(logits, dim=-1)
    if isinstance(generator, (list, tuple)):
        return torch.cat([torch.multinomial(probs[i : i + 1], 1, generator=g)[:, 0] for i, g in enumerate(generator)])
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
