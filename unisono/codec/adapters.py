"""Adapters that give pretrained Hugging Face codecs on disk the project's codec interface.

Supported ``model_type`` values in ``config.json``: ``encodec``, ``dac``, ``mimi`` and ``xcodec`` (when the
installed transformers has it). Models are read from a local directory only; nothing is downloaded.

Every adapter exposes ``sample_rate`` (Hz), ``frame_rate`` (Hz), ``num_codebooks``, ``codebook_size``,
``encode(wav [B, 1, S], num_codebooks=None) -> codes [B, K, T]`` and ``decode(codes [B, K, T]) -> wav [B, 1, S']``.
All four are residual quantizers, so a prefix of the codebooks is the lower-bitrate code of the same audio.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from unisono.errors import UnisonoError

ADAPTERS = {"encodec": "EncodecModel", "dac": "DacModel", "mimi": "MimiModel", "xcodec": "XcodecModel"}


def _model_class(model_type: str):
    try:
        import transformers  # noqa: PLC0415 (optional: transformers)
    except ImportError:
        raise UnisonoError("loading a Hugging Face codec needs transformers: pip install 'unisono[codec]'") from None
    cls = getattr(transformers, ADAPTERS[model_type], None)
    if cls is None:
        raise UnisonoError(
            f"the installed transformers {transformers.__version__} has no {ADAPTERS[model_type]}; upgrade transformers"
        )
    return cls


class HFCodec(nn.Module):
    """A transformers codec model behind the project's codec interface (eval mode, no gradients)."""

    def __init__(self, model: nn.Module, model_type: str):
        super().__init__()
        if model_type not in ADAPTERS:
            raise UnisonoError(f"unsupported codec model_type {model_type!r}; supported: {', '.join(ADAPTERS)}")
        self.model, self.model_type = model.eval(), model_type
        cfg = model.config
        if model_type == "encodec" and (getattr(cfg, "chunk_length_s", None) or cfg.audio_channels != 1):
            raise UnisonoError("only mono Encodec models without chunking (e.g. the 24 kHz one) are supported")
        self.sample_rate = int(getattr(cfg, "sampling_rate", None) or cfg.sample_rate)
        if model_type == "dac":
            self.frame_rate = self.sample_rate / cfg.hop_length
            self.num_codebooks = int(cfg.n_codebooks)
        else:
            self.frame_rate = float(cfg.frame_rate)
            self.num_codebooks = int(cfg.num_quantizers)
        if model_type == "encodec":  # the codebooks used at the highest target bandwidth
            self.num_codebooks = int(max(cfg.target_bandwidths) * 1000 // (cfg.frame_rate * 10))
        self.codebook_size = int(cfg.codebook_size)
        self.hop_length = max(1, round(self.sample_rate / self.frame_rate))  # samples per frame

    def _k(self, num_codebooks) -> int:
        k = self.num_codebooks if num_codebooks is None else int(num_codebooks)
        if not 1 <= k <= self.num_codebooks:
            raise UnisonoError(f"num_codebooks must be between 1 and {self.num_codebooks}, got {k}")
        return k

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, num_codebooks: int | None = None) -> torch.Tensor:
        """Codes ``[B, K, T]`` (int64) of ``wav [B, 1, S]`` at ``sample_rate`` Hz; a waveform shorter than one frame
        (``hop_length`` samples) is padded with silence to one (DAC's and Xcodec's convolutions need it)."""
        if not isinstance(wav, torch.Tensor) or wav.dim() != 3 or wav.shape[1] != 1:
            raise UnisonoError(
                f"encode expects a mono waveform tensor [B, 1, S], got {tuple(getattr(wav, 'shape', ()))}"
            )
        if wav.shape[-1] == 0:
            raise UnisonoError("encode got an empty waveform (0 samples)")
        k = self._k(num_codebooks)
        wav = wav.float()
        if wav.shape[-1] < self.hop_length:
            wav = F.pad(wav, (0, self.hop_length - wav.shape[-1]))
        m, t = self.model, self.model_type
        if t == "encodec":
            out = m.encode(wav, bandwidth=max(m.config.target_bandwidths))
            codes = out.audio_codes[0]  # [B, K, T] (one chunk)
        elif t == "dac":
            codes = m.encode(wav).audio_codes
        elif t == "mimi":
            codes = m.encode(wav, num_quantizers=self.num_codebooks).audio_codes
        else:
            codes = m.encode(wav, bandwidth=max(m.config.target_bandwidths)).audio_codes
        return codes[:, :k].long().contiguous()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, 1, S']`` from ``codes [B, K, T]`` (any prefix of the codebooks)."""
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
            raise UnisonoError(f"decode expects codes [B, K, T], got {tuple(getattr(codes, 'shape', ()))}")
        if not 1 <= codes.shape[1] <= self.num_codebooks:
            raise UnisonoError(f"codes have {codes.shape[1]} codebooks; this codec has {self.num_codebooks}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise UnisonoError(f"code values must be in [0, {self.codebook_size})")
        codes = codes.long()
        m, t = self.model, self.model_type
        if t == "encodec":
            wav = m.decode(codes[None], [None]).audio_values
        elif t == "dac":
            wav = m.decode(audio_codes=codes).audio_values
        else:
            wav = m.decode(codes).audio_values
        if wav.dim() == 2:
            wav = wav[:, None]
        return wav.float()

    def save_pretrained(self, directory) -> Path:
        """Write the wrapped model in Hugging Face format (``config.json`` + ``model.safetensors``)."""
        d = Path(directory)
        self.model.save_pretrained(str(d))
        return d


def load_adapter(directory, model_type: str, map_location: str = "cpu") -> HFCodec:
    """Load a Hugging Face codec of ``model_type`` from the local ``directory``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cls, name = _model_class(model_type), ADAPTERS[model_type]
    try:
        model, info = cls.from_pretrained(str(directory), local_files_only=True, output_loading_info=True)
    except OSError as e:
        raise UnisonoError(f"cannot load a {name} from {directory} ({_first_line(e)})") from None
    except Exception as e:  # safetensors' errors for a truncated file; weights of other shapes (RuntimeError)
        raise UnisonoError(f"cannot load a {name} from {directory}: its weights are truncated, corrupt or of other "
                           f"shapes than its config.json ({_first_line(e)}); copy the model again") from None
    wrong = {k: sorted(info.get(f"{k}_keys") or []) for k in ("missing", "unexpected", "mismatched")}
    if any(wrong.values()) or info.get("error_msgs"):
        found = ", ".join(f"{len(v)} {k} (e.g. {v[0]})" for k, v in wrong.items() if v) or "load errors"
        raise UnisonoError(f"{directory}: the weights do not belong to its config.json's {name} ({found}); they "
                           "would load as random weights: use the weights saved with this config")
    return HFCodec(model.to(map_location), model_type)


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e).strip() else type(e).__name__
