"""Low-rank adapters (LoRA) on a model's linear projections.

:func:`add_lora` replaces each targeted ``nn.Linear`` by a :class:`LoRALinear` module that holds the frozen
base layer and the adapter matrices as its own parameters (state-dict keys ``<name>.base.weight``,
``<name>.lora_a``, ``<name>.lora_b``), so a model with adapters saves, loads and resumes like any module;
:func:`merge_lora` folds the adapters back into plain linear layers (the base model's keys again).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unisono.errors import UnisonoError

LORA_TARGETS = ("wqkv", "wo", "w13", "w2")  # the attention and MLP projections of unisono's transformer
HF_BODY = "backbone.body."  # a transformers backbone: every linear layer under it gets an adapter


class LoRALinear(nn.Module):
    """``y = base(x) + (alpha / r) * x A^T B^T`` with ``A [r, in]`` random and ``B [out, r]`` zero, so the
    layer starts as exactly ``base``. The base layer's parameters are frozen; only ``A`` and ``B`` learn."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        if rank < 1:
            raise UnisonoError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank = int(rank)
        self.scale = float(alpha if alpha is not None else rank) / self.rank
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(self.rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, self.rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in] -> [..., out]``."""
        return self.base(x) + F.linear(F.linear(x, self.lora_a.to(x.dtype)), self.lora_b.to(x.dtype)) * self.scale

    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha / r) B A`` (``[out, in]``, the base weight's dtype)."""
        return self.base.weight + (self.lora_b.float() @ self.lora_a.float()).to(self.base.weight.dtype) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """The base layer with the adapter folded into its weight (the base layer itself, changed in place)."""
        self.base.weight.copy_(self.merged_weight())
        return self.base


def lora_targets(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """``(parent, attribute, full name)`` of every linear projection that gets an adapter: ``wqkv``, ``wo``,
    ``w13``, ``w2`` of unisono's own transformers, or every linear layer of a transformers backbone."""
    found = []
    for name, mod in model.named_modules():
        for attr, child in mod.named_children():
            if not isinstance(child, nn.Linear):
                continue
            full = f"{name}.{attr}" if name else attr
            if attr in LORA_TARGETS or full.startswith(HF_BODY):
                found.append((mod, attr, full))
    return found


def add_lora(model: nn.Module, rank: int, alpha: float | None = None) -> list[str]:
    """Freeze every parameter of ``model`` and put a :class:`LoRALinear` of ``rank`` (scale ``alpha / rank``,
    default 1) on each projection of :func:`lora_targets`; returns their names."""
    if rank < 1:
        raise UnisonoError(f"LoRA rank must be >= 1, got {rank}")
    targets = lora_targets(model)
    if not targets:
        raise UnisonoError("this model has no attention/MLP projections to put LoRA adapters on")
    for p in model.parameters():
        p.requires_grad_(False)
    for parent, attr, _ in targets:
        setattr(parent, attr, LoRALinear(getattr(parent, attr), rank, alpha))
    return [full for _, _, full in targets]


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Replace every :class:`LoRALinear` of ``model`` by its base linear layer holding the merged weight;
    returns how many were merged. The state dict then has the base model's keys again."""
    n = 0
    for mod in list(model.modules()):
        for attr, child in list(mod.named_children()):
            if isinstance(child, LoRALinear):
                setattr(mod, attr, child.merged())
                n += 1
    return n
