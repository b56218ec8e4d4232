"""Training pairs of the enhancement stage: (16 kHz mono codec decode, 48 kHz stereo reference), packed to travel.

A *pair pack* is a folder::

    PACK/pairs.json    format, rates, the codec's code fingerprint, per split: items (id, kind, seconds), bytes
    PACK/train.npz     per item i: ref_i uint8 [2, 2 S] (the 48 kHz stereo reference as int16 x 32767, coded:
    PACK/test.npz                  :func:`pack_reference`), codes_i int16 [K, T] (the codec's codes of its mono
                                   downmix at 16 kHz)

It stores the codec's *codes* of each reference, not their decode: codes cost 0.4 KiB per second (8 codebooks at
50 Hz) where a 16-bit decode would cost 31 KiB, and a decoder trained later (issue 23's adversarial decoder)
gives new decodes from the same codes. The reader needs numpy and torch only (no soundfile, no soxr: the GPU
image has neither): :func:`load_pairs` reads a split, :func:`decode_inputs` makes its 16 kHz inputs with the codec
at a chosen number of codebooks, :class:`PairSampler` cuts aligned training segments. The 48 kHz references are
what costs: 16-bit stereo is 11.0 MiB per minute raw; the zip's deflate alone made 5.9 MiB per minute of them,
deflate after a second difference (a fixed linear predictor, exact in int16 arithmetic) and byte planes 4.0
(FLAC: 3.6, but it needs soundfile where the pairs are read). ``bytes_per_minute`` in ``pairs.json`` says what a
pack came to.

:func:`build_pairs` (CPU, with the corpus generator's tools) renders the clips of
:mod:`unisono.data.enhance_pairs`, mixes each to mono, resamples it to 16 kHz (soxr) and encodes it.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unisono.errors import UnisonoError
from unisono.fileio import read_json, write_json
from unisono.weights import load_weights

FORMAT = 2  # 1: references stored as plain int16 samples (before pack_reference)
PAIRS = "pairs.json"


def code_fingerprint(codec_dir) -> str:
    """SHA-256 (16 hex digits) of the weights that make a codec's codes (all but ``decoder.*``): a pack's codes
    stay valid for a codec whose decoder alone was retrained."""
    state = load_weights(Path(codec_dir) / "model.safetensors")
    h = hashlib.sha256()
    for k in sorted(state):
        if not k.startswith("decoder."):
            h.update(k.encode())
            h.update(state[k].float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def pack_reference(ref: np.ndarray) -> np.ndarray:
    """int16 ``[C, S]`` -> uint8 ``[2, C * S]``: the second difference along time (int16, wrapping), its low bytes
    then its high bytes, which the zip's deflate packs ~1.5x smaller than the samples; :func:`unpack_reference`
    inverts it exactly."""
    c = ref.shape[0]
    d = np.diff(ref.astype(np.int16), n=2, axis=1, prepend=np.zeros((c, 2), np.int16)).astype("<i2")
    return np.ascontiguousarray(d.reshape(-1).view(np.uint8).reshape(-1, 2).T)


def unpack_reference(planes: np.ndarray, channels: int) -> np.ndarray:
    """The int16 ``[channels, S]`` reference of :func:`pack_reference`'s ``planes``."""
    d = np.ascontiguousarray(planes.T).view("<i2").reshape(channels, -1)
    return np.cumsum(np.cumsum(d, axis=1, dtype=np.int16), axis=1, dtype=np.int16)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _encode(codec, wav48: np.ndarray) -> np.ndarray:
    """``wav48 [2, S]`` -> codes int16 ``[K, T]`` of its mono downmix at the codec's rate."""
    from unisono.audio import resample  # noqa: PLC0415 (soxr: CPU side only)

    mono = resample(wav48.mean(axis=0), 48000, codec.sample_rate).astype(np.float32)
    with torch.inference_mode():
        codes = codec.encode(torch.from_numpy(mono)[None, None])[0]
    return codes.numpy().astype(np.int16)


def _write_split(path: Path, clips: dict, codec, max_bytes: int, sound_share: float, progress: bool) -> dict:
    """Write pairs from ``clips`` (``{"music": iterator, "sound": iterator}`` of ``(id, kind, wav [2, S] at
    48 kHz)``) into the zip ``path`` until they are used up or the next would pass ``max_bytes``; sounds take
    about ``sound_share`` of the seconds."""
    items, total, secs, used_up = [], 0, {"music": 0.0, "sound": 0.0}, set()
    bar = tqdm(total=max_bytes, desc=f"pairs {path.stem}", unit="B", unit_scale=True, disable=not progress,
               dynamic_ncols=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        while len(used_up) < len(clips):
            want = "sound" if secs["sound"] < sound_share * (secs["music"] + secs["sound"]) else "music"
            kind = want if want not in used_up else next(k for k in clips if k not in used_up)
            clip = next(clips[kind], None)
            if clip is None:
                used_up.add(kind)
                continue
            name, kind, wav = clip
            wav = wav[:, : wav.shape[1] - wav.shape[1] % 3]
            ref = _npy(pack_reference(np.round(np.clip(wav, -1, 1) * 32767).astype(np.int16)))
            codes = _npy(_encode(codec, wav))
            size = len(zlib.compress(ref, 6)) + len(zlib.compress(codes, 6)) + 256
            if total + size > max_bytes:
                break
            i = len(items)
            zf.writestr(f"ref_{i}.npy", ref)
            zf.writestr(f"codes_{i}.npy", codes)
            items.append({"id": name, "kind": kind, "seconds": round(wav.shape[1] / 48000, 3),
                          "channels": wav.shape[0]})
            total, secs[kind] = total + size, secs[kind] + wav.shape[1] / 48000
            bar.update(size)
    bar.close()
    if not items:
        raise UnisonoError(f"not one pair fits in {max_bytes} bytes; raise the budget")
    seconds = secs["music"] + secs["sound"]
    size = path.stat().st_size
    return {"items": items, "bytes": size, "seconds": round(seconds, 1), "music_seconds": round(secs["music"], 1),
            "sound_seconds": round(secs["sound"], 1), "bytes_per_minute": round(size / max(seconds, 1e-9) * 60)}


def write_pairs(out, codec_dir, sources: dict, budgets: dict, sound_share: float = 0.4, progress: bool = True) -> dict:
    """Encode and pack ``sources`` (``{split: {"music": clips, "sound": clips}}``, each clips an iterator of ``(id,
    kind, wav float32 [2, S] at 48 kHz)``) into the new folder ``out`` (``out.partial``, renamed when complete),
    each split within ``budgets[split]`` bytes. Returns ``pairs.json``'s content."""
    from unisono.codec import load_codec  # noqa: PLC0415 (the package's loader)

    out = Path(out)
    if out.exists():
        raise UnisonoError(f"--out {out} exists; build pairs into a new folder")
    codec = load_codec(codec_dir).eval()
    if codec.sample_rate != 16000:
        raise UnisonoError(f"the enhancement stage reads 16 kHz decodes; {codec_dir} runs at {codec.sample_rate} Hz")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {"format": FORMAT, "in_rate": 16000, "out_rate": 48000, "codec_fingerprint": code_fingerprint(codec_dir),
            "num_codebooks": int(codec.num_codebooks), "splits": {}}
    for split, clips in sources.items():
        meta["splits"][split] = _write_split(tmp / f"{split}.npz", dict(clips), codec, int(budgets[split]),
                                             sound_share, progress)
    write_json(tmp / PAIRS, meta)
    tmp.rename(out)
    return meta


def build_pairs(midi, out, codec_dir, max_mib: float = 50.0, test_mib: float = 5.0, sound_share: float = 0.4,
                seed: int = 0, progress: bool = True) -> dict:
    """Render, encode and pack pairs into the new folder ``out`` (``out.partial``, renamed when complete): the
    ``train`` split from ``midi``'s train MIDI files and sound seed ``seed``, ``test`` from its ``test`` files and
    sound seed ``seed + 1000``, within ``max_mib`` MiB in all (``test_mib`` of them for test). Returns
    ``pairs.json``'s content."""
    from unisono.data import enhance_pairs as src  # noqa: PLC0415 (the corpus generator: CPU side only)

    if Path(out).exists():
        raise UnisonoError(f"--out {out} exists; build pairs into a new folder")
    if not 0 < test_mib < max_mib or not 0.0 <= sound_share <= 1.0:
        raise UnisonoError("pairs: need 0 < --test-mib < --max-mib and --sound-share in [0, 1]")
    for split in ("train", "test"):
        src.midi_files(Path(midi), split)  # both splits exist before any work
    sources = {split: {"music": src.music_clips(Path(midi), split, seed + 1000 * k),
                       "sound": src.sound_clips(seed + 1000 * k)} for k, split in enumerate(("train", "test"))}
    budgets = {"train": (max_mib - test_mib) * 2**20, "test": test_mib * 2**20}
    return write_pairs(out, codec_dir, sources, budgets, sound_share, progress)


def load_pairs(pack, split: str = "train", fingerprint: str | None = None) -> tuple[list[dict], dict]:
    """The pairs of ``split``: ``([{"id", "kind", "codes" LongTensor [K, T], "ref" float32 Tensor [2, S] at
    48 kHz}], pairs.json)``; ``fingerprint`` (:func:`code_fingerprint` of the codec that will decode them) must
    match the pack's."""
    pack = Path(pack)
    if not (pack / PAIRS).is_file():
        raise UnisonoError(f"{pack} is not a pair pack (no {PAIRS}); make one with `unisono codec enhancer-pairs`")
    meta = read_json(pack / PAIRS)
    if meta.get("format") != FORMAT or split not in meta.get("splits", {}):
        raise UnisonoError(f"{pack}/{PAIRS}: format {meta.get('format')} without a {split!r} split (expected "
                           f"format {FORMAT} with train and test)")
    if fingerprint is not None and fingerprint != meta["codec_fingerprint"]:
        raise UnisonoError(f"{pack} was encoded by another codec (code fingerprint {meta['codec_fingerprint']}, this "
                           f"codec's {fingerprint}); rebuild the pairs with this codec")
    items = []
    with np.load(pack / f"{split}.npz", allow_pickle=False) as z:
        for i, it in enumerate(meta["splits"][split]["items"]):
            ref = torch.from_numpy(unpack_reference(z[f"ref_{i}"], it["channels"]).astype(np.float32) / 32767.0)
            items.append({**it, "codes": torch.from_numpy(z[f"codes_{i}"].astype(np.int64)), "ref": ref})
    return items, meta


@torch.inference_mode()
def decode_inputs(codec, items: list[dict], codebooks: int, device: str = "cpu") -> list[torch.Tensor]:
    """Each item's codec decode at its first ``codebooks`` codebooks: float32 ``[S / 3]`` at 16 kHz (on the CPU),
    aligned with its reference ``[2, S]``."""
    if not 1 <= codebooks <= codec.num_codebooks:
        raise UnisonoError(f"codebooks must be 1 to {codec.num_codebooks}, got {codebooks}")
    out = []
    for it in items:
        n = it["ref"].shape[-1] // 3
        y = codec.decode(it["codes"][None, :codebooks].to(device))[0, 0].float().cpu()
        out.append(torch.nn.functional.pad(y, (0, max(0, n - y.shape[-1])))[:n])
    return out


class PairSampler:
    """Aligned random segments: ``batch(B) -> (x [B, 1, seg] at 16 kHz, y [B, 2, 3 seg] at 48 kHz)``.

    Offsets are uniform over each item (items drawn in proportion to their length); a segment whose reference is
    near-silent is drawn again (a few times); input and reference share a random gain of -6 to +6 dB."""

    def __init__(self, inputs: list[torch.Tensor], refs: list[torch.Tensor], segment: int, seed: int = 0):
        if not inputs or len(inputs) != len(refs):
            raise UnisonoError("a pair sampler needs as many inputs as references, at least one")
        self.inputs, self.refs, self.segment = inputs, refs, int(segment)
        self.weights = [max(1, x.shape[-1] - self.segment) for x in inputs]
        self.rng = random.Random(seed)

    def one(self) -> tuple[torch.Tensor, torch.Tensor]:
        seg = self.segment
        for _ in range(5):
            i = self.rng.choices(range(len(self.inputs)), self.weights)[0]
            x, y = self.inputs[i], self.refs[i]
            o = self.rng.randrange(max(1, x.shape[-1] - seg + 1))
            xs = torch.nn.functional.pad(x[o : o + seg], (0, max(0, seg - x[o : o + seg].shape[-1])))
            ys = y[:, 3 * o : 3 * (o + seg)]
            ys = torch.nn.functional.pad(ys, (0, 3 * seg - ys.shape[-1]))
            if float(ys.pow(2).mean()) > 1e-7:
                break
        g = 10 ** (self.rng.uniform(-6.0, 6.0) / 20)
        return (xs * g).clamp(-1, 1), (ys * g).clamp(-1, 1)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(self.one() for _ in range(batch_size)))
        return torch.stack(xs)[:, None], torch.stack(ys)

    def state_dict(self) -> dict:
        return {"rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate(state["rng"])
