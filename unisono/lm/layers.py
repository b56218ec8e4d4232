"""Transformer core: RMSNorm, rotary positions, SDPA attention with a preallocated KV cache, SwiGLU.

Shapes: hidden states ``x [B, S, D]``; a cache holds keys and values ``[B, H_kv, L_max, D_head]``
per layer, preallocated once per generation (no reallocation while decoding); ``length`` counts the
positions already written.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unisono.errors import UnisonoError


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


class Rotary(nn.Module):
    """Rotary position tables up to ``max_len`` positions: adjacent pairs ``(a, b)`` of a head are rotated by the
    position's angle, ``(a cos - b sin, a sin + b cos)``, in real arithmetic (torch.compile generates no code for
    complex numbers); the tables are computed in float64 and kept in float32."""

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise UnisonoError(f"rotary positions need an even head size, got {head_dim}")
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        ang = torch.arange(max_len, dtype=torch.float64)[:, None] * inv[None, :]
        self.max_len = max_len
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, pos0: int) -> torch.Tensor:
        """Rotate ``x [B, H, S, Dh]`` for positions ``pos0 .. pos0+S-1``."""
        s = x.shape[2]
        if pos0 + s > self.max_len:
            raise UnisonoError(
                f"sequence of {pos0 + s} positions exceeds max_seq_len {self.max_len}; "
                "shorten the input or raise max_seq_len in the model config"
            )
        cos, sin = self.cos[pos0 : pos0 + s], self.sin[pos0 : pos0 + s]
        pairs = x.float().unflatten(-1, (-1, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).to(x.dtype)


class KVCache:
    """Preallocated keys/values ``[B, H_kv, L_max, Dh]`` for one attention layer."""

    def __init__(self, batch: int, n_kv_heads: int, max_len: int, head_dim: int, device, dtype):
        self.k = torch.zeros(batch, n_kv_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = k.shape[2]
        end = self.length + s
        if end > self.k.shape[2]:
            raise UnisonoError(f"KV cache of {self.k.shape[2]} positions is full; raise max_seq_len")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reset(self) -> None:
        self.length = 0


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, rotary: Rotary, dropout: float = 0.0):
        super().__init__()
        self.n_heads, self.n_kv = n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        self.wqkv = nn.Linear(dim, (n_heads + 2 * n_kv_heads) * self.head_dim, bias=False)
        self.wo = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        self.rotary = rotary
        self.dropout = dropout

    def forward(self, x: torch.Tensor, pos0: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        b, s, _ = x.shape
        qkv = self.wqkv(x).view(b, s, -1, self.head_dim).transpose(1, 2)  # [B, H + 2 H_kv, S, Dh]
        nqk = self.n_heads + self.n_kv
        q, k = self.rotary(qkv[:, :nqk], pos0).split([self.n_heads, self.n_kv], dim=1)  # one rotation for both
        v = qkv[:, nqk:]
        if cache is not None:
            if cache.length != pos0:
                raise RuntimeError(f"cache holds {cache.length} positions but the input starts at {pos0}")
            k, v = cache.append(k, v)
        total = k.shape[2]
        gqa = self.n_kv != self.n_heads
        drop = self.dropout if self.training else 0.0
        if s == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, enable_gqa=gqa)
        elif total == s:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop, enable_gqa=gqa)
        else:  # a chunk after cached positions: query i sees keys 0 .. total-s+i
            qi = torch.arange(s, device=x.device)[:, None] + (total - s)
            mask = torch.arange(total, device=x.device)[None, :] <= qi
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, enable_gqa=gqa)
        return self.wo(y.transpose(1, 2).reshape(b, s, -1))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(a) * g)


def ffn_hidden_size(dim: int, mult: float, multiple_of: int = 32) -> int:
    h = int(dim * mult)
    return multiple_of * math.ceil(h / multiple_of)


class Block(nn.Module):
    def __init__(self, dim, n_heads, n_kv_heads, ffn_hidden, rotary, dropout=0.0, eps=1e-5):
        super().__init__()
        self.norm1 = RMSNorm(dim, eps)
        self.attn = Attention(dim, n_heads, n_kv_heads, rotary, dropout)
        self.norm2 = RMSNorm(dim, eps)
        self.ffn = SwiGLU(dim, ffn_hidden)
        self.drop = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x, pos0=0, cache=None):
        if self.drop is None:
            x = x + self.attn(self.norm1(x), pos0, cache)
            return x + self.ffn(self.norm2(x))
        x = x + self.drop(self.attn(self.norm1(x), pos0, cache))
        return x + self.drop(self.ffn(self.norm2(x)))


class Transformer(nn.Module):
    """A pre-norm decoder stack over embeddings ``x [B, S, D] -> [B, S, D]`` (final norm included)."""

    def __init__(self, dim, n_layers, n_heads, n_kv_heads=None, ffn_mult=8 / 3, max_len=4096,
                 rope_theta=10000.0, dropout=0.0, eps=1e-5):
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        self.dim, self.n_kv, self.head_dim = dim, n_kv_heads, dim // n_heads
        self.max_len = max_len
        self.rotary = Rotary(self.head_dim, max_len, rope_theta)
        hidden = ffn_hidden_size(dim, ffn_mult)
        self.layers = nn.ModuleList(
            [Block(dim, n_heads, n_kv_heads, hidden, self.rotary, dropout, eps) for _ in range(n_layers)]
        )
        self.norm = RMSNorm(dim, eps)

    def new_cache(self, batch: int, max_len: int, device, dtype) -> list[KVCache]:
        if max_len > self.max_len:
            raise UnisonoError(f"generation needs {max_len} positions, more than max_seq_len {self.max_len}")
        return [KVCache(batch, self.n_kv, max_len, self.head_dim, device, dtype) for _ in self.layers]

    def forward(self, x: torch.Tensor, pos0: int = 0, cache: list[KVCache] | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, pos0, None if cache is None else cache[i])
        return self.norm(x)
