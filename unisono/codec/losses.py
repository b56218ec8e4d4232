"""Codec training losses: multi-scale mel, hinge adversarial, feature matching."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from unisono.audio import mel_spectrogram


class MultiScaleMelLoss(nn.Module):
    """L1 between log-mel spectrograms (plus L1 of mel magnitudes) at several window sizes.

    Small windows (32, 64 samples) resolve transients; large ones (1024, 2048) resolve pitch harmonics.
    """

    def __init__(self, sample_rate: int = 16000, windows=(32, 64, 128, 256, 512, 1024, 2048),
                 n_mels=(5, 10, 20, 40, 80, 160, 320)):
        super().__init__()
        self.sample_rate, self.windows, self.n_mels = sample_rate, tuple(windows), tuple(n_mels)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = min(y_hat.shape[-1], y.shape[-1])
        y_hat, y = y_hat[..., :n], y[..., :n]
        loss = y.new_zeros(())
        for win, mels in zip(self.windows, self.n_mels):
            kw = dict(sample_rate=self.sample_rate, n_fft=win, hop_length=win // 4, n_mels=mels, log=False)
            a, b = mel_spectrogram(y_hat, **kw), mel_spectrogram(y, **kw)
            loss = loss + F.l1_loss(torch.log(a.clamp_min(1e-5)), torch.log(b.clamp_min(1e-5))) + F.l1_loss(a, b)
        return loss / len(self.windows)


def mel_distance(y_hat: torch.Tensor, y: torch.Tensor, sample_rate: int = 16000) -> float:
    """Mean L1 distance of 80-band log-mel spectrograms (n_fft 1024, hop 256): the quality metric."""
    n = min(y_hat.shape[-1], y.shape[-1])
    kw = dict(sample_rate=sample_rate, n_fft=1024, hop_length=256, n_mels=80)
    return float(F.l1_loss(mel_spectrogram(y_hat[..., :n], **kw), mel_spectrogram(y[..., :n], **kw)))


def discriminator_loss(real_outs, fake_outs) -> torch.Tensor:
    """Hinge loss: real logits pushed above +1, fake ones below -1."""
    loss = 0.0
    for (r, _), (f, _) in zip(real_outs, fake_outs):
        loss = loss + F.relu(1 - r).mean() + F.relu(1 + f).mean()
    return loss / len(real_outs)


def generator_adv_loss(fake_outs) -> torch.Tensor:
    return sum(F.relu(1 - f).mean() for f, _ in fake_outs) / len(fake_outs)


def feature_matching_loss(real_outs, fake_outs) -> torch.Tensor:
    """L1 between discriminator feature maps of real and generated audio, relative to the real ones' scale."""
    loss, n = 0.0, 0
    for (_, rf), (_, ff) in zip(real_outs, fake_outs):
        for a, b in zip(rf, ff):
            loss = loss + F.l1_loss(b, a.detach()) / (a.detach().abs().mean() + 1e-5)
            n += 1
    return loss / max(n, 1)
