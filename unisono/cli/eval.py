"""``unisono eval``: score audio made by any system against references, or a corpus split per task."""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from pathlib import Path

from unisono.cli.generate import add_quant_arguments
from unisono.errors import UnisonoError
from unisono.eval import enhancer
from unisono.eval.harness import FD_MIN_ITEMS
from unisono.eval.realsets import SETS, resolve_data
from unisono.fileio import check_writable
from unisono.tasks import load_templates

DESCRIPTION = """Score generated audio against references, offline, with the reference ceiling beside it.

Two modes:
  unisono eval --audio-dir GEN --ref-dir REF --metric wer,sim,pesq --out OUT
      pairs GEN/<name>.wav with REF/<name>.wav (wav, flac or ogg); reference texts for WER come from
      --text (JSON {name: text} or JSONL {"id", "text"}) or from REF/<name>.txt.
  unisono eval --data CORPUS --split test --tasks all --n 50 --out OUT
      scores each task of a built-in corpus split ('unisono synth') with its own metrics: the reference
      ceiling (the references through the same evaluators), the "copy the input" baseline (SE,
      dereverberation, TSE, VC, editing) and a "train prior" baseline that ignores the item (captioning,
      QA, text-to-sound, text-to-music: answers, captions or clips drawn from the training split).
      With --checkpoint DIR the model generates each item from the same inputs and is scored beside them.
  unisono eval --data tuxpaint --checkpoint DIR --out OUT
      the same on a set of real recordings no model trains on, read where a package installed them: Tux
      Paint's human English speech with its text (asr) and its captioned sound effects (caption,
      text_to_sound); its manifests are written in OUT/sets/tuxpaint.

Writes OUT/metrics.json, OUT/report.md and OUT/report.html (with audio players and spectrograms of a few
examples). Every item's values are cached under OUT/items/: run the same
command again to resume an interrupted run (only missing items or metrics are computed).

Metrics: wer (Whisper tiny.en + jiwer), sim (resemblyzer), pesq (PESQ-WB), stoi, sisdr, mel (multi-scale
log-mel L1), f0 (torchcrepe tiny), tempo, key, events (signal analysis), fd (Frechet distance of
mel-statistics embeddings, set level), text_sim (all-MiniLM-L6-v2), bleu, qa.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio-dir", help="folder of generated audio files (audio-dir mode)")
    p.add_argument("--ref-dir", help="folder of reference audio files with the same names (audio-dir mode)")
    p.add_argument("--metric", default="wer,sim,pesq,stoi,sisdr,mel",
                   help="comma-separated metrics for audio-dir mode (default: %(default)s)")
    p.add_argument("--text", help="reference texts for WER: JSON {name: text} or JSONL rows {id, text}")
    p.add_argument("--no-ceiling", action="store_true", help="do not score the reference audio itself (WER ceiling)")
    p.add_argument("--data", help="corpus directory made by 'unisono synth', or the name of a set of real recordings "
                   f"(corpus mode): {'; '.join(f'{k}: {v}' for k, v in SETS.items())}")
    p.add_argument("--split", default="test", help="corpus split to score (default: %(default)s)")
    p.add_argument("--tasks", default="all", help="comma-separated tasks, or 'all' (default: %(default)s)")
    p.add_argument("--n", type=int, default=None, help="at most this many cuts per task (seeded sample)")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-task sample (default: %(default)s)")
    p.add_argument("--checkpoint", help="corpus mode: also generate and score with this checkpoint")
    p.add_argument("--whisper-base", action="store_true",
                   help="corpus mode: a second judge: every audio output scored by WER is also scored by multilingual "
                        "Whisper base (wer_base, cer_base, english_prob: how sure it is that the speech is English), "
                        "and ASR gets a second ceiling row (reference_whisper_base)")
    add_quant_arguments(p)
    p.add_argument("--doc", help="corpus mode: also write the report, introduced as the reference-ceiling table, here "
                   "(e.g. docs/reference_ceiling.md)")
    p.add_argument("--out", required=True, help="output folder for metrics.json, report.md and the item cache")
    p.add_argument(
        "--threads", type=int, default=min(2, os.cpu_count() or 1), help="CPU threads (default: %(default)s)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    import torch

    check_writable(args.out, "dir", "--out")
    if args.doc:
        check_writable(args.doc, flag="--doc")
    torch.set_num_threads(max(1, args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    command = getattr(args, "command_line", None)
    if args.audio_dir or args.ref_dir:
        if not (args.audio_dir and args.ref_dir):
            raise UnisonoError("audio-dir mode needs both --audio-dir GEN and --ref-dir REF")
        from unisono.eval.harness import evaluate_dirs
        from unisono.eval.metrics import parse_metric_list

        result = evaluate_dirs(args.audio_dir, args.ref_dir, parse_metric_list(args.metric), args.out,
                               text_path=args.text, ceiling=not args.no_ceiling, progress=not args.quiet)
        _print_summary(result)
        print(f"wrote {args.out}/metrics.json, {args.out}/report.md and {args.out}/report.html")
        return 0
    if args.data:
        args.data = resolve_data(args.data, args.out)  # a set of real recordings: its manifests in OUT/sets/
        from unisono.eval.corpus import (
            WHISPER_BASE_SYSTEM,
            TrainPriorSystem,
            copy_input_system,
            evaluate_corpus,
            reference_system,
        )

        systems = {"reference": reference_system, "copy_input": copy_input_system}
        if (Path(args.data) / "manifests" / "train" / "cuts.jsonl").exists():
            systems["train_prior"] = TrainPriorSystem(args.data, seed=args.seed)
        system_ids, templates = {}, None
        if args.whisper_base:  # the ASR ceiling by the second judge
            systems[WHISPER_BASE_SYSTEM] = functools.partial(reference_system, recogniser="base")
        no_enhancer = enhancer.available()
        if no_enhancer is None:  # DeepFilterNet3: a baseline row for the enhancement tasks
            systems["deepfilternet3"] = enhancer.DeepFilterNet3()
            system_ids["deepfilternet3"] = systems["deepfilternet3"].version
        elif not args.quiet:
            print(f"no enhancement baseline: {no_enhancer}", file=sys.stderr)
        if args.checkpoint:
            from unisono.eval.model_system import CodecResynthesisSystem, PipelineSystem, checkpoint_id
            from unisono.inference import Pipeline

            pipe = Pipeline.from_pretrained(args.checkpoint, int8=args.int8, int4=args.int4)
            systems = {"model": PipelineSystem(pipe, args.data, args.split, seed=args.seed), **systems,
                       "codec_resynthesis": CodecResynthesisSystem(pipe)}
            system_ids["model"] = checkpoint_id(args.checkpoint) + (
                ":int8" if args.int8 else ":int4" if args.int4 else ""
            )
            system_ids["codec_resynthesis"] = checkpoint_id(Path(args.checkpoint) / "codec") + \
                f":K{pipe.vocab.num_codebooks}"
            templates = {**load_templates(), **pipe.templates}  # the checkpoint's own tasks, with their policy
            systems["copy_input"] = functools.partial(copy_input_system, templates=templates)
            for name in ("train_prior", "deepfilternet3"):
                if name in systems:
                    systems[name].templates = templates
        tasks = None if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
        result = evaluate_corpus(args.data, args.out, systems, split=args.split, tasks=tasks, n=args.n,
                                 seed=args.seed, progress=not args.quiet, command=command, system_ids=system_ids,
                                 templates=templates, second_judges={"wer": "wer_base"} if args.whisper_base else None)
        if args.doc:
            from unisono.eval.report import CEILING_INTRO, write_report

            write_report(args.doc, result, title="Reference ceiling of the built-in corpus", intro=CEILING_INTRO)
            print(f"wrote {args.doc}")
        _print_summary(result)
        print(f"wrote {args.out}/metrics.json, {args.out}/report.md and {args.out}/report.html")
        return 0
    raise UnisonoError("nothing to score: give --audio-dir GEN --ref-dir REF, or --data CORPUS (see --help)")


def no_value_reason(name: str, stat: dict, skipped: dict | None = None) -> str:
    """Why value ``name`` has no mean (``stat``: its aggregate; ``skipped``: the system's skipped items on the task,
    ``{item_id: reason}``)."""
    n_items = int(stat.get("n_items", 0))
    if name == "fd":
        return f"the Frechet distance needs at least {FD_MIN_ITEMS} items, got {n_items}"
    if skipped:
        first = next(iter(skipped.values()))
        return f"{len(skipped)} item(s) skipped, e.g. {first}" + ("" if n_items else "; none scored")
    return f"no item gave a finite value ({n_items} scored)" if n_items else "no item was scored"


def summary_cell(name: str, stat: dict, skipped: dict | None = None) -> str:
    """``"wer 0.123"``, or ``"fd n/a (why)"`` where there is no mean."""
    mean = stat.get("mean")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return f"{name} n/a ({no_value_reason(name, stat, skipped)})"
    return f"{name} {mean:.3f}"


def summary_lines(result: dict) -> list[str]:
    """One line per task and system: its values' means (n/a with the reason where there is none)."""
    skipped = result.get("skipped") or {}
    lines = []
    for task, t in result["tasks"].items():
        for system, vals in t["systems"].items():
            sk = skipped.get(task, {}).get(system) if isinstance(skipped.get(task), dict) else None
            cells = ", ".join(summary_cell(k, v, sk) for k, v in vals.items())
            lines.append(f"{task:14s} {system:15s} {cells}")
    return lines


def _print_summary(result: dict) -> None:
    for line in summary_lines(result):
        print(line)
