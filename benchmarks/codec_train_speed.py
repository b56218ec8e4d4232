"""Where a codec training step spends its time: steps/s of the step as the trainer runs it, then a torch profiler
table of the heaviest operators (CPU and, on a GPU, CUDA time).

    python benchmarks/codec_train_speed.py --config configs/codec/h200_decoder.yaml \
        --init unisono/assets/unisono-small/codec --data PACK --device cuda --json speed.json

Prints the tables and writes the figures as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from unisono.codec.trainer import Trainer, load_config
    from unisono.train.settings import parse_sets

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--init", help="trained codec to start from")
    p.add_argument("--data", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--rows", type=int, default=25, help="rows of each profiler table (0: no profile, speed only)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    cfg = load_config(args.config, parse_sets(args.set), args.init)
    cfg["train"]["sample_every"] = 0
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(cfg, args.data, tmp, args.device, progress=False)
        if args.init:
            tr.init_from(args.init)
        cuda = tr.device.type == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        bs = cfg["train"]["batch_size"]
        for _ in range(args.warmup):
            tr.train_step(tr.sampler.batch(bs))
        sync()
        res = {
            "device": str(tr.device),
            "amp": cfg["train"]["amp"],
            "batch_size": bs,
            "segment_seconds": cfg["train"]["segment_seconds"],
        }
        t0 = time.perf_counter()
        for _ in range(args.steps):
            tr.train_step(tr.sampler.batch(bs))
        sync()
        res["steps_per_s"] = args.steps / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        batches = [tr.sampler.batch(bs) for _ in range(args.steps)]
        res["batch_seconds"] = (time.perf_counter() - t0) / args.steps
        sync()
        t0 = time.perf_counter()
        for b in batches:
            tr.train_step(b)
        sync()
        res["steps_per_s_batches_ready"] = args.steps / (time.perf_counter() - t0)
        if args.rows:  # the profiler's tables (0: speed only)
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=acts) as prof:
                for b in batches[:5]:
                    tr.train_step(b)
                sync()
            keys = ["self_cpu_time_total"] + (["self_device_time_total"] if cuda else [])
            for key in keys:
                print(f"\n== top operators by {key} (5 steps)")
                print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))
            events = prof.key_averages()
            res["kernel_launches_per_step"] = sum(e.count for e in events if e.key == "cudaLaunchKernel") / 5
            res["top_self_cpu"] = [[e.key, e.self_cpu_time_total / 5e3, e.count / 5] for e in
                                   sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.rows]]
            if cuda:
                res["top_self_device"] = [[e.key, e.self_device_time_total / 5e3, e.count / 5] for e in
                                          sorted(events, key=lambda e: -e.self_device_time_total)[:args.rows]]
    print("\n| figure | value |\n|---|---|")
    for k in ("device", "amp", "batch_size", "steps_per_s", "steps_per_s_batches_ready", "batch_seconds",
              "kernel_launches_per_step"):
        if k not in res:
            continue
        v = res[k]
        print(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
