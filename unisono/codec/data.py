"""Audio sources for codec training and evaluation.

``--data`` may be a corpus directory (``manifests/{split}/cuts.jsonl`` inside), a Lhotse cuts manifest
(``.jsonl`` or ``.jsonl.gz``), or a plain folder of audio files (searched recursively).
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unisono.audio import AUDIO_EXTENSIONS, resample
from unisono.errors import UnisonoError


@dataclass
class AudioItem:
    """One utterance: ``path`` (absolute), ``start`` and ``duration`` in seconds (``duration`` None = whole); or a
    Lhotse ``cut`` whose audio is not a plain file (a Shar folder's), read through Lhotse."""

    path: Path | None
    start: float = 0.0
    duration: float | None = None
    id: str = ""
    cut: object | None = None


def _items_from_cuts(cuts, root: Path) -> list[AudioItem]:
    """Items of Lhotse ``cuts`` (a manifest path, or cuts): files by path (relative ones under ``root``), other
    audio (a Shar folder's) through the cut."""
    from lhotse import CutSet  # noqa: PLC0415 (lhotse: not on the GPU image)

    items = []
    for cut in CutSet.from_file(cuts) if isinstance(cuts, Path) else cuts:
        rec = getattr(cut, "recording", None)
        if rec is None or not rec.sources:
            continue
        if rec.sources[0].type != "file":
            items.append(AudioItem(None, 0.0, float(cut.duration), cut.id, cut=cut))
            continue
        p = Path(rec.sources[0].source)
        if not p.is_absolute():
            p = root / p
        items.append(AudioItem(p, float(cut.start), float(cut.duration), cut.id))
    return items


def list_audio(data, split: str = "train") -> list[AudioItem]:
    """Utterances of ``data``: a corpus dir (its ``split``), a Lhotse cuts manifest or Shar folder, an audio
    folder or file; or a list of these (their items together)."""
    if not isinstance(data, (str, Path)):
        return [item for d in data for item in list_audio(d, split)]
    data = Path(data)
    if not data.exists():
        raise UnisonoError(
            f"--data {data} does not exist; pass a corpus directory, a cuts.jsonl manifest or a folder of audio files"
        )
    if data.is_dir() and (data / "manifests").is_dir():
        manifest = data / "manifests" / split / "cuts.jsonl"
        if not manifest.exists():
            gz = manifest.with_suffix(".jsonl.gz")
            if not gz.exists():
                raise UnisonoError(f"corpus {data} has no {split} split (missing {manifest})")
            manifest = gz
        items = _items_from_cuts(manifest, data)
    elif data.is_file() and (data.name.endswith(".jsonl") or data.name.endswith(".jsonl.gz")):
        # paths in a corpus manifest are relative to the corpus dir (DIR/manifests/split/cuts.jsonl)
        root = data.parent.parent.parent if data.parent.parent.name == "manifests" else data.parent
        items = _items_from_cuts(data, root)
    elif data.is_dir() and any(data.glob("cuts.*.jsonl*")):  # a Lhotse Shar folder
        from lhotse import CutSet  # noqa: PLC0415 (lhotse: not on the GPU image)

        items = _items_from_cuts(CutSet.from_shar(in_dir=data), data)
    elif data.is_dir():
        items = [AudioItem(p.resolve(), id=p.stem) for p in sorted(data.rglob("*"))
                 if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()]
    elif data.suffix.lower() in AUDIO_EXTENSIONS:
        items = [AudioItem(data.resolve(), id=data.stem)]
    else:
        raise UnisonoError(f"cannot use {data} as --data: expected a corpus dir, a cuts .jsonl(.gz) or an audio folder")
    if not items:
        raise UnisonoError(f"no audio found in {data}")
    return items


def read_item(item: AudioItem, sample_rate: int, offset: float = 0.0, duration: float | None = None) -> np.ndarray:
    """Mono float32 samples ``[S]`` of ``item`` from ``offset`` s (relative to the item), resampled to
    ``sample_rate`` Hz."""
    if item.cut is not None:
        cut = item.cut.truncate(offset=offset, duration=duration) if offset or duration is not None else item.cut
        x = np.asarray(cut.load_audio(), dtype=np.float32).mean(axis=0)
        sr = int(cut.sampling_rate)
        return resample(x, sr, sample_rate) if sr != sample_rate else x
    import soundfile as sf  # noqa: PLC0415 (soundfile: not on the GPU image; the enhancer's training reads no files)

    try:
        info = sf.info(str(item.path))
    except (RuntimeError, sf.LibsndfileError) as e:
        raise UnisonoError(f"cannot read audio {item.path} ({e})") from None
    sr = info.samplerate
    start = int(round((item.start + offset) * sr))
    if duration is None and item.duration is not None:
        duration = item.duration - offset
    stop = None if duration is None else start + int(round(duration * sr))
    x, _ = sf.read(str(item.path), start=start, stop=stop, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return resample(x, sr, sample_rate) if sr != sample_rate else x


class SegmentSampler:
    """Random fixed-length training segments ``[B, 1, segment]`` from a list of items.

    Short items are zero-padded; silent segments are re-drawn a few times. A RMS normalisation to a random
    level in ``gain_db`` makes the codec robust to loudness. ``preload`` reads every item once (mono, at
    ``sample_rate``, float32: 230 MB per hour of 16 kHz audio) and cuts segments from memory, which a GPU step
    needs (reading a file per segment takes longer than the step); the segments drawn are the same (to the
    sample for files at ``sample_rate``; a file at another rate is resampled whole instead of segment by segment).
    """

    def __init__(self, items: list[AudioItem], sample_rate: int, segment: int, seed: int = 0,
                 gain_db: tuple[float, float] = (-28.0, -16.0), preload: bool = False, progress: bool = False):
        self.items, self.sample_rate, self.segment, self.gain_db = items, sample_rate, segment, gain_db
        self.rng = random.Random(seed)
        self._dur: dict[int, float] = {}
        self._audio: list[np.ndarray] | None = None
        if preload:
            self._audio = [read_item(it, sample_rate) for it in tqdm(items, desc="reading audio", unit="file",
                                                                     disable=not progress, dynamic_ncols=True)]
            self._dur = {i: x.shape[0] / sample_rate for i, x in enumerate(self._audio)}

    def _duration(self, i: int) -> float:
        if i not in self._dur:
            import soundfile as sf  # noqa: PLC0415 (soundfile: not on the GPU image)

            it = self.items[i]
            self._dur[i] = it.duration if it.duration is not None or it.path is None else sf.info(str(it.path)).duration
        return self._dur[i]

    def _read(self, i: int, offset: float, duration: float) -> np.ndarray:
        if self._audio is None:
            return read_item(self.items[i], self.sample_rate, offset, duration)
        start = int(round(offset * self.sample_rate))
        return self._audio[i][start:start + int(round(duration * self.sample_rate))]

    def one(self) -> np.ndarray:
        seg_s = self.segment / self.sample_rate
        for _ in range(5):
            i = self.rng.randrange(len(self.items))
            dur = self._duration(i)
            off = self.rng.uniform(0, max(0.0, dur - seg_s))
            x = self._read(i, off, min(seg_s, dur))[: self.segment]
            x = np.pad(x, (0, self.segment - x.shape[0]))
            rms = float(np.sqrt(np.mean(x ** 2)))
            if rms > 1e-4:
                target = 10 ** (self.rng.uniform(*self.gain_db) / 20)
                x = x * (target / rms)
                return np.clip(x, -1, 1).astype(np.float32)
        return x.astype(np.float32)

    def batch(self, batch_size: int) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.one() for _ in range(batch_size)]))[:, None]

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])


def pack_audio(items: list[AudioItem], out, max_bytes: int, sample_rate: int, seed: int = 0,
               progress: bool = True) -> dict:
    """Copy a seeded random choice of ``items`` into the folder ``out`` as 16-bit mono FLAC files at ``sample_rate``
    (each cut to its range), until their total size would pass ``max_bytes``: training audio small enough to
    travel to another machine, usable there as ``--data out``. Written to ``out.partial`` and renamed when
    complete; ``out`` must not exist. Returns ``{"files", "seconds", "bytes", "bytes_per_hour"}``."""

    from unisono.audio import save  # noqa: PLC0415 (soundfile/soxr: not on the GPU image)

    out = Path(out)
    if out.exists():
        raise UnisonoError(f"--out {out} exists; pack into a new folder")
    if max_bytes <= 0:
        raise UnisonoError(f"the size budget must be positive, got {max_bytes} bytes")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    total, seconds, files = 0, 0.0, 0
    bar = tqdm(total=max_bytes, desc="packing audio", unit="B", unit_scale=True, disable=not progress,
               dynamic_ncols=True)
    for n, i in enumerate(order):
        x = read_item(items[i], sample_rate)
        if x.size == 0:
            continue
        name = "".join(c if c.isalnum() or c in "._-" else "_" for c in (items[i].id or Path(items[i].path).stem))
        path = tmp / f"{n:06d}-{name}.flac"
        save(path, x, sample_rate)
        size = path.stat().st_size
        if total + size > max_bytes:
            path.unlink()
            break
        total, seconds, files = total + size, seconds + x.shape[0] / sample_rate, files + 1
        bar.update(size)
    bar.close()
    if not files:
        shutil.rmtree(tmp)
        raise UnisonoError(f"not one file fits in {max_bytes} bytes; raise the budget")
    tmp.rename(out)
    return {"files": files, "seconds": round(seconds, 1), "bytes": total,
            "bytes_per_hour": round(total / max(seconds, 1e-9) * 3600)}
