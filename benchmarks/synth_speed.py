"""How fast `unisono synth` makes corpus audio: hours of audio per wall-clock minute.

Usage: python benchmarks/synth_speed.py [--hours 0.3] [--workers 1 2] [--engines espeak default] [--json OUT]
Prints a table (one row per engine mix and worker count) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unisono.data.synth import synthesize, voices  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=0.3,
                    help="corpus size per run (default 0.3; much smaller runs measure start-up more than speed)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    ap.add_argument("--engines", nargs="+", default=["default"],
                    help="engine mixes to compare ('default', or an --engines value of unisono synth, e.g. espeak)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    rows = []
    for spec, w in [(e, w) for e in args.engines for w in args.workers]:
        mix = None if spec == "default" else voices.parse_engine_mix(spec)
        with tempfile.TemporaryDirectory(prefix="unisono-synth-bench-") as tmp:
            t0 = time.perf_counter()
            stats = synthesize(Path(tmp) / "c", hours=args.hours, seed=args.seed, workers=w, progress=False,
                               engines=mix)
            wall = time.perf_counter() - t0
        primary = sum(s["hours"] for s in stats["splits"].values())
        everything = sum(s["hours_all_audio"] for s in stats["splits"].values())
        rows.append({"engines": ",".join(f"{e}={v:g}" for e, v in stats["speech_engines"]["mix"].items()),
                     "workers": w, "wall_s": round(wall, 2), "hours_primary": round(primary, 4),
                     "hours_all_audio": round(everything, 4),
                     "hours_per_minute": round(primary / wall * 60, 3),
                     "hours_all_audio_per_minute": round(everything / wall * 60, 3),
                     "minutes_per_hour": round(wall / 60 / primary, 2) if primary else None})
    print(f"{'engines':<52} {'workers':>7} {'wall s':>8} {'h primary':>10} {'h/min':>7} {'h all/min':>10} "
          f"{'min per h':>10}")
    for r in rows:
        print(
            f"{r['engines']:<52} {r['workers']:>7} {r['wall_s']:>8.2f} {r['hours_primary']:>10.4f} "
            f"{r['hours_per_minute']:>7.3f} "
            f"{r['hours_all_audio_per_minute']:>10.3f} {r['minutes_per_hour']:>10.2f}"
        )
    if len(rows) > 1 and len(args.engines) == 1:
        print(f"speed-up {rows[-1]['workers']} vs {rows[0]['workers']} workers: "
              f"{rows[-1]['hours_per_minute'] / rows[0]['hours_per_minute']:.2f}x")
    result = {
        "benchmark": "synth_speed",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "hours_requested": args.hours,
        "rows": rows,
        "note": "hours = primary audio (the audio of each cut); 'all audio' adds conditions (noisy, mixtures, ...)",
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
