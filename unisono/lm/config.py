"""Model configuration of the unisono language model (saved as ``config.json`` in a checkpoint)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from unisono.errors import UnisonoError

PATTERNS = ("multiscale", "delay", "flat")


@dataclass
class LMConfig:
    """Sizes and choices of one language model.

    ``vocab_size`` (V) is the size of the one global vocabulary, ``num_streams`` (K) the number of
    token streams of a frame (codebooks), ``pad_id`` the id used for padding, for the empty slots of
    the delay pattern and for dropped conditions (classifier-free guidance).
    ``max_seq_len`` bounds the positions of the global transformer: frames + 1 for ``multiscale``,
    frames + K for ``delay``, frames * K + 1 for ``flat``.

    Continuous audio features (``audio_feat`` conditions, see ``docs/lm.md``): ``feature_dim`` D > 0 gives the
    model an adapter MLP (D -> d_model) whose output is added to the input embedding of every frame whose stream-0
    token is ``feature_id`` (the vocabulary's ``<audio_feat>`` placeholder); ``feature_encoder`` describes the
    frozen encoder that makes the features (:meth:`unisono.features.FeatureEncoder.describe`: name, version, dim,
    frame rate, parameters, fingerprint). ``feature_dim`` 0 (the default) is a model without features; its
    ``to_dict`` leaves the three keys out, so its ``config.json`` is what it was before they existed.
    """

    vocab_size: int
    num_streams: int
    pad_id: int
    pattern: str = "delay"
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    ffn_mult: float = 8.0 / 3.0
    # multiscale only: the local (depth) transformer over the K codes of a frame
    local_d_model: int | None = None
    local_layers: int = 2
    local_heads: int | None = None
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    dropout: float = 0.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    # optional: a decoder LLM from a local directory (transformers AutoModelForCausalLM) as the
    # global transformer; its hidden size replaces d_model. Its config is stored with the checkpoint.
    backbone_dir: str | None = None
    backbone_config: dict | None = field(default=None, repr=False)
    feature_dim: int = 0
    feature_id: int | None = None
    feature_encoder: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise UnisonoError(f"unknown codebook pattern {self.pattern!r}; choose one of {', '.join(PATTERNS)}")
        for name in ("vocab_size", "num_streams", "d_model", "n_layers", "n_heads", "local_layers", "max_seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (0 if name == "local_layers" else 1):
                raise UnisonoError(f"model config: {name} must be a positive integer, got {v!r}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise UnisonoError(f"model config: pad_id {self.pad_id} is outside the vocabulary [0, {self.vocab_size})")
        if self.backbone_dir is None and self.backbone_config is None:
            if self.d_model % self.n_heads:
                raise UnisonoError(f"model config: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
            if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
                raise UnisonoError(
                    f"model config: n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}"
                )
        if self.pattern == "multiscale":
            ld = self.local_d_model or self.d_model
            lh = self.local_heads or self.n_heads
            if ld % lh:
                raise UnisonoError(f"model config: local_d_model {ld} is not divisible by local_heads {lh}")
            if self.local_layers < 1:
                raise UnisonoError("model config: the multiscale pattern needs local_layers >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise UnisonoError(f"model config: dropout must be in [0, 1), got {self.dropout}")
        self._check_features()

    def _check_features(self) -> None:
        if not isinstance(self.feature_dim, int) or self.feature_dim < 0:
            raise UnisonoError(f"model config: feature_dim must be an integer >= 0, got {self.feature_dim!r}")
        if not self.feature_dim:
            if self.feature_id is not None or self.feature_encoder is not None:
                raise UnisonoError("model config: feature_id and feature_encoder need feature_dim > 0")
            return
        if not isinstance(self.feature_id, int) or not 0 <= self.feature_id < self.vocab_size \
                or self.feature_id == self.pad_id:
            raise UnisonoError(f"model config: feature_dim > 0 needs feature_id, the <audio_feat> placeholder's id in "
                               f"[0, {self.vocab_size}) (not pad_id), got {self.feature_id!r}")
        enc = self.feature_encoder
        if enc is not None and (not isinstance(enc, dict) or enc.get("dim") != self.feature_dim
                                or not enc.get("fingerprint")):
            raise UnisonoError(f"model config: feature_encoder must describe an encoder of dim {self.feature_dim} "
                               "with a fingerprint (unisono.features.FeatureEncoder.describe())")

    def check_frames(self, frames: torch.Tensor, what: str = "frames") -> None:
        """Raise :class:`UnisonoError` unless ``frames`` is ``[B, T, K]`` of integer ids of this vocabulary."""
        if frames.dim() != 3 or frames.shape[-1] != self.num_streams:
            raise UnisonoError(f"{what} must be [B, T, K={self.num_streams}], got {tuple(frames.shape)}")
        if frames.dtype not in (torch.int64, torch.int32):
            raise UnisonoError(f"{what} must hold integer token ids, got {frames.dtype}")
        if frames.numel() and (int(frames.min()) < 0 or int(frames.max()) >= self.vocab_size):
            raise UnisonoError(
                f"{what} hold ids outside the vocabulary [0, {self.vocab_size}); "
                "were they made with another vocab.json?"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not self.feature_dim:  # a model without features: its config.json as before features existed
            for key in ("feature_dim", "feature_id", "feature_encoder"):
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"model_type", "format_version"})
        if unknown:
            raise UnisonoError(f"model config: unknown keys {unknown}; known keys are {sorted(known)}")
        missing = [k for k in ("vocab_size", "num_streams", "pad_id") if k not in d]
        if missing:
            raise UnisonoError(f"model config: missing {missing} (take them from the vocabulary, vocab.json)")
        return cls(**{k: v for k, v in d.items() if k in known})
