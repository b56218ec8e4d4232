"""``unisono dpo``: preference-tune a checkpoint on automatically ranked samples of one task."""

from __future__ import annotations

import argparse
import dataclasses
import json

from unisono.fileio import check_writable
from unisono.train.preference import DPOSettings, describe_metrics, run_dpo

DESCRIPTION = """Preference-tune a packaged checkpoint with DPO on its own ranked samples.

For each prompt (a cut of the task in --split of the corpus) the checkpoint samples --candidates outputs
with distinct seeds; an evaluator (--rank-by) scores them; the best becomes the chosen and the worst the
rejected sample of a pair (ties are skipped). A copy of the model is then trained for --steps with the DPO
loss plus --ce-weight x the cross-entropy of the chosen samples, against the frozen checkpoint. The tuned
checkpoint goes to --out (loadable like any other), with dpo_report.json (the metric's mean on held-out
prompts of --eval-split before and after, pairs, steps, seconds) and dpo_pairs.jsonl (every candidate's score).

Example:
  unisono dpo --checkpoint ckpt --task tts --rank-by wer+spk --data corpus --out ckpt-dpo \\
      --prompts 128 --candidates 4 --steps 200
  unisono dpo --config configs/dpo/tts_wer_spk.yaml --checkpoint ckpt --data corpus --out ckpt-dpo

--config FILE: a YAML file of DPOSettings keys (configs/dpo/; an unknown key is an error); a flag given on the
command line overrides the file. Resuming: the ranked pairs, then the training state every save_every steps,
are kept in OUT.resume/; run the same command again after an interruption to continue.

Ranking metrics (--rank-by) and the tasks they apply to:
"""


# argparse destination -> DPOSettings field, for the flags that override --config
FLAGS = ("task", "rank_by", "split", "prompts", "candidates", "min_gap", "top_k", "top_p", "temperature",
         "guidance_scale", "max_duration", "beta", "ce_weight", "lr", "steps", "batch_size", "seed", "eval_split",
         "eval_prompts", "eval_samples", "classifiers", "device", "nonfinite", "save_every")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION + describe_metrics()
    d = DPOSettings()
    p.add_argument("--config", help="YAML file of DPO settings (configs/dpo/); flags override it")
    p.add_argument("--checkpoint", required=True, help="packaged checkpoint directory (the policy's start and the "
                   "frozen reference)")
    p.add_argument("--task", help="task to tune (its output must be audio), e.g. tts, text_to_sound")
    p.add_argument("--rank-by", metavar="METRIC", help="how candidates are ranked (see the list above)")
    p.add_argument("--data", required=True, metavar="CORPUS", help="corpus directory made by `unisono synth` "
                   "(manifests/SPLIT/cuts.jsonl)")
    p.add_argument("--out", required=True, help="directory for the tuned checkpoint and dpo_report.json")
    g = p.add_argument_group("prompts and candidates")
    g.add_argument("--split", help=f"split whose cuts are the training prompts (default {d.split})")
    g.add_argument("--prompts", type=int, help=f"training prompts, a seeded sample (default {d.prompts})")
    g.add_argument("--candidates", type=int, help=f"samples per prompt, seeds SEED..SEED+N-1 (default {d.candidates})")
    g.add_argument("--min-gap", type=float,
                   help="skip a prompt whose best and worst scores differ by no more than this (default 0: ties only)")
    g.add_argument("--top-k", type=int, help=f"sampling top-k, 0 = none (default {d.top_k})")
    g.add_argument("--top-p", type=float, help=f"sampling top-p (default {d.top_p})")
    g.add_argument("--temperature", type=float, help=f"(default {d.temperature})")
    g.add_argument("--guidance-scale", type=float,
                   help=f"classifier-free guidance scale, 1 = off (default {d.guidance_scale})")
    g.add_argument("--max-duration", type=float, help="longest output, seconds (speech tasks: also at most 2 x the "
                   f"cut + 1 s; default {d.max_duration})")
    g = p.add_argument_group("training")
    g.add_argument("--beta", type=float, help=f"DPO temperature beta (default {d.beta})")
    g.add_argument("--ce-weight", type=float,
                   help=f"weight of the cross-entropy regulariser on the chosen samples (default {d.ce_weight})")
    g.add_argument("--lr", type=float, help=f"AdamW learning rate (default {d.lr})")
    g.add_argument("--steps", type=int, help=f"optimizer steps (default {d.steps})")
    g.add_argument("--batch-size", type=int, help=f"pairs per step (default {d.batch_size})")
    g.add_argument("--seed", type=int, help=f"seed of prompt choice, sampling and batches (default {d.seed})")
    g.add_argument("--nonfinite", choices=("skip", "stop"), help="a NaN/Inf loss or gradient: skip the batch or "
                   f"stop the run (default {d.nonfinite})")
    g.add_argument("--save-every", type=int, help=f"steps between saved resumable states (default {d.save_every})")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-split", help=f"split of the held-out prompts (default {d.eval_split})")
    g.add_argument("--eval-prompts", type=int,
                   help=f"held-out prompts scored before and after, 0 = skip (default {d.eval_prompts})")
    g.add_argument("--eval-samples", type=int, help="fresh samples per held-out prompt, the same seeds before and "
                   f"after (default {d.eval_samples})")
    g.add_argument("--classifiers", help="directory to keep (and reuse) the attribute classifiers trained on the "
                   "corpus for event/instrument ranking (default: trained afresh, then removed)")
    p.add_argument("--device", help="auto, cpu or cuda (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def settings_from_args(args: argparse.Namespace) -> DPOSettings:
    """``--config`` (or the defaults) with every flag given on the command line applied over it."""
    s = DPOSettings.load(args.config) if args.config else DPOSettings()
    given = {f: getattr(args, f) for f in FLAGS if getattr(args, f) is not None}
    if args.overwrite:
        given["overwrite"] = True
    if args.no_progress:
        given["progress"] = False
    return dataclasses.replace(s, **given, command=getattr(args, "command_line", None))


def main(args) -> int:
    check_writable(args.out, "dir", "--out")
    s = settings_from_args(args)
    rep = run_dpo(args.checkpoint, args.data, args.out, s)
    ev = rep["eval"]
    summary = {"out": args.out, "pairs": rep["pairs"], "steps": rep["steps"], "seconds": rep["seconds"]["total"],
               "final_margin": rep["final"]["margin"]}
    if "before" in ev:
        summary.update({f"{s.rank_by}_before": ev["before"]["mean"], f"{s.rank_by}_after": ev["after"]["mean"],
                        "eval_split": ev["split"], "eval_prompts": ev["prompts"]})
    print(json.dumps(summary))
    return 0
