"""``unisono finetune``: teach a trained checkpoint a new task without disturbing the ones it knows.

The new task takes a free task slot of the checkpoint's vocabulary (the task range has a fixed number
of slots, so no id moves and the embedding table and output heads keep their size; the rows of the
other ids are untouched). The model is trained on the new task's shards, optionally mixed with shards
of the old tasks (``--replay``), in one of three modes:

- ``--lora-rank R``: low-rank adapters on the attention and MLP projections of the transformer(s);
  every base weight is frozen except the new task token's embedding row; the adapters are merged
  into the weights when saving (the output is a plain checkpoint, no adapter code needed to load it);
- ``--freeze-layers N``: the first N transformer layers are frozen, the rest is trained;
- neither: full fine-tuning.

Output: a packaged checkpoint (``Pipeline.from_pretrained(OUT)`` loads it and ``unisono generate
--task NEW`` runs the new task) and ``OUT/finetune_report.json`` (steps, seconds, trainable parameters,
validation loss per task before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unisono.checkpoint import LM_PARTS, TEMPLATES, carried_parts, require_checkpoint, write_checkpoint
from unisono.errors import UnisonoError
from unisono.fileio import atomic_dir, write_json

DESCRIPTION = """Fine-tune a checkpoint on a NEW task (a new task id and template; every existing id unchanged).

Sequence:
  1. make the new task's shards with the checkpoint's vocabulary and tokenizers:
       unisono tokenize --data CORPUS --codec CKPT/codec --out NEW_SHARDS --vocab CKPT/vocab.json \\
           --tokenizers CKPT --templates configs/tasks/superres.yaml --tasks superres --splits train,valid
  2. fine-tune (LoRA rank 8, replaying the old tasks' shards for a quarter of the examples):
       unisono finetune --checkpoint CKPT --task superres --templates configs/tasks/superres.yaml \\
           --shards NEW_SHARDS --replay OLD_SHARDS --replay-weight 0.25 --lora-rank 8 --out CKPT_SR
  3. use it:  unisono generate superres --checkpoint CKPT_SR --narrowband speech_8k.wav -o wide.wav

Validation: the new task on NEW_SHARDS/valid; the old tasks on --val-shards (default: the valid split
of --replay). The report (OUT/finetune_report.json) gives both before and after fine-tuning.
"""

LORA_TARGETS = ("wqkv", "wo", "w13", "w2")  # the attention and MLP projections of unisono's transformer


# ------------------------------------------------------------------------------------------- LoRA
class LoRALinear(nn.Module):
    """``y = base(x) + (alpha / r) * x A^T B^T`` with ``A [r, in]`` random and ``B [out, r]`` zero, so the
    layer starts as exactly ``base``. The base weight is frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None):
        super().__init__()
        if rank < 1:
            raise UnisonoError(f"--lora-rank must be >= 1, got {rank}")
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.rank = int(rank)
        self.scale = float(alpha if alpha is not None else rank) / self.rank
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(self.rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, self.rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_a.to(x.dtype)), self.lora_b.to(x.dtype)) * self.scale

    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha / r) B A`` (``[out, in]``)."""
        return self.base.weight + (self.lora_b.float() @ self.lora_a.float()).to(self.base.weight.dtype) * self.scale


def _lora_parents(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """``(parent, attribute, full name)`` of every linear projection that gets an adapter: ``wqkv``, ``wo``,
    ``w13``, ``w2`` of unisono's own transformers, or every linear layer of a transformers backbone."""
    found = []
    for name, mod in model.named_modules():
        for attr, child in mod.named_children():
            if not isinstance(child, nn.Linear):
                continue
            full = f"{name}.{attr}" if name else attr
            if attr in LORA_TARGETS or full.startswith("backbone.body."):
                found.append((mod, attr, full))
    return found


def add_lora(model: nn.Module, rank: int, alpha: float | None = None) -> list[str]:
    """Freeze every parameter of ``model`` and put a :class:`LoRALinear` on each projection; returns
    their names."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = []
    for parent, attr, full in _lora_parents(model):
        setattr(parent, attr, LoRALinear(getattr(parent, attr), rank, alpha))
        names.append(full)
    if not names:
        raise UnisonoError("this model has no attention/MLP projections to put LoRA adapters on")
    return names


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Replace every :class:`LoRALinear` of ``model`` by a plain linear layer holding the merged weight;
    returns how many were merged. The state dict then has the base model's keys again."""
    n = 0
    for name, mod in list(model.named_modules()):
        for attr, child in list(mod.named_children()):
            if isinstance(child, LoRALinear):
                lin = child.base
                lin.weight.copy_(child.merged_weight())
                setattr(mod, attr, lin)
                n += 1
    return n


def freeze_layers(model: nn.Module, n: int) -> list[str]:
    """Freeze the first ``n`` layers of the global transformer (and, with ``n`` = all layers, nothing
    more: embeddings, heads and a multiscale model's local transformer stay trainable)."""
    layers = getattr(model.backbone, "layers", None)
    if layers is None:  # a transformers backbone: its decoder layers
        layers = getattr(getattr(model.backbone, "body", None), "layers", None)
    if layers is None:
        raise UnisonoError("--freeze-layers: cannot find this model's transformer layers")
    if not 0 <= n <= len(layers):
        raise UnisonoError(f"--freeze-layers must lie in 0..{len(layers)} (the model's layers), got {n}")
    frozen = []
    for i in range(n):
        for pname, p in layers[i].named_parameters():
            p.requires_grad_(False)
            frozen.append(f"layer{i}.{pname}")
    return frozen


# --------------------------------------------------------------------------------------- checks
def _split_dir(shards: Path, split: str) -> Path | None:
    d = shards / split
    if (d / "vocab.json").is_file():
        return d
    if split == "train" and (shards / "vocab.json").is_file() and any(shards.glob("*.safetensors")):
        return shards
    return None


def new_task_vocab(ckpt_vocab, shards_vocab, task: str, what: str):
    """The checkpoint's vocabulary with ``task`` added at the slot the shards gave it; every id of the
    checkpoint must mean the same in the shards (else a one-line error)."""
    from unisono.vocab import Vocab

    if task in ckpt_vocab.tasks:
        raise UnisonoError(f"task {task!r} already exists in the checkpoint (id {ckpt_vocab.task_id(task)}); "
                           "fine-tune it with `unisono train --init-from`, or pick a new task name")
    ckpt_vocab.check_compatible(shards_vocab, what=what, mine="the checkpoint")
    missing = [t for t in ckpt_vocab.tasks if t not in shards_vocab.tasks]
    if missing:
        raise UnisonoError(f"{what} were not made with the checkpoint's vocab.json (they lack its tasks {missing}); "
                           "tokenize with --vocab CKPT/vocab.json --tokenizers CKPT")
    if task not in shards_vocab.tasks:
        raise UnisonoError(f"{what} hold no task {task!r}; tokenize with --tasks {task} --templates FILE")
    slot = shards_vocab.tasks[task]
    tasks = dict(ckpt_vocab.tasks)
    tasks[task] = slot
    v = Vocab(ckpt_vocab._sizes(), ckpt_vocab.num_codebooks, ckpt_vocab.codebook_size, tasks, ckpt_vocab.fill,
              ckpt_vocab.fingerprints)
    return v


# ------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def validation_loss(model, sources: dict, pad_id: int, max_frames: int, max_batches: int, device) -> dict[str, float]:
    """Mean token cross-entropy per task over at most ``max_batches`` frame-budget batches of each source."""
    from unisono.train.data import collate

    was = model.training
    model.eval()
    out = {}
    for task in sorted(sources):
        tot = cnt = 0.0
        cur: list[dict] = []
        batches = 0

        def run(batch):
            mb = collate(batch, pad_id)
            r = model.loss(mb["frames"].to(device), mb["loss_mask"].to(device))
            return float(r["stream_sum"].sum()), float(r["stream_count"].sum())

        for ex in sources[task]():
            longest = max([e["frames"].shape[0] for e in cur] + [ex["frames"].shape[0]])
            if cur and (len(cur) + 1) * longest > max_frames:
                s, c = run(cur)
                tot, cnt, batches, cur = tot + s, cnt + c, batches + 1, []
                if batches >= max_batches:
                    break
            cur.append(ex)
        if cur and batches < max_batches:
            s, c = run(cur)
            tot, cnt = tot + s, cnt + c
        if cnt:
            out[task] = tot / cnt
    model.train(was)
    return out


def _crop_examples(src, max_frames: int):
    from unisono.train.data import _crop

    return lambda: (_crop(ex, max_frames) for ex in src())


# ------------------------------------------------------------------------------------------ run
def finetune(
    checkpoint,
    task: str,
    shards,
    out,
    templates: list | None = None,
    replay=None,
    replay_weight: float = 0.25,
    val_shards=None,
    lora_rank: int = 0,
    lora_alpha: float | None = None,
    freeze: int = 0,
    steps: int = 300,
    lr: float | None = None,
    warmup: int = 20,
    weight_decay: float = 0.0,
    max_frames: int = 2048,
    val_batches: int = 8,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Fine-tune ``checkpoint`` on ``task`` (see the module doc); returns the report written to
    ``out/finetune_report.json``."""
    from tqdm import tqdm

    from unisono.data.shards import ShardReader
    from unisono.lm import UnisonoLM
    from unisono.tasks import load_templates
    from unisono.train.data import TaskMixture, TokenBudgetBatcher, collate
    from unisono.train.trainer import lr_factor
    from unisono.vocab import Vocab

    ckpt, shards, out = Path(checkpoint), Path(shards), Path(out)
    require_checkpoint(ckpt, "--checkpoint", LM_PARTS)
    if lora_rank and freeze:
        raise UnisonoError("choose one of --lora-rank and --freeze-layers (LoRA already freezes every base weight)")
    if lora_rank < 0 or freeze < 0:
        raise UnisonoError("--lora-rank and --freeze-layers must be >= 0")
    if not 0.0 <= replay_weight < 1.0:
        raise UnisonoError(f"--replay-weight must lie in [0, 1), got {replay_weight}")
    if steps < 1:
        raise UnisonoError(f"--steps must be >= 1, got {steps}")
    if out.resolve() == ckpt.resolve():
        raise UnisonoError("--out must differ from --checkpoint (the base checkpoint is kept as it is)")
    ckpt_vocab = Vocab.load(ckpt / "vocab.json")
    if task in ckpt_vocab.tasks:  # before anything else is read
        raise UnisonoError(f"task {task!r} already exists in the checkpoint (id {ckpt_vocab.task_id(task)}); "
                           "fine-tune it with `unisono train --init-from`, or pick a new task name")
    tpl_files = [ckpt / TEMPLATES] if (ckpt / TEMPLATES).is_file() else []
    all_templates = load_templates(tpl_files + [Path(p) for p in (templates or [])])
    if task not in all_templates:
        raise UnisonoError(f"no template for task {task!r} in {', '.join(map(str, templates or [])) or 'the built-in templates'}; "
                           "pass the YAML file that defines it with --templates")

    train_dir = _split_dir(shards, "train")
    if train_dir is None:
        raise UnisonoError(f"--shards {shards} holds no train split (train/vocab.json); make it with `unisono tokenize`")
    vocab = new_task_vocab(ckpt_vocab, Vocab.load(train_dir / "vocab.json"), task, f"the shards in {train_dir}")
    valid_dir = _split_dir(shards, "valid")
    if valid_dir is None:
        raise UnisonoError(f"--shards {shards} holds no valid split; tokenize with --splits train,valid so the new "
                           "task's validation loss can be measured")

    # sources: the new task, the replayed old tasks, and their validation sets
    def reader(d, tasks):
        return lambda: ShardReader(d, tasks=tasks, vocab=vocab, shuffle=False)

    train_src = {task: reader(train_dir, [task])}
    val_src = {task: reader(valid_dir, [task])}
    weights = {task: 1.0}
    replay_tasks: list[str] = []
    if replay is not None:
        rdir = _split_dir(Path(replay), "train")
        if rdir is None:
            raise UnisonoError(f"--replay {replay} holds no train split of token shards")
        rv = Vocab.load(rdir / "vocab.json")
        ckpt_vocab.check_compatible(rv, what=f"the replay shards in {rdir}", mine="the checkpoint")
        from unisono.data.shards import list_shards, task_of_shard

        replay_tasks = sorted({task_of_shard(p) for p in list_shards(rdir)} & set(ckpt_vocab.tasks))
        if not replay_tasks:
            raise UnisonoError(f"--replay {replay} holds no shards of the checkpoint's tasks")
        if replay_weight > 0:
            for t in replay_tasks:
                train_src[t] = reader(rdir, [t])
                weights[t] = replay_weight / (1.0 - replay_weight) / len(replay_tasks)
    old_val_dir = None
    if val_shards is not None:
        old_val_dir = _split_dir(Path(val_shards), "valid") or _split_dir(Path(val_shards), "train")
        if old_val_dir is None:
            raise UnisonoError(f"--val-shards {val_shards} holds no token shards")
    elif replay is not None:
        old_val_dir = _split_dir(Path(replay), "valid")
    if old_val_dir is not None:
        ov = Vocab.load(old_val_dir / "vocab.json")
        ckpt_vocab.check_compatible(ov, what=f"the validation shards in {old_val_dir}", mine="the checkpoint")
        from unisono.data.shards import list_shards, task_of_shard

        for t in sorted({task_of_shard(p) for p in list_shards(old_val_dir)} & set(ckpt_vocab.tasks)):
            val_src[t] = reader(old_val_dir, [t])
    train_src = {t: _crop_examples(s, max_frames) for t, s in train_src.items()}
    val_src = {t: _crop_examples(s, max_frames) for t, s in val_src.items()}

    # the model
    torch.manual_seed(seed)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    model = UnisonoLM.from_pretrained(ckpt)
    if model.cfg.vocab_size != vocab.size or model.cfg.num_streams != vocab.num_codebooks:
        raise UnisonoError(f"{ckpt}: the model (V={model.cfg.vocab_size}, K={model.cfg.num_streams}) does not match its "
                           f"vocab.json (V={vocab.size}, K={vocab.num_codebooks})")
    model.to(dev)
    params_total = model.num_parameters()
    t0 = time.perf_counter()
    before = validation_loss(model, val_src, vocab.pad_id, max_frames, val_batches, dev)
    eval_s = time.perf_counter() - t0

    mode = "lora" if lora_rank else ("freeze" if freeze else "full")
    adapted: list[str] = []
    if lora_rank:
        adapted = add_lora(model, lora_rank, lora_alpha)
        model.train_only_embedding_rows([vocab.task_id(task)])
    elif freeze:
        freeze_layers(model, freeze)
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = model.trainable_parameters()
    if lr is None:
        lr = 1e-3 if lora_rank else 3e-4
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2 and n != "tok_emb.weight"]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.dim() < 2 or n == "tok_emb.weight")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, min(warmup, steps // 2), steps, 0.1))
    batcher = TokenBudgetBatcher(TaskMixture(train_src, weights, seed=seed), max_frames, pool_size=64, seed=seed)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext())

    model.train()
    losses: list[float] = []
    seen: dict[str, int] = {}
    t1 = time.perf_counter()
    bar = tqdm(total=steps, desc=f"finetune {task} ({mode})", unit="step", disable=not progress, file=sys.stderr)
    for step in range(steps):
        mb = collate(next(batcher), vocab.pad_id)
        for t in mb["tasks"]:
            seen[t] = seen.get(t, 0) + 1
        with autocast:
            r = model.loss(mb["frames"].to(dev), mb["loss_mask"].to(dev))
        loss = r["loss"]
        if not torch.isfinite(loss):
            raise UnisonoError(f"non-finite loss at fine-tuning step {step + 1}; lower --lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    train_s = time.perf_counter() - t1

    if lora_rank:
        merge_lora(model)
    after = validation_loss(model, val_src, vocab.pad_id, max_frames, val_batches, dev)

    old = sorted(t for t in before if t != task)
    report = {
        "checkpoint": str(ckpt), "task": task, "task_id": vocab.task_id(task), "mode": mode,
        "lora_rank": lora_rank or None, "lora_layers": len(adapted) or None, "freeze_layers": freeze or None,
        "steps": steps, "lr": lr, "max_frames": max_frames, "replay_tasks": replay_tasks if replay_weight > 0 else [],
        "replay_weight": replay_weight if replay_tasks else 0.0, "examples_seen": seen,
        "train_seconds": round(train_s, 2), "eval_seconds_before": round(eval_s, 2), "device": str(dev),
        "parameters_total": params_total, "parameters_trainable": n_trainable,
        "train_loss_first": losses[0], "train_loss_last": float(sum(losses[-10:]) / len(losses[-10:])),
        "val_loss_before": before, "val_loss_after": after,
        "new_task_val_loss": {"before": before.get(task), "after": after.get(task)},
        "old_tasks_val_loss_relative_change": {t: (after[t] - before[t]) / before[t] for t in old if t in after},
    }
    kept = {n: t for n, t in all_templates.items() if n in vocab.tasks}
    with atomic_dir(out) as tmp:  # the packaged checkpoint, renamed into place when complete
        write_checkpoint(tmp, model.to("cpu"), vocab, templates=kept, **carried_parts(ckpt))
        write_json(tmp / "finetune_report.json", report)
    return report


def print_report(r: dict, file=None) -> None:
    file = file or sys.stdout
    print(f"{r['task']} (task id {r['task_id']}), {r['mode']}: {r['steps']} steps in {r['train_seconds']:.1f} s, "
          f"{r['parameters_trainable']:,} of {r['parameters_total']:,} parameters trained", file=file)
    print(f"{'val loss':<20}{'before':>10}{'after':>10}{'change':>10}", file=file)
    for t in sorted(r["val_loss_after"], key=lambda t: (t != r["task"], t)):
        b, a = r["val_loss_before"].get(t), r["val_loss_after"][t]
        ch = f"{100 * (a - b) / b:+.1f}%" if b else ""
        print(f"{t + (' (new)' if t == r['task'] else ''):<20}{b if b is not None else float('nan'):>10.4f}{a:>10.4f}{ch:>10}",
              file=file)


# ------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="the trained checkpoint to start from (a packaged checkpoint dir)")
    p.add_argument("--task", required=True, help="name of the NEW task (must not exist in the checkpoint)")
    p.add_argument("--templates", action="append", default=[], help="YAML file defining the new task's template "
                   "(repeatable), e.g. configs/tasks/superres.yaml")
    p.add_argument("--shards", required=True, help="the new task's shards (train/ and valid/), made by `unisono tokenize "
                   "--vocab CKPT/vocab.json --tokenizers CKPT --templates FILE --tasks NEW`")
    p.add_argument("--out", required=True, help="output checkpoint directory (packaged; loadable by Pipeline.from_pretrained)")
    p.add_argument("--replay", help="shards of the old tasks to mix in (their train split; their valid split is "
                   "used for the old tasks' validation loss)")
    p.add_argument("--replay-weight", type=float, default=0.25,
                   help="fraction of training examples drawn from --replay (default: %(default)s)")
    p.add_argument("--val-shards", help="shards whose valid split measures the old tasks (default: --replay's)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--lora-rank", type=int, default=0, help="LoRA adapters of this rank on the attention/MLP "
                      "projections, base weights frozen, merged when saving (default: off)")
    mode.add_argument("--freeze-layers", type=int, default=0, help="freeze the first N transformer layers "
                      "(default: 0; with neither option every weight is trained)")
    p.add_argument("--lora-alpha", type=float, help="LoRA scale numerator (default: the rank, i.e. scale 1)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default: %(default)s)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 1e-3 with LoRA, 3e-4 otherwise)")
    p.add_argument("--warmup", type=int, default=20, help="warm-up steps (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=2048, help="padded frames per batch (default: %(default)s)")
    p.add_argument("--val-batches", type=int, default=8, help="validation batches per task (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args) -> int:
    r = finetune(args.checkpoint, args.task, args.shards, args.out, templates=args.templates, replay=args.replay,
                 replay_weight=args.replay_weight, val_shards=args.val_shards, lora_rank=args.lora_rank,
                 lora_alpha=args.lora_alpha, freeze=args.freeze_layers, steps=args.steps, lr=args.lr,
                 warmup=args.warmup, max_frames=args.max_frames, val_batches=args.val_batches, seed=args.seed,
                 device=args.device, progress=not args.no_progress)
    print_report(r)
    print(f"checkpoint: {args.out} (report: {Path(args.out) / 'finetune_report.json'})")
    return 0
