"""Codebook patterns: how the K streams of a frame sequence become positions of a transformer.

Pure index functions (exact inverses of each other, tested against plain loops):

- ``delay``: position ``s`` holds stream ``k`` of frame ``s - k`` (empty slots hold ``pad``), so a
  sequence of T frames takes ``T + K - 1`` positions and each position carries K tokens.
- ``flat``: position ``t * K + k`` holds stream ``k`` of frame ``t``: ``T * K`` positions of one token.
- ``multiscale`` keeps frames as positions (``T``) and handles the K codes of a frame with a small
  local transformer; it needs no index function.
"""

from __future__ import annotations

import torch


def delay_indices(num_frames: int, num_streams: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pair ``(s_idx [T, K], k_idx [T, K])``: frame ``t`` stream ``k`` sits at position ``t + k``."""
    t = torch.arange(num_frames, device=device)[:, None]
    k = torch.arange(num_streams, device=device)[None, :]
    return (t + k), k.expand(num_frames, num_streams)


def delay_interleave(frames: torch.Tensor, pad_id: int) -> torch.Tensor:
    """``frames [B, T, K] -> seq [B, T + K - 1, K]`` with ``seq[b, t + k, k] = frames[b, t, k]``."""
    b, t, k = frames.shape
    seq = frames.new_full((b, t + k - 1, k), pad_id)
    s_idx, k_idx = delay_indices(t, k, frames.device)
    seq[:, s_idx, k_idx] = frames
    return seq


def delay_position(frames: torch.Tensor, s: int, pad_id: int) -> torch.Tensor:
    """Position ``s`` of :func:`delay_interleave` of ``frames [B, T, K]`` alone: ``[B, K]``, stream k of frame
    ``s - k`` (``pad_id`` where ``s - k`` is outside ``0 .. T - 1``)."""
    t_all, kk = frames.shape[1], frames.shape[2]
    k = torch.arange(kk, device=frames.device)
    t = s - k
    return frames[:, t.clamp(0, t_all - 1), k].masked_fill(((t < 0) | (t >= t_all))[None, :], pad_id)


def delay_deinterleave(seq: torch.Tensor, num_streams: int) -> torch.Tensor:
    """Inverse of :func:`delay_interleave`: ``seq [B, S, K, ...] -> frames [B, S - K + 1, K, ...]``.

    Also works for per-position values aligned with ``seq`` (logits ``[B, S, K, V]``).
    """
    t = seq.shape[1] - num_streams + 1
    s_idx, k_idx = delay_indices(t, num_streams, seq.device)
    return seq[:, s_idx, k_idx]


def flat_interleave(frames: torch.Tensor) -> torch.Tensor:
    """``frames [B, T, K] -> seq [B, T * K]`` with ``seq[b, t * K + k] = frames[b, t, k]``."""
    return frames.reshape(frames.shape[0], -1)


def flat_deinterleave(seq: torch.Tensor, num_streams: int) -> torch.Tensor:
    """Inverse of :func:`flat_interleave`: ``seq [B, T * K, ...] -> [B, T, K, ...]``."""
    b, s = seq.shape[:2]
    return seq.reshape(b, s // num_streams, num_streams, *seq.shape[2:])
