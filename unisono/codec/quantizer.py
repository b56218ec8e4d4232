"""Residual vector quantization (RVQ) with codebooks that stay alive.

Each stage is a Euclidean codebook ``[codebook_size, dim]`` that is
- initialised by k-means on the first batch it sees (so no code starts far from the data),
- updated by exponential moving averages of the assigned vectors (no gradient through the codebook), with a
  decay that warms up from 0.1 to ``decay`` so the codebook keeps up with the fast-moving early encoder,
- kept alive by replacing codes whose EMA usage falls below ``dead_threshold`` times the mean usage with
  random vectors of the current batch (dead-code restart; relative, so it suits small and large batches).

The residual stack uses a straight-through estimator, a commitment loss, and quantizer dropout in training:
each batch item uses a random prefix of the codebooks, so every prefix ``1..K`` decodes to usable audio.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from unisono.errors import UnisonoError


def kmeans(x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plain k-means of ``x [N, D]`` into ``k`` centroids ``[k, D]`` (random restarts for empty clusters)."""
    n = x.shape[0]
    idx = (
        torch.randint(0, n, (k,), generator=generator, device=x.device)
        if n < k
        else torch.randperm(n, generator=generator, device=x.device)[:k]
    )
    cent = x[idx].clone()
    for _ in range(iters):
        assign = torch.cdist(x, cent).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(cent).index_add_(0, assign, x)
        empty = counts == 0
        cent = torch.where(empty[:, None], cent, sums / counts.clamp_min(1)[:, None])
    return cent


class EuclideanCodebook(nn.Module):
    """One VQ stage: nearest-neighbour lookup in an EMA-updated codebook ``embed [codebook_size, dim]``."""

    def __init__(self, dim: int, codebook_size: int, decay: float = 0.99, eps: float = 1e-5,
                 dead_threshold: float = 0.1, kmeans_iters: int = 10):
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size
        self.decay, self.eps, self.dead_threshold, self.kmeans_iters = decay, eps, dead_threshold, kmeans_iters
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("embed", torch.randn(codebook_size, dim) * 0.01)
        self.register_buffer("embed_sum", self.embed.clone())
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _init(self, x: torch.Tensor) -> None:
        cent = kmeans(x, self.codebook_size, self.kmeans_iters)
        counts = torch.bincount(torch.cdist(x, cent).argmin(1), minlength=self.codebook_size).float()
        self.embed.copy_(cent)
        self.embed_sum.copy_(cent * counts.clamp_min(1)[:, None])
        self.cluster_size.copy_(counts.clamp_min(1))
        self.initialized.fill_(True)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Indices ``[N]`` of the nearest codes of ``x [N, dim]``."""
        e = self.embed
        dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ e.t() + e.pow(2).sum(1)[None]
        return dist.argmin(dim=1)

    def dequantize(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.embed)

    @torch.no_grad()
    def update(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        """EMA update from vectors ``x [N, dim]`` assigned to ``idx [N]``, then dead-code restart."""
        onehot_counts = torch.bincount(idx, minlength=self.codebook_size).to(x.dtype)
        sums = torch.zeros_like(self.embed).index_add_(0, idx, x)
        # warm-up of the decay: early in training the encoder moves fast and the codebook must follow
        n = int(self.num_updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        self.num_updates += 1
        self.cluster_size.mul_(decay).add_(onehot_counts, alpha=1 - decay)
        self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        dead = self.cluster_size < self.dead_threshold * self.cluster_size.mean()
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(0, x.shape[0], (n_dead,), device=x.device)
            self.embed[dead] = x[pick]
            level = self.cluster_size.mean()
            self.embed_sum[dead] = x[pick] * level
            self.cluster_size[dead] = level

    def train_quantize(self, residual: torch.Tensor, active: torch.Tensor):
        """Training pass on ``residual [N, dim]``; rows where ``active`` is False are left out of updates.

        Returns ``(q_st, q, idx, commit_loss, codebook_loss)``: ``q_st`` carries the straight-through
        gradient to the encoder, ``q`` (no gradient) is subtracted from the residual.
        """
        r = residual.detach()
        if not bool(self.initialized):
            self._init(r)
        idx = self.quantize(r)
        q = self.dequantize(idx)
        if bool(active.any()):
            self.update(r[active], idx[active])
        mask = active[:, None].to(r.dtype)
        commit = (F.mse_loss(residual, q, reduction="none") * mask).sum() / (mask.sum() * r.shape[1]).clamp_min(1)
        return residual + (q - residual).detach(), q, idx, commit, residual.new_zeros(())


class FactorizedCodebook(nn.Module):
    """One VQ stage with factorized, L2-normalised codes: the residual ``[N, dim]`` is projected to
    ``code_dim`` (e.g. 8), compared by cosine similarity with the codebook ``[codebook_size, code_dim]``, and
    the chosen code is projected back. The codebook is learned by gradient (codebook loss), initialised by
    k-means on the first batch, and codes whose usage (an EMA of counts) falls below ``dead_threshold`` times
    the mean are restarted onto projected vectors of the current batch. Lookups by direction in a small space
    are insensitive to the scale drift of a fast-moving encoder, which keeps the codes in use.
    """

    def __init__(self, dim: int, codebook_size: int, code_dim: int = 8, decay: float = 0.99,
                 dead_threshold: float = 0.1, kmeans_iters: int = 10):
        super().__init__()
        self.dim, self.codebook_size, self.code_dim = dim, codebook_size, code_dim
        self.decay, self.dead_threshold, self.kmeans_iters = decay, dead_threshold, kmeans_iters
        self.in_proj = nn.Linear(dim, code_dim)
        self.out_proj = nn.Linear(code_dim, dim)
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _lookup(self, e: torch.Tensor) -> torch.Tensor:
        return (F.normalize(e, dim=-1) @ F.normalize(self.codebook, dim=-1).t()).argmax(dim=-1)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Indices ``[N]`` of the codes nearest (by cosine) to the projected ``x [N, dim]``."""
        return self._lookup(self.in_proj(x))

    def dequantize(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out_proj(F.normalize(F.embedding(idx, self.codebook), dim=-1))

    def train_quantize(self, residual: torch.Tensor, active: torch.Tensor):
        e = F.normalize(self.in_proj(residual), dim=1)  # [N, code_dim]
        if not bool(self.initialized):
            with torch.no_grad():
                cent = F.normalize(kmeans(e.detach(), self.codebook_size, self.kmeans_iters), dim=1)
                self.codebook.copy_(cent)
                counts = torch.bincount(self._lookup(e.detach()), minlength=self.codebook_size)
                self.cluster_size.copy_(counts.clamp_min(1).to(e.dtype))
                self.initialized.fill_(True)
        idx = self._lookup(e.detach())
        c = F.normalize(F.embedding(idx, self.codebook), dim=1)
        mask = active[:, None].to(e.dtype)
        denom = (mask.sum() * self.code_dim).clamp_min(1)
        commit = (F.mse_loss(e, c.detach(), reduction="none") * mask).sum() / denom
        codebook_loss = (F.mse_loss(c, e.detach(), reduction="none") * mask).sum() / denom
        q_st = self.out_proj(e + (c - e).detach())  # straight-through in the code space
        with torch.no_grad():
            self._restart(e.detach()[active], idx[active])
        return q_st, q_st.detach(), idx, commit, codebook_loss

    @torch.no_grad()
    def _restart(self, e: torch.Tensor, idx: torch.Tensor) -> None:
        if e.shape[0] == 0:
            return
        n = int(self.num_updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        self.num_updates += 1
        counts = torch.bincount(idx, minlength=self.codebook_size).to(e.dtype)
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        dead = self.cluster_size < self.dead_threshold * self.cluster_size.mean()
        n_dead = int(dead.sum())
        if n_dead:
            pick = torch.randint(0, e.shape[0], (n_dead,), device=e.device)
            self.codebook.data[dead] = e[pick] + 1e-3 * torch.randn_like(e[pick])
            self.cluster_size[dead] = self.cluster_size.mean()


class ResidualVectorQuantizer(nn.Module):
    """``num_codebooks`` VQ stages applied to residuals of latents ``z [B, dim, T]``.

    ``kind``: ``"ema"`` (:class:`EuclideanCodebook`) or ``"factorized"`` (:class:`FactorizedCodebook`).
    ``forward`` (training and eval) returns ``(z_q [B, dim, T], codes [B, K, T], commit_loss, codebook_loss,
    stats)`` (the codebook loss is zero for EMA codebooks);
    ``encode``/``decode`` are the inference paths (``codes`` LongTensor ``[B, K, T]``).
    """

    def __init__(self, dim: int, num_codebooks: int = 8, codebook_size: int = 1024, decay: float = 0.99,
                 dead_threshold: float = 0.1, kmeans_iters: int = 10, dropout: float = 0.5,
                 kind: str = "ema", code_dim: int = 8):
        super().__init__()
        self.dim, self.num_codebooks, self.codebook_size, self.dropout = dim, num_codebooks, codebook_size, dropout
        if kind == "ema":
            make = lambda: EuclideanCodebook(dim, codebook_size, decay, dead_threshold=dead_threshold,  # noqa: E731
                                             kmeans_iters=kmeans_iters)
        elif kind == "factorized":
            make = lambda: FactorizedCodebook(dim, codebook_size, code_dim, decay, dead_threshold,  # noqa: E731
                                              kmeans_iters)
        else:
            raise UnisonoError(f"quantizer kind must be 'ema' or 'factorized', got {kind!r}")
        self.layers = nn.ModuleList(make() for _ in range(num_codebooks))

    def _check_k(self, k: int | None) -> int:
        k = self.num_codebooks if k is None else int(k)
        if not 1 <= k <= self.num_codebooks:
            raise UnisonoError(f"num_codebooks must be between 1 and {self.num_codebooks}, got {k}")
        return k

    def forward(self, z: torch.Tensor, num_codebooks: int | None = None):
        k_max = self._check_k(num_codebooks)
        b, d, t = z.shape
        x = z.permute(0, 2, 1).reshape(-1, d)  # [B*T, D]
        if self.training and self.dropout > 0:
            # per item: use all K codebooks with prob 1-dropout, otherwise a random prefix 1..K
            n_q = torch.randint(1, k_max + 1, (b,), device=z.device)
            n_q = torch.where(torch.rand(b, device=z.device) < self.dropout, n_q, torch.full_like(n_q, k_max))
        else:
            n_q = torch.full((b,), k_max, device=z.device)
        keep_rows = n_q.repeat_interleave(t)  # [B*T]
        residual = x
        quant = torch.zeros_like(x)
        codes, commit, cb_loss, stats = [], x.new_zeros(()), x.new_zeros(()), {}
        for i, layer in enumerate(self.layers[:k_max]):
            active = keep_rows > i
            if self.training:
                q_st, q, idx, c_loss, b_loss = layer.train_quantize(residual, active)
                commit, cb_loss = commit + c_loss, cb_loss + b_loss
                counts = torch.bincount(idx[active], minlength=self.codebook_size).float()
                p = counts / counts.sum().clamp_min(1)
                stats[f"perplexity_{i}"] = float(torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum()))
                stats[f"usage_{i}"] = float((counts > 0).float().mean())
            else:
                with torch.no_grad():
                    idx = layer.quantize(residual)
                    q = layer.dequantize(idx)
                q_st = residual + (q - residual).detach()
            mask = active[:, None].to(x.dtype)
            quant = quant + q_st * mask
            residual = residual - q.detach() * mask
            codes.append(idx)
        z_q = quant.reshape(b, t, d).permute(0, 2, 1)
        codes = torch.stack(codes, 0).reshape(k_max, b, t).permute(1, 0, 2)
        return z_q, codes, commit, cb_loss, stats

    @torch.no_grad()
    def encode(self, z: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        """Codes ``[B, K, T]`` (int64) of latents ``z [B, dim, T]``."""
        k = self._check_k(num_codebooks)
        b, d, t = z.shape
        residual = z.permute(0, 2, 1).reshape(-1, d)
        out = []
        for layer in self.layers[:k]:
            idx = layer.quantize(residual)
            residual = residual - layer.dequantize(idx)
            out.append(idx)
        return torch.stack(out, 0).reshape(k, b, t).permute(1, 0, 2).contiguous()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, dim, T]`` from codes ``[B, K, T]`` (any prefix ``K <= num_codebooks``)."""
        self._check_k(codes.shape[1])
        out = 0
        for i in range(codes.shape[1]):
            out = out + self.layers[i].dequantize(codes[:, i])
        return out.permute(0, 2, 1)

    @staticmethod
    def bits_per_second(num_codebooks: int, codebook_size: int, frame_rate: float) -> float:
        return num_codebooks * math.log2(codebook_size) * frame_rate
