"""Tokenization speed (hours of audio per minute on CPU) and shard read throughput (sequences/s).

    python benchmarks/tokenize_speed.py --data corpus/small --out /tmp/shards --codec encodec-random \
        --jobs 2 --json tokenize_speed.json

``--codec``: a codec directory (``unisono.codec.load_codec``); ``encodec-random``: a transformers
``EncodecModel`` with its default 24 kHz configuration and random weights, at 6 kbps (8 codebooks) -
its codes mean nothing, but it costs what a real EnCodec-sized encoder costs, so it stands in for a
real codec in timings; ``test-double``: the deterministic test double of the tests (near-zero cost:
measures everything but the codec). The table says which one was used.

Measured: (1) ``unisono tokenize`` on the corpus (tokenizer fitting, audio decoding, resampling, codec
encoding, sequence building, shard writing), as hours of primary audio per minute of wall time;
(2) a ``DataLoader`` with 2 workers over ``ShardReader`` (sequences per second, second pass);
(3) how the two fill modes of non-audio frames differ on these shards (frames, loss positions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


class RandomEncodec:
    """A transformers EncodecModel (default config, random weights) behind the codec interface; timing only."""

    def __init__(self, bandwidth: float = 6.0):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import EncodecConfig, EncodecModel

        torch.manual_seed(0)
        self.model = EncodecModel(EncodecConfig()).eval()
        self.bandwidth = bandwidth
        self.sample_rate = self.model.config.sampling_rate
        self.frame_rate = self.model.config.frame_rate
        self.codebook_size = self.model.config.codebook_size
        self.num_codebooks = int(bandwidth * 1000 // (self.frame_rate * 10))

    @torch.no_grad()
    def encode(self, wav):
        out = self.model.encode(wav, bandwidth=self.bandwidth)
        return out.audio_codes[0]  # [B, K, T]

    @torch.no_grad()
    def decode(self, codes):
        return self.model.decode(codes[None], [None])[0]


def make_random_encodec():
    return RandomEncodec()


def make_test_double():
    from tok_helpers import make_test_codec

    return make_test_codec()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="shard directory (an existing one is resumed: delete it to re-time)")
    ap.add_argument("--codec", default="encodec-random")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--tasks", default="")
    ap.add_argument("--splits", default="train,valid,test")
    ap.add_argument("--read-workers", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    import functools

    from unisono.cli.tokenize import print_stats
    from unisono.data.shards import ShardReader, collate_examples, list_shards
    from unisono.data.tokenize import load_codec_dir, tokenize_corpus
    from unisono.vocab import Vocab

    if args.codec == "encodec-random":
        factory, codec_name = make_random_encodec, "transformers EncodecModel, random weights, 24 kHz, 8x1024 @ 75 Hz"
    elif args.codec == "test-double":
        factory, codec_name = make_test_double, "test double (no codec cost)"
    else:
        factory, codec_name = functools.partial(load_codec_dir, args.codec), f"unisono codec {args.codec}"

    tasks = [t for t in args.tasks.split(",") if t] or None
    t0 = time.perf_counter()
    stats = tokenize_corpus(args.data, args.out, factory, tasks, tuple(args.splits.split(",")), jobs=args.jobs,
                            shard_size=64)
    wall = time.perf_counter() - t0
    print_stats(stats)

    # read throughput: DataLoader with N workers over the train split, two passes (the second is reported),
    # one example per item (batch_size=None) and batches of 32 collated in the workers
    read_split = "train" if "train" in args.splits.split(",") else args.splits.split(",")[0]
    reader = ShardReader(args.out, split=read_split)
    read = {}
    for bs in (None, 32):
        loader = torch.utils.data.DataLoader(reader, batch_size=bs, num_workers=args.read_workers,
                                             collate_fn=collate_examples if bs else None)
        for _ in range(2):
            t = time.perf_counter()
            n = frames = 0
            for ex in loader:
                n += 1 if bs is None else len(ex["ids"])
                frames += ex["frames"].shape[0] if bs is None else int(ex["lengths"].sum())
            read[bs] = (n, frames, time.perf_counter() - t)
    n, frames, secs = read[None]
    nb, framesb, secsb = read[32]

    # fill modes on these shards: which positions each mode asks the model to predict
    vocab = Vocab.load(Path(args.out) / "vocab.json")
    K = vocab.num_codebooks
    tot = token_frames = loss_pad = loss_rep = 0
    for ex in ShardReader(args.out, split=read_split):
        f, lm = ex["frames"], ex["loss_mask"]
        is_token = f[:, 1] == vocab.pad_id if vocab.fill == "pad" else (f == f[:, :1]).all(1)
        tot += f.shape[0]
        token_frames += int(is_token.sum())
        lp = int(lm.sum()) if vocab.fill == "pad" else int(lm.sum()) - int(lm[is_token, 1:].sum())
        loss_pad += lp
        loss_rep += lp + int(lm[is_token, 0].sum()) * (K - 1) if vocab.fill == "pad" else int(lm.sum())
    shard_bytes = sum(p.stat().st_size for p in list_shards(reader.dir))
    res = {
        "codec": codec_name,
        "jobs": args.jobs,
        "cpu_count": os.cpu_count(),
        "examples_made": stats["examples_made_now"],
        "audio_hours": stats["audio_seconds_now"] / 3600,
        "tokenize_wall_s": wall,
        "shard_phase_s": stats["tokenize_seconds_now"],
        "audio_hours_per_minute": (stats["audio_seconds_now"] / 3600) / (wall / 60)
        if stats["shards_made_now"]
        else None,
        "read_sequences": n,
        "read_frames": frames,
        "read_seconds": secs,
        "read_sequences_per_s": n / secs,
        "read_frames_per_s": frames / secs,
        "read_workers": args.read_workers,
        "read_split": read_split,
        "load_average_1min_at_end": os.getloadavg()[0],
        "read_batched32_sequences_per_s": nb / secsb,
        "read_batched32_frames_per_s": framesb / secsb,
        "encoded_audio_hours": stats["encoded_seconds_now"] / 3600,
        "encoded_audio_hours_per_minute": (stats["encoded_seconds_now"] / 3600) / (wall / 60)
        if stats["shards_made_now"]
        else None,
        "distinct_cuts": stats["distinct_cuts_now"],
        "read_split_shard_bytes": shard_bytes,
        "frames_total": tot,
        "non_audio_frames": token_frames,
        "loss_positions_pad": loss_pad,
        "loss_positions_repeat": loss_rep,
        "per_task": stats["per_task"],
        "skipped": len(stats["skipped"]),
    }
    print()
    print(f"{'measure':<44}{'value':>16}")
    for key in (
        "codec",
        "jobs",
        "examples_made",
        "audio_hours",
        "tokenize_wall_s",
        "audio_hours_per_minute",
        "encoded_audio_hours",
        "encoded_audio_hours_per_minute",
        "distinct_cuts",
        "read_sequences_per_s",
        "read_frames_per_s",
        "read_batched32_sequences_per_s",
        "read_split_shard_bytes",
        "frames_total",
        "non_audio_frames",
        "loss_positions_pad",
        "loss_positions_repeat",
        "skipped",
        "load_average_1min_at_end",
    ):
        v = res[key]
        v = f"{v:.4g}" if isinstance(v, float) else str(v)
        print(f"{key:<44}{v:>16}" if len(v) <= 16 else f"{key:<44}{v}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
