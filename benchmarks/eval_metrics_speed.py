"""Time every per-item metric of ``unisono eval`` on espeak-ng speech (CPU), as seconds per second of audio.

    PYTHONPATH=. python benchmarks/eval_metrics_speed.py --repeats 3 --json eval_speed.json

The first call of each metric (model loading, JIT) is timed separately from the steady state. Ratios
within one run are what to compare; the machine's load changes absolute numbers.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import time

import numpy as np
import soundfile as sf
import torch

from unisono.audio import resample
from unisono.eval.metrics import METRICS, Reference, score
from unisono.eval.metrics.classifier import AttributeClassifier, register_classifier
from unisono.eval.metrics.frechet import mel_stats_embedding

TEXT = "The birch canoe slid on the smooth planks of the lake, and the boy waved from the shore."


def speech(text: str, voice: str) -> np.ndarray:
    out = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(out), dtype="float32")
    return np.asarray(resample(x, sr, 16000), dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ref_audio = speech(TEXT, "en-us")
    out = speech(TEXT, "en-us+f3")
    dur = ref_audio.size / 16000
    rng = np.random.default_rng(0)
    feats = np.stack([mel_stats_embedding(ref_audio * (0.5 + rng.random()), 16000) for _ in range(4)]
                     + [mel_stats_embedding(out * (0.5 + rng.random()), 16000) for _ in range(4)])
    clf = AttributeClassifier.fit(feats, ["a"] * 4 + ["b"] * 4)
    register_classifier("instrument", clf)
    register_classifier("event", clf)
    ref = Reference("bench", audio=ref_audio, text=TEXT, prompt=ref_audio,
                    attributes={"tempo_bpm": 120.0, "key": "C", "mode": "major", "n_events": 1, "instrument": "a",
                                "event": "a"})
    rows = []
    for name, m in METRICS.items():
        o = TEXT if m.output == "text" else out
        t0 = time.perf_counter()
        score(name, o, ref)
        first = time.perf_counter() - t0
        times = []
        for i in range(args.repeats):
            o_i = o + " " * (i + 1) if isinstance(o, str) else o * (0.99 - 0.01 * i)  # new input: no cached transcript
            t0 = time.perf_counter()
            score(name, o_i, ref)
            times.append(time.perf_counter() - t0)
        steady = float(np.median(times))
        rows.append({"metric": name, "first_call_s": first, "steady_s": steady,
                     "seconds_per_audio_second": steady / dur if m.output != "text" else None})
    print(f"clip: {dur:.2f} s of speech, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'metric':12s} {'first call s':>12s} {'steady s':>10s} {'s per audio s':>14s}")
    for r in rows:
        rt = "" if r["seconds_per_audio_second"] is None else f"{r['seconds_per_audio_second']:.4f}"
        print(f"{r['metric']:12s} {r['first_call_s']:12.3f} {r['steady_s']:10.4f} {rt:>14s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"clip_seconds": dur, "threads": args.threads, "repeats": args.repeats, "rows": rows}, f, indent=2
            )


if __name__ == "__main__":
    main()
