"""Load test of `unisono serve` on loopback: N requests from C concurrent clients.

Starts the server in this process (127.0.0.1, a free port) on a checkpoint (default: a tiny one built from
a tiny built-in corpus, random weights), sends a bounded number of requests, and reports how many were
answered (200) or rejected (429/503), latency percentiles, the server's batching, and peak memory.

Usage: python benchmarks/serve_load.py [--checkpoint DIR] [--requests 200] [--clients 32] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="checkpoint directory (default: build a tiny one)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-queue", type=int, default=16, help="server queue bound (small, to see rejections)")
    ap.add_argument("--max-duration", type=float, default=1.0, help="seconds of audio per request")
    q = ap.add_mutually_exclusive_group()
    q.add_argument("--int8", action="store_true", help="serve with int8 language-model weights (docs/lm.md)")
    q.add_argument("--int4", action="store_true", help="serve with int4 linear layers (heads int8; docs/lm.md)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    import httpx
    from serve_helpers import LiveServer

    from unisono.inference import Pipeline
    from unisono.serve import ServerLimits, create_app

    tmp = tempfile.TemporaryDirectory(prefix="unisono-load-")
    ckpt = args.checkpoint
    if ckpt is None:
        from tiny_model import build_tiny_checkpoint

        ckpt = build_tiny_checkpoint(Path(tmp.name))
    pipe = Pipeline.from_pretrained(ckpt, int8=args.int8, int4=args.int4)
    app = create_app(pipe, ServerLimits(max_queue=args.max_queue, max_batch=8, batch_window_s=0.02,
                                        max_output_seconds=args.max_duration))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def run(base: str):
        latencies, codes = [], []
        sem = asyncio.Semaphore(args.clients)
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            async def one(i: int):
                async with sem:
                    t0 = time.perf_counter()
                    r = await client.post("/generate", json={
                        "task": "text_to_sound", "caption": f"A bell rings {i % 7} times.", "seed": i % 4,
                        "max_duration": args.max_duration})
                    latencies.append(time.perf_counter() - t0)
                    codes.append(r.status_code)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(args.requests)))
            wall = time.perf_counter() - t0
            health = (await client.get("/health")).status_code
        return latencies, codes, wall, health

    with LiveServer(app) as base:
        latencies, codes, wall, health = asyncio.run(run(base))
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lat = sorted(latencies)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    sched = app.state.scheduler
    result = {
        "requests": args.requests, "clients": args.clients, "max_queue": args.max_queue,
        "answered_200": codes.count(200), "rejected_503": codes.count(503), "rejected_429": codes.count(429),
        "other": len(codes) - codes.count(200) - codes.count(503) - codes.count(429),
        "p50_s": round(pct(0.50), 3), "p99_s": round(pct(0.99), 3), "wall_s": round(wall, 2),
        "batches_run": sched.batches_run, "largest_batch": sched.largest_batch,
        "health_after": health, "peak_rss_mib": round(rss_peak / 1024, 1),
        "rss_growth_mib": round((rss_peak - rss_before) / 1024, 1), "checkpoint": str(ckpt), "int8": args.int8,
        "int4": args.int4,
    }
    for k, v in result.items():
        print(f"{k:>16}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    tmp.cleanup()
    return 0 if result["other"] == 0 and health == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
