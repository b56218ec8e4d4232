"""Weight-only int8 and int4 inference for the language model on CPU.

At batch 1 a generation step reads every weight matrix once per frame for a handful of multiply-adds
per weight, so its speed is set by how many bytes the weights take. Storing each matrix as int8 with
one float scale per output row (symmetric, ``scale = max|w_row| / 127``) quarters those bytes; the
product runs in bfloat16 (``aten::_weight_int8pack_mm``, AVX-512 on x86 CPUs) and is returned in the
input's dtype. ``bits=4`` halves them again for the transformer's linear layers: 4-bit codes in groups
of :data:`INT4_GROUP` weights along the input, each group with a bfloat16 scale and offset
(``w ~= (q - 8) * scale + zero``, ``q`` in 0..15; ``aten::_weight_int4pack_mm_for_cpu``); a layer whose
shape the kernel does not take (output size not a multiple of 16, input not of the group) stays int8,
and so do the output heads. Embeddings, norms and the KV cache stay in float32.

``quantize_inference(model, bits)`` (``int8_inference(model)``) converts a model in place for inference
(training it afterwards is refused); ``Int8Linear`` / ``Int4Linear`` replace ``nn.Linear``. On devices
without the int8 kernel the int8 weights are dequantized for each product (same numbers, no speed-up);
int4 weights run on a CPU only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unisono.errors import UnisonoError
from unisono.weights import quantize_int8

COMPUTE_DTYPE = torch.bfloat16
INT4_GROUP = 32  # weights per int4 group (along a row); a scale and an offset each


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


def linear_rows(x: torch.Tensor, rows: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``x [..., D]`` times weight rows -> ``[..., N]`` in ``x``'s dtype; ``rows`` is ``(w [N, D],)`` float or
    ``(q [N, D] int8, scale [N])`` (:func:`int8_rows`)."""
    if len(rows) == 2:
        return int8_matmul(x, *rows)
    return F.linear(x, rows[0].to(x.dtype))


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


def int4_groups(w: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit groups: ``w [N, D] -> (q int32 [N, D] in 0..15, scales_and_zeros [D / group, N, 2]
    in COMPUTE_DTYPE)`` with ``w ~= (q - 8) * scale + zero`` (q computed against the rounded scale and zero)."""
    n, d = w.shape
    g = w.detach().float().reshape(n, d // group, group)
    lo, hi = g.amin(-1), g.amax(-1)  # [N, G]
    scale = ((hi - lo) / 15).clamp_min(1e-12).to(COMPUTE_DTYPE)
    zero = (lo + 8 * scale.float()).to(COMPUTE_DTYPE)
    q = torch.round((g - zero.float()[..., None]) / scale.float()[..., None] + 8).clamp(0, 15)
    return q.reshape(n, d).to(torch.int32), torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()


def int4_fits(linear: nn.Linear, group: int = INT4_GROUP) -> bool:
    """Whether the CPU int4 kernel takes this layer's shape (output a multiple of 16, input of ``group``)."""
    return linear.out_features % 16 == 0 and linear.in_features % group == 0


class Int4Linear(nn.Module):
    """A bias-free ``nn.Linear`` stored as packed 4-bit groups (buffers ``packed``, ``scales_and_zeros``);
    CPU only."""

    def __init__(self, linear: nn.Linear, group: int = INT4_GROUP):
        super().__init__()
        if linear.bias is not None or not int4_fits(linear, group):
            raise UnisonoError(f"int4 needs a bias-free linear layer with output a multiple of 16 and input of "
                               f"{group}, got {linear.out_features} x {linear.in_features}")
        q, sz = int4_groups(linear.weight, group)
        self.in_features, self.out_features, self.group = linear.in_features, linear.out_features, group
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.cpu(), 1))
        self.register_buffer("scales_and_zeros", sz)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise UnisonoError("int4 weights run on a CPU only; load the model without --int4 for other devices")
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(COMPUTE_DTYPE).contiguous()
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed, self.group, self.scales_and_zeros)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 groups of {self.group}"


def quantize_inference(model: nn.Module, bits: int = 8) -> nn.Module:
    """Replace every bias-free ``nn.Linear`` of ``model`` (the transformer's, a multiscale model's local
    transformer's, a transformers backbone's) by :class:`Int8Linear` (``bits=8``) or, where the kernel
    takes the shape, :class:`Int4Linear` (``bits=4``), and give the output heads int8 rows
    (``model.set_quantized``: buffers ``head_q [K, V, D]``, ``head_scale [K, V]``, used by ``head()`` and
    ``generate()``). In place; returns ``model`` (``model.linear_bits`` says what it holds). For inference only."""
    if bits not in (4, 8):
        raise UnisonoError(f"weights quantize to 8 or 4 bits, got {bits}")
    if model.int8:
        if model.linear_bits != bits:
            raise UnisonoError(f"this model is already quantized to {model.linear_bits} bits; load the float "
                               f"checkpoint to quantize it to {bits}")
        return model
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child.bias is None:
                setattr(parent, name, Int4Linear(child) if bits == 4 and int4_fits(child) else Int8Linear(child))
                n += 1
    if n == 0:
        raise UnisonoError("the model has no bias-free linear layers to quantize")
    model.set_quantized(bits)  # int8 output heads, and the record of the linear layers' bits
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def int8_inference(model: nn.Module) -> nn.Module:
    """:func:`quantize_inference` with 8 bits."""
    return quantize_inference(model, 8)
