"""``unisono dpo``: preference-tune a checkpoint on automatically ranked samples of one task."""

from __future__ import annotations

import argparse

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

Ranking metrics (--rank-by) and the tasks they apply to:
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from unisono.train.preference import DPOSettings, describe_metrics

    p.description = DESCRIPTION + describe_metrics()
    d = DPOSettings()
    p.add_argument("--checkpoint", required=True, help="packaged checkpoint directory (the policy's start and the "
                   "frozen reference)")
    p.add_argument("--task", required=True, help="task to tune (its output must be audio), e.g. tts, text_to_sound")
    p.add_argument("--rank-by", required=True, metavar="METRIC", help="how candidates are ranked (see the list above)")
    p.add_argument("--data", required=True, metavar="CORPUS", help="corpus directory made by `unisono synth` "
                   "(manifests/SPLIT/cuts.jsonl)")
    p.add_argument("--out", required=True, help="directory for the tuned checkpoint and dpo_report.json")
    g = p.add_argument_group("prompts and candidates")
    g.add_argument("--split", default=d.split, help=f"split whose cuts are the training prompts (default {d.split})")
    g.add_argument("--prompts", type=int, default=d.prompts,
                   help=f"training prompts, a seeded sample (default {d.prompts})")
    g.add_argument("--candidates", type=int, default=d.candidates,
                   help=f"samples per prompt, seeds SEED..SEED+N-1 (default {d.candidates})")
    g.add_argument("--min-gap", type=float, default=d.min_gap,
                   help="skip a prompt whose best and worst scores differ by no more than this (default 0: ties only)")
    g.add_argument("--top-k", type=int, default=d.top_k, help=f"sampling top-k, 0 = none (default {d.top_k})")
    g.add_argument("--top-p", type=float, default=d.top_p, help=f"sampling top-p (default {d.top_p})")
    g.add_argument("--temperature", type=float, default=d.temperature, help=f"(default {d.temperature})")
    g.add_argument("--guidance-scale", type=float, default=d.guidance_scale,
                   help=f"classifier-free guidance scale, 1 = off (default {d.guidance_scale})")
    g.add_argument("--max-duration", type=float, default=d.max_duration,
                   help="longest output, seconds (speech tasks: also at most 2 x the cut + 1 s; "
                   f"default {d.max_duration})")
    g = p.add_argument_group("training")
    g.add_argument("--beta", type=float, default=d.beta, help=f"DPO temperature beta (default {d.beta})")
    g.add_argument("--ce-weight", type=float, default=d.ce_weight,
                   help=f"weight of the cross-entropy regulariser on the chosen samples (default {d.ce_weight})")
    g.add_argument("--lr", type=float, default=d.lr, help=f"AdamW learning rate (default {d.lr})")
    g.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help=f"pairs per step (default {d.batch_size})")
    g.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed of prompt choice, sampling and batches (default {d.seed})")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-split", default=d.eval_split, help=f"split of the held-out prompts (default {d.eval_split})")
    g.add_argument("--eval-prompts", type=int, default=d.eval_prompts,
                   help=f"held-out prompts scored before and after, 0 = skip (default {d.eval_prompts})")
    g.add_argument("--eval-samples", type=int, default=d.eval_samples,
                   help="fresh samples per held-out prompt, the same seeds before and after "
                   f"(default {d.eval_samples})")
    g.add_argument("--classifiers", help="directory to keep (and reuse) the attribute classifiers trained on the "
                   "corpus for event/instrument ranking (default: trained afresh, then removed)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args) -> int:
    import json

    import torch

    from unisono.train.preference import DPOSettings, run_dpo

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    s = DPOSettings(split=args.split, prompts=args.prompts, candidates=args.candidates, eval_split=args.eval_split,
                    eval_prompts=args.eval_prompts, eval_samples=args.eval_samples, beta=args.beta,
                    ce_weight=args.ce_weight, lr=args.lr, steps=args.steps, batch_size=args.batch_size,
                    min_gap=args.min_gap, seed=args.seed, top_k=args.top_k, top_p=args.top_p,
                    temperature=args.temperature, guidance_scale=args.guidance_scale,
                    max_duration=args.max_duration, classifiers=args.classifiers, device=device,
                    overwrite=args.overwrite, progress=not args.no_progress,
                    command=getattr(args, "command_line", None))
    rep = run_dpo(args.checkpoint, args.task, args.rank_by, args.data, args.out, s)
    ev = rep["eval"]
    summary = {"out": args.out, "pairs": rep["pairs"], "steps": rep["steps"], "seconds": rep["seconds"]["total"],
               "final_margin": rep["final"]["margin"]}
    if "before" in ev:
        summary.update({f"{args.rank_by}_before": ev["before"]["mean"], f"{args.rank_by}_after": ev["after"]["mean"],
                        "eval_split": ev["split"], "eval_prompts": ev["prompts"]})
    print(json.dumps(summary))
    return 0
