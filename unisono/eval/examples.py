"""A few listening examples per task: the outputs of each system saved as FLAC, with mel spectrogram images."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from unisono.audio import mel_spectrogram, save
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE
from unisono.fileio import atomic_path

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def spectrogram_png(wav: np.ndarray, path: Path, title: str = "") -> Path | None:
    """Write a log-mel spectrogram image of 16 kHz ``wav [S]`` to ``path`` (``None`` without matplotlib)."""
    try:
        import matplotlib  # noqa: PLC0415 (optional: matplotlib)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 (optional: matplotlib)
    except ImportError:
        return None
    mel = mel_spectrogram(np.asarray(wav, dtype=np.float32), EVAL_SAMPLE_RATE, n_fft=1024, hop_length=256, n_mels=80)
    fig, ax = plt.subplots(figsize=(6, 2.2), dpi=80)
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", vmin=-11.5, vmax=max(float(mel.max()), -5.0),
              extent=(0, wav.size / EVAL_SAMPLE_RATE, 0, mel.shape[0]))
    ax.set_xlabel("seconds")
    ax.set_ylabel("mel band")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def save_example(out_dir: Path, task: str, item_id: str, system: str, output) -> dict:
    """Save one output (audio: FLAC + PNG; text: kept inline). Returns the entry for the report."""
    stem = _SAFE.sub("_", f"{item_id}.{system}")
    folder = Path(out_dir) / "examples" / task
    if isinstance(output, str):
        return {"system": system, "text": output}
    audio = folder / f"{stem}.flac"
    if not audio.exists():
        save(audio, np.clip(output, -1, 1), EVAL_SAMPLE_RATE)
    png = folder / f"{stem}.png"
    if not png.exists():
        png = spectrogram_png(output, png, f"{task} {item_id}: {system}")
    rel = lambda p: str(Path(p).relative_to(out_dir)) if p is not None else None  # noqa: E731
    return {"system": system, "audio": rel(audio), "image": rel(png)}
