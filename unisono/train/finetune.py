"""``unisono finetune``: teach a trained checkpoint a new task without disturbing the ones it knows.

The new task takes a free task slot of the checkpoint's vocabulary (the task range has a fixed number
of slots, so no id moves and the embedding table and output heads keep their size; the rows of the
other ids are untouched). The model is trained on the new task's shards, optionally mixed with shards
of the old tasks (``replay``), in one of three modes:

- ``lora_rank: R``: low-rank adapters (:mod:`unisono.train.lora`) on the attention and MLP projections of
  the transformer(s); every base weight is frozen except the new task token's embedding row; the adapters
  are merged into the weights when saving (the output is a plain checkpoint, no adapter code needed to load it);
- ``freeze_layers: N``: the first N transformer layers are frozen, the rest is trained;
- neither: full fine-tuning.

A run is described by a :class:`FinetuneConfig` (a strict YAML file: ``unisono finetune --config FILE``,
configs/finetune/; CLI flags override it). Each step is :class:`unisono.train.loop.OptimStep` (accumulation,
clipping, the non-finite policy, the schedule). Every ``save_every`` steps the run's state is saved in
``OUT.resume/``: the same command run again after an interruption continues from there (same batches, same
result); it is removed when the run completes.

Output: a packaged checkpoint (``Pipeline.from_pretrained(OUT)`` loads it and ``unisono generate
--task NEW`` runs the new task) and ``OUT/finetune_report.json`` (steps, seconds, trainable parameters,
validation loss per task before and after).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from unisono.checkpoint import LM_PARTS, TEMPLATES, carried_parts, require_checkpoint, write_checkpoint
from unisono.data.store import open_examples, tasks_in
from unisono.errors import UnisonoError
from unisono.fileio import atomic_dir, write_json
from unisono.lm import UnisonoLM
from unisono.tasks import load_templates
from unisono.train.data import TaskMixture, TokenBudgetBatcher, collate, crop_example, model_inputs
from unisono.train.loop import (
    NONFINITE_POLICIES,
    OptimStep,
    ResumeState,
    StepSettings,
    make_optimizer,
    validation_loss,
)
from unisono.train.lora import add_lora, merge_lora
from unisono.train.settings import read_settings_file, resolve_paths, settings_from_dict
from unisono.vocab import Vocab

log = logging.getLogger("unisono")

# ------------------------------------------------------------------------------------------ settings
@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run is told besides its checkpoint, new-task shards and output.

    ``task``: the NEW task's name; ``templates``: YAML files defining it; ``replay``: shards of the old
    tasks mixed in for ``replay_weight`` of the examples; ``val_shards``: shards whose valid split measures
    the old tasks (default ``replay``'s). Mode: ``lora_rank`` (``lora_alpha``, default the rank) or
    ``freeze_layers`` or neither (full). ``lr`` None: 1e-3 with LoRA, 3e-4 otherwise; ``warmup`` steps
    (at most half the steps), then cosine decay to ``min_lr_ratio``. ``max_frames``: padded frames per
    micro-batch; ``grad_accum`` micro-batches per step. ``nonfinite``/``max_skipped``: the non-finite policy
    (:class:`unisono.train.loop.StepSettings`). ``save_every``: steps between saved resumable states (0: none)."""

    task: str = ""
    templates: list[str] = field(default_factory=list)
    replay: str | None = None
    replay_weight: float = 0.25
    val_shards: str | None = None
    lora_rank: int = 0
    lora_alpha: float | None = None
    freeze_layers: int = 0
    steps: int = 300
    lr: float | None = None
    warmup: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    grad_accum: int = 1
    max_frames: int = 2048
    pool_size: int = 64
    val_batches: int = 8
    nonfinite: str = "skip"
    max_skipped: int = 10
    save_every: int = 50
    bf16: bool = True
    seed: int = 0
    device: str = "auto"

    PATHS = ("templates", "replay", "val_shards")  # read from a settings file's folder when relative

    @classmethod
    def from_dict(cls, d: dict, where: str = "finetune config") -> FinetuneConfig:
        return settings_from_dict(cls, d, where)

    @classmethod
    def load(cls, path: str | Path) -> FinetuneConfig:
        """The settings of YAML file ``path`` (unknown keys are one-line errors)."""
        d = read_settings_file(path, "see configs/finetune/ for examples")
        if isinstance(d.get("templates"), str):
            d["templates"] = [d["templates"]]
        return cls.from_dict(resolve_paths(d, cls.PATHS, Path(path).resolve().parent), f"finetune config {path}")

    @property
    def mode(self) -> str:
        return "lora" if self.lora_rank else ("freeze" if self.freeze_layers else "full")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (1e-3 if self.lora_rank else 3e-4)

    def validate(self) -> FinetuneConfig:
        if not self.task:
            raise UnisonoError("no task to fine-tune: give --task NAME (or `task:` in the --config file)")
        if not isinstance(self.templates, list):
            raise UnisonoError(f"templates must be a list of YAML files, got {self.templates!r}")
        if self.lora_rank and self.freeze_layers:
            raise UnisonoError("choose one of --lora-rank and --freeze-layers (LoRA already freezes every base weight)")
        if self.lora_rank < 0 or self.freeze_layers < 0:
            raise UnisonoError("--lora-rank and --freeze-layers must be >= 0")
        if not 0.0 <= self.replay_weight < 1.0:
            raise UnisonoError(f"--replay-weight must lie in [0, 1), got {self.replay_weight}")
        if self.steps < 1 or self.grad_accum < 1 or self.max_frames < 1 or self.val_batches < 1:
            raise UnisonoError("--steps, grad_accum, --max-frames and --val-batches must be >= 1")
        if self.save_every < 0:
            raise UnisonoError(f"save_every must be >= 0 (0: no resumable state), got {self.save_every}")
        self.step_settings()
        return self

    def step_settings(self) -> StepSettings:
        """The optimisation step of this run (checked)."""
        if self.nonfinite not in NONFINITE_POLICIES:
            raise UnisonoError(f"finetune config: nonfinite must be 'skip' or 'stop', got {self.nonfinite!r}")
        return StepSettings(lr=self.peak_lr, total_steps=self.steps, warmup_steps=min(self.warmup, self.steps // 2),
                            min_lr_ratio=self.min_lr_ratio, grad_clip=self.grad_clip, nonfinite=self.nonfinite,
                            max_skipped=self.max_skipped, bf16=self.bf16).validate("finetune config")


# --------------------------------------------------------------------------------------- model modes
def freeze_layers(model: torch.nn.Module, n: int) -> list[str]:
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


def adapt_model(model: UnisonoLM, cfg: FinetuneConfig, task_id: int) -> list[str]:
    """Put ``model`` in ``cfg``'s mode (LoRA adapters + the new task's embedding row, frozen layers, or every
    weight trainable); returns the names of the adapted projections (LoRA)."""
    if cfg.lora_rank:
        adapted = add_lora(model, cfg.lora_rank, cfg.lora_alpha)
        model.train_only_embedding_rows([task_id])
        return adapted
    if cfg.freeze_layers:
        freeze_layers(model, cfg.freeze_layers)
    return []


# ------------------------------------------------------------------------------------------ data
def split_dir(shards: Path, split: str) -> Path | None:
    """``shards/split`` when it holds shards (``vocab.json``); for ``train``, also ``shards`` itself."""
    d = shards / split
    if (d / "vocab.json").is_file():
        return d
    if split == "train" and (shards / "vocab.json").is_file() and any(shards.glob("*.safetensors")):
        return shards
    return None


def new_task_vocab(ckpt_vocab: Vocab, shards_vocab: Vocab, task: str, what: str) -> Vocab:
    """The checkpoint's vocabulary with ``task`` added at the slot the shards gave it; every id of the
    checkpoint must mean the same in the shards (else a one-line error)."""
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
    return Vocab.from_dict({**ckpt_vocab.to_dict(), "tasks": {**ckpt_vocab.tasks, task: shards_vocab.tasks[task]}})


def task_templates(ckpt: Path, ckpt_vocab: Vocab, cfg: FinetuneConfig) -> dict:
    """The checkpoint's templates and ``cfg.templates``; one-line errors for a task the checkpoint already has
    or one no template defines."""
    if cfg.task in ckpt_vocab.tasks:  # before anything else is read
        raise UnisonoError(f"task {cfg.task!r} already exists in the checkpoint (id {ckpt_vocab.task_id(cfg.task)}); "
                           "fine-tune it with `unisono train --init-from`, or pick a new task name")
    tpl_files = [ckpt / TEMPLATES] if (ckpt / TEMPLATES).is_file() else []
    templates = load_templates(tpl_files + [Path(p) for p in cfg.templates])
    if cfg.task not in templates:
        where = ", ".join(map(str, cfg.templates)) or "the built-in templates"
        raise UnisonoError(f"no template for task {cfg.task!r} in {where}; "
                           "pass the YAML file that defines it with --templates")
    return templates


@dataclass
class FinetuneData:
    """The run's vocabulary (the checkpoint's + the new task) and its sources (task -> zero-argument
    callable yielding examples cropped to ``max_frames``): training (with ``weights``) and validation."""

    vocab: Vocab
    train: dict = field(default_factory=dict)
    val: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    replay_tasks: list[str] = field(default_factory=list)

    def add(self, kind: str, directory: Path, task: str, max_frames: int) -> None:
        vocab = self.vocab

        def source():
            reader = open_examples(directory, tasks=[task], vocab=vocab, shuffle=False)
            return (crop_example(ex, max_frames) for ex in reader)

        getattr(self, kind)[task] = source


def shard_tasks(directory: Path, ckpt_vocab: Vocab, what: str) -> list[str]:
    """The checkpoint's tasks that the shards (or token store) of ``directory`` hold (checked against its
    vocabulary)."""
    ckpt_vocab.check_compatible(Vocab.load(directory / "vocab.json"), what=f"{what} in {directory}",
                                mine="the checkpoint")
    return sorted(set(tasks_in(directory)) & set(ckpt_vocab.tasks))


def finetune_data(ckpt_vocab: Vocab, shards: Path, cfg: FinetuneConfig) -> FinetuneData:
    """Check the shards (the new task's, the replayed and the validation ones) and make the sources."""
    train_dir, valid_dir = split_dir(shards, "train"), split_dir(shards, "valid")
    if train_dir is None:
        raise UnisonoError(
            f"--shards {shards} holds no train split (train/vocab.json); make it with `unisono tokenize`"
        )
    data = FinetuneData(new_task_vocab(ckpt_vocab, Vocab.load(train_dir / "vocab.json"), cfg.task,
                                       f"the shards in {train_dir}"))
    if valid_dir is None:
        raise UnisonoError(f"--shards {shards} holds no valid split; tokenize with --splits train,valid so the new "
                           "task's validation loss can be measured")
    data.add("train", train_dir, cfg.task, cfg.max_frames)
    data.add("val", valid_dir, cfg.task, cfg.max_frames)
    data.weights[cfg.task] = 1.0
    if cfg.replay is not None:
        rdir = split_dir(Path(cfg.replay), "train")
        if rdir is None:
            raise UnisonoError(f"--replay {cfg.replay} holds no train split of token shards")
        data.replay_tasks = shard_tasks(rdir, ckpt_vocab, "the replay shards")
        if not data.replay_tasks:
            raise UnisonoError(f"--replay {cfg.replay} holds no shards of the checkpoint's tasks")
        for t in data.replay_tasks if cfg.replay_weight > 0 else []:
            data.add("train", rdir, t, cfg.max_frames)
            data.weights[t] = cfg.replay_weight / (1.0 - cfg.replay_weight) / len(data.replay_tasks)
    old_val_dir = None
    if cfg.val_shards is not None:
        old_val_dir = split_dir(Path(cfg.val_shards), "valid") or split_dir(Path(cfg.val_shards), "train")
        if old_val_dir is None:
            raise UnisonoError(f"--val-shards {cfg.val_shards} holds no token shards")
    elif cfg.replay is not None:
        old_val_dir = split_dir(Path(cfg.replay), "valid")
    for t in shard_tasks(old_val_dir, ckpt_vocab, "the validation shards") if old_val_dir else []:
        data.add("val", old_val_dir, t, cfg.max_frames)
    return data


# ------------------------------------------------------------------------------------------ training
def pick_device(name: str) -> torch.device:
    """``auto`` (a GPU when one is visible, else the CPU), ``cpu`` or ``cuda[:N]``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UnisonoError(f"--device {name} asked for, but no CUDA device is available; use --device cpu")
    return torch.device(name)


def load_base(ckpt: Path, vocab: Vocab, device: torch.device) -> UnisonoLM:
    """The checkpoint's language model on ``device``, checked against the run's vocabulary."""
    model = UnisonoLM.from_pretrained(ckpt)
    if model.cfg.vocab_size != vocab.size or model.cfg.num_streams != vocab.num_codebooks:
        raise UnisonoError(
            f"{ckpt}: the model (V={model.cfg.vocab_size}, K={model.cfg.num_streams}) does not match its "
            f"vocab.json (V={vocab.size}, K={vocab.num_codebooks})"
        )
    return model.to(device)


def train_steps(model: UnisonoLM, optim: OptimStep, batcher: TokenBudgetBatcher, cfg: FinetuneConfig, pad_id: int,
                resume: ResumeState, run: dict, progress: bool) -> None:
    """Optimisation steps until ``cfg.steps`` updates are made, saving the resumable state every
    ``cfg.save_every`` updates. ``run`` (the report's running values: ``losses``, ``seen``, ``train_seconds``)
    is updated in place."""
    dev = next(model.parameters()).device
    model.train()
    bar = tqdm(total=cfg.steps, initial=optim.step, desc=f"finetune {cfg.task} ({cfg.mode})", unit="step",
               disable=not progress, file=sys.stderr)
    t0 = time.perf_counter() - run["train_seconds"]
    while optim.step < cfg.steps:
        mbs = [collate(next(batcher), pad_id, feature_id=model.cfg.feature_id) for _ in range(cfg.grad_accum)]
        for t in (t for mb in mbs for t in mb["tasks"]):
            run["seen"][t] = run["seen"].get(t, 0) + 1
        where = "; ".join(f"{t}:{i}" for mb in mbs for t, i in zip(mb["tasks"], mb["ids"]))
        r = optim(mbs, lambda mb: model.loss(**model_inputs(mb, dev)),
                  weights=[float(mb["loss_mask"].sum()) for mb in mbs], batch=where)
        if r.skipped:
            continue
        run["losses"].append(r.loss)
        run["train_seconds"] = time.perf_counter() - t0
        if cfg.save_every and optim.step % cfg.save_every == 0 and optim.step < cfg.steps:
            resume.save({**run, "model": model.state_dict(), "optim": optim.state_dict(), "data": batcher.state_dict(),
                         "torch_rng": torch.get_rng_state()})
        bar.update(1)
        bar.set_postfix(loss=f"{r.loss:.3f}")
    bar.close()


def restore(state: dict, model: UnisonoLM, optim: OptimStep, batcher: TokenBudgetBatcher) -> dict:
    """Load a saved state into the run's objects; returns the report's running values."""
    model.load_state_dict(state["model"])
    optim.load_state_dict(state["optim"])
    batcher.load_state_dict(state["data"])
    torch.set_rng_state(state["torch_rng"])
    log.info("resuming fine-tuning after step %d", optim.step)
    return {k: state[k] for k in ("losses", "seen", "train_seconds", "before", "eval_seconds_before")}


# ------------------------------------------------------------------------------------------ run
def finetune(checkpoint, data, out, config: FinetuneConfig | None = None, progress: bool = True) -> dict:
    """Fine-tune ``checkpoint`` on ``config.task`` with the new task's shards ``data`` (see the module doc);
    write the packaged checkpoint to ``out`` and return the report written to ``out/finetune_report.json``."""
    cfg = (config or FinetuneConfig()).validate()
    ckpt, shards, out = Path(checkpoint), Path(data), Path(out)
    require_checkpoint(ckpt, "--checkpoint", LM_PARTS)
    if out.resolve() == ckpt.resolve():
        raise UnisonoError("--out must differ from --checkpoint (the base checkpoint is kept as it is)")
    ckpt_vocab = Vocab.load(ckpt / "vocab.json")
    templates = task_templates(ckpt, ckpt_vocab, cfg)
    fd = finetune_data(ckpt_vocab, shards, cfg)
    dev = pick_device(cfg.device)
    identity = {"checkpoint": str(ckpt.resolve()), "data": str(shards.resolve()),
                **{k: v for k, v in dataclasses.asdict(cfg).items() if k != "device"}}
    resume = ResumeState(out.with_name(out.name + ".resume"), identity)
    state = resume.load()

    torch.manual_seed(cfg.seed)
    model = load_base(ckpt, fd.vocab, dev)
    params_total = model.num_parameters()
    adapted = adapt_model(model, cfg, fd.vocab.task_id(cfg.task))
    model.to(dev)
    opt = make_optimizer(model.named_parameters(), cfg.peak_lr, cfg.weight_decay, no_decay=("tok_emb.weight",))
    optim = OptimStep(model, opt, cfg.step_settings(), dev)
    batcher = TokenBudgetBatcher(TaskMixture(fd.train, fd.weights, seed=cfg.seed), cfg.max_frames, cfg.pool_size,
                                 seed=cfg.seed)
    if state is not None:
        run = restore(state, model, optim, batcher)
    else:
        t0 = time.perf_counter()
        before = validate(model, fd, cfg, optim)
        run = {"losses": [], "seen": {}, "train_seconds": 0.0, "before": before,
               "eval_seconds_before": time.perf_counter() - t0}
    run["resumed_from_step"] = optim.step if state is not None else None
    train_steps(model, optim, batcher, cfg, fd.vocab.pad_id, resume, run, progress)
    if cfg.lora_rank:
        merge_lora(model)
    after = validate(model, fd, cfg, optim)
    report = make_report(ckpt, cfg, fd, run, after, adapted, params_total, model.trainable_parameters(), dev)
    kept = {n: t for n, t in templates.items() if n in fd.vocab.tasks}
    with atomic_dir(out) as tmp:  # the packaged checkpoint, renamed into place when complete
        write_checkpoint(tmp, model.to("cpu"), fd.vocab, templates=kept, **carried_parts(ckpt))
        write_json(tmp / "finetune_report.json", report)
    resume.clear()
    return report


def validate(model: UnisonoLM, fd: FinetuneData, cfg: FinetuneConfig, optim: OptimStep) -> dict[str, float]:
    """Validation loss per task (nats per token) of the new task's and the old tasks' validation sources."""
    return validation_loss(model, fd.val, fd.vocab.pad_id, cfg.max_frames, cfg.val_batches,
                           next(model.parameters()).device, autocast=optim.autocast,
                           num_streams=fd.vocab.num_codebooks, feature_id=model.cfg.feature_id)


def make_report(ckpt: Path, cfg: FinetuneConfig, fd: FinetuneData, run: dict, after: dict, adapted: list[str],
                params_total: int, params_trainable: int, dev: torch.device) -> dict:
    """The content of ``finetune_report.json``."""
    before, task, losses = run["before"], cfg.task, run["losses"]
    old = sorted(t for t in before if t != task)
    return {
        "checkpoint": str(ckpt), "task": task, "task_id": fd.vocab.task_id(task), "mode": cfg.mode,
        "lora_rank": cfg.lora_rank or None, "lora_layers": len(adapted) or None,
        "freeze_layers": cfg.freeze_layers or None, "steps": cfg.steps, "lr": cfg.peak_lr,
        "max_frames": cfg.max_frames, "replay_tasks": fd.replay_tasks if cfg.replay_weight > 0 else [],
        "replay_weight": cfg.replay_weight if fd.replay_tasks else 0.0, "examples_seen": run["seen"],
        "train_seconds": round(run["train_seconds"], 2), "eval_seconds_before": round(run["eval_seconds_before"], 2),
        "device": str(dev), "parameters_total": params_total, "parameters_trainable": params_trainable,
        "train_loss_first": losses[0], "train_loss_last": float(sum(losses[-10:]) / len(losses[-10:])),
        "train_losses": losses, "resumed_from_step": run["resumed_from_step"],
        "val_loss_before": before, "val_loss_after": after,
        "new_task_val_loss": {"before": before.get(task), "after": after.get(task)},
        "old_tasks_val_loss_relative_change": {t: (after[t] - before[t]) / before[t] for t in old if t in after},
        "config": dataclasses.asdict(cfg),
    }


def format_report(r: dict) -> str:
    """A table of the report: the validation loss of each task before and after, and the change."""
    lines = [(f"{r['task']} (task id {r['task_id']}), {r['mode']}: {r['steps']} steps in {r['train_seconds']:.1f} s, "
              f"{r['parameters_trainable']:,} of {r['parameters_total']:,} parameters trained"),
             f"{'val loss':<20}{'before':>10}{'after':>10}{'change':>10}"]
    for t in sorted(r["val_loss_after"], key=lambda t: (t != r["task"], t)):
        b, a = r["val_loss_before"].get(t), r["val_loss_after"][t]
        ch = f"{100 * (a - b) / b:+.1f}%" if b else ""
        name = t + (" (new)" if t == r["task"] else "")
        lines.append(f"{name:<20}{b if b is not None else float('nan'):>10.4f}{a:>10.4f}{ch:>10}")
    return "\n".join(lines)
