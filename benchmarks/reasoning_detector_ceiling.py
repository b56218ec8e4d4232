"""The ceiling of the event-sequence detector of ``unisono.eval.reasoning`` on synthesized scenes.

    PYTHONPATH=. python benchmarks/reasoning_detector_ceiling.py --sounds 340 --scenes 60 --json ceiling.json

Makes single sound events and scenes with the built-in corpus's generators (in memory, seeded), fits the
``event`` classifier on the single events as the eval harness does on a corpus's ``sound`` cuts, and scores
the scenes' own audio (2 or more events) against their requested event sequences: what a perfect
generator would score. Also shows the detector without merging consecutive segments of one class.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sounds", type=int, default=340, help="single events to fit the classifier on")
    ap.add_argument("--scenes", type=int, default=60, help="scenes to make (those with >= 2 events are scored)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from unisono.data.synth.kinds import Job, make_scene, make_sound
    from unisono.eval.metrics.classifier import AttributeClassifier
    from unisono.eval.metrics.frechet import mel_stats_embedding
    from unisono.eval.reasoning import detect_events, event_sequence_scores

    t0 = time.perf_counter()
    feats, labels = [], []
    for i in range(args.sounds):
        m = make_sound(Job(f"s{i}", "sound", "train", i), np.random.default_rng(i))[0]
        feats.append(mel_stats_embedding(m.audio, 16000))
        labels.append(m.params["event"])
    clf = AttributeClassifier.fit(np.stack(feats), labels, weight_decay=1e-3)
    scenes = []
    for i in range(args.scenes):
        m = make_scene(Job(f"c{i}", "scene", "test", 1000 + i), np.random.default_rng(1000 + i))[0]
        want = [e["event"] for e in sorted(m.params["events"], key=lambda e: e["start"])]
        if len(want) >= 2:
            scenes.append((m.audio, want))
    results = {"sounds": args.sounds, "scenes_scored": len(scenes), "classes": len(clf.classes),
               "classifier_train_accuracy": clf.info["train_accuracy"]}
    print(f"{len(scenes)} scenes with >= 2 events; classifier on {args.sounds} events "
          f"({len(clf.classes)} classes, train accuracy {clf.info['train_accuracy']:.3f})")
    print("| detector | event_count_acc | event_order_acc | event_seq_sim | event_recall | event_count_abs_err |")
    print("|---|---|---|---|---|---|")
    for name, merge in (("merged (default)", True), ("raw segments", False)):
        vals: dict[str, list[float]] = {}
        for wav, want in scenes:
            got = [e[2] for e in detect_events(wav, 16000, clf, merge_same=merge)]
            for k, v in event_sequence_scores(want, got).items():
                vals.setdefault(k, []).append(v)
        means = {k: float(np.mean(v)) for k, v in vals.items()}
        results[name] = means
        print(f"| {name} | " + " | ".join(f"{means[k]:.3f}" for k in ("event_count_acc", "event_order_acc",
                                                                         "event_seq_sim", "event_recall",
                                                                         "event_count_abs_err")) + " |")
    results["seconds"] = time.perf_counter() - t0
    if args.json:
        from unisono.fileio import write_json

        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
