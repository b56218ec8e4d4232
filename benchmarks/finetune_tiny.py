"""Fine-tuning a new task on a tiny model: new task learned vs old tasks kept, per mode, with and without replay.

    python benchmarks/finetune_tiny.py                       # table on stdout
    python benchmarks/finetune_tiny.py --steps 160 --json ft.json

A tiny delay-pattern LM (d_model 48, 2 layers) is trained on two synthetic codec tasks (copy; shift: every
code + 3), then `unisono.train.finetune.finetune` teaches it a third (negate: every code c -> 15 - c) in
each mode (LoRA, first layer frozen, full) with and without replay of the old tasks. For each run:
seconds, trainable parameters, the new task's validation loss and the old tasks' before/after (nats per
token). CPU, one thread; the numbers are a property of this toy set-up, not of a real model.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

K, CB, T = 2, 16, 6
OLD, NEW = ("copy", "shift"), "negate"


def template(name: str) -> dict:
    return {
        "description": f"synthetic {name}",
        "conditions": [{"name": "x", "modality": "codec", "source": "recording.x"}],
        "target": {"name": "y", "modality": "codec", "source": "audio"},
    }


def make_shards(root: Path, vocab, tasks, n_train: int = 96, n_valid: int = 24) -> Path:
    import torch

    from unisono.data.shards import shard_name, write_shard
    from unisono.tasks import Segment, build_example, parse_templates

    for split, n, seed in (("train", n_train, 1), ("valid", n_valid, 2)):
        vocab.save(root / split / "vocab.json")
        for task in tasks:
            tpl = parse_templates({"version": 1, "tasks": {task: template(task)}})[task]
            g = torch.Generator().manual_seed(seed * 100 + len(task))
            exs = []
            for i in range(n):
                x = torch.randint(0, CB, (K, T), generator=g)
                y = {"copy": x.clone(), "shift": (x + 3) % CB, "negate": CB - 1 - x}[task]
                exs.append(
                    build_example(vocab, tpl, [Segment("codec", codes=x), Segment("codec", codes=y)], f"{task}-{i}")
                )
            write_shard(root / split / shard_name(task, 0), exs, vocab)
    vocab.save(root / "vocab.json")
    return root


def train_base(vocab, shards: Path, out: Path, steps: int) -> Path:
    import torch
    import yaml

    from unisono.data.shards import ShardReader
    from unisono.lm import LMConfig, UnisonoLM
    from unisono.train.data import collate

    torch.manual_seed(0)
    model = UnisonoLM.from_config(LMConfig(vocab_size=vocab.size, num_streams=K, pad_id=vocab.pad_id, pattern="delay",
                                           d_model=48, n_layers=2, n_heads=2, max_seq_len=128))
    data = list(ShardReader(shards / "train"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        mb = collate([data[i] for i in torch.randint(0, len(data), (16,), generator=g).tolist()], vocab.pad_id)
        model.loss(mb["frames"], mb["loss_mask"])["loss"].backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out, vocab_json=shards / "vocab.json")
    (out / "tasks.yaml").write_text(yaml.safe_dump({"version": 1, "tasks": {t: template(t) for t in OLD}}))
    return out


RUNS = [  # name, finetune keyword arguments
    ("lora r8", {"lora_rank": 8, "lr": 3e-3}),
    ("freeze 1 layer", {"freeze_layers": 1, "lr": 1e-3}),
    ("full", {"lr": 1e-3}),
]


def main() -> int:
    import torch
    import yaml

    from unisono.train.finetune import FinetuneConfig, finetune
    from unisono.vocab import Vocab

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=160, help="fine-tuning steps per run (default: %(default)s)")
    ap.add_argument(
        "--base-steps", type=int, default=250, help="training steps of the base model (default: %(default)s)"
    )
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="unisono-ft-"))
    try:
        vocab = Vocab.build(list(OLD), num_codebooks=K, codebook_size=CB, bpe=8)
        old = make_shards(root / "old", vocab, OLD)
        t0 = time.perf_counter()
        ckpt = train_base(vocab, old, root / "ckpt", args.base_steps)
        base_s = time.perf_counter() - t0
        new = make_shards(root / "new", vocab.with_task(NEW), [NEW])
        tpl = root / "negate.yaml"
        tpl.write_text(yaml.safe_dump({"version": 1, "tasks": {NEW: template(NEW)}}))
        rows = []
        for name, kw in RUNS:
            for rw in (0.0, 0.5):
                cfg = FinetuneConfig(task=NEW, templates=[str(tpl)], replay=str(old), replay_weight=rw,
                                     steps=args.steps, max_frames=512, seed=0, **kw)
                r = finetune(ckpt, new, root / "out", cfg, progress=False)
                b, a = r["val_loss_before"], r["val_loss_after"]
                rows.append({"run": name, "replay_weight": rw, **kw, "steps": args.steps, "seconds": r["train_seconds"],
                             "trainable": r["parameters_trainable"], "total": r["parameters_total"],
                             "new_before": b[NEW], "new_after": a[NEW],
                             "old_before": {t: b[t] for t in OLD}, "old_after": {t: a[t] for t in OLD},
                             "old_max_rise_nats": max(a[t] - b[t] for t in OLD)})
        hdr = f"{'mode':<16}{'replay':>7}{'s':>7}{'trainable':>11}{'new before':>12}{'new after':>11}" + \
              "".join(f"{t + ' b->a':>16}" for t in OLD) + f"{'max rise':>10}"
        print(f"base model: {args.base_steps} steps in {base_s:.1f} s; fine-tuning: {args.steps} steps per run")
        print(hdr)
        for r in rows:
            print(f"{r['run']:<16}{r['replay_weight']:>7.2f}{r['seconds']:>7.1f}{r['trainable']:>11,}"
                  f"{r['new_before']:>12.3f}{r['new_after']:>11.3f}"
                  + "".join(f"{r['old_before'][t]:>8.3f}->{r['old_after'][t]:<6.3f}" for t in OLD)
                  + f"{r['old_max_rise_nats']:>+10.3f}")
        if args.json:
            from unisono.fileio import write_json

            write_json(args.json, {"base_steps": args.base_steps, "base_seconds": base_s, "runs": rows,
                                   "torch_threads": 1})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
