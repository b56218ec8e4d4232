"""Semantic units: k-means over frame features of speech, the content input of voice conversion.

Feature sources (in order of preference):

- ``hubert``: a transformers ``HubertModel`` in a local directory (hidden states of layer ``layer``);
- ``codec``: the project codec's encoder (``codec.encoder(wav [B, 1, S]) -> [B, D, T]``), when the
  codec object exposes one;
- ``mel``: 80-band log-mel frames at the codec frame rate (always available; weakest content signal).

``SemanticTokenizer.fit`` runs k-means (k-means++ seeding, Lloyd iterations, in torch) on a sample of
frames; ``encode(wav, sample_rate) -> LongTensor[T]`` gives the nearest centroid per frame. The
centroids and the feature settings are saved as ``semantic.safetensors`` + ``semantic.json``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from unisono import audio as uaudio
from unisono.errors import UnisonoError
from unisono.fileio import atomic_path, read_json, write_json


class FeatureExtractor:
    """``wav [1, S] float32 at sample_rate Hz -> features [T, D] float32``."""

    def __init__(self, source: str = "mel", model_dir: str | None = None, layer: int = 6,
                 frame_rate: float = 50.0, codec=None):
        self.source, self.model_dir, self.layer, self.frame_rate = source, model_dir, layer, float(frame_rate)
        self._codec = codec
        self._model = None
        if source == "hubert":
            if not model_dir or not Path(model_dir, "config.json").exists():
                raise UnisonoError(
                    f"no HubertModel in {model_dir!r} (config.json missing); pass a local model directory"
                )
            from transformers import HubertModel  # noqa: PLC0415 (optional: transformers)

            self._model = HubertModel.from_pretrained(model_dir, local_files_only=True).eval()
            self.sample_rate = 16000
        elif source == "codec":
            # codec None: loaded to read units, not to make them (unisono inspect); __call__ refuses then
            if codec is not None and not callable(getattr(codec, "encoder", None)):
                raise UnisonoError(
                    "the codec exposes no encoder(wav) -> features; use --semantic-features mel or hubert"
                )
            self.sample_rate = int(codec.sample_rate) if codec is not None else 16000
        elif source == "mel":
            self.sample_rate = 16000
        else:
            raise UnisonoError(f"unknown semantic feature source {source!r}; choose hubert, codec or mel")

    @torch.no_grad()
    def __call__(self, wav, sample_rate: int) -> torch.Tensor:
        if self.source == "codec" and self._codec is None:
            raise UnisonoError("these semantic units are of the codec encoder's features, and the tokenizers were "
                               "loaded without a codec: load them with codec=... to encode audio")
        wav = torch.as_tensor(wav, dtype=torch.float32)
        if wav.dim() == 1:
            wav = wav[None]
        wav = uaudio.to_mono(wav)
        wav = uaudio.resample(wav, int(sample_rate), self.sample_rate)
        if self.source == "hubert":
            out = self._model(wav, output_hidden_states=True)
            layer = min(self.layer, len(out.hidden_states) - 1)
            return out.hidden_states[layer][0].float()
        if self.source == "codec":
            return self._codec.encoder(wav[None])[0].transpose(0, 1).float()
        hop = int(round(self.sample_rate / self.frame_rate))
        mel = uaudio.mel_spectrogram(wav, self.sample_rate, n_fft=4 * hop, hop_length=hop, n_mels=80)
        return mel[0].transpose(0, 1).float()

    def config(self) -> dict:
        return {"source": self.source, "model_dir": self.model_dir, "layer": self.layer, "frame_rate": self.frame_rate}


def kmeans(x: torch.Tensor, k: int, iters: int = 30, seed: int = 0) -> torch.Tensor:
    """Centroids ``[k, D]`` of ``x [N, D]`` (k-means++ seeding, then Lloyd iterations)."""
    n = x.shape[0]
    if n < k:
        raise UnisonoError(f"k-means needs at least {k} frames, got {n}; use fewer units or more audio")
    g = torch.Generator().manual_seed(seed)
    cents = [x[torch.randint(n, (1,), generator=g)].squeeze(0)]
    d2 = ((x - cents[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full((n,), 1.0 / n)
        c = x[torch.multinomial(probs, 1, generator=g)].squeeze(0)
        cents.append(c)
        d2 = torch.minimum(d2, ((x - c) ** 2).sum(1))
    c = torch.stack(cents)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        new = sums / counts.clamp(min=1)[:, None]
        new[empty] = c[empty]  # an empty cluster keeps its centroid
        if torch.allclose(new, c):
            c = new
            break
        c = new
    return c


class SemanticTokenizer:
    """Frames of audio -> unit ids ``0..num_units-1``."""

    def __init__(self, centroids: torch.Tensor, features: FeatureExtractor, mean: torch.Tensor, std: torch.Tensor):
        self.centroids, self.features, self.mean, self.std = centroids.float(), features, mean.float(), std.float()

    @property
    def size(self) -> int:
        return int(self.centroids.shape[0])

    @classmethod
    def fit(cls, wavs, features: FeatureExtractor, num_units: int = 500, max_frames: int = 100_000,
            seed: int = 0) -> SemanticTokenizer:
        """Fit on ``wavs`` (an iterable of ``(wav [1, S], sample_rate)``)."""
        feats = [features(w, sr) for w, sr in wavs]
        if not feats:
            raise UnisonoError("no audio to fit semantic units on")
        x = torch.cat(feats)
        if x.shape[0] > max_frames:
            idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:max_frames]
            x = x[idx]
        mean, std = x.mean(0), x.std(0).clamp(min=1e-5)
        return cls(kmeans((x - mean) / std, num_units, seed=seed), features, mean, std)

    @torch.no_grad()
    def encode(self, wav, sample_rate: int) -> torch.Tensor:
        f = (self.features(wav, sample_rate) - self.mean) / self.std
        return torch.cdist(f, self.centroids).argmin(1)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.centroids.numpy().tobytes()).hexdigest()[:16]

    def save(self, directory: str | os.PathLike) -> None:
        d = Path(directory)
        with atomic_path(d / "semantic.safetensors") as tmp:
            save_file({"centroids": self.centroids.contiguous(), "mean": self.mean, "std": self.std}, str(tmp))
        write_json(d / "semantic.json", {"type": "semantic", "num_units": self.size, **self.features.config()})

    @classmethod
    def load(cls, directory: str | os.PathLike, codec=None) -> SemanticTokenizer:
        d = Path(directory)
        cfg = read_json(d / "semantic.json")
        t = load_file(str(d / "semantic.safetensors"))
        feats = FeatureExtractor(
            cfg["source"], cfg.get("model_dir"), cfg.get("layer", 6), cfg.get("frame_rate", 50.0), codec
        )
        return cls(t["centroids"], feats, t["mean"], t["std"])
