"""``unisono finetune``: the command line of :mod:`unisono.train.finetune`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from unisono.fileio import check_writable
from unisono.train.finetune import FinetuneConfig, finetune, format_report
from unisono.train.loop import NONFINITE_POLICIES

DESCRIPTION = """Fine-tune a checkpoint on a NEW task (a new task id and template; every existing id unchanged).

Sequence:
  1. make the new task's shards with the checkpoint's vocabulary and tokenizers:
       unisono tokenize --data CORPUS --codec CKPT/codec --out NEW_SHARDS --vocab CKPT/vocab.json \\
           --tokenizers CKPT --templates configs/tasks/superres.yaml --tasks superres --splits train,valid
  2. fine-tune (LoRA rank 8, replaying the old tasks' shards for a quarter of the examples):
       unisono finetune --config configs/finetune/superres_lora.yaml --checkpoint CKPT \\
           --shards NEW_SHARDS --replay OLD_SHARDS --out CKPT_SR
     or with flags only:
       unisono finetune --checkpoint CKPT --task superres --templates configs/tasks/superres.yaml \\
           --shards NEW_SHARDS --replay OLD_SHARDS --replay-weight 0.25 --lora-rank 8 --out CKPT_SR
  3. use it:  unisono generate superres --checkpoint CKPT_SR --narrowband speech_8k.wav -o wide.wav

--config FILE: a YAML file of FinetuneConfig keys (configs/finetune/; an unknown key is an error; relative
paths are read from the file's folder); a flag given on the command line overrides the file.
Validation: the new task on NEW_SHARDS/valid; the old tasks on --val-shards (default: the valid split
of --replay). The report (OUT/finetune_report.json) gives both before and after fine-tuning.
Resuming: an interrupted run saves its state in OUT.resume/ every save_every steps; run the same command
again to continue.
"""


FLAGS = {  # argparse destination -> FinetuneConfig field, for the flags that override --config
    "task": "task", "replay": "replay", "replay_weight": "replay_weight", "val_shards": "val_shards",
    "lora_rank": "lora_rank", "lora_alpha": "lora_alpha", "freeze_layers": "freeze_layers", "steps": "steps",
    "lr": "lr", "warmup": "warmup", "max_frames": "max_frames", "val_batches": "val_batches", "seed": "seed",
    "device": "device", "nonfinite": "nonfinite", "save_every": "save_every", "grad_accum": "grad_accum",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = FinetuneConfig()
    p.add_argument("--config", help="YAML file of fine-tuning settings (configs/finetune/); flags override it")
    p.add_argument(
        "--checkpoint", required=True, help="the trained checkpoint to start from (a packaged checkpoint dir)"
    )
    p.add_argument("--task", help="name of the NEW task (must not exist in the checkpoint)")
    p.add_argument("--templates", action="append", default=[], help="YAML file defining the new task's template "
                   "(repeatable), e.g. configs/tasks/superres.yaml")
    p.add_argument(
        "--shards",
        required=True,
        help="the new task's shards (train/ and valid/), made by `unisono tokenize "
        "--vocab CKPT/vocab.json --tokenizers CKPT --templates FILE --tasks NEW`",
    )
    p.add_argument(
        "--out", required=True, help="output checkpoint directory (packaged; loadable by Pipeline.from_pretrained)"
    )
    p.add_argument("--replay", help="shards of the old tasks to mix in (their train split; their valid split is "
                   "used for the old tasks' validation loss)")
    p.add_argument("--replay-weight", type=float,
                   help=f"fraction of training examples drawn from --replay (default: {d.replay_weight})")
    p.add_argument("--val-shards", help="shards whose valid split measures the old tasks (default: --replay's)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--lora-rank", type=int, help="LoRA adapters of this rank on the attention/MLP "
                      "projections, base weights frozen, merged when saving (default: off)")
    mode.add_argument("--freeze-layers", type=int, help="freeze the first N transformer layers "
                      "(default: 0; with neither option every weight is trained)")
    p.add_argument("--lora-alpha", type=float, help="LoRA scale numerator (default: the rank, i.e. scale 1)")
    p.add_argument("--steps", type=int, help=f"optimizer steps (default: {d.steps})")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 1e-3 with LoRA, 3e-4 otherwise)")
    p.add_argument("--warmup", type=int, help=f"warm-up steps (default: {d.warmup})")
    p.add_argument("--grad-accum", type=int, help=f"micro-batches per step (default: {d.grad_accum})")
    p.add_argument("--max-frames", type=int, help=f"padded frames per micro-batch (default: {d.max_frames})")
    p.add_argument("--val-batches", type=int, help=f"validation batches per task (default: {d.val_batches})")
    p.add_argument("--nonfinite", choices=NONFINITE_POLICIES, help="a NaN/Inf loss or gradient: skip the batch or "
                   f"stop the run (default: {d.nonfinite})")
    p.add_argument("--save-every", type=int,
                   help=f"steps between saved resumable states, 0 = none (default: {d.save_every})")
    p.add_argument("--seed", type=int, help=f"(default: {d.seed})")
    p.add_argument("--device", help=f"auto, cpu or cuda (default: {d.device})")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """``--config`` (or the defaults) with every flag given on the command line applied over it."""
    cfg = FinetuneConfig.load(args.config) if args.config else FinetuneConfig()
    given = {f: getattr(args, dest) for dest, f in FLAGS.items() if getattr(args, dest) is not None}
    if args.templates:
        given["templates"] = list(args.templates)
    if "lora_rank" in given:  # a mode flag replaces the file's mode
        given.setdefault("freeze_layers", 0)
    if "freeze_layers" in given:
        given.setdefault("lora_rank", 0)
    return dataclasses.replace(cfg, **given)


def main(args) -> int:
    check_writable(args.out, "dir", "--out")
    r = finetune(args.checkpoint, args.shards, args.out, config_from_args(args), progress=not args.no_progress)
    print(format_report(r))
    print(f"checkpoint: {args.out} (report: {Path(args.out) / 'finetune_report.json'})")
    return 0
