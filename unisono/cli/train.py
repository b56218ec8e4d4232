"""``unisono train``: train the language model on token shards (one process, or under torchrun)."""

from __future__ import annotations

import argparse

from unisono.train.launch import make_trainer
from unisono.train.settings import parse_sets

DESCRIPTION = """Train the unisono language model.

The config is a YAML file with two sections: `model` (pattern, sizes; vocab_size, num_streams and
pad_id are read from the shards' vocab.json when absent) and `train` (steps, learning rate, frame
budget per micro-batch, task weights, condition dropout, EMA...). See configs/lm/ and docs/lm.md.

Resuming is automatic: run the same command again with the same --out and training continues from
the newest complete checkpoint in RUN/checkpoints, with the same loss curve as an uninterrupted run.

Many processes (DDP, or FSDP2 with `train.fsdp: true`):
  torchrun --nproc_per_node 8 -m unisono train --config configs/lm/small.yaml --shards DIR --out RUN
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="YAML recipe with `model` and `train` sections (configs/lm/*.yaml)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", help="directory of token shards (with vocab.json), made by `unisono tokenize`, or a "
                     "token store (`unisono tokenize --format store`: examples assembled as read)")
    src.add_argument("--toy", action="store_true",
                     help="train on built-in synthetic copy/count tasks (a smoke test that needs no data)")
    p.add_argument("--val-shards", help="directory of validation shards or store (validation loss per task)")
    p.add_argument("--out", required=True, help="run directory: checkpoints, log.jsonl, tb/ (TensorBoard)")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--max-seconds", type=float,
                   help="stop after this many seconds of wall-clock time, saved (overrides train.max_seconds; the "
                        "learning-rate schedule is sized to it)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (YAML syntax), e.g. --set model.d_model=64 --set train.lr=1e-3")
    p.add_argument("--init-from", help="start from the weights of this checkpoint directory (fine-tuning)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    overrides = parse_sets(args.set)
    if args.max_seconds is not None:
        overrides.setdefault("train", {})["max_seconds"] = args.max_seconds
    trainer = make_trainer(args.config, args.out, shards=None if args.toy else args.shards, val_shards=args.val_shards,
                           toy=args.toy, max_steps=args.max_steps, init_from=args.init_from, overrides=overrides)
    if trainer.rank == 0:
        print(f"model: {trainer.model.pattern}, {trainer.model.num_parameters() / 1e6:.2f}M parameters; "
              f"device {trainer.device}, {trainer.world} process(es); run dir {args.out}")
    last = trainer.train(progress=not args.no_progress)
    if trainer.rank == 0 and last:
        print(f"step {last['step']}: loss {last['loss']:.4f}; checkpoint {trainer.latest_checkpoint()}")
    return 0
