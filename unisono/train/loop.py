"""One optimisation step and one validation loss, shared by the trainer, fine-tuning and DPO.

- :func:`make_optimizer`: AdamW with weight decay on matrices only;
- :func:`lr_factor`: the schedule (linear warm-up, then cosine decay to a floor);
- :class:`OptimStep`: one optimizer update from one or more micro-batches: gradient accumulation (each
  micro-batch's mean loss weighted by its share of the step's loss tokens), bf16 autocast on a GPU,
  gradient-norm clipping, the non-finite policy (a NaN/Inf loss or gradient skips the update, or stops the
  run), the learning-rate schedule and an exponential moving average of the weights;
- :func:`validation_loss`: mean token cross-entropy per task over frame-budget batches;
- :class:`ResumeState`: the saved state of a single-process run, so an interrupted run continues.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from unisono.errors import UnisonoError
from unisono.fileio import atomic_path
from unisono.train.data import check_example, collate, model_inputs

log = logging.getLogger("unisono")
NONFINITE_POLICIES = ("skip", "stop")


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """The learning rate of update ``step`` (0-based) as a fraction of the peak: linear warm-up to 1 over
    ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total`` (``min_ratio`` 1: constant after warm-up)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(named_parameters: Iterable[tuple[str, nn.Parameter]], lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.95), no_decay: tuple[str, ...] = (),
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW over the parameters that require a gradient: ``weight_decay`` on matrices (``dim >= 2``) except
    those whose name ends with one of ``no_decay``, none on vectors and scalars. Two groups, in that order.
    ``fused``: one kernel for the whole update (parameters on a GPU)."""
    decay, rest = [], []
    for name, p in named_parameters:
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and not name.endswith(tuple(no_decay)) else rest).append(p)
    if not decay and not rest:
        raise UnisonoError("no parameter requires a gradient: nothing to train")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), **({"fused": True} if fused else {}))


@dataclass
class StepSettings:
    """How :class:`OptimStep` updates. ``lr`` is the peak learning rate of the schedule (warm-up over
    ``warmup_steps``, cosine to ``min_lr_ratio * lr`` at ``total_steps``); ``grad_clip`` the largest global
    gradient norm (``<= 0``: no clipping); ``nonfinite`` ``"skip"`` (no update for a batch whose loss or
    gradient is NaN/Inf; after more than ``max_skipped`` such batches in a row the run stops) or ``"stop"``;
    ``ema_decay``: keep an exponential moving average of the weights; ``bf16``: autocast on a GPU."""

    lr: float
    total_steps: int
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    nonfinite: str = "skip"
    max_skipped: int = 10
    ema_decay: float | None = None
    bf16: bool = True

    def validate(self, where: str) -> StepSettings:
        """These settings, checked; one-line errors that start with ``where`` (e.g. ``"train config"``)."""
        if self.nonfinite not in NONFINITE_POLICIES:
            raise UnisonoError(f"{where}: nonfinite must be 'skip' or 'stop', got {self.nonfinite!r}")
        if not self.lr > 0 or self.total_steps < 1:
            raise UnisonoError(f"{where}: lr must be positive and the number of steps >= 1")
        if self.warmup_steps < 0 or self.max_skipped < 0:
            raise UnisonoError(f"{where}: warmup steps and max_skipped must be >= 0")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise UnisonoError(f"{where}: ema_decay must lie in (0, 1), got {self.ema_decay}")
        return self


class EMA:
    """Exponential moving average of a model's parameters (fp32 copies): ``shadow = d * shadow + (1 - d) * p``."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, sd: dict) -> None:
        for n in self.shadow:
            self.shadow[n].copy_(sd[n])


@dataclass
class StepResult:
    """One :class:`OptimStep` call: ``loss`` (the weighted mean over its micro-batches), the gradient norm
    before clipping, the learning rate the update used, each micro-batch's forward output (detached)."""

    skipped: bool
    loss: float
    grad_norm: float
    lr: float
    outputs: list[dict]


class OptimStep:
    """One optimizer update per call, from one or more micro-batches (see the module doc).

    ``module``: what the gradients flow through (its parameters are clipped; a DDP module's gradient
    all-reduce waits for the last micro-batch); ``ema_model``: the model whose weights the EMA follows
    (default ``module``); ``distributed``: every process skips or stops together. ``step`` counts the updates
    made."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, settings: StepSettings,
                 device: torch.device, ema_model: nn.Module | None = None, distributed: bool = False):
        s = self.settings = settings
        self.module = module
        self.opt = optimizer
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda i: lr_factor(i, s.warmup_steps, s.total_steps, s.min_lr_ratio))
        self.ema_model = ema_model if ema_model is not None else module
        self.ema = EMA(self.ema_model, s.ema_decay) if s.ema_decay else None
        self.device = torch.device(device)
        self.use_autocast = self.device.type == "cuda" and s.bf16
        self.distributed = distributed
        self.step = 0
        self.skipped_in_row = 0

    def autocast(self):
        """bf16 autocast on a GPU when the settings ask for it; else a no-op context."""
        if self.use_autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, micro_batches: list, forward: Callable[[object], dict], weights: list[float] | None = None,
                 batch: str = "") -> StepResult:
        """Back-propagate ``forward(mb)["loss"]`` of every micro-batch, weighted ``weights[i] / sum(weights)``
        (default: equally; the loss-token counts make the step equal one step on all micro-batches at once),
        then clip, check, update. ``batch`` names the examples in messages about a non-finite step."""
        weights = [1.0] * len(micro_batches) if weights is None else [float(w) for w in weights]
        if len(weights) != len(micro_batches) or not micro_batches:
            raise UnisonoError("an optimisation step needs one weight per micro-batch, and at least one micro-batch")
        total = max(sum(weights), 1e-8)
        loss, outputs = 0.0, []
        for i, (mb, w) in enumerate(zip(micro_batches, weights)):
            last = i == len(micro_batches) - 1
            no_sync = getattr(self.module, "no_sync", None)
            with contextlib.nullcontext() if last or no_sync is None else no_sync():
                with self.autocast():
                    out = forward(mb)
                    scaled = out["loss"] * (w / total)
                scaled.backward()
            loss += float(scaled.detach())
            outputs.append({k: v.detach() if torch.is_tensor(v) else v for k, v in out.items()})
        clip = self.settings.grad_clip if self.settings.grad_clip and self.settings.grad_clip > 0 else math.inf
        gnorm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip))
        lr = float(self.opt.param_groups[0]["lr"])
        if self._any_nonfinite(loss, gnorm):
            self._skip(loss, gnorm, batch)
            return StepResult(True, loss, gnorm, lr, outputs)
        self.skipped_in_row = 0
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.ema_model)
        self.step += 1
        return StepResult(False, loss, gnorm, lr, outputs)

    def _any_nonfinite(self, loss: float, gnorm: float) -> bool:
        bad = torch.tensor([0.0 if math.isfinite(loss) and math.isfinite(gnorm) else 1.0])
        if self.distributed:  # on the device: NCCL reduces GPU tensors only
            bad = bad.to(self.device)
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)  # every process skips (or stops) together
        return bool(bad.item())

    def _skip(self, loss: float, gnorm: float, batch: str) -> None:
        """Drop the gradients of a non-finite step; raise when the policy (or the run of skips) says stop."""
        self.opt.zero_grad(set_to_none=True)
        self.skipped_in_row += 1
        what = (f"non-finite loss or gradient (loss {loss}, grad norm {gnorm}) at step {self.step + 1} "
                f"in the batch [{batch}]")
        s = self.settings
        if s.nonfinite == "stop" or self.skipped_in_row > s.max_skipped:
            why = "the non-finite policy is 'stop'" if s.nonfinite == "stop" else \
                f"{self.skipped_in_row} batches in a row were skipped"
            raise UnisonoError(f"{what}; stopping ({why}); the last saved state is intact: lower the learning "
                               "rate or check these examples, then run again to resume")
        log.warning("skipped a %s", what)

    def state_dict(self) -> dict:
        """Optimizer, schedule, EMA and counters (for a single-process run's resumable state)."""
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "step": self.step,
                "skipped_in_row": self.skipped_in_row, "ema": self.ema.state_dict() if self.ema else None}

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.skipped_in_row = int(state["skipped_in_row"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])


# ------------------------------------------------------------------------------------------ validation
def budget_batches(examples: Iterable[dict], max_frames: int, max_batches: int) -> list[list[dict]]:
    """The first ``max_batches`` batches of ``examples`` in order, each as long as ``len(batch) * longest``
    stays within ``max_frames`` padded frames (a longer example makes a batch of its own)."""
    batches: list[list[dict]] = []
    cur: list[dict] = []
    for ex in examples:
        longest = max([e["frames"].shape[0] for e in cur] + [ex["frames"].shape[0]])
        if cur and (len(cur) + 1) * longest > max_frames:
            batches.append(cur)
            cur = []
            if len(batches) >= max_batches:
                return batches
        cur.append(ex)
    if cur and len(batches) < max_batches:
        batches.append(cur)
    return batches


@torch.no_grad()
def validation_loss(module: nn.Module, sources: dict, pad_id: int, max_frames: int, max_batches: int,
                    device: torch.device | str, loss_fn: Callable | None = None, autocast: Callable | None = None,
                    num_streams: int | None = None, distributed: bool = False,
                    feature_id: int | None = None) -> dict[str, float]:
    """``{task: mean token cross-entropy (nats)}`` over at most ``max_batches`` frame-budget batches of each
    source (``sources``: task -> a zero-argument callable returning examples), in eval mode.

    ``loss_fn(frames=[B, T, K], loss_mask=[B, T, K](, feats=[B, T, D]))`` (keywords) returns
    ``stream_sum``/``stream_count`` (default ``module.loss``); ``feature_id``: the model's audio_feat placeholder
    (the batches get ``feats``, :func:`unisono.train.data.collate`); ``num_streams``: check each example against
    it. ``distributed``: the sums are added over processes, and every process runs as many forward passes as the
    busiest one (a process with fewer batches repeats one without counting it, one without any runs a pass over
    padding), as FSDP needs."""
    loss_fn = loss_fn if loss_fn is not None else module.loss
    was = module.training
    module.eval()
    res = {}
    for task in sorted(sources):
        batches = budget_batches(sources[task](), max_frames, max_batches)
        for ex in (e for b in batches for e in b):
            check_example(ex, num_streams)
        n = torch.tensor([len(batches)], dtype=torch.long, device=device)  # on the device: NCCL reduces GPU tensors
        if distributed:
            dist.all_reduce(n, op=dist.ReduceOp.MAX)
        tot = torch.zeros(2, dtype=torch.float64, device=device)
        for i in range(int(n)):
            if batches:
                mb = collate(batches[min(i, len(batches) - 1)], pad_id, feature_id=feature_id)
            else:
                frames = torch.full((1, 2, num_streams or 1), pad_id, dtype=torch.long)
                mb = {"frames": frames, "loss_mask": torch.zeros_like(frames, dtype=torch.bool)}
            with autocast() if autocast is not None else contextlib.nullcontext():
                out = loss_fn(**model_inputs(mb, device))
            if i < len(batches):
                tot += torch.stack([out["stream_sum"].sum(), out["stream_count"].sum()]).double().to(device)
        if distributed:
            dist.all_reduce(tot)
        s, c = tot.tolist()
        if c > 0:
            res[task] = s / c
    module.train(was)
    return res


# ------------------------------------------------------------------------------------------ resume
class ResumeState:
    """The resumable state of a single-process run (fine-tuning, DPO): one file ``directory/state.pt``,
    replaced atomically at each save and removed when the run completes.

    ``identity`` (plain values: the inputs and settings) is saved with the state; a saved state whose identity
    differs is refused with a one-line error naming the settings that differ."""

    FILE = "state.pt"

    def __init__(self, directory: str | Path, identity: dict):
        self.directory = Path(directory)
        self.identity = identity

    @property
    def path(self) -> Path:
        return self.directory / self.FILE

    def load(self) -> dict | None:
        """The saved state (a dict of tensors and plain values), or None when there is none."""
        if not self.path.is_file():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        saved = state.get("identity", {})
        differ = sorted(k for k in set(saved) | set(self.identity) if saved.get(k) != self.identity.get(k))
        if differ:
            raise UnisonoError(f"{self.directory} holds the saved state of another run (it differs in {differ}); "
                               "run with the same inputs and settings to resume, or delete it to start afresh")
        return state

    def save(self, state: dict) -> None:
        with atomic_path(self.path) as p:
            torch.save({**state, "identity": self.identity}, p)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
