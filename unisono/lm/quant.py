"""Weight-only int8 inference for the language model on CPU.

At batch 1 a generation step reads every weight matrix once per frame for a handful of multiply-adds
per weight, so its speed is set by how many bytes the weights take. Storing each matrix as int8 with
one float scale per output row (symmetric, ``scale = max|w_row| / 127``) quarters those bytes; the
product runs in bfloat16 (``aten::_weight_int8pack_mm``, AVX-512 on x86 CPUs) and is returned in the
input's dtype. Embeddings, norms and the KV cache stay in float32.

``int8_inference(model)`` converts a model in place for inference (training it afterwards is refused);
``Int8Linear`` replaces ``nn.Linear``. On devices without the kernel the int8 weights are dequantized
for each product (same numbers, no speed-up).
"""

from __future__ import annotations

import torch
from torch import nn

from unisono.errors import UnisonoError
from unisono.weights import quantize_int8

COMPUTE_DTYPE = torch.bfloat16


def int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``w [N, D] -> (q int8 [N, D], scale [N] in COMPUTE_DTYPE)``, ``w ~ q * scale``
    (the rounding of :func:`unisono.weights.quantize_int8`, which stores checkpoints in int8)."""
    q, scale = quantize_int8(w, scale_dtype=COMPUTE_DTYPE)
    return q.contiguous(), scale


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x [..., D] @ (q [N, D] * scale [N, 1])^T -> [..., N]`` in ``x``'s dtype."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).to(COMPUTE_DTYPE)
    if x2.device.type == "cpu":
        y = torch.ops.aten._weight_int8pack_mm(x2.contiguous(), q, scale)
    else:
        y = x2 @ (q.to(COMPUTE_DTYPE) * scale[:, None]).t()
    return y.to(x.dtype).reshape(*shape[:-1], q.shape[0])


class Int8Linear(nn.Module):
    """A bias-free ``nn.Linear`` stored as int8 rows with one scale each (buffers ``q``, ``scale``)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.bias is not None:
            raise UnisonoError("int8 quantization supports bias-free linear layers only")
        q, scale = int8_rows(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("q", q)
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return int8_matmul(x, self.q, self.scale)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def int8_inference(model: nn.Module) -> nn.Module:
    """Replace every bias-free ``nn.Linear`` of ``model`` (the transformer's, a multiscale model's local
    transformer's, a transformers backbone's) by :class:`Int8Linear`, and give the output heads int8
    rows (buffers ``head_q [K, V, D]``, ``head_scale [K, V]``, used by ``head()`` and ``generate()``).
    In place; returns ``model``. For inference only."""
    if model.int8:
        return model
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child.bias is None:
                setattr(parent, name, Int8Linear(child))
                n += 1
    if n == 0:
        raise UnisonoError("the model has no bias-free linear layers to quantize")
    head_w = getattr(model, "head_w", None)
    if head_w is not None:  # the output heads [K, V, D]: int8 rows [K, V, D] and scales [K, V]
        qs = [int8_rows(w) for w in head_w]
        model.register_buffer("head_q", torch.stack([q for q, _ in qs]), persistent=False)
        model.register_buffer("head_scale", torch.stack([s for _, s in qs]), persistent=False)
    model.int8 = True
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
