"""Resynthesis quality of a codec: mel distance, SI-SDR, PESQ-WB and STOI per number of codebooks.

PESQ-WB comes from the ``pesq`` package and STOI from ``pystoi`` (both in the ``codec`` extra); where one is
not installed its column is left out and the result says so.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from unisono.codec.data import list_audio, read_item
from unisono.codec.losses import mel_distance


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (zero-mean signals)."""
    est, ref = est - est.mean(), ref - ref.mean()
    alpha = float(np.dot(est, ref) / max(np.dot(ref, ref), 1e-12))
    target = alpha * ref
    noise = est - target
    return 10 * math.log10(max(np.dot(target, target), 1e-12) / max(np.dot(noise, noise), 1e-12))


def signal_metrics(est: np.ndarray, ref: np.ndarray, sr: int) -> dict:
    out = {"mel_distance": mel_distance(torch.from_numpy(est), torch.from_numpy(ref), sr), "si_sdr": si_sdr(est, ref)}
    x16 = (est, ref) if sr == 16000 else None
    if x16 is None:
        from unisono.audio import resample  # noqa: PLC0415 (soundfile/soxr: not on the GPU image)

        x16 = (resample(est, sr, 16000), resample(ref, sr, 16000))
    try:
        from pesq import pesq  # noqa: PLC0415 (optional: pesq)

        out["pesq_wb"] = float(pesq(16000, x16[1], x16[0], "wb"))
    except ImportError:
        pass
    except Exception:  # pesq raises on e.g. no detected speech; count it as missing for this item
        out["pesq_wb"] = math.nan
    try:
        from pystoi import stoi  # noqa: PLC0415 (optional: pystoi)

        out["stoi"] = float(stoi(x16[1], x16[0], 16000, extended=False))
    except ImportError:
        pass
    return out


@torch.no_grad()
def evaluate(codec, data, split: str = "test", num_codebooks=(1, 2, 4, 8), limit: int = 0,
             progress: bool = True) -> dict:
    """Mean metrics of ``decode(encode(x, k))`` against ``x`` for each ``k`` in ``num_codebooks``."""
    items = list_audio(data, split)
    if limit:
        items = items[:limit]
    sr = codec.sample_rate
    per_k: dict[int, list[dict]] = {k: [] for k in num_codebooks}
    codec.eval()
    for item in tqdm(items, desc="codec eval", disable=not progress):
        ref = read_item(item, sr)
        if ref.size < sr // 10:
            continue
        codes = codec.encode(torch.from_numpy(ref)[None, None])
        for k in num_codebooks:
            est = codec.decode(codes[:, :k])[0, 0, : ref.size].cpu().numpy()
            est = np.pad(est, (0, ref.size - est.size))
            per_k[k].append(signal_metrics(est.astype(np.float64), ref.astype(np.float64), sr))
    rows = []
    for k, ms in per_k.items():
        row = {
            "num_codebooks": k,
            "kbps": k * math.log2(codec.codebook_size) * codec.frame_rate / 1000,
            "items": len(ms),
        }
        for key in ("mel_distance", "si_sdr", "pesq_wb", "stoi"):
            vals = [m[key] for m in ms if key in m and not math.isnan(m[key])]
            if vals:
                row[key] = float(np.mean(vals))
        rows.append(row)
    return {"split": split, "data": str(data), "sample_rate": sr, "rows": rows}


def format_table(res: dict) -> str:
    cols = ["num_codebooks", "kbps", "items", "mel_distance", "si_sdr", "pesq_wb", "stoi"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in res["rows"]:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
