"""Event count and order accuracy on multi-event scene prompts (reasoning vs direct generation).

A scene prompt asks for events in a time order ("A dog barks at 0.4 s, then a bell rings at 2.1 s.").
An output is read back as a sequence of events: :func:`detect_events` cuts it into sound events by its
energy envelope (:func:`unisono.eval.metrics.attributes.event_segments`, the ``events`` metric's
segmentation) and names each one with the ``event`` classifier (trained on the corpus's single-event
``sound`` cuts, see ``docs/eval.md``); consecutive segments of one class are one event.
:func:`event_sequence_scores` compares that sequence with the requested one:

- ``event_count_acc``: as many events as requested;
- ``event_order_acc``: exactly the requested classes in the requested order;
- ``event_seq_sim``: 1 - (edit distance between the two class sequences) / (the longer length);
- ``event_recall``: the share of requested classes found anywhere (order ignored).

For a reasoning task the plan is scored the same way (``plan_*``, read with
:func:`unisono.reasoning.parse_sound_plan`): did the model plan the right events in the right order?
``benchmarks/reasoning_events.py`` runs both tasks of a checkpoint on a corpus split (see
``docs/reasoning.md``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate
from unisono.reasoning import parse_sound_plan

PAD_S = 0.25  # silence around each detected event before classifying it (as around the classifier's training clips)


def edit_distance(a: list, b: list) -> int:
    """Levenshtein distance between two sequences (insertions, deletions, substitutions cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def event_sequence_scores(requested: list[str], detected: list[str], prefix: str = "event") -> dict[str, float]:
    """Count, order, sequence-similarity and recall scores of ``detected`` classes against ``requested``
    (both in time order)."""
    requested, detected = [str(x) for x in requested], [str(x) for x in detected]
    longest = max(len(requested), len(detected))
    found = Counter(detected)
    hits = 0
    for name, n in Counter(requested).items():
        hits += min(n, found[name])
    return {
        f"{prefix}_count_acc": float(len(detected) == len(requested)),
        f"{prefix}_order_acc": float(detected == requested),
        f"{prefix}_seq_sim": 1.0 - edit_distance(requested, detected) / longest if longest else 1.0,
        f"{prefix}_recall": hits / len(requested) if requested else 1.0,
        f"{prefix}_count_abs_err": float(abs(len(detected) - len(requested))),
    }


def detect_events(wav, sample_rate: int, classifier, merge_same: bool = True) -> list[tuple[float, float, str]]:
    """``[(start_s, end_s, class_name)]`` of the events in ``wav`` (time order), each segment named by
    ``classifier`` (an :class:`unisono.eval.metrics.classifier.AttributeClassifier`). With ``merge_same``,
    consecutive segments of one class are one event (three knocks, a dog giving two barks: the hits of one
    event are separate segments of the energy envelope)."""
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.attributes import event_segments  # noqa: PLC0415

    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.frechet import mel_stats_embedding  # noqa: PLC0415

    x = np.asarray(at_rate(wav, sample_rate), dtype=np.float32)
    if x.size == 0:
        return []
    segs = event_segments(x, EVAL_SAMPLE_RATE)
    if not segs:
        return []
    pad = np.zeros(int(PAD_S * EVAL_SAMPLE_RATE), dtype=np.float32)
    feats = []
    for a, b in segs:
        clip = x[int(a * EVAL_SAMPLE_RATE) : max(int(b * EVAL_SAMPLE_RATE), int(a * EVAL_SAMPLE_RATE) + 1)]
        feats.append(mel_stats_embedding(np.concatenate([pad, clip, pad]), EVAL_SAMPLE_RATE))
    labels = classifier.predict_features(np.stack(feats))
    out: list[tuple[float, float, str]] = []
    for (a, b), lab in zip(segs, labels):
        if merge_same and out and out[-1][2] == lab:
            out[-1] = (out[-1][0], b, lab)
        else:
            out.append((a, b, lab))
    return out


def requested_events(cut) -> list[str]:
    """The event classes a scene cut's caption asks for, in time order (from ``params.events``)."""
    events = ((cut.custom or {}).get("params") or {}).get("events") or []
    return [str(e["event"]) for e in sorted(events, key=lambda e: float(e["start"]))]


def score_output(requested: list[str], wav, sample_rate: int, classifier, plan: str | None = None) -> dict:
    """Every score of one output (``plan_*`` too when a plan is given), plus the detected sequence."""
    if wav is None or np.asarray(wav).size == 0:
        detected = []
    else:
        detected = detect_events(wav, sample_rate, classifier)
    out: dict = event_sequence_scores(requested, [d[2] for d in detected])
    out["_detected"] = [[round(a, 2), round(b, 2), lab] for a, b, lab in detected]
    if plan is not None:
        planned = [e[2] for e in parse_sound_plan(plan)]
        out.update(event_sequence_scores(requested, planned, prefix="plan"))
        out["_plan"] = plan
    return out
