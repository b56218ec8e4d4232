"""Semantic distillation: features of a self-supervised teacher enter the latents before RVQ and are
reconstructed from the quantized latents after it, so the codes carry linguistic content as well as sound.

The teacher is a transformers speech encoder (HuBERT, wav2vec 2.0, WavLM, ...) loaded from a local
directory; it is frozen and is not saved with the codec (the codec's config keeps its path).
Config: ``semantic: {"teacher": DIR, "layer": -1}`` (``layer``: which hidden state; -1 = the last).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from unisono.errors import UnisonoError


def load_teacher(directory) -> nn.Module:
    d = Path(directory)
    if not (d / "config.json").is_file():
        raise UnisonoError(f"semantic teacher {d} not found (needs a transformers model directory with config.json)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel  # noqa: PLC0415 (optional: transformers)

    model = AutoModel.from_pretrained(str(d), local_files_only=True)
    model.eval().requires_grad_(False)
    return model


class SemanticBranch(nn.Module):
    """Fuses teacher features into latents ``[B, D, T]`` and predicts them back from quantized latents."""

    def __init__(self, cfg: dict, latent_dim: int, sample_rate: int, hop_length: int):
        super().__init__()
        if "teacher" not in cfg:
            raise UnisonoError("semantic config needs 'teacher': the directory of a transformers speech encoder")
        if sample_rate != 16000:
            raise UnisonoError("semantic distillation expects a 16 kHz codec (speech teachers run at 16 kHz)")
        self.layer = int(cfg.get("layer", -1))
        self.teacher = load_teacher(cfg["teacher"])
        tdim = int(self.teacher.config.hidden_size)
        self.fuse_proj = nn.Conv1d(latent_dim + tdim, latent_dim, 1)
        self.head = nn.Conv1d(latent_dim, tdim, 1)

    @torch.no_grad()
    def features(self, wav: torch.Tensor, frames: int) -> torch.Tensor:
        """Teacher features ``[B, teacher_dim, frames]`` of ``wav [B, 1, S]``, resampled in time to the codec frames."""
        self.teacher.eval()
        out = self.teacher(wav[:, 0].float(), output_hidden_states=True)
        h = out.hidden_states[self.layer].transpose(1, 2)  # [B, C, T_teacher]
        return F.interpolate(h, size=frames, mode="linear", align_corners=False)

    def fuse(self, z: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return self.fuse_proj(torch.cat([z, F.layer_norm(feats.transpose(1, 2), feats.shape[1:2]).transpose(1, 2)], 1))

    def loss(self, z_q: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """1 - cosine similarity between the predicted and the teacher features, averaged over frames."""
        return (1 - F.cosine_similarity(self.head(z_q), feats, dim=1)).mean()

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher stays frozen and deterministic
        return self
