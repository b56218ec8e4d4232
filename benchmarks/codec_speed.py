"""Encode/decode speed of the unisono codec vs a transformers EncodecModel of comparable size, on CPU.

Both models get random weights (speed does not depend on them), 16 kHz audio, 50 Hz frames and the same
number of codebooks. The real-time factor (RTF) is seconds of compute per second of audio (lower is
faster); the ratio is EnCodec's time divided by ours (above 1: ours is faster).

    python benchmarks/codec_speed.py                 # default run, under a minute
    python benchmarks/codec_speed.py --seconds 10 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def build_ours(config: str | None):
    from unisono.codec import Codec, CodecConfig
    from unisono.codec.trainer import load_config

    cfg = load_config(config)["model"] if config else {}
    return Codec(CodecConfig.from_dict(cfg)).eval()


def build_encodec(target_params: int, num_codebooks: int):
    """A 16 kHz EncodecModel with hop 320 (50 Hz) whose width is picked to match ``target_params``."""
    from transformers import EncodecConfig, EncodecModel

    def make(filters: int):
        bw = num_codebooks * 10 * 50 / 1000  # kbps for K codebooks of 1024 at 50 Hz
        cfg = EncodecConfig(sampling_rate=16000, upsampling_ratios=[8, 5, 4, 2], num_filters=filters,
                            hidden_size=8 * filters, codebook_dim=8 * filters, target_bandwidths=[bw],
                            codebook_size=1024, num_lstm_layers=2)
        return EncodecModel(cfg).eval()

    best = None
    for filters in range(8, 65, 4):
        m = make(filters)
        n = sum(p.numel() for p in m.parameters())
        if best is None or abs(n - target_params) < abs(best[1] - target_params):
            best = (filters, n)
        if n > target_params:
            break
    return make(best[0]), best[0]


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs/codec/base.yaml"),
                    help="codec YAML recipe (its model section is used)")
    ap.add_argument("--seconds", type=float, default=2.0, help="audio length per item")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats (the minimum is kept)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--json", help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours = build_ours(args.config)
    k = ours.num_codebooks
    n_ours = sum(p.numel() for p in ours.parameters())
    encodec, filters = build_encodec(n_ours, k)
    n_enc = sum(p.numel() for p in encodec.parameters())
    bw = encodec.config.target_bandwidths[0]
    sr = 16000
    rows = []
    for b in args.batch_sizes:
        wav = 0.1 * torch.randn(b, 1, int(args.seconds * sr))
        audio_s = args.seconds * b
        with torch.inference_mode():
            codes = ours.encode(wav)
            enc_codes = encodec.encode(wav, bandwidth=bw).audio_codes
            t_oe = timeit(lambda wav=wav: ours.encode(wav), args.repeats)
            t_od = timeit(lambda codes=codes: ours.decode(codes), args.repeats)
            t_ee = timeit(lambda wav=wav: encodec.encode(wav, bandwidth=bw), args.repeats)
            t_ed = timeit(lambda enc_codes=enc_codes: encodec.decode(enc_codes, [None]), args.repeats)
        rows.append({
            "batch_size": b, "audio_seconds": audio_s,
            "unisono_encode_rtf": t_oe / audio_s, "unisono_decode_rtf": t_od / audio_s,
            "encodec_encode_rtf": t_ee / audio_s, "encodec_decode_rtf": t_ed / audio_s,
            "encode_speed_ratio": t_ee / t_oe, "decode_speed_ratio": t_ed / t_od,
            "total_speed_ratio": (t_ee + t_ed) / (t_oe + t_od),
        })
    print(f"unisono codec: {n_ours / 1e6:.2f} M parameters; EncodecModel (num_filters {filters}, 2 LSTM layers): "
          f"{n_enc / 1e6:.2f} M; {k} codebooks x 1024 at 50 Hz; CPU threads {args.threads}")
    print("RTF = compute seconds per audio second (lower is faster); ratio = EnCodec time / unisono time")
    hdr = (f"{'batch':>5} | {'ours enc':>9} | {'ours dec':>9} | {'EnCodec enc':>11} | {'EnCodec dec':>11} | "
           f"{'enc ratio':>9} | {'dec ratio':>9} | {'total ratio':>11}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['batch_size']:>5} | {r['unisono_encode_rtf']:>9.4f} | {r['unisono_decode_rtf']:>9.4f} | "
            f"{r['encodec_encode_rtf']:>11.4f} | {r['encodec_decode_rtf']:>11.4f} | {r['encode_speed_ratio']:>9.2f} | "
            f"{r['decode_speed_ratio']:>9.2f} | {r['total_speed_ratio']:>11.2f}"
        )
    result = {
        "device": "cpu", "threads": args.threads, "platform": platform.processor() or platform.machine(),
        "torch": torch.__version__, "seconds_per_item": args.seconds, "num_codebooks": k,
        "unisono_params": n_ours, "encodec_params": n_enc, "encodec_num_filters": filters, "rows": rows,
        "speed_ratio_total_min": min(r["total_speed_ratio"] for r in rows),
    }
    if args.json:
        from unisono.fileio import write_json

        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
