"""The unisono language model: a transformer over frame sequences with an interchangeable codebook pattern.

All patterns share one interface:

- ``forward(frames [B, T, K]) -> logits [B, T, K, V]``: ``logits[:, t, k]`` predicts ``frames[:, t, k]``
  from what the pattern lets it see (every earlier frame, and the lower streams of frame t for
  ``multiscale`` and ``flat``; for ``delay``, stream k of frame t sees streams j of frames < t + k - j).
- ``loss(frames, loss_mask)``: cross-entropy over the positions where ``loss_mask [B, T, K]`` is True.
- ``generate(prompt_frames [B, T0, K], max_new_frames, ...) -> new frames [B, T, K]`` with a
  preallocated KV cache, sampling, per-stream vocabulary masks and classifier-free guidance: the typed state
  and steps of :mod:`unisono.lm.decoding` (``start_decode`` / ``decode_step`` are each pattern's side).
- ``save_pretrained(dir)`` / ``UnisonoLM.from_pretrained(dir)``: ``config.json`` + ``model.safetensors``.

Token ids are global ids of one vocabulary of size V; one embedding table serves every stream (the
embeddings of the K tokens at a position are summed) and each stream has its own output head.

Continuous audio features (``cfg.feature_dim`` D > 0): ``forward``, ``token_cross_entropy``, ``loss``,
``start_decode`` and ``generate`` take ``feats FloatTensor[B, T, D]`` aligned with the frames (for generation: with
the prompt's T0 frames); ``feats[b, t]`` is read only where ``frames[b, t, 0]`` is the placeholder
``cfg.feature_id`` (zeros elsewhere by convention, ignored). There the adapter's output ``adapter(feats[b, t])
[d_model]`` is added to the input embedding of frame t where the pattern puts it (:meth:`feature_embedding`):

- ``delay``: position t of the delayed sequence, the one that holds stream 0 of frame t;
- ``flat``: position t * K, frame t's first token;
- ``multiscale``: the global transformer's input for frame t (the frame embedding); the local transformer
  sees only the tokens.

A frame whose placeholder was replaced by ``pad_id`` (condition dropout, the unconditional rows of guidance)
gets nothing, whatever ``feats`` holds there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from unisono.errors import UnisonoError
from unisono.features import check_encoder
from unisono.fileio import atomic_path, write_json
from unisono.lm.config import LMConfig
from unisono.lm.decoding import NEVER, DecodeState, Generation, Phase, Picker, StreamsPicker
from unisono.lm.layers import Transformer
from unisono.lm.patterns import delay_indices, delay_interleave, delay_position
from unisono.lm.quant import int8_rows, linear_rows
from unisono.vocab import LAYOUT_KEY, Vocab
from unisono.weights import load_weights

FORMAT_VERSION = 1


def feature_adapter(feature_dim: int, d_model: int) -> nn.Module:
    """The adapter of audio features: ``[..., feature_dim] -> [..., d_model]`` (LayerNorm, Linear, GELU, Linear)."""
    return nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, d_model), nn.GELU(),
                         nn.Linear(d_model, d_model))


class HFBackbone(nn.Module):
    """The decoder layers of a transformers ``AutoModelForCausalLM`` used as the global transformer.

    Inputs are embeddings (``inputs_embeds``); the LLM's own token embeddings and LM head are not used.
    Refused at construction: a model whose positions see later ones (an encoder such as BERT), and one with
    fewer positions (``max_position_embeddings``) than ``max_seq_len``.
    """

    def __init__(self, model_dir: str | None = None, hf_config: dict | None = None, max_seq_len: int | None = None):
        super().__init__()
        try:
            from transformers import AutoConfig, AutoModelForCausalLM  # noqa: PLC0415 (optional: transformers)
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
        self._check(max_seq_len)

    def _check(self, max_seq_len: int | None) -> None:
        cfg = self.body.config
        name = getattr(cfg, "model_type", type(self.body).__name__)
        if getattr(cfg, "is_encoder_decoder", False) or not self.is_causal():
            raise UnisonoError(f"the backbone {name} is not causal (its positions see later ones, as an encoder such "
                               "as BERT's do); use a decoder LLM (Llama, Qwen2, GPT-2, ...)")
        limit = getattr(cfg, "max_position_embeddings", None)
        if max_seq_len is not None and isinstance(limit, int) and limit < max_seq_len:
            raise UnisonoError(f"the backbone {name} has {limit} positions (max_position_embeddings), fewer than the "
                               f"model config's max_seq_len {max_seq_len}; set max_seq_len <= {limit}")

    @torch.no_grad()
    def is_causal(self) -> bool:
        """Whether each position's output is blind to later positions: two runs on 3 random inputs that differ in the
        last one give the same first two outputs."""
        p = next(self.body.parameters())
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 3, self.dim, generator=g).to(p.device, p.dtype)
        y = x.clone()
        y[:, -1] = torch.randn(self.dim, generator=g).to(p.device, p.dtype)
        was_training = self.body.training
        self.body.eval()
        try:
            a, b = (self.forward(v)[:, :2].float() for v in (x, y))
        finally:
            self.body.train(was_training)
        return bool(torch.allclose(a, b, atol=1e-5, rtol=1e-4))

    def new_cache(self, batch, max_len, device, dtype):
        from transformers import DynamicCache  # noqa: PLC0415 (optional: transformers)

        return DynamicCache()

    def forward(self, x: torch.Tensor, pos0: int = 0, cache=None) -> torch.Tensor:
        pos = torch.arange(pos0, pos0 + x.shape[1], device=x.device)[None].expand(x.shape[0], -1)
        out = self.body(inputs_embeds=x, position_ids=pos, past_key_values=cache, use_cache=cache is not None)
        return out.last_hidden_state


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
            self.backbone = HFBackbone(cfg.backbone_dir, cfg.backbone_config, cfg.max_seq_len)
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
        # audio features -> d_model (cfg.feature_dim > 0): LayerNorm (any encoder's scale), Linear, GELU, Linear
        self.feature_adapter = feature_adapter(cfg.feature_dim, d) if cfg.feature_dim else None
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
    def from_config(cfg: LMConfig | dict) -> UnisonoLM:
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
        if self.feature_adapter is not None:
            for m in self.feature_adapter.modules():
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)

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

    def feature_embedding(self, frames: torch.Tensor, feats: torch.Tensor | None) -> torch.Tensor | None:
        """What the features add to each frame: ``[B, T, D]`` (the embedding's dtype), ``adapter(feats[b, t])``
        where ``frames[b, t, 0]`` is the placeholder ``cfg.feature_id`` and 0 elsewhere; None when there is
        nothing to add (no ``feats``). ``frames [B, T, K]`` (long), ``feats [B, T, feature_dim]`` (float)."""
        cfg = self.cfg
        if self.feature_adapter is None:
            if feats is not None:
                raise UnisonoError("this model reads no audio features (feature_dim 0); give feats only to a model "
                                   "trained with them")
            return None
        at = frames[..., 0] == cfg.feature_id  # [B, T]
        if feats is None:
            if bool(at.any()):
                raise UnisonoError(f"the frames hold audio_feat placeholders (id {cfg.feature_id}) but no feats "
                                   "were given")
            return None
        if feats.dim() != 3 or tuple(feats.shape) != (*frames.shape[:2], cfg.feature_dim):
            raise UnisonoError(f"feats must be [B, T, D] = {(*frames.shape[:2], cfg.feature_dim)} (aligned with the "
                               f"frames), got {tuple(feats.shape)}")
        w = self.tok_emb.weight
        e = w.new_zeros(*frames.shape[:2], w.shape[1])
        e[at] = self.feature_adapter(feats[at].to(w.device, w.dtype)).to(w.dtype)
        return e

    def check_feature_encoder(self, encoder) -> None:
        """Raise :class:`UnisonoError` (one line) unless ``encoder`` (a :class:`unisono.features.FeatureEncoder`)
        is the encoder this model's features come from (``cfg.feature_encoder``: same fingerprint)."""
        if not self.cfg.feature_dim:
            raise UnisonoError("this model reads no audio features (feature_dim 0); it takes no feature encoder")
        check_encoder(self.cfg.feature_encoder, encoder, "this model")

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

    def features(self, frames: torch.Tensor, select: torch.Tensor | None = None,
                 feats: torch.Tensor | None = None) -> torch.Tensor:
        """Head inputs aligned with frames: ``[B, T, K, D_head]`` (``[N, K, D_head]`` for ``select [B, T]``);
        ``feats [B, T, feature_dim]``: the audio features of the placeholder frames (see the module docstring)."""
        raise NotImplementedError

    # -- training ----------------------------------------------------------------------------
    def forward(self, frames: torch.Tensor, feats: torch.Tensor | None = None) -> torch.Tensor:
        """``frames [B, T, K]`` (+ ``feats [B, T, feature_dim]``) ``-> logits [B, T, K, V]`` (float)."""
        self.cfg.check_frames(frames)
        f = self.features(frames, None, feats)
        return torch.stack([self.head(f[:, :, k], k) for k in range(self.cfg.num_streams)], dim=2)

    def token_cross_entropy(self, frames: torch.Tensor, loss_mask: torch.Tensor,
                            feats: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token cross-entropy (nats, float32) ``[B, T, K]`` of ``frames [B, T, K]`` under the model, at the
        tokens where ``loss_mask [B, T, K]`` is True; 0 elsewhere (not computed). ``feats [B, T, feature_dim]``:
        the audio features of the placeholder frames. Differentiable; the one owner of the token losses
        (:meth:`loss`, :func:`unisono.train.dpo.sequence_logprobs`)."""
        self.cfg.check_frames(frames)
        if self.int8 and torch.is_grad_enabled():
            raise UnisonoError(f"this model was quantized to int{self.linear_bits} for inference; load the float "
                              "checkpoint to train it")
        if loss_mask.shape != frames.shape:
            raise UnisonoError(
                f"loss_mask {tuple(loss_mask.shape)} must have the shape of frames {tuple(frames.shape)}"
            )
        loss_mask = loss_mask.bool()
        select = loss_mask.any(-1)  # [B, T] frames with at least one loss token
        h = self.features(frames, select, feats)  # [N, K, Dh]
        tgt, m = frames[select], loss_mask[select]  # [N, K]
        ce = h.new_zeros(m.shape, dtype=torch.float32)  # [N, K]
        for k in range(self.cfg.num_streams):
            sel = m[:, k]
            if bool(sel.any()):
                ce[sel, k] = F.cross_entropy(self.head(h[:, k][sel], k).float(), tgt[:, k][sel], reduction="none")
        out = ce.new_zeros(frames.shape)
        out[select] = ce
        return out

    def loss(self, frames: torch.Tensor, loss_mask: torch.Tensor,
             stream_weights: list[float] | torch.Tensor | None = None,
             feats: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Cross-entropy over ``loss_mask [B, T, K]`` (``feats [B, T, feature_dim]``: the audio features of the
        placeholder frames).

        Returns ``loss`` (weighted mean over the masked tokens: ``sum_k w_k CE_k / sum_k w_k n_k``),
        ``weight`` (the denominator), ``stream_sum``/``stream_count [K]`` and ``example_sum``/``example_count [B]``
        (unweighted sums of token cross-entropies, for logging per stream and per task).
        """
        ce = self.token_cross_entropy(frames, loss_mask, feats)  # [B, T, K]
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
    def start_decode(self, prompt: torch.Tensor, max_new: int, end_id: int | None = None,
                     feats: torch.Tensor | None = None) -> DecodeState:
        """The one decode set-up of every pattern: ``prompt [B_eff, T0, K]`` (long) read into a fresh KV cache,
        room for ``max_new`` frames; rows end at ``end_id`` in stream 0 (None: they do not end). ``feats [B_eff, T0,
        feature_dim]``: the audio features of the prompt's placeholder frames (generated frames have none)."""
        bx, t0, kk = prompt.shape
        total = t0 + max_new
        codes = torch.full((bx, total, kk), self.cfg.pad_id, dtype=torch.long, device=prompt.device)
        codes[:, :t0] = prompt
        cache = self.backbone.new_cache(bx, self._cache_positions(total), prompt.device, self.bos.dtype)
        return DecodeState(codes=codes, ended=torch.full((bx,), NEVER, dtype=torch.long, device=prompt.device),
                           cache=cache, hidden=self._read_prompt(prompt, cache, feats), t0=t0, step=t0, end_id=end_id,
                           pad_id=self.cfg.pad_id)

    def _cache_positions(self, total: int) -> int:
        """Positions of the global transformer a generation of ``total`` frames (prompt included) takes."""
        raise NotImplementedError

    def _read_prompt(self, prompt: torch.Tensor, cache, feats: torch.Tensor | None = None) -> torch.Tensor:
        """Run ``prompt [B_eff, T0, K]`` (with ``feats [B_eff, T0, feature_dim]``) into ``cache``; returns
        :attr:`DecodeState.hidden` for the first step."""
        raise NotImplementedError

    def decode_step(self, state: DecodeState, pick: Picker, pick_streams: StreamsPicker | None = None) -> None:
        """Advance ``state`` by one step (a frame; for ``delay`` one position of the delayed sequence): ``pick``
        chooses each token (``pick_streams`` the streams of a step at once, where the pattern reads them from
        one feature vector); the state's end handling applies; ``state.done`` says when to stop."""
        raise NotImplementedError

    def decode(self, prompt: torch.Tensor, max_new: int, pick: Picker, end_id: int | None,
               pick_streams: StreamsPicker | None = None, feats: torch.Tensor | None = None) -> torch.Tensor:
        """Step-wise generation with a KV cache from ``prompt [B_eff, T0, K]`` (and its ``feats``):
        :meth:`start_decode`, then :meth:`decode_step` until done. Returns the new frames ``[B_eff, T_new, K]``."""
        state = self.start_decode(prompt, max_new, end_id, feats)
        while not state.done:
            self.decode_step(state, pick, pick_streams)
        return state.new_frames()

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
        feats: torch.Tensor | None = None,
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

        ``feats [B, T0, feature_dim]``: the audio features of the prompt's placeholder frames (a model with
        ``feature_dim`` > 0). With guidance the unconditional rows get the same ``feats``, read only where their
        prompt keeps a placeholder: the default unconditional prompt (all ``pad_id``) has none, so no features.

        The steps are those of :class:`unisono.lm.decoding.Generation` (built with these arguments), run in
        eval mode.
        """
        was_training = self.training
        self.eval()
        try:
            gen = Generation(self, prompt_frames, max_new_frames, stream_mask=stream_mask, end_id=end_id,
                             top_k=top_k, top_p=top_p, temperature=temperature, cfg_scale=cfg_scale,
                             uncond_prompt_frames=uncond_prompt_frames, seed=seed, min_new_frames=min_new_frames,
                             on_frame=on_frame, phases=phases, feats=feats)
            while gen.step():
                pass
        finally:
            self.train(was_training)
        return gen.frames()

    # -- checkpoints -------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | os.PathLike, vocab_json: str | os.PathLike | None = None,
                        state_dict: dict[str, torch.Tensor] | None = None, vocab: Vocab | None = None) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (+ a copy of ``vocab_json``) into ``out_dir``. The weights'
        metadata records the layout fingerprint of the vocabulary (``vocab``, else ``vocab_json`` where it is a unisono
        vocabulary) under :data:`unisono.vocab.LAYOUT_KEY`, so that a loader notices a ``vocab.json`` changed
        beside them."""
        if self.int8 and state_dict is None:
            raise UnisonoError(f"this model was quantized to int{self.linear_bits} for inference; save the float model "
                              "instead")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sd = state_dict if state_dict is not None else self.state_dict()
        sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
        meta = {"format": "pt", "unisono_format_version": str(FORMAT_VERSION)}
        if vocab is None and vocab_json is not None and Path(vocab_json).is_file():
            with contextlib.suppress(UnisonoError):  # a toy file that is not a unisono vocabulary: copied, no stamp
                vocab = Vocab.load(vocab_json)
        if vocab is not None:
            meta[LAYOUT_KEY] = vocab.layout_fingerprint()
        with atomic_path(out / "model.safetensors") as tmp:
            save_file(sd, str(tmp), metadata=meta)
        cfgd = self.cfg.to_dict()
        cfgd.update(model_type="unisono-lm", format_version=FORMAT_VERSION)
        write_json(out / "config.json", cfgd)
        if vocab_json is not None and Path(vocab_json).is_file():
            with atomic_path(out / "vocab.json") as tmp:
                shutil.copyfile(vocab_json, tmp)
        return out

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu",
                        feature_encoder=None) -> UnisonoLM:
        """Load a checkpoint directory written by :meth:`save_pretrained`; ``feature_encoder`` (a
        :class:`unisono.features.FeatureEncoder`): refuse the checkpoint unless its features come from it."""
        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise UnisonoError(f"{path} is not a unisono checkpoint (needs config.json and model.safetensors)")
        cfgd = json.loads((path / "config.json").read_text())
        if cfgd.get("model_type") != "unisono-lm":
            raise UnisonoError(f"{path}/config.json is not a unisono language model config")
        if int(cfgd.get("format_version", 1)) > FORMAT_VERSION:
            raise UnisonoError(f"{path} was written by a newer unisono; upgrade unisono to load it")
        model = UnisonoLM.from_config(LMConfig.from_dict(cfgd))
        if feature_encoder is not None:
            model.check_feature_encoder(feature_encoder)
        sd = load_weights(path / "model.safetensors", device=str(map_location))
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise UnisonoError(
                f"{path}/model.safetensors does not match config.json (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]})"
            )
        return model.to(map_location)


class DelayLM(UnisonoLM):
    """``delay``: stream k shifted by k positions; one transformer, K heads."""

    pattern = "delay"

    def max_frames(self) -> int:
        return self.cfg.max_seq_len - self.cfg.num_streams

    def features(self, frames, select=None, feats=None):
        b, t, kk = frames.shape
        seq = delay_interleave(frames, self.cfg.pad_id)  # [B, S, K]
        x = self.embed_frames(seq)  # [B, S, D]
        e = self.feature_embedding(frames, feats)  # [B, T, D]: frame t's stream 0 sits at position t
        if e is not None:
            x = x + F.pad(e, (0, 0, 0, kk - 1)).to(x.dtype)
        h = self.backbone(self.with_bos(x[:, :-1]))  # [B, S, D]; output s predicts seq[s]
        s_idx, _ = delay_indices(t, kk, frames.device)
        if select is None:
            return h[:, s_idx]  # [B, T, K, D]
        bi, ti = select.nonzero(as_tuple=True)
        return h[bi[:, None], s_idx[ti]]  # [N, K, D]

    def _cache_positions(self, total):
        return total + self.cfg.num_streams

    def _read_prompt(self, prompt, cache, feats=None):
        seq0 = delay_interleave(prompt, self.cfg.pad_id)[:, : prompt.shape[1]]
        x = self.embed_frames(seq0)
        e = self.feature_embedding(prompt, feats)
        if e is not None:
            x = x + e.to(x.dtype)
        return self.backbone(self.with_bos(x), 0, cache)[:, -1]  # predicts seq[t0]

    def decode_step(self, state, pick, pick_streams=None):
        s, kk, total = state.step, self.cfg.num_streams, state.total
        k_lo, k_hi = max(0, s - total + 1), min(kk - 1, s - state.t0)  # the streams sampled at step s
        if pick_streams is not None:  # the streams of a step read one hidden state: one product, one draw
            tok = pick_streams(state.hidden, k_lo, k_hi, s)
        else:
            tok = torch.stack([pick(state.hidden, k, s - k) for k in range(k_lo, k_hi + 1)], dim=1)
        tok = state.settle(tok, k_lo, s - k_lo)
        ks = torch.arange(k_lo, k_hi + 1, device=tok.device)
        state.codes[:, s - ks, ks] = tok
        state.step = s + 1
        state.done = s == total + kk - 2 or (state.all_ended() and s >= int(state.ended.max()) + kk - 1)
        if not state.done:  # feed position s: stream k of frame s - k (the prompt before t0, pad past the end)
            at_s = tok if tok.shape[1] == kk else delay_position(state.codes, s, state.pad_id)
            state.hidden = self.backbone(self.embed_frames(at_s[:, None]), s + 1, state.cache)[:, -1]


class FlatLM(UnisonoLM):
    """``flat``: the K codes of each frame one after another in one stream (T * K positions)."""

    pattern = "flat"

    def max_frames(self) -> int:
        return self.cfg.max_seq_len // self.cfg.num_streams - 1

    def features(self, frames, select=None, feats=None):
        b, t, kk = frames.shape
        x = self._flat_embed(frames, feats)  # [B, T*K, D]
        h = self.backbone(self.with_bos(x[:, :-1]))  # output p predicts token p
        h = h.reshape(b, t, kk, -1)
        return h if select is None else h[select]

    def _cache_positions(self, total):
        return total * self.cfg.num_streams + 1

    def _flat_embed(self, frames, feats):
        """``[B, T * K, D]``: the token embeddings, frame t's features added at its first token (position t * K)."""
        b, t, kk = frames.shape
        x = self.tok_emb(frames.reshape(b, t * kk))
        e = self.feature_embedding(frames, feats)  # [B, T, D]
        if e is not None:
            x = x + F.pad(e[:, :, None], (0, 0, 0, kk - 1)).reshape(b, t * kk, -1).to(x.dtype)
        return x

    def _read_prompt(self, prompt, cache, feats=None):
        return self.backbone(self.with_bos(self._flat_embed(prompt, feats)), 0, cache)[:, -1]

    def decode_step(self, state, pick, pick_streams=None):
        t, kk = state.step, self.cfg.num_streams
        for k in range(kk):
            tok = state.settle(pick(state.hidden, k, t)[:, None], k, t)[:, 0]
            state.codes[:, t, k] = tok
            if t < state.total - 1 or k < kk - 1:
                state.hidden = self.backbone(self.tok_emb(tok)[:, None], t * kk + k + 1, state.cache)[:, -1]
        state.step = t + 1
        state.done = t == state.total - 1 or state.all_ended(by=t)


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
        for p in self.local.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, cfg.init_std)

    def _head_in_dim(self) -> int:
        return self._ld

    def max_frames(self) -> int:
        return self.cfg.max_seq_len - 1

    def features(self, frames, select=None, feats=None):
        b, t, kk = frames.shape
        h = self.backbone(self.with_bos(self._frame_embed(frames, feats)[:, :-1]))  # [B, T, D]: h_t sees frames < t
        ctx = self.ctx_proj(h)
        if select is None:
            ctx, fr = ctx.reshape(b * t, -1), frames.reshape(b * t, kk)
        else:
            ctx, fr = ctx[select], frames[select]  # [N, Dl], [N, K]
        prev = self.local_emb(fr[:, :-1])  # [N, K-1, Dl]
        lbos = self.local_bos.to(prev.dtype).expand(fr.shape[0], 1, -1)
        y = self.local(ctx[:, None] + torch.cat([lbos, prev], dim=1))  # [N, K, Dl]
        return y.reshape(b, t, kk, -1) if select is None else y

    def _cache_positions(self, total):
        return total + 1

    def _frame_embed(self, frames, feats):
        """``[B, T, D]``: the global transformer's input per frame, token embeddings plus the frame's features."""
        x = self.embed_frames(frames)
        e = self.feature_embedding(frames, feats)
        return x if e is None else x + e.to(x.dtype)

    def _read_prompt(self, prompt, cache, feats=None):
        return self.backbone(self.with_bos(self._frame_embed(prompt, feats)), 0, cache)[:, -1:]  # state for frame t0

    def start_decode(self, prompt, max_new, end_id=None, feats=None):
        state = super().start_decode(prompt, max_new, end_id, feats)
        state.local_cache = self.local.new_cache(prompt.shape[0], self.cfg.num_streams, prompt.device, self.bos.dtype)
        return state

    def decode_step(self, state, pick, pick_streams=None):
        t, kk = state.step, self.cfg.num_streams
        ctx = self.ctx_proj(state.hidden)  # [B, 1, Dl]
        for c in state.local_cache:
            c.reset()
        inp = ctx + self.local_bos.to(self.bos.dtype).expand(ctx.shape[0], 1, -1)
        for k in range(kk):
            y = self.local(inp, k, state.local_cache)[:, 0]
            tok = state.settle(pick(y, k, t)[:, None], k, t)[:, 0]
            state.codes[:, t, k] = tok
            if k < kk - 1:
                inp = ctx + self.local_emb(tok)[:, None]
        state.step = t + 1
        state.done = t == state.total - 1 or state.all_ended(by=t)
        if not state.done:
            state.hidden = self.backbone(self.embed_frames(state.codes[:, t : t + 1]), t + 1, state.cache)
