"""What makes the trainer fast on a GPU, and how fast it was: model FLOPs per step (for MFU), ``torch.compile`` of
the transformer with an eager fallback, the micro-batches made ahead in a background thread, a wall-clock budget
that also sizes the learning-rate schedule, and the run's throughput summary.

FLOPs (:class:`FlopCount`) follow the usual dense-transformer count, forward + backward, of the work the model does
for the real (unpadded) frames of a step:

    6 * N_body * P  +  6 * V * D_head * L  +  12 * n_layers * d_model * sum_e S_e^2

with ``N_body`` the parameters that multiply every position (the transformer and the feature adapter; not the
embedding table, which is a lookup, nor the output heads), ``P = sum_e S_e`` the positions of the step (``S_e`` an
example's frames; frames x K for ``flat``), ``V * D_head`` one stream's output head, applied to each of the ``L``
loss tokens only, and the last term the attention scores and values at full (not causal-halved) length, as in
PaLM's MFU. ``multiscale`` adds ``6 * N_local * K`` + ``12 * local_layers * local_d_model * K^2`` per loss frame
(its local transformer runs on those frames only). MFU is that count per second over the device's peak
(``train.peak_tflops``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from unisono.errors import UnisonoError
from unisono.lm.layers import Transformer

log = logging.getLogger("unisono")

FLOPS_FORMULA = ("6*N_body*positions + 6*V*D_head*loss_tokens + 12*n_layers*d_model*sum(seq_len^2) "
                 "(forward+backward; no causal discount; multiscale adds its local transformer per loss frame)")
NOT_BODY = ("tok_emb.", "bos", "head_w", "local_emb.", "local_bos", "local.", "ctx_proj.")


class FlopCount:
    """Training FLOPs (forward + backward) of the micro-batches of one step of ``model`` (see the module doc)."""

    def __init__(self, model):
        cfg = model.cfg
        named = list(model.named_parameters())
        self.body = sum(p.numel() for n, p in named if not n.startswith(NOT_BODY))
        self.local = sum(p.numel() for n, p in named if n.startswith(("local.", "ctx_proj.")))
        self.head = cfg.vocab_size * model.head_dim_in
        bb = model.backbone
        self.layers = len(bb.layers) if isinstance(bb, Transformer) else \
            int((cfg.backbone_config or {}).get("num_hidden_layers", 0))
        self.d = model.dim
        self.k = cfg.num_streams
        self.per_frame = cfg.num_streams if cfg.pattern == "flat" else 1
        self.multiscale = cfg.pattern == "multiscale"
        self.local_layers, self.local_d = cfg.local_layers, cfg.local_d_model or cfg.d_model

    def __call__(self, micro_batches: list[dict]) -> float:
        total = 0.0
        for mb in micro_batches:
            seqs = [float(n * self.per_frame) for n in mb["lengths"]]
            mask = mb["loss_mask"]
            total += 6.0 * self.body * sum(seqs) + 6.0 * self.head * float(mask.sum())
            total += 12.0 * self.layers * self.d * sum(s * s for s in seqs)
            if self.multiscale:
                frames = float(mask.any(-1).sum())
                total += frames * (6.0 * self.local * self.k + 12.0 * self.local_layers * self.local_d * self.k ** 2)
        return total


class BackboneCompiler:
    """``torch.compile`` of ``model``'s own transformer for the passes that train it (full sequences with gradients);
    validation and cached decoding run it eagerly (no second graph to compile). :meth:`disable` puts the eager
    forward back (the trainer's fallback when compiling fails). A transformers backbone is left as it is
    (``active`` False)."""

    def __init__(self, model):
        bb = model.backbone
        self.backbone = bb if isinstance(bb, Transformer) else None
        self.active = self.backbone is not None
        if not self.active:
            return
        eager = bb.forward
        compiled = torch.compile(eager)

        def forward(x, pos0=0, cache=None):
            if cache is None and pos0 == 0 and torch.is_grad_enabled():
                return compiled(x)
            return eager(x, pos0, cache)

        bb.forward = forward  # an instance attribute: the class's forward stays, and so do the parameter names

    def disable(self) -> None:
        if self.active:
            del self.backbone.forward
            self.active = False


class Prefetcher:
    """``next(prefetcher)`` hands out ``produce()``'s items in order while a background thread makes the next one
    (the CPU's batching overlaps the GPU's step). ``state()`` (the producer's resumable state) is read before each
    item is made: :meth:`resume_state` is the state from which the item to be handed out next is made again, what a
    checkpoint saves."""

    def __init__(self, produce: Callable[[], object], state: Callable[[], dict]):
        self.produce, self.state = produce, state
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="unisono-batches")
        self._next: tuple[Future, dict] | None = None

    def _submit(self) -> tuple[Future, dict]:
        before = self.state()  # no item is being made now: a consistent snapshot
        return self._pool.submit(self.produce), before

    def __iter__(self):
        return self

    def __next__(self):
        if self._next is None:
            self._next = self._submit()
        fut, _ = self._next
        item = fut.result()
        self._next = self._submit()
        return item

    def resume_state(self) -> dict:
        return self._next[1] if self._next is not None else self.state()

    def close(self) -> None:
        if self._next is not None:
            self._next[0].cancel()
        self._pool.shutdown(wait=True)
        self._next = None


class WallClock:
    """A training budget of ``seconds`` of wall-clock time from construction (0: none). :meth:`steps_left`
    estimates how many more updates fit, from the rate measured since the ``skip``-th update of this run (the first
    ones compile); the trainer sets the schedule's length from it, so the cosine ends when the budget does."""

    def __init__(self, seconds: float, step: int, skip: int = 3):
        if seconds < 0:
            raise UnisonoError(f"train config: max_seconds must be 0 (no limit) or positive, got {seconds}")
        self.seconds = float(seconds)
        self.start = time.perf_counter()
        self.first = step
        self.skip = skip
        self.mark: tuple[int, float] | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over(self) -> bool:
        return bool(self.seconds) and self.elapsed() >= self.seconds

    def steps_left(self, step: int) -> int | None:
        """Updates that fit in the time left at the measured rate; None before a rate is known or without a budget."""
        if not self.seconds:
            return None
        now = time.perf_counter()
        if self.mark is None:
            if step - self.first >= self.skip:
                self.mark = (step, now)
            return None
        done, spent = step - self.mark[0], now - self.mark[1]
        if done < 1 or spent <= 0:
            return None
        return int(done / spent * max(0.0, self.seconds - (now - self.start)))


class Throughput:
    """Per-update seconds, tokens and FLOPs of a run; :meth:`summary` gives totals and rates for the whole run and
    for its second half (past compilation and warm-up), with MFU against ``peak_tflops`` (0: not reported)."""

    def __init__(self, peak_tflops: float, num_streams: int):
        self.peak = float(peak_tflops or 0)
        self.k = num_streams
        self.rows: list[tuple[float, int, float]] = []  # (seconds, frames, flops)

    def add(self, seconds: float, frames: int, flops: float) -> dict:
        """Record one update; its own rates (``tflops``, and ``mfu`` when the peak is known)."""
        self.rows.append((seconds, frames, flops))
        return self._rates(seconds, frames, flops)

    def _rates(self, seconds: float, frames: int, flops: float) -> dict:
        s = max(seconds, 1e-9)
        out = {"frames_per_s": frames / s, "tokens_per_s": frames * self.k / s, "tflops": flops / s / 1e12}
        if self.peak:
            out["mfu"] = out["tflops"] / self.peak
        return out

    def summary(self) -> dict:
        def part(rows):
            sec, frames, flops = (sum(r[i] for r in rows) for i in range(3))
            return {"steps": len(rows), "seconds": sec, "frames": frames, "tokens": frames * self.k, "flops": flops,
                    **self._rates(sec, frames, flops)}

        half = self.rows[len(self.rows) // 2:]
        return {"all": part(self.rows), "second_half": part(half), "peak_tflops": self.peak or None,
                "flops_formula": FLOPS_FORMULA}
