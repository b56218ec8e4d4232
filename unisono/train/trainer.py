"""The language-model trainer: one CPU process, or many processes under ``torchrun`` (DDP, or FSDP2).

Run directory layout::

    RUN/train_config.json                    the resolved model + training configuration
    RUN/log.jsonl                            one row of metrics per logged step (rank 0)
    RUN/tb/                                  TensorBoard events (rank 0)
    RUN/checkpoints/step_00000100/           config.json + model.safetensors (+ vocab.json), from_pretrained-able
    RUN/checkpoints/step_00000100/ema/       the EMA weights as a checkpoint (when EMA is on)
    RUN/checkpoints/step_00000100/training_state/rank0.pt   optimizer, scheduler, RNG, data position
    RUN/latest.json                          the newest complete checkpoint
    RUN/throughput.json                      tokens/s, TFLOP/s and MFU of the run (unisono.train.speed.Throughput)

A checkpoint directory is written under a temporary name and renamed when complete, then
``latest.json`` is replaced atomically: a killed run resumes from the last complete checkpoint and
continues with the same batches, random numbers and optimizer state (the same loss curve).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from unisono.errors import UnisonoError
from unisono.fileio import atomic_path, write_json
from unisono.lm.config import LMConfig
from unisono.lm.model import UnisonoLM
from unisono.train.data import Source, TaskMixture, TokenBudgetBatcher, check_example, collate, model_inputs
from unisono.train.loop import OptimStep, StepSettings, make_optimizer, validation_loss
from unisono.train.settings import settings_from_dict
from unisono.train.speed import BackboneCompiler, FlopCount, Prefetcher, Throughput, WallClock

log = logging.getLogger("unisono")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping. ``max_frames`` is the padded frame budget of one micro-batch."""

    max_steps: int = 1000
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    grad_accum: int = 1
    max_frames: int = 4096
    pool_size: int = 256
    task_weights: dict[str, float] | None = None
    stream_weights: list[float] | None = None
    cond_dropout: float = 0.0
    ema_decay: float | None = None
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 10
    save_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 0
    bf16: bool = True  # autocast to bfloat16 on GPU; ignored on CPU
    fsdp: bool = False  # FSDP2 (fully_shard) instead of DDP when running under torchrun
    device: str = "auto"
    tensorboard: bool = True
    nonfinite: str = "skip"  # a NaN/Inf loss or gradient: "skip" the batch (no update) or "stop" the run
    max_skipped: int = 10  # consecutive skipped batches after which the run stops anyway
    max_seconds: float = 0.0  # stop (saved) after this much wall-clock time, the schedule sized to it; 0: no limit
    compile: bool | str = "auto"  # torch.compile the transformer (eager if that fails): true, false, auto (on a GPU)
    prefetch: bool | str = "auto"  # make the next batches in a background thread: true, false, auto (on a GPU)
    peak_tflops: float = 0.0  # the device's peak TFLOP/s (bf16 on a GPU) for MFU in the log; 0: not reported
    # a token store whose audio_feat segments read an encoder of the codes (resynth): its features are computed as
    # training starts, with this codec (default: the one the store's codec.json names) and this weights file for
    # the inner encoder (whisper_torch; default: the packaged model); see unisono.train.launch.store_features
    feature_codec: str | None = None
    feature_weights: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        cfg = settings_from_dict(cls, d, "train config")
        if cfg.grad_accum < 1 or cfg.max_steps < 1:
            raise UnisonoError("train config: grad_accum and max_steps must be >= 1")
        if not 0.0 <= cfg.cond_dropout <= 1.0:
            raise UnisonoError(f"train config: cond_dropout must be in [0, 1], got {cfg.cond_dropout}")
        for key in ("compile", "prefetch"):
            if getattr(cfg, key) not in (True, False, "auto"):
                raise UnisonoError(f"train config: {key} must be true, false or auto, got {getattr(cfg, key)!r}")
        if cfg.max_seconds < 0 or cfg.peak_tflops < 0:
            raise UnisonoError("train config: max_seconds and peak_tflops must be >= 0 (0: none)")
        cfg.step_settings()
        return cfg

    def on_gpu(self, key: str, device: torch.device) -> bool:
        """Whether the switch ``key`` (``compile``, ``prefetch``: true, false or auto) is on for ``device``."""
        value = getattr(self, key)
        return device.type == "cuda" if value == "auto" else bool(value)

    def step_settings(self) -> StepSettings:
        """The optimisation step this configuration describes (checked)."""
        return StepSettings(lr=self.lr, total_steps=self.max_steps, warmup_steps=self.warmup_steps,
                            min_lr_ratio=self.min_lr_ratio, grad_clip=self.grad_clip, nonfinite=self.nonfinite,
                            max_skipped=self.max_skipped, ema_decay=self.ema_decay,
                            bf16=self.bf16).validate("train config")


class _LossModule(nn.Module):
    """Wraps the model so that DDP/FSDP see the loss computation as ``forward``."""

    def __init__(self, model: UnisonoLM, stream_weights):
        super().__init__()
        self.model = model
        self.stream_weights = stream_weights

    def forward(self, frames, loss_mask, feats=None):
        return self.model.loss(frames, loss_mask, self.stream_weights, feats=feats)


def dist_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (0, 1, 0 for a plain process)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def stream_and_task_losses(micro_batches: list[dict], outputs: list[dict], num_streams: int) -> dict:
    """``loss_stream/<k>`` and ``loss_task/<task>``: mean token cross-entropy per stream and per task of a
    step's micro-batches, from the model's loss outputs (``stream_sum``/``stream_count [K]``,
    ``example_sum``/``example_count [B]``)."""
    s_sum, s_cnt = torch.zeros(num_streams), torch.zeros(num_streams)
    task_sum: dict[str, float] = {}
    task_cnt: dict[str, float] = {}
    for mb, out in zip(micro_batches, outputs):
        s_sum += out["stream_sum"].cpu()
        s_cnt += out["stream_count"].cpu()
        for task, es, ec in zip(mb["tasks"], out["example_sum"].cpu().tolist(), out["example_count"].cpu().tolist()):
            task_sum[task] = task_sum.get(task, 0.0) + es
            task_cnt[task] = task_cnt.get(task, 0.0) + ec
    m = {f"loss_stream/{j}": float(s_sum[j] / s_cnt[j]) for j in range(num_streams) if s_cnt[j] > 0}
    m.update({f"loss_task/{t}": task_sum[t] / task_cnt[t] for t in sorted(task_sum) if task_cnt[t] > 0})
    return m


class Trainer:
    """Train a :class:`UnisonoLM` on example dicts.

    ``train_sources`` maps task -> a restartable source (a zero-argument callable returning an
    iterable of examples), or is a callable ``(rank, world_size) -> that mapping`` so each process
    reads its own part. ``val_sources`` likewise (evaluated on every rank's part, averaged).
    ``sample_fn(model, step, writer)`` is called on rank 0 every ``sample_every`` steps (e.g. to
    generate and log audio).
    """

    def __init__(
        self,
        model_cfg: LMConfig | dict,
        train_cfg: TrainConfig | dict,
        out_dir: str | os.PathLike,
        train_sources: dict[str, Source] | Callable[[int, int], dict[str, Source]],
        val_sources: dict[str, Source] | Callable[[int, int], dict[str, Source]] | None = None,
        vocab_json: str | os.PathLike | None = None,
        sample_fn: Callable | None = None,
        init_from: str | os.PathLike | None = None,
    ):
        self.mcfg = model_cfg if isinstance(model_cfg, LMConfig) else LMConfig.from_dict(model_cfg)
        self.cfg = train_cfg if isinstance(train_cfg, TrainConfig) else TrainConfig.from_dict(train_cfg)
        self.out = Path(out_dir)
        self.vocab_json = vocab_json
        self.checkpoint_extras: list[Path] = []  # files or directories copied into every checkpoint
        self.skipped_batches: list[str] = []  # every skipped batch (tasks:ids) of this process
        self.sample_fn = sample_fn
        self.rank, self.world, self.local_rank = dist_info()
        if self.cfg.fsdp and self.cfg.ema_decay:
            raise UnisonoError(
                "train config: ema_decay is not supported with fsdp: true; use DDP (fsdp: false) for EMA"
            )
        if self.cfg.stream_weights is not None and len(self.cfg.stream_weights) != self.mcfg.num_streams:
            raise UnisonoError(
                f"train config: stream_weights has {len(self.cfg.stream_weights)} values for "
                f"{self.mcfg.num_streams} streams"
            )
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and self.cfg.device != "cpu" else "gloo"
            dist.init_process_group(backend)
        self.device = self._pick_device()
        if callable(train_sources) and not isinstance(train_sources, dict):
            train_sources = train_sources(self.rank, self.world)
        if val_sources is not None and callable(val_sources) and not isinstance(val_sources, dict):
            val_sources = val_sources(self.rank, self.world)
        self.val_sources = val_sources or {}

        torch.manual_seed(self.cfg.seed)  # same initial weights on every rank
        self.model = UnisonoLM.from_pretrained(init_from) if init_from is not None else UnisonoLM.from_config(self.mcfg)
        self.mcfg = self.model.cfg  # resolved (a transformers backbone's config in place of its directory)
        self.model.to(self.device)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in float32
        self.flops = FlopCount(self.model)
        self.throughput = Throughput(self.cfg.peak_tflops, self.mcfg.num_streams)
        sharded = self.world > 1 and self.cfg.fsdp
        self.compiler = BackboneCompiler(self.model) if self.cfg.on_gpu("compile", self.device) and not sharded \
            else None
        self.compile_note = "on" if self.compiler is not None and self.compiler.active else "off"
        self.prefetcher: Prefetcher | None = None
        seed = self.cfg.seed * 1000 + self.rank
        self.mixture = TaskMixture(train_sources, self.cfg.task_weights, seed=seed)
        self.batcher = TokenBudgetBatcher(self.mixture, self.cfg.max_frames, self.cfg.pool_size, seed=seed)
        self.gen = torch.Generator().manual_seed(seed + 17)  # condition dropout
        self.wrapped = self._wrap()
        self.fused = self.device.type == "cuda" and not sharded  # one AdamW kernel for all parameters
        opt = make_optimizer(self.wrapped.named_parameters(), self.cfg.lr, self.cfg.weight_decay, self.cfg.betas,
                             fused=self.fused)
        self.optim = OptimStep(self.wrapped, opt, self.cfg.step_settings(), self.device, ema_model=self.model,
                               distributed=self.world > 1)
        self.writer = None

    @property
    def step(self) -> int:
        """Updates made so far (the optimisation step's counter)."""
        return self.optim.step

    @step.setter
    def step(self, value: int) -> None:
        self.optim.step = int(value)

    def _wrap(self) -> nn.Module:
        """The loss as a module's ``forward``, under DDP or FSDP2 when several processes run."""
        wrapped: nn.Module = _LossModule(self.model, self.cfg.stream_weights)
        if self.world == 1:
            return wrapped
        if self.cfg.fsdp:
            for layer in getattr(self.model.backbone, "layers", []):
                fully_shard(layer)
            fully_shard(wrapped)
            return wrapped
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(wrapped, device_ids=ids, broadcast_buffers=False)

    # -- setup -------------------------------------------------------------------------------
    def _pick_device(self) -> torch.device:
        want = self.cfg.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want.startswith("cuda"):
            if not torch.cuda.is_available():
                raise UnisonoError("device 'cuda' was asked for but no GPU is visible; use device: cpu")
            dev = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(dev)
            return dev
        return torch.device(want)

    def _open_writer(self):
        if self.rank != 0 or not self.cfg.tensorboard or self.writer is not None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (optional: tensorboard)
        except ImportError:
            log.warning("tensorboard is not installed; logging to log.jsonl only (pip install 'unisono[lm]')")
            self.cfg.tensorboard = False
            return
        # purge_step drops events a killed run logged after the checkpoint it resumes from
        self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1 if self.step else None)

    # -- checkpoints -------------------------------------------------------------------------
    def _full_state_dicts(self) -> tuple[dict, dict]:
        if self.world > 1 and self.cfg.fsdp:
            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            msd, osd = get_state_dict(self.wrapped, self.optim.opt, options=opts)
            msd = {k.removeprefix("model."): v for k, v in msd.items()}
            return msd, osd
        return self.model.state_dict(), self.optim.opt.state_dict()

    def save(self) -> Path:
        ckdir = self.out / "checkpoints"
        final = ckdir / f"step_{self.step:08d}"
        tmp = ckdir / f".step_{self.step:08d}.tmp"
        msd, osd = self._full_state_dicts()
        if self.rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            self.model.save_pretrained(tmp, self.vocab_json, state_dict=msd)
            for extra in self.checkpoint_extras:  # tokenizers, codec reference: a checkpoint usable as is
                extra = Path(extra)
                if extra.is_dir():
                    shutil.copytree(extra, tmp / extra.name)
                elif extra.is_file():
                    shutil.copy2(extra, tmp / extra.name)
            if self.optim.ema is not None:
                self.model.save_pretrained(tmp / "ema", self.vocab_json, state_dict=self.optim.ema.state_dict())
            (tmp / "training_state").mkdir()
        self._barrier()
        state = {
            "step": self.step,
            "optimizer": osd if (self.rank == 0 or not self.cfg.fsdp) else None,
            "scheduler": self.optim.sched.state_dict(),
            **(self.prefetcher.resume_state() if self.prefetcher is not None else self._data_state()),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "world_size": self.world,
        }
        with atomic_path(tmp / "training_state" / f"rank{self.rank}.pt") as p:
            torch.save(state, p)
        self._barrier()
        if self.rank == 0:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            write_json(self.out / "latest.json", {"step": self.step, "path": str(final.relative_to(self.out))})
            self._prune(ckdir)
        self._barrier()
        return final

    def _prune(self, ckdir: Path) -> None:
        keep = self.cfg.keep_checkpoints
        if keep <= 0:
            return
        steps = sorted(p for p in ckdir.glob("step_*") if p.is_dir())
        for p in steps[:-keep]:
            shutil.rmtree(p, ignore_errors=True)

    def latest_checkpoint(self) -> Path | None:
        f = self.out / "latest.json"
        if not f.is_file():
            return None
        return self.out / json.loads(f.read_text())["path"]

    def resume(self) -> bool:
        """Load the newest complete checkpoint of this run, if any; returns whether one was loaded."""
        ck = self.latest_checkpoint()
        if ck is None:
            return False
        sfile = ck / "training_state" / f"rank{self.rank}.pt"
        if not sfile.is_file():
            raise UnisonoError(
                f"{ck} has no training state for rank {self.rank}; resume with the same number of processes"
            )
        state = torch.load(sfile, map_location="cpu", weights_only=True)
        if state["world_size"] != self.world:
            raise UnisonoError(
                f"{ck} was written by {state['world_size']} processes, this run has {self.world}; "
                "resume with the same number"
            )
        msd = load_file(str(ck / "model.safetensors"))
        osd = state["optimizer"]
        if self.world > 1 and self.cfg.fsdp:
            if self.rank != 0:
                osd = torch.load(ck / "training_state" / "rank0.pt", map_location="cpu", weights_only=True)["optimizer"]
            set_state_dict(self.wrapped, self.optim.opt, model_state_dict={f"model.{k}": v for k, v in msd.items()},
                           optim_state_dict=osd, options=StateDictOptions(full_state_dict=True))
        else:
            self.model.load_state_dict(msd)
            self.optim.opt.load_state_dict(osd)
        self.optim.sched.load_state_dict(state["scheduler"])
        self.batcher.load_state_dict(state["data"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.gen.set_state(state["dropout_gen"])
        if self.optim.ema is not None:
            ema_file = ck / "ema" / "model.safetensors"
            if ema_file.is_file():
                self.optim.ema.load_state_dict(load_file(str(ema_file)))
        self.step = state["step"]
        return True

    # -- loop --------------------------------------------------------------------------------
    def _barrier(self) -> None:
        if self.world > 1:  # NCCL's barrier on this process's GPU (named, so it need not guess one)
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _data_state(self) -> dict:
        """Where the batches stand: the batcher's position and the condition-dropout generator."""
        return {"data": self.batcher.state_dict(), "dropout_gen": self.gen.get_state()}

    def _micro_batches(self) -> list[dict]:
        out = []
        for _ in range(self.cfg.grad_accum):
            batch = next(self.batcher)
            for ex in batch:
                check_example(ex, self.mcfg.num_streams)
            out.append(collate(batch, self.mcfg.pad_id, self.cfg.cond_dropout, self.gen, self.mcfg.feature_id))
        return out

    def _loss_weight(self, mb: dict) -> float:
        counts = mb["loss_mask"].sum(dim=(0, 1)).float()
        w = torch.ones_like(counts) if self.cfg.stream_weights is None else torch.tensor(self.cfg.stream_weights)
        return float((counts * w).sum())

    def train_step(self) -> dict:
        """One optimisation step on ``grad_accum`` micro-batches; its metrics, or ``{"skipped": True, "batch":
        "task:id; ..."}`` when the non-finite policy skipped it."""
        t_start = time.perf_counter()
        self.wrapped.train()
        mbs = next(self.prefetcher) if self.prefetcher is not None else self._micro_batches()
        where = "; ".join(f"{t}:{i}" for mb in mbs for t, i in zip(mb["tasks"], mb["ids"]))
        r = self._optimize(mbs, where)
        if r.skipped:
            return {"skipped": True, "batch": where}
        frames = sum(mb["num_frames"] for mb in mbs)
        dt = time.perf_counter() - t_start
        k = self.mcfg.num_streams
        m = {"step": self.step, "loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm,
             "frames_per_s": frames * self.world / dt, "tokens_per_s": frames * k * self.world / dt}
        rates = self.throughput.add(dt, frames, self.flops(mbs))  # this process's model FLOPs
        m.update({key: rates[key] for key in ("tflops", "mfu") if key in rates})
        m.update(stream_and_task_losses(mbs, r.outputs, k))
        return m

    def _optimize(self, mbs: list[dict], where: str):
        """The optimisation step on ``mbs``; when the compiled transformer fails (compiling, or its compiled
        backward), once: a warning, the eager transformer from then on, and the same step again."""
        def step():
            return self.optim(mbs, lambda mb: self.wrapped(**model_inputs(mb, self.device)),
                              weights=[self._loss_weight(mb) for mb in mbs], batch=where)

        try:
            return step()
        except Exception as e:  # any failure of the compiler; the eager retry raises the real ones again
            if self.compiler is None or not self.compiler.active or isinstance(e, UnisonoError):
                raise
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            log.warning("torch.compile failed at step %d (%s: %s); the transformer runs eagerly from now on",
                        self.step + 1, type(e).__name__, why)
            self.compile_note = f"fell back to eager at step {self.step + 1}: {type(e).__name__}: {why}"
            self.compiler.disable()
            self.optim.opt.zero_grad(set_to_none=True)
            return step()

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation loss per task (``val_loss/<task>``: every token of ``eval_batches`` batches per task,
        summed over ranks; :func:`unisono.train.loop.validation_loss`)."""
        res = validation_loss(self.wrapped, self.val_sources, self.mcfg.pad_id, self.cfg.max_frames,
                              self.cfg.eval_batches, self.device, loss_fn=self.wrapped, autocast=self.optim.autocast,
                              num_streams=self.mcfg.num_streams, distributed=self.world > 1,
                              feature_id=self.mcfg.feature_id)
        return {f"val_loss/{task}": v for task, v in res.items()}

    def _log(self, m: dict) -> None:
        if self.rank != 0:
            return
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(m, sort_keys=True) + "\n")
        if self.writer is not None:
            for key, v in m.items():
                if key != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(key, v, m["step"])
            self.writer.flush()

    def _start_run(self) -> None:
        """Check that the run directory can be written (before any work), resume, write ``train_config.json``."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            probe = self.out / f".write_probe_{self.rank}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise UnisonoError(
                f"cannot write to the run directory {self.out} ({e.strerror}); choose a writable --out"
            ) from None
        resumed = self.resume()
        if self.rank == 0:
            write_json(
                self.out / "train_config.json", {"model": self.mcfg.to_dict(), "train": dataclasses.asdict(self.cfg)}
            )
            if resumed:
                # drop log rows written after the checkpoint (by the run that was killed)
                log = self.out / "log.jsonl"
                if log.is_file():
                    rows = [r for r in log.read_text().splitlines() if r and json.loads(r)["step"] <= self.step]
                    with atomic_path(log) as p:
                        p.write_text("".join(r + "\n" for r in rows))

    def train(self, progress: bool = True) -> dict:
        """Train to ``max_steps``, or until ``max_seconds`` of wall-clock time have passed (the schedule's length
        then follows the measured step rate, so that its decay ends with the budget), resuming from the run's
        latest checkpoint when there is one; saves at the end. Writes ``throughput.json``."""
        self._start_run()
        self._open_writer()
        bar = None
        if progress and self.rank == 0:
            bar = tqdm(total=self.cfg.max_steps, initial=self.step, desc="train", unit="step")
        clock = WallClock(self.cfg.max_seconds, self.step)
        if self.cfg.on_gpu("prefetch", self.device):
            self.prefetcher = Prefetcher(lambda: self._micro_batches(), self._data_state)
        last: dict = {}
        stopped = "max_steps"
        try:
            while self.step < self.cfg.max_steps:
                m = self.train_step()
                if m.get("skipped"):
                    self.skipped_batches.append(m["batch"])
                    continue
                left = clock.steps_left(self.step)
                if left is not None:  # the cosine ends when the budget does (never past max_steps)
                    self.optim.settings.total_steps = max(self.step + 1, min(self.cfg.max_steps, self.step + left))
                end = self.step == self.cfg.max_steps or clock.over()
                self._after_step(m, end)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{m['loss']:.3f}", lr=f"{m['lr']:.2e}")
                last = m
                if end and self.step < self.cfg.max_steps:
                    stopped = "max_seconds"
                    log.info("stopped on the wall-clock budget of %g s at step %d", self.cfg.max_seconds, self.step)
                    break
        finally:
            if self.prefetcher is not None:
                self.prefetcher.close()
                self.prefetcher = None
            if bar is not None:
                bar.close()
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        self._write_throughput(stopped, clock.elapsed())
        return last

    def _after_step(self, m: dict, end: bool) -> None:
        """Validation, the log row, the audio sample and the checkpoint that are due after an update (``end``: the
        run's last update: logged and saved whatever the intervals say)."""
        c = self.cfg
        if c.eval_every and self.step % c.eval_every == 0 and self.val_sources:
            m.update(self.evaluate())
        if self.step % max(1, c.log_every) == 0 or end or any(key.startswith("val_loss") for key in m):
            self._log(m)
        if c.sample_every and self.sample_fn is not None and self.step % c.sample_every == 0 and self.rank == 0:
            self.sample_fn(self.model, self.step, self.writer)
        if (c.save_every and self.step % c.save_every == 0) or end:
            try:
                self.save()
            except OSError as e:  # e.g. a full disk: the previous checkpoint stays the latest
                latest = self.latest_checkpoint()
                raise UnisonoError(f"could not write the checkpoint of step {self.step} ({e.strerror}); "
                                   f"the latest complete checkpoint is {latest or 'none'}: free space and "
                                   "run again to resume") from None

    def _write_throughput(self, stopped: str, wall: float) -> None:
        """``RUN/throughput.json`` (rank 0): this run's updates, tokens/s, TFLOP/s and MFU
        (:class:`unisono.train.speed.Throughput`), and how it ran."""
        if self.rank != 0:
            return
        cuda = self.device.type == "cuda"
        dev = torch.cuda.get_device_name(self.device) if cuda else str(self.device)
        write_json(self.out / "throughput.json", {
            **self.throughput.summary(), "wall_seconds": wall, "stopped_by": stopped, "step": self.step,
            "device": dev, "peak_memory_gib": torch.cuda.max_memory_allocated(self.device) / 2**30 if cuda else None,
            "processes": self.world, "compile": self.compile_note, "fused_adamw": self.fused,
            "prefetch": self.cfg.on_gpu("prefetch", self.device), "bf16_autocast": self.optim.use_autocast,
            "parameters": self.model.num_parameters()})
