"""The unisono language model: a transformer over frame sequences with an interchangeable codebook pattern.

All patterns share one interface:

- ``forward(frames [B, T, K]) -> logits [B, T, K, V]``: ``logits[:, t, k]`` predicts ``frames[:, t, k]``
  from what the pattern lets it see (every earlier frame, and the lower streams of frame t for
  ``multiscale`` and ``flat``; for ``delay``, stream k of frame t sees streams j of frames < t + k - j).
- ``loss(frames, loss_mask)``: cross-entropy over the positions where ``loss_mask [B, T, K]`` is True.
- ``generate(prompt_frames [B, T0, K], max_new_frames, ...) -> new frames [B, T, K]`` with a
  preallocated KV cache, sampling, per-stream vocabulary masks and classifier-free guidance.
- ``save_pretrained(dir)`` / ``UnisonoLM.from_pretrained(dir)``: ``config.json`` + ``model.safetensors``.

Token ids are global ids of one vocabulary of size V; one embedding table serves every stream (the
embeddings of the K tokens at a position are summed) and each stream has its own output head.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from unisono.errors import UnisonoError
from unisono.fileio import atomic_path, write_json
from unisono.lm.config import LMConfig
from unisono.lm.layers import Transformer
from unisono.lm.patterns import delay_indices, delay_interleave
from unisono.lm.quant import int8_matmul, int8_rows, linear_rows
from unisono.lm.sampling import cfg_mix, sample_next

FORMAT_VERSION = 1
_NEVER = 2**62


@dataclass(frozen=True)
class Phase:
    """One target segment of a multi-segment generation (a text plan, then the audio) in one pass.

    ``stream_mask [K, V]``: the ids each stream may emit during the phase; ``end_id``: the token (in stream
    0) that ends it. For every phase but the last, ``end_frame [K]`` is the frame that closes it (stream 0
    holds ``end_id``; the other streams are forced to it, as the training layout has them). For every phase
    but the first, ``start_frame [K]`` is the frame fed before its first sampled frame (its start token;
    the prompt ends with the first phase's). ``max_frames``: the phase's end is forced after that many
    sampled frames (None: no limit but ``max_new_frames``).
    """

    stream_mask: torch.Tensor | None
    end_id: int
    end_frame: torch.Tensor | None = None
    start_frame: torch.Tensor | None = None
    max_frames: int | None = None


# pick(head features [B_eff, D_head], stream k, frame t) -> tokens [B_eff]; the picker applies the head
Picker = Callable[[torch.Tensor, int, int], torch.Tensor]
# pick_streams(head features [B_eff, D_head], k_lo, k_hi, step s) -> tokens [B_eff, k_hi - k_lo + 1] of
# streams k_lo..k_hi at frames s - k, for patterns whose streams of a step read one feature vector (delay)
StreamsPicker = Callable[[torch.Tensor, int, int, int], torch.Tensor]


class HFBackbone(nn.Module):
    """The decoder layers of a transformers ``AutoModelForCausalLM`` used as the global transformer.

    Inputs are embeddings (``inputs_embeds``); the LLM's own token embeddings and LM head are not used.
    """

    def __init__(self, model_dir: str | None = None, hf_config: dict | None = None):
        super().__init__()
        try:
            from transformers import AutoConfig, AutoModelForCausalLM
        except ImportError as e:  # pragma: no cover - transformers is a dependency of the lm extra
            raise UnisonoError("the HF backbone needs transformers: pip install 'unisono[lm]'") from e
        if hf_config is not None:
            cfg_dict = dict(hf_config)
            model_type = cfg_dict.pop("model_type")
            config = AutoConfig.for_model(model_type, **cfg_dict)
            model = AutoModelForCausalLM.from_config(config)
        else:
            if not Path(model_dir, "config.json").is_file():
                raise UnisonoError(f"backbone_dir {model_dir} has no config.json; give a local transformers model dir")
            model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
        model.config.use_cache = True
        self.hf_config = model.config.to_dict()
        self.body = model.base_model
        emb = self.body.get_input_embeddings()
        if emb is not None:  # unused: inputs arrive as embeddings of the unisono vocabulary
            emb.weight.requires_grad_(False)
        self.dim = model.config.hidden_size

    def new_cache(self, batch, max_len, device, dtype):
        from transformers import DynamicCache

        return DynamicCache()

    def forward(self, x: torch.Tensor, pos0: int = 0, cache=None) -> torch.Tensor:
        pos = torch.arange(pos0, pos0 + x.shape[1], device=x.device)[None].expand(x.shape[0], -1)
        out = self.body(inputs_embeds=x, position_ids=pos, past_key_values=cache, use_cache=cache is not None)
        return out.last_hidden_state


def _check_frames(frames: torch.Tensor, cfg: LMConfig, what: str = "frames") -> None:
    if frames.dim() != 3 or frames.shape[-1] != cfg.num_streams:
        raise UnisonoError(f"{what} must be [B, T, K={cfg.num_streams}], got {tuple(frames.shape)}")
    if frames.dtype not in (torch.int64, torch.int32):
        raise UnisonoError(f"{what} must hold integer token ids, got {frames.dtype}")
    if frames.numel() and (int(frames.min()) < 0 or int(frames.max()) >= cfg.vocab_size):
        raise UnisonoError(
            f"{what} hold ids outside the vocabulary [0, {cfg.vocab_size}); were they made with another vocab.json?"
        )


class UnisonoLM(nn.Module):
    """Base class; build one with ``UnisonoLM.from_config(cfg)`` or ``UnisonoLM.from_pretrained(dir)``."""

    pattern: str = ""

    @property
    def int8(self) -> bool:
        """Quantized for inference (unisono.lm.quant): int8 heads, int8 or int4 linear layers; no training."""
        return self.linear_bits < 32

    def __init__(self, cfg: LMConfig):
        super().__init__()
        if cfg.backbone_dir is not None or cfg.backbone_config is not None:
            self.backbone = HFBackbone(cfg.backbone_dir, cfg.backbone_config)
            # the weights now live in this model's checkpoint: its config carries the backbone's config, no dir
            # (a copy: the caller's config is left as it was)
            cfg = dataclasses.replace(cfg, backbone_config=self.backbone.hf_config, backbone_dir=None)
        else:
            self.backbone = Transformer(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_mult,
                                        cfg.max_seq_len, cfg.rope_theta, cfg.dropout, cfg.norm_eps)
        self.cfg = cfg
        d = self.backbone.dim
        self.dim = d
        self.tok_emb = nn.Embedding(cfg.vocab_size, d)
        self.bos = nn.Parameter(torch.zeros(d))
        self.head_dim_in = self._head_in_dim()
        self.head_w = nn.Parameter(torch.empty(cfg.num_streams, cfg.vocab_size, self.head_dim_in))
        # the transformer's linear layers: 32 (float), or 8 / 4 bits after unisono.lm.quant.quantize_inference,
        # which also fills the int8 heads head_q [K, V, D_head] and head_scale [K, V] (set_quantized)
        self.linear_bits = 32
        self.register_buffer("head_q", None, persistent=False)
        self.register_buffer("head_scale", None, persistent=False)
        # rows of tok_emb that learn when the rest of the embedding is frozen (fine-tuning); None: all rows
        self.free_embedding_rows: list[int] | None = None
        self._init_weights()

    # -- construction ------------------------------------------------------------------------
    @staticmethod
    def from_config(cfg: LMConfig | dict) -> "UnisonoLM":
        if isinstance(cfg, dict):
            cfg = LMConfig.from_dict(cfg)
        return {"multiscale": MultiscaleLM, "delay": DelayLM, "flat": FlatLM}[cfg.pattern](cfg)

    def _head_in_dim(self) -> int:
        return self.dim

    def train_only_embedding_rows(self, ids: list[int]) -> None:
        """Let only the embedding rows ``ids`` of ``tok_emb`` learn: the gradient of every other row is zeroed
        (e.g. a new task's token while the rest of the model is frozen). ``free_embedding_rows`` records them."""
        if self.free_embedding_rows is not None:
            raise UnisonoError("train_only_embedding_rows was already called on this model; call it once with "
                               "every row that should learn")
        w = self.tok_emb.weight
        keep = torch.zeros(w.shape[0], 1, dtype=w.dtype, device=w.device)
        keep[list(ids)] = 1.0
        w.requires_grad_(True)
        w.register_hook(lambda g: g * keep.to(g.dtype))
        self.free_embedding_rows = sorted(set(int(i) for i in ids))

    def trainable_parameters(self) -> int:
        """Parameters that training changes (a row-masked embedding counts its free rows only)."""
        n = 0
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name == "tok_emb.weight" and self.free_embedding_rows is not None:
                n += p.shape[1] * len(self.free_embedding_rows)
            else:
                n += p.numel()
        return n

    def _init_weights(self) -> None:
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name.startswith("backbone.body."):
                continue  # a transformers backbone keeps its own initialisation
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, std)
        nn.init.normal_(self.bos, 0.0, std)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def max_frames(self) -> int:
        """Frames (prompt + generated) that fit the global transformer's ``max_seq_len`` positions under this
        model's codebook pattern (see :class:`LMConfig`)."""
        raise NotImplementedError

    # -- pieces shared by the patterns -------------------------------------------------------
    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [B, T, K] -> [B, T, D]``: sum of the K token embeddings of each position."""
        return self.tok_emb(frames).sum(2)

    def with_bos(self, x: torch.Tensor) -> torch.Tensor:
        """Prepend the start vector: ``[B, S, D] -> [B, S + 1, D]``."""
        bos = self.bos.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([bos, x], dim=1)

    def set_quantized(self, bits: int) -> None:
        """Record that the linear layers now hold ``bits``-bit weights (8 or 4; done by
        :func:`unisono.lm.quant.quantize_inference`) and give the output heads int8 rows: ``head_q [K, V, D_head]``
        int8 and ``head_scale [K, V]``, used by :meth:`head` and generation from then on."""
        qs = [int8_rows(w) for w in self.head_w.detach()]
        self.head_q = torch.stack([q for q, _ in qs])
        self.head_scale = torch.stack([sc for _, sc in qs])
        self.linear_bits = bits

    def head_weights(self) -> tuple[torch.Tensor, ...]:
        """Every stream's output head as rows for :func:`unisono.lm.quant.linear_rows`: ``(head_w [K, V, D_head],)``
        float, or ``(head_q [K, V, D_head] int8, head_scale [K, V])`` once quantized."""
        return (self.head_q, self.head_scale) if self.int8 else (self.head_w,)

    def head(self, feats: torch.Tensor, k: int) -> torch.Tensor:
        """Stream ``k``'s logits: ``feats [..., D_head] -> [..., V]``."""
        return linear_rows(feats, tuple(w[k] for w in self.head_weights()))

    def features(self, frames: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
        """Head inputs aligned with frames: ``[B, T, K, D_head]`` (``[N, K, D_head]`` for ``select [B, T]``)."""
        raise NotImplementedError

    # -- training ----------------------------------------------------------------------------
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [B, T, K] -> logits [B, T, K, V]`` (float)."""
        _check_frames(frames, self.cfg)
        f = self.features(frames)
        return torch.stack([self.head(f[:, :, k], k) for k in range(self.cfg.num_streams)], dim=2)

    def token_cross_entropy(self, frames: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        """Per-token cross-entropy (nats, float32) ``[B, T, K]`` of ``frames [B, T, K]`` under the model, at the
        tokens where ``loss_mask [B, T, K]`` is True; 0 elsewhere (not computed). Differentiable; the one owner of
        the token losses (:meth:`loss`, :func:`unisono.train.dpo.sequence_logprobs`)."""
        _check_frames(frames, self.cfg)
        if self.int8 and torch.is_grad_enabled():
            raise UnisonoError(f"this model was quantized to int{self.linear_bits} for inference; load the float "
                              "checkpoint to train it")
        if loss_mask.shape != frames.shape:
            raise UnisonoError(f"loss_mask {tuple(loss_mask.shape)} must have the shape of frames {tuple(frames.shape)}")
        loss_mask = loss_mask.bool()
        select = loss_mask.any(-1)  # [B, T] frames with at least one loss token
        feats = self.features(frames, select)  # [N, K, Dh]
        tgt, m = frames[select], loss_mask[select]  # [N, K]
        ce = feats.new_zeros(m.shape, dtype=torch.float32)  # [N, K]
        for k in range(self.cfg.num_streams):
            sel = m[:, k]
            if bool(sel.any()):
                ce[sel, k] = F.cross_entropy(self.head(feats[:, k][sel], k).float(), tgt[:, k][sel], reduction="none")
        out = ce.new_zeros(frames.shape)
        out[select] = ce
        return out

    def loss(self, frames: torch.Tensor, loss_mask: torch.Tensor,
             stream_weights: list[float] | torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Cross-entropy over ``loss_mask [B, T, K]``.

        Returns ``loss`` (weighted mean over the masked tokens: ``sum_k w_k CE_k / sum_k w_k n_k``),
        ``weight`` (the denominator), ``stream_sum``/``stream_count [K]`` and ``example_sum``/``example_count [B]`` (unweighted sums of
        token cross-entropies, for logging per stream and per task).
        """
        ce = self.token_cross_entropy(frames, loss_mask)  # [B, T, K]
        loss_mask = loss_mask.bool()
        kk, dev = self.cfg.num_streams, ce.device
        w = torch.ones(kk) if stream_weights is None else torch.as_tensor(stream_weights, dtype=torch.float32)
        w = w.to(dev)
        total = ce.new_zeros(())
        denom = ce.new_zeros(())
        s_sum, s_cnt = torch.zeros(kk, device=dev), torch.zeros(kk, device=dev)
        e_sum, e_cnt = torch.zeros(frames.shape[0], device=dev), torch.zeros(frames.shape[0], device=dev)
        for k in range(kk):
            sel = loss_mask[..., k]  # [B, T]
            if not bool(sel.any()):
                continue
            ce_k, rows = ce[..., k][sel], sel.nonzero()[:, 0]  # [n_k] in (row, frame) order, each token's row
            total = total + w[k] * ce_k.sum()
            denom = denom + w[k] * ce_k.numel()
            s_sum[k] = ce_k.detach().sum()
            s_cnt[k] = ce_k.numel()
            e_sum.index_add_(0, rows, ce_k.detach())
            e_cnt.index_add_(0, rows, torch.ones_like(ce_k))
        loss = total / denom.clamp_min(1e-8)
        return {"loss": loss, "weight": denom.detach(), "stream_sum": s_sum, "stream_count": s_cnt,
                "example_sum": e_sum, "example_count": e_cnt}

    # -- generation --------------------------------------------------------------------------
    def decode(self, prompt: torch.Tensor, max_new: int, pick: Picker, end_id: int | None,
               pick_streams: StreamsPicker | None = None) -> torch.Tensor:
        """Step-wise generation with a KV cache; ``pick`` chooses each token (``pick_streams`` several streams
        of one step at once, where the pattern allows). Returns ``[B_eff, T_new, K]``."""
        raise NotImplementedError

    @staticmethod
    def _resolve(tok: torch.Tensor, k: int, t: int, ended: torch.Tensor, end_id: int | None, pad_id: int) -> torch.Tensor:
        """Apply end handling to the tokens chosen for stream k of frame t; updates ``ended [B]`` in place."""
        if end_id is None:
            return tok
        tok = torch.where(t > ended, torch.full_like(tok, pad_id), tok)
        if k == 0:
            newly = (tok == end_id) & (ended > t)
            ended.masked_fill_(newly, t)
        else:
            tok = torch.where(ended == t, torch.full_like(tok, end_id), tok)
        return tok

    @staticmethod
    def _resolve_streams(tok: torch.Tensor, k_lo: int, s: int, ended: torch.Tensor, end_id: int | None,
                         pad_id: int) -> torch.Tensor:
        """:meth:`_resolve` for the tokens ``tok [B, M]`` of streams ``k_lo .. k_lo + M - 1`` at frames ``s - k``."""
        if end_id is None:
            return tok
        t = s - torch.arange(k_lo, k_lo + tok.shape[1], device=tok.device)[None, :]
        e = ended[:, None]
        # no row ends at frame s before stream 0 of s is drawn, so the end fill leaves stream 0 alone
        tok = torch.where(t > e, pad_id, torch.where(t == e, end_id, tok))
        if k_lo == 0:
            ended.masked_fill_((tok[:, 0] == end_id) & (ended > s), s)
        return tok

    @staticmethod
    def _finish(out: torch.Tensor, ended: torch.Tensor, t0: int, end_id: int | None, pad_id: int) -> torch.Tensor:
        """Cut ``out [B, T0 + N, K]`` to the new frames; rows ended at e get an all-end frame e, pad after."""
        new = out[:, t0:]
        if end_id is None:
            return new
        n = new.shape[1]
        t = torch.arange(n, device=out.device)[None, :] + t0
        e = ended[:, None]
        new = new.masked_fill((t > e)[..., None], pad_id).masked_fill((t == e)[..., None], end_id)
        if bool((ended < 2**62).all()):
            n = int(ended.max()) - t0 + 1
        return new[:, :n]

    @torch.inference_mode()
    def generate(
        self,
        prompt_frames: torch.Tensor,
        max_new_frames: int,
        stream_mask: torch.Tensor | None = None,
        end_id: int | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        cfg_scale: float = 1.0,
        uncond_prompt_frames: torch.Tensor | None = None,
        seed: int | list[int] | None = None,
        min_new_frames: int = 0,
        on_frame=None,
        phases: list[Phase] | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt_frames [B, T0, K]`` by up to ``max_new_frames`` frames -> ``[B, T, K]``.

        A row stops when its stream 0 emits ``end_id``: that frame is returned filled with ``end_id``
        and the row's later frames with ``pad_id``; ``T`` is the longest row's length (``max_new_frames``
        if some row never ends). ``stream_mask [K, V]`` says which ids each stream may emit.
        ``cfg_scale != 1`` runs the conditional and unconditional prompts in one doubled batch;
        the unconditional prompt defaults to the prompt with every token replaced by ``pad_id``
        (as condition dropout does in training). ``seed`` makes sampling reproducible (an int for the
        batch, or one int per row so that each row samples as it would alone);
        ``temperature <= 0`` is greedy. ``min_new_frames`` forbids the end before that many frames.
        ``on_frame(n, tokens [B, K])`` is called each time the n-th new frame is complete, with the tokens
        sampled for it (for progress bars and streaming; an exception it raises, e.g. on cancellation,
        stops generation).

        ``phases`` (instead of ``stream_mask`` and ``end_id``) generates several segments one after another
        (see :class:`Phase`): a row that ends phase p at frame t gets ``end_frame`` at t, the next phase's
        ``start_frame`` at t + 1 and samples with the next phase's mask from t + 2; rows switch at their own
        frames. The last phase's ``end_id`` ends the row, as ``end_id`` does.
        """
        cfg = self.cfg
        _check_frames(prompt_frames, cfg, "prompt_frames")
        prompt = prompt_frames.long().to(self.bos.device)
        b, t0, kk = prompt.shape
        if max_new_frames < 1:
            raise UnisonoError(f"max_new_frames must be >= 1, got {max_new_frames}")
        if phases is not None:
            if stream_mask is not None or end_id is not None:
                raise UnisonoError("give either phases or stream_mask/end_id, not both")
            phases = self._check_phases(list(phases), kk, prompt.device)
            end_id = phases[-1].end_id
        else:
            phases = [Phase(stream_mask, end_id)] if end_id is not None else [Phase(stream_mask, -1)]
        if end_id is not None and not 0 <= end_id < cfg.vocab_size:
            raise UnisonoError(f"end_id {end_id} is outside the vocabulary [0, {cfg.vocab_size})")
        masks = []
        for ph in phases:
            m = ph.stream_mask
            if m is not None:
                m = m.to(prompt.device).bool()
                if m.shape != (kk, cfg.vocab_size):
                    raise UnisonoError(f"stream_mask must be [K={kk}, V={cfg.vocab_size}], got {tuple(m.shape)}")
                if not bool(m.any(-1).all()):
                    raise UnisonoError("stream_mask allows no token for some stream")
            masks.append(m)
        use_cfg = cfg_scale != 1.0
        if use_cfg:
            if uncond_prompt_frames is None:
                uncond = torch.full_like(prompt, cfg.pad_id)
            else:
                _check_frames(uncond_prompt_frames, cfg, "uncond_prompt_frames")
                uncond = uncond_prompt_frames.long().to(prompt.device)
                if uncond.shape != prompt.shape:
                    raise UnisonoError(
                        f"uncond_prompt_frames {tuple(uncond.shape)} must match prompt_frames {tuple(prompt.shape)}; "
                        "replace the condition tokens by pad_id instead of removing them"
                    )
            prompt = torch.cat([prompt, uncond], dim=0)
        gen = None
        if isinstance(seed, (list, tuple)):  # one generator per row: rows independent of their batch
            if len(seed) != b:
                raise UnisonoError(f"seed has {len(seed)} values for a batch of {b} rows")
            gen = [torch.Generator(device=prompt.device).manual_seed(int(s)) for s in seed]
        elif seed is not None:
            gen = torch.Generator(device=prompt.device).manual_seed(int(seed))
        # With a stream mask, each stream's head is evaluated on its allowed ids only (the others would
        # be -inf anyway; softmax, top-k, top-p and the guidance mix are unchanged by dropping them).
        # heads[p][k] = (ids or None, weights): stream k's head in phase p, on its allowed ids only;
        # stacked[p] = (ids [K, Vm], allowed [K, Vm], widths [K], Vm, weights [K * Vm, D]) (None, None, None,
        # V, whole heads without a mask): every stream's head in one matrix, rows padded to the widest
        # stream, so that the streams that read one feature vector (delay) take one product per step; the
        # per-stream heads are slices of it. Weights are float [N, D] or int8 (q [N, D], scale [N]).
        heads: list[list[tuple[torch.Tensor | None, torch.Tensor | tuple]]] = []
        stacked: list[tuple] = []
        end_pos: list[int | None] = []
        for ph, m in zip(phases, masks):
            src = (self.head_q, self.head_scale) if self.int8 else (self.head_w,)  # int8: unisono.lm.quant
            if m is None:
                ids, ok, widths, vm, full = None, None, None, cfg.vocab_size, src
                idl = [None] * kk
            else:
                idl = [m[k].nonzero().squeeze(-1) for k in range(kk)]
                widths = [len(i) for i in idl]
                vm = max(widths)
                ids = torch.zeros(kk, vm, dtype=torch.long, device=prompt.device)
                ok = torch.zeros(kk, vm, dtype=torch.bool, device=prompt.device)
                full = tuple(t.new_zeros(kk, vm, *t.shape[2:]) for t in src)
                for k, i in enumerate(idl):
                    ids[k, : len(i)], ok[k, : len(i)] = i, True
                    for dst, t in zip(full, src):
                        dst[k, : len(i)] = t[k].index_select(0, i)
            hp = [(i, tuple(t[k] if i is None else t[k, : len(i)] for t in full)) for k, i in enumerate(idl)]
            if not self.int8:
                hp = [(i, w[0]) for i, w in hp]
            flat = tuple(t.flatten(0, 1) for t in full)
            stacked.append((ids, ok, widths, vm, flat if self.int8 else flat[0]))
            heads.append(hp)
            e = ph.end_id if ph.end_id >= 0 else None
            if e is not None and hp[0][0] is not None:
                hit = (hp[0][0] == e).nonzero()
                e = int(hit[0]) if len(hit) else None
            end_pos.append(e)
        n_ph = len(phases)
        # bounds[r, p]: the frame at which row r ended phase p (_NEVER while it has not)
        bounds = torch.full((b, max(n_ph - 1, 0)), _NEVER, dtype=torch.long, device=prompt.device)
        forced_tok = [[None if ph.end_frame is None else ph.end_frame.to(prompt.device).long() for ph in phases],
                      [None if ph.start_frame is None else ph.start_frame.to(prompt.device).long() for ph in phases]]

        def draw(logits: torch.Tensor, k_lo: int, t: int, p: int, g, ids=None, ok=None, widths=None) -> torch.Tensor:
            """Tokens [n, M] from head outputs ``logits [n_eff, M, W]`` of streams k_lo.. (stream k_lo at frame t)
            in phase p: padding (``ok [M, W]`` False) masked, guidance mixed, the end held back before
            min_new_frames, drawn, mapped to vocabulary ids (``ids [M, W]``)."""
            logits = logits.float()
            if ok is not None:
                logits = logits.masked_fill(~ok, float("-inf"))
            if use_cfg:
                n = logits.shape[0] // 2
                logits = cfg_mix(logits[:n], logits[n:], cfg_scale)
                if ok is not None:  # -inf - -inf in the mix
                    logits = logits.masked_fill(~ok, float("-inf"))
            if k_lo == 0 and p == n_ph - 1 and end_pos[p] is not None and t - t0 < min_new_frames:
                logits[:, 0, end_pos[p]] = float("-inf")
            tok = sample_next(logits, temperature, top_k, top_p, g, widths)
            return tok if ids is None else ids.expand(tok.shape[0], -1, -1).gather(2, tok[..., None])[..., 0]

        def sample_rows(feats: torch.Tensor, k: int, t: int, p: int, rows: torch.Tensor | None) -> torch.Tensor:
            """Tokens [n] of stream k for ``rows`` (None: every row), all in phase p."""
            ids, w = heads[p][k]
            if rows is not None:
                feats = feats[torch.cat([rows, rows + b])] if use_cfg else feats[rows]
            logits = int8_matmul(feats, *w) if isinstance(w, tuple) else F.linear(feats, w.to(feats.dtype))
            g = gen
            if rows is not None and isinstance(gen, list):
                g = [gen[int(r)] for r in rows]
            return draw(logits[:, None], k, t, p, g, None if ids is None else ids[None])[:, 0]

        def sample_streams(feats: torch.Tensor, k_lo: int, k_hi: int, s: int) -> torch.Tensor:
            """Tokens [b, M] of streams k_lo..k_hi at frames s - k, every row in the last phase: the same
            logits and draws as sample_rows for one stream after another."""
            p = n_ph - 1
            ids, ok, widths, vm, w = stacked[p]
            ks, r0, r1 = slice(k_lo, k_hi + 1), k_lo * vm, (k_hi + 1) * vm
            if isinstance(w, tuple):
                logits = int8_matmul(feats, w[0][r0:r1], w[1][r0:r1])
            else:
                logits = F.linear(feats, w[r0:r1].to(feats.dtype))
            return draw(logits.view(feats.shape[0], k_hi - k_lo + 1, vm), k_lo, s, p, gen,
                        None if ids is None else ids[ks], None if ok is None else ok[ks],
                        None if widths is None else widths[ks])

        frame_buf: dict[int, dict[int, torch.Tensor]] = {}  # frame -> stream -> tokens, for on_frame

        # the first frame from which every row is in the last phase (from then on no row switches or is forced)
        all_last = {"from": t0 if n_ph == 1 else _NEVER}

        def capped(k: int, t: int) -> bool:
            """Stream 0 of frame t is forced to the end: one phase with max_frames, reached."""
            return (k == 0 and n_ph == 1 and phases[0].max_frames is not None and end_id is not None
                    and t - t0 >= phases[0].max_frames)

        def emit(k: int, t: int, tok: torch.Tensor) -> None:
            """Buffer stream k of frame t for on_frame; call it once the frame is complete."""
            if on_frame is not None:
                frame_buf.setdefault(t, {})[k] = tok
                if k == kk - 1:
                    picked = frame_buf.pop(t)
                    on_frame(t - t0 + 1, torch.stack([picked[j] for j in range(kk)], dim=1))

        def pick(feats: torch.Tensor, k: int, t: int) -> torch.Tensor:
            if t >= all_last["from"]:
                tok = sample_rows(feats, k, t, n_ph - 1, None)
                if capped(k, t):
                    tok = torch.full_like(tok, end_id)
            else:
                tok = self._pick_phased(feats, k, t, t0, b, phases, bounds, forced_tok, sample_rows)
                if k == 0 and phases[-1].max_frames is None and bool((bounds[:, -1] + 2 <= t).all()):
                    all_last["from"] = t + 1
            emit(k, t, tok[:b])
            return torch.cat([tok, tok]) if use_cfg else tok

        def pick_streams(feats: torch.Tensor, k_lo: int, k_hi: int, s: int) -> torch.Tensor:
            if s - k_hi < all_last["from"]:  # some row may switch phase: stream by stream
                return torch.stack([pick(feats, k, s - k) for k in range(k_lo, k_hi + 1)], dim=1)
            tok = sample_streams(feats, k_lo, k_hi, s)
            if k_lo == 0 and capped(0, s):
                tok[:, 0] = end_id
            for j, k in enumerate(range(k_lo, k_hi + 1)):
                emit(k, s - k, tok[:b, j])
            return torch.cat([tok, tok]) if use_cfg else tok

        was_training = self.training
        self.eval()
        try:
            out = self.decode(prompt, max_new_frames, pick, end_id, pick_streams)
        finally:
            self.train(was_training)
        return out[:b]

    @staticmethod
    def _check_phases(phases: list[Phase], kk: int, device) -> list[Phase]:
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

    @staticmethod
    def _pick_phased(feats, k, t, t0, b, phases, bounds, forced_tok, sample_rows) -> torch.Tensor:
        """Tokens ``[b]`` of stream k of frame t when rows may be in different phases (see :class:`Phase`)."""
        n_ph = len(phases)
        dev = bounds.device
        phase = (bounds + 2 <= t).sum(1)  # [b]: phases a row has left (end frame and start frame behind it)
        tok = torch.zeros(b, dtype=torch.long, device=dev)
        forced = torch.zeros(b, dtype=torch.bool, device=dev)
        for i in range(n_ph - 1):
            if k > 0:  # the frame that ends phase i: streams k > 0 follow its end_frame
                at_end = bounds[:, i] == t
                tok = torch.where(at_end, forced_tok[0][i][k], tok)
                forced |= at_end
            at_start = bounds[:, i] + 1 == t  # the start frame of phase i + 1
            tok = torch.where(at_start, forced_tok[1][i + 1][k], tok)
            forced |= at_start
        free = ~forced
        if bool(free.any()):
            ps = phase[free]
            for p in ps.unique().tolist():
                rows = (free & (phase == p)).nonzero().squeeze(-1)
                sampled = sample_rows(feats, k, t, p, None if len(rows) == b else rows)
                tok[rows] = sampled
                cap = phases[p].max_frames
                if cap is not None and k == 0:
                    first = torch.full_like(rows, t0) if p == 0 else bounds[rows, p - 1] + 2
                    over = t - first >= cap
                    tok[rows] = torch.where(over, torch.full_like(sampled, phases[p].end_id), tok[rows])
            if k == 0:  # rows that end a phase (not the last) at this frame
                for p in range(n_ph - 1):
                    hit = free & (phase == p) & (tok == phases[p].end_id)
                    bounds[:, p] = torch.where(hit, torch.full_like(bounds[:, p], t), bounds[:, p])
        return tok

    # -- checkpoints -------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | os.PathLike, vocab_json: str | os.PathLike | None = None,
                        state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ a copy of ``vocab_json``) into ``out_dir``."""
        from safetensors.torch import save_file

        if self.int8 and state_dict is None:
            raise UnisonoError(f"this model was quantized to int{self.linear_bits} for inference; save the float model "
                              "instead")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sd = state_dict if state_dict is not None else self.state_dict()
        sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
        with atomic_path(out / "model.safetensors") as tmp:
            save_file(sd, str(tmp), metadata={"format": "pt", "unisono_format_version": str(FORMAT_VERSION)})
        cfgd = self.cfg.to_dict()
        cfgd.update(model_type="unisono-lm", format_version=FORMAT_VERSION)
        write_json(out / "config.json", cfgd)
        if vocab_json is not None and Path(vocab_json).is_file():
            with atomic_path(out / "vocab.json") as tmp:
                shutil.copyfile(vocab_json, tmp)
        return out

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "UnisonoLM":
        """Load a checkpoint directory written by :meth:`save_pretrained`."""
        from unisono.weights import load_weights

        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise UnisonoError(f"{path} is not a unisono checkpoint (needs config.json and model.safetensors)")
        cfgd = json.loads((path / "config.json").read_text())
        if cfgd.get("model_type") != "unisono-lm":
            raise UnisonoError(f"{path}/config.json is not a unisono language model config")
        if int(cfgd.get("format_version", 1)) > FORMAT_VERSION:
            raise UnisonoError(f"{path} was written by a newer unisono; upgrade unisono to load it")
        model = UnisonoLM.from_config(LMConfig.from_dict(cfgd))
        sd = load_weights(path / "model.safetensors", device=str(map_location))
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise UnisonoError(
                f"{path}/model.safetensors does not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return model.to(map_location)


class DelayLM(UnisonoLM):
    """``delay``: stream k shifted by k positions; one transformer, K heads."""

    pattern = "delay"

    def max_frames(self) -> int:
        return self.cfg.max_seq_len - self.cfg.num_streams

    def features(self, frames, select=None):
        b, t, kk = frames.shape
        seq = delay_interleave(frames, self.cfg.pad_id)  # [B, S, K]
        x = self.embed_frames(seq)  # [B, S, D]
        h = self.backbone(self.with_bos(x[:, :-1]))  # [B, S, D]; output s predicts seq[s]
        s_idx, _ = delay_indices(t, kk, frames.device)
        if select is None:
            return h[:, s_idx]  # [B, T, K, D]
        bi, ti = select.nonzero(as_tuple=True)
        return h[bi[:, None], s_idx[ti]]  # [N, K, D]

    def decode(self, prompt, max_new, pick, end_id, pick_streams=None):
        cfg = self.cfg
        bx, t0, kk = prompt.shape
        pad = cfg.pad_id
        dev = prompt.device
        dtype = self.bos.dtype
        total = t0 + max_new
        out = torch.full((bx, total, kk), pad, dtype=torch.long, device=dev)
        out[:, :t0] = prompt
        ended = torch.full((bx,), 2**62, dtype=torch.long, device=dev)
        cache = self.backbone.new_cache(bx, total + kk, dev, dtype)
        seq0 = delay_interleave(prompt, pad)[:, :t0]
        h = self.backbone(self.with_bos(self.embed_frames(seq0)), 0, cache)[:, -1]  # predicts seq[t0]
        cur = torch.full((bx, kk), pad, dtype=torch.long, device=dev)
        last = total + kk - 2
        karange = torch.arange(kk, device=dev)
        for s in range(t0, last + 1):
            k_lo, k_hi = max(0, s - total + 1), min(kk - 1, s - t0)  # the streams sampled at step s
            for k in [*range(k_lo), *range(k_hi + 1, kk)]:
                t = s - k
                cur[:, k] = pad if t < 0 or t >= total else prompt[:, t, k]
            if pick_streams is not None:  # the streams of a step read one h: one product, one draw
                tok = self._resolve_streams(pick_streams(h, k_lo, k_hi, s), k_lo, s, ended, end_id, pad)
                out[:, s - karange[k_lo : k_hi + 1], karange[k_lo : k_hi + 1]] = tok
                cur[:, k_lo : k_hi + 1] = tok
            else:
                for k in range(k_lo, k_hi + 1):
                    tok = self._resolve(pick(h, k, s - k), k, s - k, ended, end_id, pad)
                    out[:, s - k, k] = tok
                    cur[:, k] = tok
            if end_id is not None and bool((ended < 2**62).all()) and s >= int(ended.max()) + kk - 1:
                break
            if s < last:
                h = self.backbone(self.embed_frames(cur[:, None]), s + 1, cache)[:, -1]
        return self._finish(out, ended, t0, end_id, pad)


class FlatLM(UnisonoLM):
    """``flat``: the K codes of each frame one after another in one stream (T * K positions)."""

    pattern = "flat"

    def max_frames(self) -> int:
        return self.cfg.max_seq_len // self.cfg.num_streams - 1

    def features(self, frames, select=None):
        b, t, kk = frames.shape
        x = self.tok_emb(frames.reshape(b, t * kk))  # [B, T*K, D]
        h = self.backbone(self.with_bos(x[:, :-1]))  # output p predicts token p
        h = h.reshape(b, t, kk, -1)
        return h if select is None else h[select]

    def decode(self, prompt, max_new, pick, end_id, pick_streams=None):
        cfg = self.cfg
        bx, t0, kk = prompt.shape
        pad, dev = cfg.pad_id, prompt.device
        total = t0 + max_new
        out = torch.full((bx, total, kk), pad, dtype=torch.long, device=dev)
        out[:, :t0] = prompt
        ended = torch.full((bx,), 2**62, dtype=torch.long, device=dev)
        cache = self.backbone.new_cache(bx, total * kk + 1, dev, self.bos.dtype)
        x = self.with_bos(self.tok_emb(prompt.reshape(bx, t0 * kk)))
        h = self.backbone(x, 0, cache)[:, -1]
        for t in range(t0, total):
            for k in range(kk):
                tok = self._resolve(pick(h, k, t), k, t, ended, end_id, pad)
                out[:, t, k] = tok
                if t < total - 1 or k < kk - 1:
                    h = self.backbone(self.tok_emb(tok)[:, None], t * kk + k + 1, cache)[:, -1]
            if end_id is not None and bool((ended <= t).all()):
                break
        return self._finish(out, ended, t0, end_id, pad)


class MultiscaleLM(UnisonoLM):
    """``multiscale``: a global transformer over frames and a local transformer over the K codes of a frame.

    The local input for code j of frame t is a projection of the global state for frame t plus the
    embedding of code j - 1 (a learned start vector for j = 0).
    """

    pattern = "multiscale"

    def __init__(self, cfg: LMConfig):
        self._ld = cfg.local_d_model or cfg.d_model
        super().__init__(cfg)
        lh = cfg.local_heads or cfg.n_heads
        self.ctx_proj = nn.Linear(self.dim, self._ld, bias=False)
        self.local_emb = nn.Embedding(cfg.vocab_size, self._ld)
        self.local_bos = nn.Parameter(torch.zeros(self._ld))
        self.local = Transformer(self._ld, cfg.local_layers, lh, None, cfg.ffn_mult, max(cfg.num_streams, 2),
                                 cfg.rope_theta, cfg.dropout, cfg.norm_eps)
        for p in (self.ctx_proj.weight, self.local_emb.weight, self.local_bos):
            nn.init.normal_(p, 0.0, cfg.init_std)
        for name, p in self.local.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, cfg.init_std)

    def _head_in_dim(self) -> int:
        return self._ld

    def max_frames(self) -> int:
        return self.cfg.max_seq_len - 1

    def features(self, frames, select=None):
        b, t, kk = frames.shape
        h = self.backbone(self.with_bos(self.embed_frames(frames[:, :-1])))  # [B, T, D]: h_t sees frames < t
        ctx = self.ctx_proj(h)
        if select is None:
            ctx, fr = ctx.reshape(b * t, -1), frames.reshape(b * t, kk)
        else:
            ctx, fr = ctx[select], frames[select]  # [N, Dl], [N, K]
        prev = self.local_emb(fr[:, :-1])  # [N, K-1, Dl]
        lbos = self.local_bos.to(prev.dtype).expand(fr.shape[0], 1, -1)
        y = self.local(ctx[:, None] + torch.cat([lbos, prev], dim=1))  # [N, K, Dl]
        return y.reshape(b, t, kk, -1) if select is None else y

    def decode(self, prompt, max_new, pick, end_id, pick_streams=None):
        cfg = self.cfg
        bx, t0, kk = prompt.shape
        pad, dev, dtype = cfg.pad_id, prompt.device, self.bos.dtype
        total = t0 + max_new
        out = torch.full((bx, total, kk), pad, dtype=torch.long, device=dev)
        out[:, :t0] = prompt
        ended = torch.full((bx,), 2**62, dtype=torch.long, device=dev)
        cache = self.backbone.new_cache(bx, total + 1, dev, dtype)
        lcache = self.local.new_cache(bx, kk, dev, dtype)
        h = self.backbone(self.with_bos(self.embed_frames(prompt)), 0, cache)[:, -1:]  # state for frame t0
        lbos = self.local_bos.to(dtype).expand(bx, 1, -1)
        for t in range(t0, total):
            ctx = self.ctx_proj(h)  # [B, 1, Dl]
            for c in lcache:
                c.reset()
            inp = ctx + lbos
            for k in range(kk):
                y = self.local(inp, k, lcache)[:, 0]
                tok = self._resolve(pick(y, k, t), k, t, ended, end_id, pad)
                out[:, t, k] = tok
                if k < kk - 1:
                    inp = ctx + self.local_emb(tok)[:, None]
            if end_id is not None and bool((ended <= t).all()):
                break
            if t < total - 1:
                h = self.backbone(self.embed_frames(out[:, t : t + 1]), t + 1, cache)
        return self._finish(out, ended, t0, end_id, pad)
