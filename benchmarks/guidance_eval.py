"""Classifier-free guidance scales compared on the same corpus items with one checkpoint.

    PYTHONPATH=. python benchmarks/guidance_eval.py --checkpoint CKPT --data CORPUS --split test \\
        --tasks tts,vc,se,dereverb,text_to_sound,text_to_music --scales 1,3 --n 10 --out guidance_eval \\
        --json guidance.json

Each scale is a system of the evaluation harness (``PipelineSystem`` with the checkpoint's default options
and that ``guidance_scale``, seed 0): the same items, the same evaluators and the same item cache as
``unisono eval``. Prints one table (task, metric, the mean at each scale) and writes it to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="corpus directory made by `unisono synth`")
    ap.add_argument("--split", default="test")
    ap.add_argument("--tasks", default="tts,vc,se,dereverb,text_to_sound,text_to_music")
    ap.add_argument("--scales", default="1,3", help="comma-separated guidance scales (1 = off)")
    ap.add_argument("--n", type=int, default=10, help="cuts per task (seeded sample, as unisono eval --n)")
    ap.add_argument("--out", default="guidance_eval", help="folder for the harness's item cache")
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from unisono.errors import UnisonoError
    from unisono.eval.corpus import evaluate_corpus
    from unisono.eval.model_system import PipelineSystem, checkpoint_id
    from unisono.inference import Pipeline

    torch.set_num_threads(args.threads)
    try:
        pipe = Pipeline.from_pretrained(args.checkpoint)
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        scales = [float(x) for x in args.scales.split(",")]
        systems, ids = {}, {}
        for g in scales:
            name = f"guidance {g:g}"
            opts = {t: pipe.default_options(t).with_(guidance_scale=g, seed=0) for t in tasks if t in pipe.tasks}
            systems[name] = PipelineSystem(pipe, args.data, args.split, seed=0, options=opts)
            ids[name] = f"{checkpoint_id(args.checkpoint)}:guidance{g:g}"
        res = evaluate_corpus(args.data, args.out, systems, split=args.split, tasks=tasks, n=args.n, seed=0,
                              progress=False, system_ids=ids, examples=0)
    except (UnisonoError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for task, t in res["tasks"].items():
        names = sorted({m for s in t["systems"].values() for m in s})
        for metric in names:
            rows.append({"task": task, "metric": metric,
                         **{s: t["systems"].get(s, {}).get(metric, {}).get("mean") for s in systems}})
    head = ["task", "metric", *systems]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [r["task"], r["metric"]] + ["-" if r[s] is None else f"{r[s]:.3f}" for s in systems]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": args.checkpoint, "n": args.n, "scales": scales, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
