"""Discriminators for adversarial codec training: multi-period (waveform) and multi-scale STFT.

Each discriminator maps ``wav [B, 1, S]`` to a list of ``(logits, feature_maps)``, one per sub-discriminator.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

wn = nn.utils.parametrizations.weight_norm


class PeriodDiscriminator(nn.Module):
    """Folds the waveform into ``[B, 1, S / period, period]`` and applies 2-D convolutions along time."""

    def __init__(self, period: int, channels: int = 16, max_channels: int = 256):
        super().__init__()
        self.period = period
        chans = [1] + [min(channels * 4 ** i, max_channels) for i in range(4)]
        self.convs = nn.ModuleList(
            wn(nn.Conv2d(chans[i], chans[i + 1], (5, 1), (3, 1), padding=(2, 0))) for i in range(4)
        )
        self.post = wn(nn.Conv2d(chans[-1], chans[-1], (5, 1), 1, padding=(2, 0)))
        self.out = wn(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x):
        b, c, s = x.shape
        if s % self.period:
            x = F.pad(x, (0, self.period - s % self.period), mode="reflect")
        x = x.view(b, c, -1, self.period)
        feats = []
        for conv in [*self.convs, self.post]:
            x = F.leaky_relu(conv(x), 0.1)
            feats.append(x)
        return self.out(x), feats


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods=(2, 3, 5, 7, 11), channels: int = 16):
        super().__init__()
        self.discs = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, x):
        return [d(x) for d in self.discs]


class STFTDiscriminator(nn.Module):
    """2-D convolutions over the complex STFT (real and imaginary parts as two channels)."""

    def __init__(self, n_fft: int, channels: int = 16):
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c = channels
        self.convs = nn.ModuleList([
            wn(nn.Conv2d(2, c, (3, 9), padding=(1, 4))),
            wn(nn.Conv2d(c, c, (3, 9), (1, 2), padding=(1, 4), dilation=(1, 1))),
            wn(nn.Conv2d(c, c, (3, 9), (1, 2), padding=(2, 4), dilation=(2, 1))),
            wn(nn.Conv2d(c, c, (3, 9), (1, 2), padding=(4, 4), dilation=(4, 1))),
            wn(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
        ])
        self.out = wn(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, x):
        spec = torch.stft(x.squeeze(1).float(), self.n_fft, self.hop, window=self.window.float(), return_complex=True)
        x = torch.stack([spec.real, spec.imag], 1).transpose(2, 3)  # [B, 2, frames, freq]
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.out(x), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, n_ffts=(1024, 512, 256), channels: int = 16):
        super().__init__()
        self.discs = nn.ModuleList(STFTDiscriminator(n, channels) for n in n_ffts)

    def forward(self, x):
        return [d(x) for d in self.discs]


class Discriminators(nn.Module):
    """All discriminators together: ``forward(wav) -> list of (logits, feature_maps)``."""

    def __init__(self, periods=(2, 3, 5, 7, 11), n_ffts=(1024, 512, 256), channels: int = 16):
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(periods, channels)
        self.mssd = MultiScaleSTFTDiscriminator(n_ffts, channels)

    def forward(self, x):
        return self.mpd(x) + self.mssd(x)
