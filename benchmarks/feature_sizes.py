"""Stored size and speed of the audio_feat encoders against codec tokens (docs/features.md).

    python benchmarks/feature_sizes.py --out /tmp/featbench                 # synthesizes a 0.2 h corpus
    python benchmarks/feature_sizes.py --out /tmp/featbench --data CORPUS --json feature_sizes.json

(1) ``unisono tokenize`` of the speech cuts three ways, asr on 4 codebooks of the shipped codec and asr_feat
(configs/tasks/asr_feat.yaml) with each encoder: shard bytes per hour of speech, raw and zlib-compressed
(level 6, the shard files one by one), and the tokenize wall time; (2) each encoder's speed on one CPU thread:
seconds of compute per hour of audio, over the corpus's cuts one by one (as tokenize runs it; a Whisper window
is 30 s however short the cut) and over 5 minutes of speech in one piece (full windows); (3) how small Whisper
features could travel: the variance a PCA to k dims keeps, and bytes per hour at int8.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

FRAMES_PER_HOUR = 50 * 3600


def shard_bytes(directory: Path, task: str) -> tuple[int, int]:
    """(raw, zlib level 6) bytes of the shards of ``task`` in ``directory``."""
    from unisono.data.shards import list_shards

    paths = list_shards(directory, [task])
    return (sum(p.stat().st_size for p in paths), sum(len(zlib.compress(p.read_bytes(), 6)) for p in paths))


def tokenize_three_ways(corpus: Path, out: Path, codec_dir: str, encoders: list[str]) -> list[dict]:
    from unisono.data.tokenize import load_codec_dir, tokenize_corpus

    factory = functools.partial(load_codec_dir, codec_dir)
    runs = [("asr", None, "codes (4 codebooks)")] + [("asr_feat", e, e) for e in encoders]
    rows = []
    for task, enc, label in runs:
        d = out / (enc or "codes")
        t0 = time.perf_counter()
        stats = tokenize_corpus(corpus, d, factory, tasks=[task], splits=("train",), jobs=1, shard_size=256,
                                num_codebooks=4, bpe_size=500, progress=False, feature_encoder=enc,
                                templates_paths=[str(ROOT / "configs" / "tasks" / "asr_feat.yaml")])
        wall = time.perf_counter() - t0
        hours = stats["audio_seconds_now"] / 3600 if stats["shards_made_now"] else None
        if hours is None:
            hours = json.loads((d / "bench_hours.json").read_text())["hours"]
        (d / "bench_hours.json").write_text(json.dumps({"hours": hours}))
        raw, packed = shard_bytes(d / "train", task)
        rows.append({"what": label, "speech_hours": hours, "raw_bytes_per_hour": raw / hours,
                     "zlib_bytes_per_hour": packed / hours, "tokenize_wall_s": wall,
                     "made_now": stats["shards_made_now"]})
    return rows


def speech_wavs(corpus: Path, limit_s: float) -> list[torch.Tensor]:
    from unisono.data.manifests import load_cuts
    from unisono.data.tokenize import cut_audio

    wavs, total = [], 0.0
    for c in sorted(load_cuts(corpus, "train"), key=lambda c: c.id):
        if (c.custom or {}).get("kind") != "speech":
            continue
        wavs.append(cut_audio(c, 16000)[0])
        total += wavs[-1].numel() / 16000
        if total >= limit_s:
            break
    return wavs


def speeds(encoders: list[str], wavs: list[torch.Tensor], codec_dir: str) -> list[dict]:
    from unisono.data.tokenize import load_codec_dir
    from unisono.features import build_encoder

    torch.set_num_threads(1)
    codec = load_codec_dir(codec_dir)
    long = torch.cat(wavs)[: 5 * 60 * 16000]
    rows = []
    for name in encoders:
        params = {"compute_type": "float32"} if name == "whisper_tiny_en_f32" else {}
        enc = build_encoder(name.removesuffix("_f32"), codec, **params)
        enc.encode(wavs[0], 16000)  # warm up
        t0 = time.perf_counter()
        for w in wavs:
            enc.encode(w, 16000)
        per_cut = time.perf_counter() - t0
        t0 = time.perf_counter()
        enc.encode(long, 16000)
        whole = time.perf_counter() - t0
        secs = sum(w.numel() for w in wavs) / 16000
        rows.append({"encoder": name, "dim": enc.dim, "fingerprint": enc.fingerprint(), "cuts": len(wavs),
                     "mean_cut_s": secs / len(wavs), "s_per_hour_cut_by_cut": per_cut / secs * 3600,
                     "s_per_hour_in_one_piece": whole / (long.numel() / 16000) * 3600,
                     "fp16_bytes_per_hour": FRAMES_PER_HOUR * enc.dim * 2})
    return rows


def pca_travel(wavs: list[torch.Tensor]) -> list[dict]:
    """Variance of whisper_tiny_en features kept by a PCA to k dims, and int8 bytes per hour."""
    from unisono.features import build_encoder

    enc = build_encoder("whisper_tiny_en")
    x = torch.cat([enc.encode(w, 16000) for w in wavs]).double()
    x = x - x.mean(0)
    ev = torch.linalg.eigvalsh(x.T @ x / x.shape[0]).flip(0)
    return [{"k": k, "variance_kept": float(ev[:k].sum() / ev.sum()), "int8_bytes_per_hour": FRAMES_PER_HOUR * k}
            for k in (16, 32, 64, 128, 384)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="work directory (corpus, shards); an existing one is reused")
    ap.add_argument("--data", help="a corpus (default: synthesize --hours of espeak-ng speech and more into OUT)")
    ap.add_argument("--hours", type=float, default=0.2)
    ap.add_argument("--codec", default=str(ROOT / "unisono" / "assets" / "unisono-small" / "codec"))
    ap.add_argument("--encoders", default="logmel,logmel_codec,whisper_tiny_en")
    ap.add_argument("--speed-seconds", type=float, default=300.0, help="audio timed per encoder")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    corpus = Path(args.data) if args.data else out / "corpus"
    if not args.data:
        from unisono.data.synth import synthesize

        synthesize(corpus, hours=args.hours, seed=1, workers=1, progress=False, engines={"espeak": 1.0},
                   sound_font="fluidr3", real_sounds=False)
    encoders = [e for e in args.encoders.split(",") if e]
    sizes = tokenize_three_ways(corpus, out, args.codec, [e for e in encoders if not e.endswith("_f32")])
    wavs = speech_wavs(corpus, args.speed_seconds)
    speed = speeds(encoders, wavs, args.codec)
    pca = pca_travel(wavs) if any(e.startswith("whisper_tiny_en") for e in encoders) else []
    res = {"cpu": os.cpu_count(), "torch_threads": 1, "sizes": sizes, "speed": speed, "pca": pca}
    print("| stored | MB per hour of speech (raw) | zlib -6 | tokenize wall (s) |")
    print("|---|---|---|---|")
    for r in sizes:
        print(f"| {r['what']} | {r['raw_bytes_per_hour'] / 1e6:.2f} | {r['zlib_bytes_per_hour'] / 1e6:.2f} | "
              f"{r['tokenize_wall_s']:.1f} |")
    print("\n| encoder | D | s per hour, cut by cut | s per hour, one piece | fp16 MB/h |")
    print("|---|---|---|---|---|")
    for r in speed:
        print(f"| {r['encoder']} | {r['dim']} | {r['s_per_hour_cut_by_cut']:.0f} (mean cut {r['mean_cut_s']:.1f} s) | "
              f"{r['s_per_hour_in_one_piece']:.0f} | {r['fp16_bytes_per_hour'] / 1e6:.1f} |")
    for r in pca:
        print(f"PCA k={r['k']}: variance kept {r['variance_kept']:.3f}, int8 {r['int8_bytes_per_hour'] / 1e6:.2f} MB/h")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
