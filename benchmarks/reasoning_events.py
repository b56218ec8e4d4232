"""Event count and order accuracy on multi-event scene prompts: reasoning vs direct generation.

    PYTHONPATH=. python benchmarks/reasoning_events.py --checkpoint CKPT --data CORPUS --split test \\
        --n 50 --min-events 2 --out reasoning_eval --json reasoning_events.json [--revise 2]

Takes the scene cuts of the split with at least ``--min-events`` events (a seeded sample of ``--n``), and
generates each caption with the checkpoint's ``text_to_sound`` (direct) and ``text_to_sound_reasoning``
(plan, then audio, in one pass), and with ``--revise N`` also the reasoning task in "generate, listen,
revise" mode. Every output, and the reference audio itself (the ceiling of the detector), is read back as
a sequence of events (energy segmentation + the ``event`` classifier trained on the corpus's train split,
cached in ``OUT/classifiers``) and scored against the requested sequence (``unisono.eval.reasoning``):
count accuracy, order accuracy, sequence similarity, recall; for the reasoning task the plan is scored
too. Prints a table (means over items) and writes per-item values to ``--json``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

VALUES = ("event_count_acc", "event_order_acc", "event_seq_sim", "event_recall", "event_count_abs_err",
          "plan_count_acc", "plan_order_acc")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="checkpoint directory (omit to score the reference audio only)")
    ap.add_argument("--data", required=True, help="corpus directory made by `unisono synth`")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=50, help="at most this many scenes (seeded sample)")
    ap.add_argument("--min-events", type=int, default=2, help="scenes with at least this many events")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance-scale", type=float, default=None, help="default: the pipeline's per-task default")
    ap.add_argument("--top-k", type=int, default=None)
    ap.add_argument("--revise", type=int, default=0, help="also run the reasoning task with revise=N")
    ap.add_argument("--out", default="reasoning_eval", help="folder for the classifier cache and outputs")
    ap.add_argument("--save-audio", action="store_true", help="write every output under OUT/audio/")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from tqdm import tqdm

    from unisono import audio as A
    from unisono.errors import UnisonoError
    from unisono.eval.corpus import EVAL_SAMPLE_RATE, cut_audio, load_corpus_cuts, train_attribute_classifiers
    from unisono.eval.metrics.classifier import get_classifier
    from unisono.eval.reasoning import requested_events, score_output

    out_dir = Path(args.out)
    cuts = [c for c in load_corpus_cuts(args.data, args.split)
            if (c.custom or {}).get("kind") == "scene" and len(requested_events(c)) >= args.min_events]
    cuts.sort(key=lambda c: c.id)
    if not cuts:
        raise UnisonoError(f"split {args.split} of {args.data} has no scene with >= {args.min_events} events")
    if len(cuts) > args.n:
        cuts = sorted(random.Random(f"{args.seed}:reasoning").sample(cuts, args.n), key=lambda c: c.id)
    train_attribute_classifiers(args.data, out_dir / "classifiers", names=["event"], progress=True)
    clf = get_classifier("event")

    systems: dict = {"reference": lambda cut: (cut_audio(cut), EVAL_SAMPLE_RATE, None, {})}
    if args.checkpoint:
        from unisono.inference import Pipeline

        pipe = Pipeline.from_pretrained(args.checkpoint)
        for task in ("text_to_sound", "text_to_sound_reasoning"):
            if task not in pipe.tasks:
                raise UnisonoError(f"{args.checkpoint} has no {task} task; it can do: {', '.join(pipe.tasks)}")

        def run(task, revise=0):
            def fn(cut):
                opts = pipe.default_options(task).with_(seed=args.seed, max_duration=float(cut.duration) + 1.0)
                if args.guidance_scale is not None:
                    opts = opts.with_(guidance_scale=args.guidance_scale)
                if args.top_k is not None:
                    opts = opts.with_(top_k=args.top_k)
                caption = cut.custom["caption"]
                if revise:
                    o = pipe.generate_revised(task, {"caption": caption}, opts, rounds=revise)
                else:
                    o = pipe.generate(task, options=opts, caption=caption)
                return o.wav, o.sample_rate, o.plan, {"revise": o.info.get("revise")} if revise else {}
            return fn

        systems["direct"] = run("text_to_sound")
        systems["reasoning"] = run("text_to_sound_reasoning")
        if args.revise:
            systems[f"reasoning+revise{args.revise}"] = run("text_to_sound_reasoning", args.revise)

    results: dict = {"split": args.split, "n": len(cuts), "min_events": args.min_events, "seed": args.seed,
                     "checkpoint": args.checkpoint, "detector": "energy segmentation + event classifier "
                     "(mel statistics, logistic regression, corpus train split)", "systems": {}}
    for name, fn in systems.items():
        items, t0 = [], time.perf_counter()
        for cut in tqdm(cuts, desc=name, file=sys.stderr):
            wav, sr, plan, extra = fn(cut)
            want = requested_events(cut)
            vals = score_output(want, wav, sr, clf, plan=plan)
            items.append({"id": cut.id, "requested": want, "caption": cut.custom.get("caption"), **vals, **extra})
            if args.save_audio:
                A.save(out_dir / "audio" / name / f"{cut.id}.wav", np.asarray(wav, dtype=np.float32), int(sr))
        means = {}
        for v in VALUES:
            xs = [it[v] for it in items if v in it]
            if xs:
                means[v] = float(np.mean(xs))
        results["systems"][name] = {"means": means, "seconds": time.perf_counter() - t0, "items": items}

    cols = [v for v in VALUES if any(v in s["means"] for s in results["systems"].values())]
    print(f"{len(cuts)} scenes with >= {args.min_events} events, split {args.split}")
    print("| system | " + " | ".join(cols) + " | seconds |")
    print("|---|" + "---|" * (len(cols) + 1))
    for name, s in results["systems"].items():
        row = [f"{s['means'][c]:.3f}" if c in s["means"] else "-" for c in cols]
        print(f"| {name} | " + " | ".join(row) + f" | {s['seconds']:.1f} |")
    if args.json:
        from unisono.fileio import write_json

        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    from unisono.errors import UnisonoError

    try:
        sys.exit(main())
    except UnisonoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
