"""The project's own neural audio codec: convolutional encoder, RVQ, Vocos-style ISTFT decoder.

Shapes: ``wav [B, 1, S]`` float at ``sample_rate`` Hz; ``codes [B, K, T]`` int64 in ``[0, codebook_size)``
with ``T = ceil(S / hop_length)`` frames at ``frame_rate = sample_rate / hop_length`` Hz.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from unisono.codec.modules import Decoder, Encoder, STFTEncoder, set_streaming
from unisono.codec.pitch import f0_track
from unisono.codec.quantizer import ResidualVectorQuantizer
from unisono.errors import UnisonoError
from unisono.fileio import write_json
from unisono.weights import load_weights, save_weights

MODEL_TYPE = "unisono-codec"


@dataclass
class CodecConfig:
    """Architecture of a :class:`Codec` (saved as ``config.json``)."""

    sample_rate: int = 16000
    strides: list[int] = field(default_factory=lambda: [2, 4, 5, 8])  # product = hop_length
    encoder: str = "conv"  # "conv" (SEANet-style, on the waveform) or "stft" (ConvNeXt on a log spectrogram)
    encoder_channels: int = 32  # conv encoder: channels of the first stage
    encoder_dim: int = 256  # stft encoder: hidden size
    encoder_blocks: int = 4  # stft encoder: ConvNeXt blocks
    latent_dim: int = 128
    decoder_dim: int = 256
    decoder_blocks: int = 8
    n_fft: int = 1280  # ISTFT size of the decoder head (4 x hop)
    phase: str = "direct"  # decoder head: "direct" (predict each frame's phase) or "if" (instantaneous frequency)
    harmonics: int = 0  # > 0: a harmonic-plus-noise decoder with this many harmonics (F0-supervised in training)
    harmonic_phase: str = "sine"  # harmonic head: "sine" (all harmonics in phase) or "minimum" (the envelope's phase)
    f0_codebook: bool = False  # codebook 0 is the tracker's F0 (0 = unvoiced, log-spaced bins); the rest is RVQ
    f0_range: list[float] = field(default_factory=lambda: [50.0, 800.0])  # Hz, the F0 codebook's span
    num_codebooks: int = 8
    codebook_size: int = 1024
    ema_decay: float = 0.99
    dead_threshold: float = 0.1  # restart codes used less than this fraction of the mean usage
    kmeans_iters: int = 10
    quantizer_dropout: float = 0.5  # fraction of training items that use a random codebook prefix
    quantizer: str = "ema"  # "ema" (EMA codebooks) or "factorized" (L2-normalised low-dim codes)
    code_dim: int = 8  # dimension of the factorized codes
    causal: bool = True  # causal convolutions: enables streaming
    semantic: dict | None = None  # {"teacher": DIR, "layer": L}: semantic distillation (see semantic.py)

    @property
    def hop_length(self) -> int:
        return int(math.prod(self.strides))

    @classmethod
    def from_dict(cls, d: dict) -> CodecConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"model_type"})
        if unknown:
            raise UnisonoError(f"unknown codec config keys {unknown}; valid keys: {sorted(known)}")
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.n_fft % self.hop_length:
            raise UnisonoError(f"n_fft ({self.n_fft}) must be a multiple of the hop length ({self.hop_length})")
        if self.encoder not in ("conv", "stft"):
            raise UnisonoError(f"encoder must be 'conv' or 'stft', got {self.encoder!r}")
        if self.f0_codebook and (self.causal or not self.harmonics or self.num_codebooks < 2):
            raise UnisonoError("f0_codebook needs causal: false (the F0 tracker looks ahead), harmonics > 0 and "
                               "num_codebooks >= 2")
        if self.harmonic_phase not in ("sine", "minimum"):
            raise UnisonoError(f"harmonic_phase must be 'sine' or 'minimum', got {self.harmonic_phase!r}")
        if self.phase not in ("direct", "if"):
            raise UnisonoError(f"phase must be 'direct' or 'if', got {self.phase!r}")
        if not 1 <= self.num_codebooks <= 64 or self.codebook_size < 2:
            raise UnisonoError("num_codebooks must be in 1..64 and codebook_size >= 2")
        if self.sample_rate % self.hop_length:
            raise UnisonoError(f"sample_rate {self.sample_rate} must be a multiple of the hop length {self.hop_length}")

    def to_dict(self) -> dict:
        return {"model_type": MODEL_TYPE, **asdict(self)}


class Codec(nn.Module):
    """RVQ neural codec. ``encode(wav [B,1,S]) -> codes [B,K,T]``; ``decode(codes) -> wav [B,1,T*hop]``."""

    def __init__(self, config: CodecConfig | None = None):
        super().__init__()
        self.config = config = config or CodecConfig()
        config.validate()
        if config.encoder == "stft":
            self.encoder = STFTEncoder(config.hop_length, config.latent_dim, config.encoder_dim,
                                       config.encoder_blocks, 2 * config.hop_length, config.causal)
        else:
            self.encoder = Encoder(config.encoder_channels, config.latent_dim, config.strides, config.causal)
        self.quantizer = ResidualVectorQuantizer(
            config.latent_dim, config.num_codebooks - int(config.f0_codebook), config.codebook_size, config.ema_decay,
            config.dead_threshold, config.kmeans_iters, config.quantizer_dropout, config.quantizer, config.code_dim,
        )
        self.decoder = Decoder(config.latent_dim, config.decoder_dim, config.decoder_blocks, config.hop_length,
                               config.n_fft, config.causal, config.phase, config.harmonics, config.sample_rate,
                               config.harmonic_phase)
        self.semantic = None
        if config.semantic:
            from unisono.codec.semantic import SemanticBranch  # noqa: PLC0415 (needs transformers when used)

            self.semantic = SemanticBranch(config.semantic, config.latent_dim, config.sample_rate, config.hop_length)
        self._streaming = False

    # -- the contract -------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / self.config.hop_length

    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def _check_wav(self, wav: torch.Tensor) -> torch.Tensor:
        if not isinstance(wav, torch.Tensor) or wav.dim() != 3 or wav.shape[1] != 1:
            shape = tuple(wav.shape) if hasattr(wav, "shape") else type(wav).__name__
            raise UnisonoError(f"encode expects a mono waveform tensor [B, 1, S], got {shape}")
        if wav.shape[-1] == 0:
            raise UnisonoError("encode got an empty waveform (S = 0)")
        return wav.float()

    def _pad(self, wav: torch.Tensor) -> torch.Tensor:
        rest = (-wav.shape[-1]) % self.hop_length
        if rest and self._streaming:
            raise UnisonoError(f"in streaming mode each chunk must be a multiple of {self.hop_length} samples")
        return F.pad(wav, (0, rest))

    def _latents(self, wav: torch.Tensor):
        wav = self._pad(self._check_wav(wav))
        z = self.encoder(wav)
        feats = None
        if self.semantic is not None:
            feats = self.semantic.features(wav, z.shape[-1])
            z = self.semantic.fuse(z, feats)
        return z, feats

    def latents(self, wav: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latents ``[B, latent_dim, T]`` of ``wav [B, 1, S]``."""
        return self._latents(wav)[0]

    # -- the F0 codebook (f0_codebook: true) -------------------------------------------------------------
    def f0_codes(self, wav: torch.Tensor) -> torch.Tensor:
        """F0 codes ``[B, 1, T]`` of ``wav [B, 1, S]``: 0 where unvoiced, else bins 1..N-1 log-spaced over
        ``f0_range`` (4 octaves over 1023 bins: 4.7 cents a bin)."""
        wav = self._pad(self._check_wav(wav))
        f0, voiced = f0_track(wav[:, 0], self.sample_rate, self.hop_length)
        lo, hi = (math.log(v) for v in self.config.f0_range)
        n = self.codebook_size - 2
        q = ((torch.log(f0.clamp_min(1.0)) - lo) / (hi - lo) * n).round().clamp(0, n).long() + 1
        t = wav.shape[-1] // self.hop_length
        return torch.where(voiced, q, torch.zeros_like(q))[:, None, :t]

    def f0_from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """F0 in Hz ``[B, T]`` of F0 codes ``[B, T]`` (0 Hz where unvoiced)."""
        lo, hi = (math.log(v) for v in self.config.f0_range)
        f0 = torch.exp(lo + (codes.float() - 1) / (self.codebook_size - 2) * (hi - lo))
        return torch.where(codes > 0, f0, torch.zeros_like(f0))

    def split_codes(self, codes: torch.Tensor):
        """``(F0 in Hz [B, T] or None, RVQ codes [B, K', T])`` of codes ``[B, K, T]``."""
        if not self.config.f0_codebook:
            return None, codes
        return self.f0_from_codes(codes[:, 0]), codes[:, 1:]

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        """Codes ``[B, K, ceil(S / hop)]`` (int64) of ``wav [B, 1, S]``; ``num_codebooks`` picks a prefix."""
        if not self.config.f0_codebook:
            return self.quantizer.encode(self.latents(wav), num_codebooks)
        k = self.num_codebooks if num_codebooks is None else int(num_codebooks)
        if not 1 <= k <= self.num_codebooks:
            raise UnisonoError(f"num_codebooks must be between 1 and {self.num_codebooks}, got {k}")
        f0 = self.f0_codes(wav)
        return torch.cat([f0, self.quantizer.encode(self.latents(wav), k - 1)], 1) if k > 1 else f0

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, 1, T * hop]`` from ``codes [B, K, T]`` (any prefix of the codebooks)."""
        return self.decode_train(self._check_codes(codes))

    def decode_train(self, codes: torch.Tensor) -> torch.Tensor:
        f0, rvq = self.split_codes(codes)
        if rvq.shape[1] == 0:  # the F0 codebook alone
            z = codes.new_zeros((codes.shape[0], self.config.latent_dim, codes.shape[-1]), dtype=torch.float32)
        else:
            z = self.quantizer.decode(rvq)
        return self.decoder(z, f0)

    def _check_codes(self, codes) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
            raise UnisonoError(f"decode expects codes [B, K, T], got {getattr(codes, 'shape', type(codes).__name__)}")
        if codes.shape[1] > self.num_codebooks or codes.shape[1] < 1:
            raise UnisonoError(f"codes have {codes.shape[1]} codebooks; this codec has {self.num_codebooks}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise UnisonoError(
                f"code values must be in [0, {self.codebook_size}); got {int(codes.min())}..{int(codes.max())}"
            )
        return codes.long()

    def forward(self, wav: torch.Tensor, num_codebooks: int | None = None) -> dict:
        """Training pass: ``{"audio": [B,1,S'], "codes", "commit_loss", "codebook_loss", "stats"
        [, "semantic_loss"]}``."""
        z, feats = self._latents(wav)
        f0 = None
        if self.config.f0_codebook:
            f0_codes = self.f0_codes(wav)
            f0 = self.f0_from_codes(f0_codes[:, 0])
            num_codebooks = None if num_codebooks is None else int(num_codebooks) - 1
        z_q, codes, commit, cb_loss, stats = self.quantizer(z, num_codebooks)
        if f0 is not None:
            codes = torch.cat([f0_codes, codes], 1)
        out = {"audio": self.decoder(z_q, f0), "codes": codes, "commit_loss": commit, "codebook_loss": cb_loss,
               "stats": stats}
        if self.decoder.harmonic is not None and f0 is None:
            out["log_f0"], out["voiced_logit"] = self.decoder.harmonic.last  # [B, T] each
        if self.semantic is not None:
            out["semantic_loss"] = self.semantic.loss(z_q, feats)
        return out

    # -- streaming ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def streaming(self):
        """Within this context, ``encode`` and ``decode`` keep state across calls: feed chunks (multiples of
        ``hop_length`` samples, or any number of frames) and concatenate the outputs; the result equals
        the offline call. Needs a causal codec."""
        if not self.config.causal:
            raise UnisonoError("this codec was built with causal: false; streaming needs a causal codec")
        if self.semantic is not None:
            raise UnisonoError("streaming is not available with semantic distillation (the teacher is not causal)")
        set_streaming(self, True)
        self._streaming = True
        try:
            yield self
        finally:
            set_streaming(self, False)
            self._streaming = False

    # -- persistence --------------------------------------------------------------------------------
    def save_pretrained(self, directory, precision: str = "float32") -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically, file by file); the weights
        in ``precision`` (float32, float16 or int8: :mod:`unisono.weights`)."""

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if self.semantic is not None:  # the teacher stays in its own directory
            state = {k: v for k, v in state.items() if not k.startswith("semantic.teacher.")}
        save_weights(state, d / "model.safetensors", precision)
        write_json(d / "config.json", self.config.to_dict())
        return d

    @classmethod
    def from_pretrained(cls, directory, map_location: str = "cpu") -> Codec:
        """Load a codec saved by :meth:`save_pretrained`; returned in eval mode."""
        d = Path(directory)
        if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
            raise UnisonoError(f"{d} is not a codec directory (needs config.json and model.safetensors)")
        cfg = json.loads((d / "config.json").read_text())
        if cfg.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise UnisonoError(f"{d} holds a {cfg.get('model_type')!r} model; use unisono.codec.load_codec")
        model = cls(CodecConfig.from_dict(cfg))
        state = load_weights(d / "model.safetensors", device=map_location)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("semantic.teacher.")]
        if missing or unexpected:
            raise UnisonoError(
                f"{d}/model.safetensors does not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return model.eval()

    def num_parameters(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("semantic.teacher."))
