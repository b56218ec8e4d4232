"""Resynthesis quality of a codec on a corpus split: mel distance, PESQ-WB, STOI and SI-SDR at 1, 2, 4, 8
codebooks.

    python benchmarks/codec_quality.py --codec DIR --data corpus/small            # speech of the test split
    python benchmarks/codec_quality.py --codec DIR --data CORPUS --kind all --json q.json

PESQ-WB comes from the ``pesq`` package (ITU-T P.862.2), STOI from ``pystoi``; SI-SDR and the mel distance
(mean L1 of 80-band log-mel, n_fft 1024, hop 256) are computed here. For comparison the same metrics are
given for the reference audio degraded by plain mu-law 8-bit quantization at the same sample rate
(``--anchor``), a fixed point of what the numbers mean.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def select_items(data: str, split: str, kind: str, limit: int, engine: str | None = None):
    """Items of ``split``; with a corpus dir, only cuts whose ``custom.kind`` is ``kind`` (unless ``all``) and,
    with ``engine``, only speech of that engine (``params.engine``; corpora of before natural voices: espeak)."""
    from lhotse import CutSet

    from unisono.codec.data import AudioItem, list_audio

    p = Path(data)
    manifest = p / "manifests" / split / "cuts.jsonl"
    if (kind == "all" and engine is None) or not manifest.exists():
        items = list_audio(data, split)
    else:
        items = []
        for cut in CutSet.from_file(manifest):
            custom = cut.custom or {}
            if engine is not None and custom.get("params", {}).get("engine", "espeak") != engine:
                continue
            if kind == "all" or custom.get("kind") == kind:
                src = Path(cut.recording.sources[0].source)
                items.append(
                    AudioItem(src if src.is_absolute() else p / src, float(cut.start), float(cut.duration), cut.id)
                )
    return items[:limit] if limit else items


def swap_halves(est, ref, n_fft: int = 512, hop: int = 128) -> dict:
    """``est`` with the reference's STFT magnitude (``"magnitude"``: only its own phase left) and with the
    reference's phase (``"phase"``: only its own magnitude left); float64 [S] each."""
    import torch

    win = torch.hann_window(n_fft, dtype=torch.float64)
    spec = lambda x: torch.stft(torch.from_numpy(x), n_fft, hop, window=win, return_complex=True)  # noqa: E731
    back = lambda z: torch.istft(z, n_fft, hop, window=win, length=ref.size).numpy()  # noqa: E731
    e, r = spec(est), spec(ref)
    return {"magnitude": back(r.abs() * torch.exp(1j * e.angle())), "phase": back(e.abs() * torch.exp(1j * r.angle()))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", required=True, help="codec directory (project codec or a Hugging Face one)")
    ap.add_argument("--data", required=True, help="corpus dir (or cuts manifest / audio folder)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--kind", default="speech", help="cut kind to evaluate (corpus dirs only), or 'all'")
    ap.add_argument("--engine", help="only speech of this engine (espeak, kokoro, piper, festival, flite; corpus dirs)")
    ap.add_argument("--num-codebooks", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--limit", type=int, default=0, help="at most this many utterances (0 = all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--no-unquantized", action="store_true",
                    help="skip the row of the decoder on the latents before RVQ (project codec only)")
    ap.add_argument("--swap", type=int, default=None, metavar="K",
                    help="also score the K-codebook resynthesis with the reference's STFT magnitude and its own "
                         "phase, and the other way round (512-point STFT, hop 128): which half limits it")
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from tqdm import tqdm

    from unisono.codec import load_codec
    from unisono.codec.data import read_item
    from unisono.codec.evaluate import signal_metrics

    torch.set_num_threads(args.threads)
    codec = load_codec(args.codec).eval()
    ks = [k for k in args.num_codebooks if k <= codec.num_codebooks]
    if not ks:
        print(f"--num-codebooks {args.num_codebooks}: the codec has {codec.num_codebooks} codebooks", file=sys.stderr)
        return 2
    items = select_items(args.data, args.split, args.kind, args.limit, args.engine)
    if not items:
        print(f"no items of kind {args.kind!r} in split {args.split!r} of {args.data}", file=sys.stderr)
        return 2
    sr = codec.sample_rate
    per = {k: [] for k in ks}
    # the project codec's decoder on the encoder's latents before RVQ (and the coded F0, as in every row): what
    # the decoder alone can do, so that the loss of quantization and the limit of the decoder can be told apart
    unquantized = [] if hasattr(codec, "latents") and not args.no_unquantized else None
    anchor = []
    swaps = {"magnitude": [], "phase": []} if args.swap in ks else None  # the reference's magnitude / phase
    t0 = time.time()
    for item in tqdm(items, desc="codec quality"):
        ref = read_item(item, sr).astype(np.float32)
        if ref.size < sr // 4:
            continue
        with torch.inference_mode():
            wav = torch.from_numpy(ref)[None, None]
            codes = codec.encode(wav)
            for k in ks:
                est = codec.decode(codes[:, :k])[0, 0, : ref.size].numpy()
                est = np.pad(est, (0, ref.size - est.size))
                per[k].append(signal_metrics(est.astype(np.float64), ref.astype(np.float64), sr))
                if swaps is not None and k == args.swap:
                    for half, y in swap_halves(est.astype(np.float64), ref.astype(np.float64)).items():
                        swaps[half].append(signal_metrics(y, ref.astype(np.float64), sr))
            if unquantized is not None:
                f0 = codec.f0_from_codes(codes[:, 0]) if codec.config.f0_codebook else None  # the coded F0
                est = codec.decoder(codec.latents(wav), f0)[0, 0, : ref.size].numpy()
                est = np.pad(est, (0, ref.size - est.size))
                unquantized.append(signal_metrics(est.astype(np.float64), ref.astype(np.float64), sr))
        mu = 255.0
        q = np.sign(ref) * np.log1p(mu * np.abs(np.clip(ref, -1, 1))) / np.log1p(mu)
        q = np.round(q * 127) / 127
        deq = np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu
        anchor.append(signal_metrics(deq.astype(np.float64), ref.astype(np.float64), sr))

    def summarise(ms):
        row = {"items": len(ms)}
        for key in ("mel_distance", "pesq_wb", "stoi", "si_sdr"):
            vals = [m[key] for m in ms if key in m and not math.isnan(m[key])]
            row[key] = float(np.mean(vals)) if vals else None
        return row

    rows = []
    for k in ks:
        rows.append({"num_codebooks": k, "kbps": k * math.log2(codec.codebook_size) * codec.frame_rate / 1000,
                     **summarise(per[k])})
    anchor_row = {"num_codebooks": None, "kbps": sr * 8 / 1000, **summarise(anchor)}
    unq_row = None if unquantized is None else {"num_codebooks": "unquantized", "kbps": None, **summarise(unquantized)}
    swap_rows = (
        []
        if swaps is None
        else [
            {"num_codebooks": f"{args.swap}, reference {half}", "kbps": None, **summarise(ms)}
            for half, ms in swaps.items()
        ]
    )
    cfg = json.loads((Path(args.codec) / "config.json").read_text())
    state = Path(args.codec) / "train_state.pt"
    step = None
    if state.exists():
        step = int(torch.load(state, map_location="cpu", weights_only=False)["step"])
    print(
        f"codec {args.codec} ({cfg.get('model_type')}, trained steps: {step}); {args.data} split {args.split}, "
        f"kind {args.kind}{', engine ' + args.engine if args.engine else ''}: {len(per[ks[0]])} utterances; "
        f"{time.time() - t0:.0f} s"
    )
    print("| codebooks | kbps | mel distance | PESQ-WB | STOI | SI-SDR (dB) |")
    print("|---|---|---|---|---|---|")
    fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
    for r in rows + ([unq_row] if unq_row else []) + swap_rows + [anchor_row]:
        name = str(r["num_codebooks"]) if r["num_codebooks"] else "mu-law 8 bit (anchor)"
        if name == "unquantized":
            name = "latents before RVQ (decoder alone)"
        kbps = "-" if r["kbps"] is None else f"{r['kbps']:.1f}"
        print(f"| {name} | {kbps} | {fmt(r['mel_distance'], '.3f')} | {fmt(r['pesq_wb'], '.2f')} | "
              f"{fmt(r['stoi'], '.3f')} | {fmt(r['si_sdr'], '.1f')} |")
    if args.json:
        from unisono.fileio import write_json

        write_json(
            args.json,
            {
                "codec": str(args.codec),
                "train_steps": step,
                "data": args.data,
                "split": args.split,
                "kind": args.kind,
                "engine": args.engine,
                "rows": rows,
                "anchor_mulaw8": anchor_row,
                "unquantized": unq_row,
                "swaps": swap_rows,
                "target": {"num_codebooks": 4, "pesq_wb": 2.5, "stoi": 0.90},
            },
        )
    return 0


if __name__ == "__main__":
    from unisono.errors import UnisonoError

    try:
        sys.exit(main())
    except UnisonoError as e:
        print(f"codec_quality: error: {e}", file=sys.stderr)
        sys.exit(2)
