"""Weight files: safetensors in float32, float16, or int8 with a scale per output row.

``save_weights(state, path, precision)`` writes ``path`` atomically. With ``"int8"``, every float tensor of
two or more dimensions and at least :data:`INT8_MIN_NUMEL` elements is stored as int8 ``q`` plus a float16
scale per row (``name + SCALE_SUFFIX``, shape ``[rows]``), ``w ~= q * scale``, symmetric, absmax over each
row; smaller tensors (norms, biases, buffers) are stored as float16. ``load_weights`` returns float32
tensors whatever the file holds, so a model loads the same way from any of the three.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from unisono.errors import UnisonoError
from unisono.fileio import atomic_path

PRECISIONS = ("float32", "float16", "int8")
SCALE_SUFFIX = ".__int8_scale__"
INT8_MIN_NUMEL = 4096


def quantize_int8(w: torch.Tensor, scale_dtype: torch.dtype = torch.float16) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q int8 same shape, scale [rows] in scale_dtype)`` with ``w ~= q * scale`` row by row."""
    rows = w.detach().reshape(w.shape[0], -1).float()
    scale = (rows.abs().amax(dim=1) / 127.0).clamp_min(1e-12).to(scale_dtype)
    q = torch.round(rows / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


def encode_state(state: dict[str, torch.Tensor], precision: str = "float32") -> dict[str, torch.Tensor]:
    if precision not in PRECISIONS:
        raise UnisonoError(f"weight precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    out: dict[str, torch.Tensor] = {}
    for name, v in state.items():
        v = v.detach().cpu()
        if not v.is_floating_point() or precision == "float32":
            out[name] = v.contiguous()
        elif precision == "int8" and v.dim() >= 2 and v.numel() >= INT8_MIN_NUMEL:
            out[name], out[name + SCALE_SUFFIX] = quantize_int8(v)
        else:
            out[name] = v.half().contiguous()
    return out


def save_weights(state: dict[str, torch.Tensor], path, precision: str = "float32",
                 metadata: dict[str, str] | None = None) -> None:
    """Write ``state`` to the safetensors file ``path`` (atomically) in ``precision``, with ``metadata`` (strings)
    added to the file's own."""

    encoded = encode_state(state, precision)
    with atomic_path(path) as tmp:
        save_file(encoded, str(tmp), metadata={"format": "pt", **(metadata or {}), "unisono_precision": precision})


def restamp_weights(src, dst, metadata: dict[str, str]) -> None:
    """Copy the safetensors file ``src`` to ``dst`` (atomically) with its tensors as they are stored and
    ``metadata`` added to (or replacing keys of) its metadata."""
    raw = _read(src, lambda p: load_file(p))
    with atomic_path(dst) as tmp:
        save_file(raw, str(tmp), metadata={**read_metadata(src), **metadata})


def read_metadata(path) -> dict[str, str]:
    """The metadata of a safetensors file (its header only is read)."""

    def header(p):
        with safe_open(p, framework="pt") as f:
            return dict(f.metadata() or {})

    return _read(path, header)


def _read(path, reader):
    path = Path(path)
    try:
        return reader(str(path))
    except FileNotFoundError:
        raise UnisonoError(f"{path} does not exist") from None
    except Exception as e:  # truncated or not a safetensors file
        raise UnisonoError(f"{path} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                           "the file is truncated or corrupt: copy it again") from None


def load_weights(path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, int8 ones dequantized, every float tensor as float32."""
    raw = _read(path, lambda p: load_file(p, device=str(device)))
    out = {}
    for name, v in raw.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = raw.get(name + SCALE_SUFFIX)
        if scale is not None:
            v = (v.reshape(v.shape[0], -1).float() * scale.float()[:, None]).reshape(v.shape)
        elif v.is_floating_point():
            v = v.float()
        out[name] = v
    return out
