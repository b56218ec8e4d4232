"""``unisono export``: a split's cuts with their codec codes as a Lhotse Shar, for tools that read Lhotse.

Each cut keeps its supervisions and custom fields and gains ``codes``: the codec's codes of its audio, an
integer array ``[T, K]`` (frames at the codec's frame rate, ``K`` codebooks) that Lhotse loads with
``cut.load_custom("codes")``. The audio (the cut's and each condition recording of ``cut.custom``: noisy,
reverberant, mixture, ...) goes into the Shar's FLAC tars. ``CutSet.from_shar(in_dir=OUT)`` reads it back.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unisono.data.own import load_split
from unisono.data.tokenize import cut_audio
from unisono.errors import UnisonoError
from unisono.fileio import atomic_dir
from unisono.tasks import load_templates

log = logging.getLogger("unisono")


def condition_roles(cuts) -> list[str]:
    """The custom fields of ``cuts`` that hold a condition Recording (sorted)."""
    return sorted({k for c in cuts for k, v in (c.custom or {}).items() if hasattr(v, "load_audio")})


def export_shar(data, codec, out: str | os.PathLike, split: str = "train", num_codebooks: int | None = None,
                shard_size: int = 1000, progress: bool = True) -> dict:
    """Write ``split`` of ``data`` (sources as :mod:`unisono.data.own` reads them) with the codes of ``codec``
    (its first ``num_codebooks``) as a Lhotse Shar folder ``out`` (written whole, then moved into place)."""
    from lhotse import CutSet  # noqa: PLC0415 (lhotse: not on the GPU image)

    K = int(num_codebooks or codec.num_codebooks)
    if not 1 <= K <= int(codec.num_codebooks):
        raise UnisonoError(f"--num-codebooks must lie in 1..{codec.num_codebooks} (the codec's), got {K}")
    out = Path(out)
    if out.exists():
        raise UnisonoError(f"{out} exists; export into a new folder")
    cuts = load_split(data, split, load_templates())
    if not cuts:
        raise UnisonoError(f"no cuts in split {split} of the data")
    sr, frame_shift = int(codec.sample_rate), 1.0 / float(codec.frame_rate)
    coded = []
    for cut in tqdm(cuts, desc=f"export {split}", unit="cut", disable=not progress):
        with torch.inference_mode():
            codes = codec.encode(cut_audio(cut, sr)[None], num_codebooks=K)[0]  # [K, T]
        dtype = np.int16 if codec.codebook_size <= 32767 else np.int32
        array = np.ascontiguousarray(codes.T.cpu().numpy().astype(dtype))
        coded.append(cut.attach_tensor("codes", array, frame_shift=frame_shift, temporal_dim=0))
    fields = {"recording": "flac", "codes": "numpy", **{role: "flac" for role in condition_roles(cuts)}}
    with atomic_dir(out) as tmp:
        CutSet.from_cuts(coded).to_shar(tmp, fields=fields, shard_size=shard_size)
    return {"cuts": len(coded), "num_codebooks": K, "frame_rate": float(codec.frame_rate), "fields": sorted(fields)}
