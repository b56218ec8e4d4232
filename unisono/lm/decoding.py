"""Decoding: the typed state of a generation and the steps that advance it (after Moshi's ``LMGen``: a state
dataclass and a ``step()``).

Two halves, one per concern:

- the pattern's side, :class:`DecodeState`: the frames so far, where each row ended, the KV cache and the last
  transformer output. ``UnisonoLM.start_decode`` builds it (the one decode set-up of every pattern) and
  ``UnisonoLM.decode_step`` advances it by one step, asking a :data:`Picker` (or, for ``delay``, a
  :data:`StreamsPicker`) for the tokens;
- the sampling side, :class:`TokenChooser` and its :class:`PhaseState`: the output heads restricted to the ids
  each phase allows (:class:`PhaseHeads`), guidance, seeds, the minimum length, reasoning phases (where each row
  is, the frames forced between phases, frame caps) and the buffer of picked frames for ``on_frame``. Its
  :meth:`TokenChooser.pick` and :meth:`TokenChooser.pick_streams` are the pickers; both go through one draw,
  :meth:`TokenChooser.draw`.

:class:`Generation` is the two together: ``UnisonoLM.generate`` builds one and steps it to the end.

Shapes: ``B`` rows of the batch, ``B_eff`` rows the transformer runs (``2 B`` with classifier-free guidance: the
conditional rows, then the unconditional ones), ``K`` streams, ``V`` vocabulary, ``T0`` prompt frames, ``N`` new
frames at most. Token ids are global vocabulary ids (``torch.long``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from unisono.errors import UnisonoError
from unisono.lm.quant import linear_rows
from unisono.lm.sampling import cfg_mix, sample_next

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from unisono.lm.model import UnisonoLM

NEVER = 2**62  # the frame of an event that has not happened (a row's end, a phase's end): later than any frame

# pick(head features [B_eff, D_head], stream k, frame t) -> tokens [B_eff]; the picker applies the head
Picker = Callable[[torch.Tensor, int, int], torch.Tensor]
# pick_streams(head features [B_eff, D_head], k_lo, k_hi, step s) -> tokens [B_eff, k_hi - k_lo + 1] of
# streams k_lo..k_hi at frames s - k, for patterns whose streams of a step read one feature vector (delay)
StreamsPicker = Callable[[torch.Tensor, int, int, int], torch.Tensor]


@dataclass(frozen=True)
class Phase:
    """One target segment of a multi-segment generation (a text plan, then the audio) in one pass.

    ``stream_mask [K, V]``: the ids each stream may emit during the phase; ``end_id``: the token (in stream
    0) that ends it (None: a single phase that never ends). For every phase but the last, ``end_frame [K]`` is
    the frame that closes it (stream 0 holds ``end_id``; the other streams are forced to it, as the training
    layout has them). For every phase but the first, ``start_frame [K]`` is the frame fed before its first
    sampled frame (its start token; the prompt ends with the first phase's). ``max_frames``: the phase's end is
    forced after that many sampled frames (None: no limit but ``max_new_frames``).
    """

    stream_mask: torch.Tensor | None
    end_id: int | None
    end_frame: torch.Tensor | None = None
    start_frame: torch.Tensor | None = None
    max_frames: int | None = None


# -- the pattern's side -------------------------------------------------------------------------------------


@dataclass
class DecodeState:
    """A pattern decoder part way through a generation (``UnisonoLM.start_decode`` / ``decode_step``).

    - ``codes``: LongTensor ``[B_eff, T0 + N, K]``: the prompt's frames, then the decoded ones (``pad_id``
      where nothing is decoded yet);
    - ``ended``: LongTensor ``[B_eff]``: the frame at which each row's stream 0 emitted ``end_id``
      (:data:`NEVER` while it has not);
    - ``cache``: the global transformer's KV cache (a list of per-layer caches, or a transformers cache);
    - ``hidden``: the last transformer output, the state the next step's tokens are predicted from: float
      ``[B_eff, D]`` (delay, flat) or ``[B_eff, 1, D]`` (multiscale: the global state of frame ``step``);
    - ``t0``: prompt frames; ``step``: the next step: a frame (multiscale, flat) or a position of the delayed
      sequence (delay: step s samples stream k of frame s - k); ``done``: every row has ended, or the last
      step is run;
    - ``end_id`` (None: rows do not end), ``pad_id``;
    - ``local_cache``: multiscale only: the local transformer's cache over the K codes of a frame.
    """

    codes: torch.Tensor
    ended: torch.Tensor
    cache: Any
    hidden: torch.Tensor
    t0: int
    step: int
    end_id: int | None
    pad_id: int
    done: bool = False
    local_cache: Any = None

    @property
    def total(self) -> int:
        """Frames of ``codes``: ``T0 + N``."""
        return self.codes.shape[1]

    def all_ended(self, by: int = NEVER - 1) -> bool:
        """Whether every row has ended at a frame ``<= by`` (default: at all)."""
        return self.end_id is not None and bool((self.ended <= by).all())

    def settle(self, tok: torch.Tensor, k_lo: int, t_lo: int) -> torch.Tensor:
        """End handling for the picked tokens ``tok [B_eff, M]`` of streams ``k_lo + j`` at frames ``t_lo - j``:
        ``pad_id`` after a row's end frame, ``end_id`` in the other streams of its end frame; a stream-0
        ``end_id`` records the row's end. Returns the tokens to keep ``[B_eff, M]``."""
        if self.end_id is None:
            return tok
        t = t_lo - torch.arange(tok.shape[1], device=tok.device)[None, :]
        e = self.ended[:, None]
        # no row ends at frame t_lo before its stream 0 is picked, so the end fill leaves stream 0 alone
        tok = torch.where(t > e, self.pad_id, torch.where(t == e, self.end_id, tok))
        if k_lo == 0:
            self.ended.masked_fill_((tok[:, 0] == self.end_id) & (self.ended > t_lo), t_lo)
        return tok

    def new_frames(self) -> torch.Tensor:
        """The decoded frames ``[B_eff, T, K]``: a row that ended at frame e has an all-``end_id`` frame e and
        ``pad_id`` after it; ``T`` is the longest row's length (``N`` while some row has not ended)."""
        new = self.codes[:, self.t0:]
        if self.end_id is None:
            return new
        t = torch.arange(new.shape[1], device=new.device)[None, :] + self.t0
        e = self.ended[:, None]
        new = new.masked_fill((t > e)[..., None], self.pad_id).masked_fill((t == e)[..., None], self.end_id)
        return new[:, : int(self.ended.max()) - self.t0 + 1] if self.all_ended() else new


# -- the sampling side --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrawSettings:
    """How tokens are drawn: ``temperature`` (<= 0: greedy), ``top_k``, ``top_p``, ``cfg_scale`` (1: no
    guidance) and ``min_new_frames`` (the last phase's end id is held back before that many new frames)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    cfg_scale: float = 1.0
    min_new_frames: int = 0

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0


@dataclass(frozen=True)
class PhaseHeads:
    """Every stream's output head restricted to the ids one phase allows, for :func:`linear_rows`.

    ``weights``: ``(w [K, W, D_head],)`` float or ``(q [K, W, D_head] int8, scale [K, W])``, each stream's
    allowed rows padded with zeros to the widest stream's ``W`` (without a mask: the whole heads, ``W = V``);
    ``ids``: LongTensor ``[K, W]``, the vocabulary id of each row (None: row i is id i); ``ok``: BoolTensor
    ``[K, W]``, the real rows (None: no padding); ``widths``: each stream's number of allowed ids (None: all
    ``W``); ``end_col``: the row of the phase's end id in stream 0 (None: no end id, or not allowed).
    Dropping the ids a mask forbids changes nothing sampled (they would be -inf: softmax, top-k, top-p and the
    guidance mix ignore them).
    """

    weights: tuple[torch.Tensor, ...]
    ids: torch.Tensor | None = None
    ok: torch.Tensor | None = None
    widths: list[int] | None = None
    end_col: int | None = None

    @classmethod
    def build(cls, heads: tuple[torch.Tensor, ...], mask: torch.Tensor | None, end_id: int | None) -> PhaseHeads:
        """From the model's ``head_weights()`` (``[K, V, ...]`` each) and a phase's ``mask [K, V]`` (bool)."""
        if mask is None:
            return cls(heads, end_col=end_id)
        kk = mask.shape[0]
        allowed = [mask[k].nonzero().squeeze(-1) for k in range(kk)]
        widths = [len(i) for i in allowed]
        ids = torch.zeros(kk, max(widths), dtype=torch.long, device=mask.device)
        ok = torch.zeros(kk, max(widths), dtype=torch.bool, device=mask.device)
        weights = tuple(h.new_zeros(kk, max(widths), *h.shape[2:]) for h in heads)
        for k, i in enumerate(allowed):
            ids[k, : len(i)], ok[k, : len(i)] = i, True
            for dst, h in zip(weights, heads):
                dst[k, : len(i)] = h[k].index_select(0, i)
        hit = (allowed[0] == end_id).nonzero() if end_id is not None else []
        return cls(weights, ids, ok, widths, int(hit[0]) if len(hit) else None)

    def rows(self, k_lo: int, k_hi: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None,
                                                  torch.Tensor | None, list[int] | None]:
        """``(weights [M * W', ...], ids [M, W'], ok [M, W'], widths [M])`` of streams ``k_lo..k_hi`` (M of them):
        one masked stream takes its own rows (``W'`` its width, no padding), several the padded block."""
        if k_lo == k_hi and self.widths is not None:
            w = self.widths[k_lo]
            return tuple(t[k_lo, :w] for t in self.weights), self.ids[k_lo: k_lo + 1, :w], None, None
        ks = slice(k_lo, k_hi + 1)
        return (tuple(t[ks].flatten(0, 1) for t in self.weights), None if self.ids is None else self.ids[ks],
                None if self.ok is None else self.ok[ks], None if self.widths is None else self.widths[ks])


@dataclass
class PhaseState:
    """Where each row stands among the phases (see :class:`Phase`), and the frames picked so far.

    - ``bounds``: LongTensor ``[B, P - 1]``: the frame at which row r ended phase p (its end frame;
      :data:`NEVER` while it has not); phase p + 1's start frame follows at ``bounds + 1``, its sampling at
      ``bounds + 2``;
    - ``all_last_from``: the first frame from which every row is in the last phase (``T0`` with one phase,
      :data:`NEVER` until known): from there on no row is forced or switches phase, and the streams of a delay
      step are drawn together;
    - ``picked``: LongTensor ``[B, N, K]``: the tokens picked for each new frame (before end handling), handed
      to ``on_frame`` when a frame is complete (None without ``on_frame``).
    """

    bounds: torch.Tensor
    all_last_from: int
    picked: torch.Tensor | None = None

    def phase_at(self, t: int) -> torch.Tensor:
        """``[B]``: the phase each row samples at frame t (the phases whose end and start frames are behind it)."""
        return (self.bounds + 2 <= t).sum(1)

    def first_frame(self, p: int, t0: int, rows: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """The first sampled frame of phase p for ``rows`` (None: every row), shaped ``like``."""
        if p == 0:
            return torch.full_like(like, t0)
        first = self.bounds[:, p - 1] + 2
        return first if rows is None else first[rows]


class TokenChooser:
    """Chooses the tokens of one generation: the pickers :meth:`pick` and :meth:`pick_streams` that
    ``UnisonoLM.decode_step`` asks. ``phases`` are checked (:func:`check_phases`) with their masks and forced
    frames on the model's device; ``heads[p]`` is phase p's :class:`PhaseHeads`; ``generator`` one
    ``torch.Generator`` for the batch, one per row (a list), or None; ``batch`` is B, ``t0`` the prompt frames,
    ``max_new`` N; ``on_frame(n, tokens [B, K])`` is called when the n-th new frame is complete."""

    def __init__(self, phases: list[Phase], heads: list[PhaseHeads], settings: DrawSettings, generator,
                 batch: int, t0: int, max_new: int, on_frame: Callable[[int, torch.Tensor], Any] | None = None):
        self.phases, self.heads, self.settings, self.generator = phases, heads, settings, generator
        self.batch, self.t0, self.on_frame = batch, t0, on_frame
        self.last = len(phases) - 1
        dev = heads[0].weights[0].device
        kk = heads[0].weights[0].shape[0]
        self.num_streams = kk
        self.state = PhaseState(
            bounds=torch.full((batch, self.last), NEVER, dtype=torch.long, device=dev),
            all_last_from=t0 if self.last == 0 else NEVER,
            picked=None if on_frame is None else torch.zeros(batch, max_new, kk, dtype=torch.long, device=dev))

    # -- the pickers
    def pick(self, feats: torch.Tensor, k: int, t: int) -> torch.Tensor:
        """:data:`Picker`: tokens ``[B_eff]`` of stream k of frame t from head inputs ``feats [B_eff, D_head]``
        (with guidance both halves get the guided tokens)."""
        st = self.state
        if t >= st.all_last_from:
            tok = self.draw(feats, k, k, t, self.last)[:, 0]
            if k == 0:
                tok = self._cap(tok, self.last, t, None)
        else:
            tok = self._pick_phased(feats, k, t)
            if k == 0 and bool((st.bounds[:, -1] + 2 <= t).all()):
                st.all_last_from = t + 1
        self._emit(k, t, tok[:, None])
        return torch.cat([tok, tok]) if self.settings.guided else tok

    def pick_streams(self, feats: torch.Tensor, k_lo: int, k_hi: int, s: int) -> torch.Tensor:
        """:data:`StreamsPicker`: tokens ``[B_eff, M]`` of streams ``k_lo..k_hi`` at frames ``s - k``, in one draw
        once every row is in the last phase (the tokens of M picks, stream after stream)."""
        if s - k_hi < self.state.all_last_from:  # some row may switch phase: stream by stream
            return torch.stack([self.pick(feats, k, s - k) for k in range(k_lo, k_hi + 1)], dim=1)
        tok = self.draw(feats, k_lo, k_hi, s - k_lo, self.last)
        if k_lo == 0:
            tok[:, 0] = self._cap(tok[:, 0], self.last, s, None)
        self._emit(k_lo, s - k_lo, tok)
        return torch.cat([tok, tok]) if self.settings.guided else tok

    # -- the one draw
    def draw(self, feats: torch.Tensor, k_lo: int, k_hi: int, t: int, p: int,
             rows: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens ``[n, M]`` of streams ``k_lo..k_hi`` (stream ``k_lo`` at frame t; M of them) in phase p, for
        ``rows`` (LongTensor ``[n]`` of batch rows; None: all B) from head inputs ``feats [B_eff, D_head]``: the
        phase's head rows, padding masked, guidance mixed, the end held back before ``min_new_frames``, drawn
        by :func:`sample_next` with the rows' generators, mapped to vocabulary ids."""
        s, g = self.settings, self.generator
        if rows is not None:
            feats = feats[torch.cat([rows, rows + self.batch])] if s.guided else feats[rows]
            g = [g[int(r)] for r in rows] if isinstance(g, list) else g
        weights, ids, ok, widths = self.heads[p].rows(k_lo, k_hi)
        logits = linear_rows(feats, weights).view(feats.shape[0], k_hi - k_lo + 1, -1).float()  # [n_eff, M, W]
        if ok is not None:
            logits = logits.masked_fill(~ok, float("-inf"))
        if s.guided:
            n = logits.shape[0] // 2
            logits = cfg_mix(logits[:n], logits[n:], s.cfg_scale)
            if ok is not None:  # -inf - -inf in the mix
                logits = logits.masked_fill(~ok, float("-inf"))
        end_col = self.heads[p].end_col
        if k_lo == 0 and p == self.last and end_col is not None and t - self.t0 < s.min_new_frames:
            logits[:, 0, end_col] = float("-inf")
        tok = sample_next(logits, s.temperature, s.top_k, s.top_p, g, widths)
        return tok if ids is None else ids.expand(tok.shape[0], -1, -1).gather(2, tok[..., None])[..., 0]

    # -- phases
    def _pick_phased(self, feats: torch.Tensor, k: int, t: int) -> torch.Tensor:
        """Tokens ``[B]`` of stream k of frame t while rows may be in different phases: the forced end and
        start frames, then a draw per phase for the other rows (ascending), frame caps; records phase ends."""
        phase = self.state.phase_at(t)
        tok, forced = self._forced(k, t)
        free = ~forced
        if not bool(free.any()):
            return tok
        for p in phase[free].unique().tolist():
            rows = (free & (phase == p)).nonzero().squeeze(-1)
            drawn = self.draw(feats, k, k, t, p, None if len(rows) == self.batch else rows)[:, 0]
            tok[rows] = self._cap(drawn, p, t, rows) if k == 0 else drawn
        if k == 0:  # rows that end a phase (not the last) at this frame
            bounds = self.state.bounds
            for p in range(self.last):
                hit = free & (phase == p) & (tok == self.phases[p].end_id)
                bounds[:, p] = torch.where(hit, torch.full_like(bounds[:, p], t), bounds[:, p])
        return tok

    def _forced(self, k: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens [B], forced [B] bool)``: stream k of the rows whose frame t is a phase's end frame (streams
        k > 0 follow its ``end_frame``) or the next phase's start frame."""
        bounds = self.state.bounds
        tok = torch.zeros(self.batch, dtype=torch.long, device=bounds.device)
        forced = torch.zeros(self.batch, dtype=torch.bool, device=bounds.device)
        for i in range(self.last):
            if k > 0:
                at_end = bounds[:, i] == t
                tok = torch.where(at_end, self.phases[i].end_frame[k], tok)
                forced |= at_end
            at_start = bounds[:, i] + 1 == t
            tok = torch.where(at_start, self.phases[i + 1].start_frame[k], tok)
            forced |= at_start
        return tok, forced

    def _cap(self, tok0: torch.Tensor, p: int, t: int, rows: torch.Tensor | None) -> torch.Tensor:
        """Stream-0 tokens ``tok0 [n]`` of phase p at frame t, the phase's end id for the rows (None: all) that
        have sampled its ``max_frames`` frames."""
        cap = self.phases[p].max_frames
        if cap is None:
            return tok0
        over = t - self.state.first_frame(p, self.t0, rows, tok0) >= cap
        return torch.where(over, torch.full_like(tok0, self.phases[p].end_id), tok0)

    def _emit(self, k_lo: int, t_lo: int, tok: torch.Tensor) -> None:
        """Buffer the picked tokens ``tok [B, M]`` of streams ``k_lo + j`` at frames ``t_lo - j``; hand each frame
        to ``on_frame`` once its last stream is in."""
        if self.on_frame is None:
            return
        for j in range(tok.shape[1]):
            n = t_lo - j - self.t0  # new frame index
            self.state.picked[:, n, k_lo + j] = tok[: self.batch, j]
            if k_lo + j == self.num_streams - 1:
                self.on_frame(n + 1, self.state.picked[:, n].clone())


# -- checks and set-up --------------------------------------------------------------------------------------


def check_phases(phases: list[Phase], kk: int) -> list[Phase]:
    """Raise :class:`UnisonoError` unless ``phases`` can run one after another (see :class:`Phase`)."""
    if not phases:
        raise UnisonoError("phases is empty; give at least one Phase")
    for i, ph in enumerate(phases):
        if i < len(phases) - 1:
            if ph.end_frame is None or tuple(ph.end_frame.shape) != (kk,) or int(ph.end_frame[0]) != ph.end_id:
                raise UnisonoError(f"phase {i} needs end_frame [K={kk}] whose stream 0 is its end_id {ph.end_id}")
            if ph.end_id == phases[-1].end_id:
                raise UnisonoError(f"phase {i} ends with the last phase's end id {ph.end_id}; phases must end with "
                                   "different tokens")
        if i > 0 and (ph.start_frame is None or tuple(ph.start_frame.shape) != (kk,)):
            raise UnisonoError(f"phase {i} needs start_frame [K={kk}] (the frame with its start token)")
        if ph.max_frames is not None and ph.max_frames < 1:
            raise UnisonoError(f"phase {i}: max_frames must be >= 1, got {ph.max_frames}")
    return phases


def resolve_phases(phases: list[Phase] | None, stream_mask: torch.Tensor | None, end_id: int | None,
                   kk: int, vocab_size: int, device) -> list[Phase]:
    """The phases of a generation (one from ``stream_mask``/``end_id`` without ``phases``), checked, with masks
    (bool ``[K, V]``) and forced frames (long ``[K]``) on ``device``."""
    if phases is not None:
        if stream_mask is not None or end_id is not None:
            raise UnisonoError("give either phases or stream_mask/end_id, not both")
        phases = check_phases(list(phases), kk)
        end_id = phases[-1].end_id
    else:
        phases = [Phase(stream_mask, end_id)]
    if end_id is not None and not 0 <= end_id < vocab_size:
        raise UnisonoError(f"end_id {end_id} is outside the vocabulary [0, {vocab_size})")
    out = []
    for ph in phases:
        m = ph.stream_mask
        if m is not None:
            m = m.to(device).bool()
            if m.shape != (kk, vocab_size):
                raise UnisonoError(f"stream_mask must be [K={kk}, V={vocab_size}], got {tuple(m.shape)}")
            if not bool(m.any(-1).all()):
                raise UnisonoError("stream_mask allows no token for some stream")
        out.append(dataclasses.replace(
            ph, stream_mask=m, end_frame=None if ph.end_frame is None else ph.end_frame.to(device).long(),
            start_frame=None if ph.start_frame is None else ph.start_frame.to(device).long()))
    return out


def guided_prompt(model: UnisonoLM, prompt: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor:
    """``[2B, T0, K]``: the prompt, then its unconditional twin (default: every token ``pad_id``, as condition
    dropout has it in training), for classifier-free guidance in one batch."""
    if uncond is None:
        uncond = torch.full_like(prompt, model.cfg.pad_id)
    else:
        model.cfg.check_frames(uncond, "uncond_prompt_frames")
        uncond = uncond.long().to(prompt.device)
        if uncond.shape != prompt.shape:
            raise UnisonoError(
                f"uncond_prompt_frames {tuple(uncond.shape)} must match prompt_frames "
                f"{tuple(prompt.shape)}; replace the condition tokens by pad_id instead of removing them"
            )
    return torch.cat([prompt, uncond], dim=0)


def generators(seed: int | list[int] | None, batch: int, device) -> torch.Generator | list[torch.Generator] | None:
    """One generator for the batch (an int seed), one per row (a list: each row samples as it would alone), or
    None (torch's global generator)."""
    if isinstance(seed, (list, tuple)):
        if len(seed) != batch:
            raise UnisonoError(f"seed has {len(seed)} values for a batch of {batch} rows")
        return [torch.Generator(device=device).manual_seed(int(s)) for s in seed]
    return None if seed is None else torch.Generator(device=device).manual_seed(int(seed))


class Generation:
    """One :meth:`UnisonoLM.generate` call as an object: the checked arguments (the same, with the same
    meaning, ``feats [B, T0, feature_dim]`` included), a :class:`TokenChooser` and the pattern's
    :class:`DecodeState`.

    ``step()`` advances it by one decoding step (a frame; for ``delay`` a position of the delayed sequence) and
    says whether steps remain; ``frames()`` gives the new frames ``[B, T, K]`` so far. Run it under
    ``torch.inference_mode()`` with the model in eval mode (``generate`` does both).
    """

    def __init__(self, model: UnisonoLM, prompt_frames: torch.Tensor, max_new_frames: int,
                 stream_mask: torch.Tensor | None = None, end_id: int | None = None, top_k: int | None = None,
                 top_p: float | None = None, temperature: float = 1.0, cfg_scale: float = 1.0,
                 uncond_prompt_frames: torch.Tensor | None = None, seed: int | list[int] | None = None,
                 min_new_frames: int = 0, on_frame: Callable[[int, torch.Tensor], Any] | None = None,
                 phases: list[Phase] | None = None, feats: torch.Tensor | None = None):
        cfg = model.cfg
        cfg.check_frames(prompt_frames, "prompt_frames")
        prompt = prompt_frames.long().to(model.bos.device)
        b, t0, kk = prompt.shape
        if max_new_frames < 1:
            raise UnisonoError(f"max_new_frames must be >= 1, got {max_new_frames}")
        phases = resolve_phases(phases, stream_mask, end_id, kk, cfg.vocab_size, prompt.device)
        settings = DrawSettings(temperature, top_k, top_p, cfg_scale, min_new_frames)
        rows = guided_prompt(model, prompt, uncond_prompt_frames) if settings.guided else prompt
        if feats is not None:  # [B, T0, D]; the unconditional rows read them only where they keep a placeholder
            feats = torch.as_tensor(feats).to(prompt.device)
            if settings.guided and feats.dim() == 3:
                feats = torch.cat([feats, feats])
        gen = generators(seed, b, prompt.device)
        heads = [PhaseHeads.build(model.head_weights(), ph.stream_mask, ph.end_id) for ph in phases]
        self.model, self.batch = model, b
        self.chooser = TokenChooser(phases, heads, settings, gen, b, t0, max_new_frames, on_frame)
        self.state = model.start_decode(rows, max_new_frames, phases[-1].end_id, feats)

    def step(self) -> bool:
        """Run the next decoding step; False once the generation is complete (every row ended, or the last
        step run)."""
        if not self.state.done:
            self.model.decode_step(self.state, self.chooser.pick, self.chooser.pick_streams)
        return not self.state.done

    def frames(self) -> torch.Tensor:
        """The new frames ``[B, T, K]`` (see :meth:`DecodeState.new_frames`)."""
        return self.state.new_frames()[: self.batch]
