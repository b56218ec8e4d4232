"""The enhancement stage after the codec (UALM's enhancement VAE): 16 kHz mono decode -> 48 kHz stereo.

:class:`Enhancer` reads the codec's decode ``wav [B, 1, S]`` at ``in_rate`` Hz and writes ``[B, C, S * ratio]`` at
``out_rate`` Hz (``ratio = out_rate / in_rate``, a whole number; ``C`` = 2 for stereo). It is a small VAE: a
causal convolutional encoder turns the input into a continuous latent ``z [B, Z, S / hop]`` (a mean and a log
variance: the KL term of :func:`enhancer_loss` keeps it near a unit Gaussian), and a decoder of dilated
convolutions at the output rate reads the input resampled to that rate beside ``z`` (held over its hop). The
decoder's output is a *residual* on the resampled input copied to every channel: its last layer starts at zero,
so an untrained enhancer returns exactly that resampling, and
training can only add what the references have above it (the 8-24 kHz band, the stereo image).

Losses (:func:`enhancer_loss`): multi-resolution STFT (log and linear magnitudes) on every channel and on the side
signal (L - R) / 2, the codec's multi-scale mel loss at the output rate, the KL term, and when discriminators are
given the codec's hinge adversarial and feature-matching losses. :meth:`Enhancer.enhance` runs a long input in
overlapping chunks (a linear cross-fade over the overlap): memory stays bounded; the cross-fade makes it equal to
one pass up to the chunk edges (tested). :class:`EnhancerStream` does the same on input that arrives in pieces
(streaming generation), with the same output whatever the pieces.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from unisono.codec.losses import MultiScaleMelLoss, feature_matching_loss, generator_adv_loss
from unisono.codec.modules import SConv1d
from unisono.errors import UnisonoError
from unisono.fileio import write_json
from unisono.weights import load_weights, save_weights

MODEL_TYPE = "unisono-enhancer"


@dataclass
class EnhancerConfig:
    """Architecture of an :class:`Enhancer` (saved as ``config.json``)."""

    in_rate: int = 16000
    out_rate: int = 48000
    channels: int = 2  # output channels (2: stereo)
    strides: list[int] = field(default_factory=lambda: [2, 4, 5, 4])  # product = hop (160: 100 Hz latents)
    width: int = 64
    latent_dim: int = 16

    @property
    def hop(self) -> int:
        h = 1
        for s in self.strides:
            h *= s
        return h

    @property
    def ratio(self) -> int:
        return self.out_rate // self.in_rate

    def validate(self) -> EnhancerConfig:
        if self.out_rate % self.in_rate or self.out_rate < self.in_rate:
            raise UnisonoError(f"enhancer out_rate {self.out_rate} must be a whole multiple of in_rate {self.in_rate}")
        if self.channels not in (1, 2) or self.latent_dim < 1 or self.width < 4:
            raise UnisonoError("enhancer config: channels must be 1 or 2, latent_dim >= 1 and width >= 4")
        return self


class Enhancer(nn.Module):
    """``forward(wav [B, 1, S]) -> (out [B, C, S * ratio], kl [])``; ``enhance(wav [S], sample_rate)`` for use."""

    def __init__(self, config: EnhancerConfig | None = None):
        super().__init__()
        self.config = cfg = (config or EnhancerConfig()).validate()
        w, layers, c = cfg.width, [], 1
        for i, s in enumerate(cfg.strides):
            c_out = w * (2 ** min(i, 2))
            layers += [SConv1d(c, c_out, 2 * s, stride=s), nn.ELU()]
            c = c_out
        last = SConv1d(c, 2 * cfg.latent_dim, 3)
        with torch.no_grad():  # the posterior starts narrow (std e^-4): early noise does not drown the input
            last.conv.bias[cfg.latent_dim :] = -8.0
        self.encoder = nn.Sequential(*layers, last)
        # decoder: at the output rate, the resampled input and the latent (held over its hop) side by side
        w = cfg.width
        layers = [nn.Conv1d(1 + cfg.latent_dim, w, 7, padding=3), nn.ELU()]
        for d in (1, 3, 9):
            layers += [nn.Conv1d(w, w, 7, padding=3 * d, dilation=d), nn.ELU()]
        self.decoder = nn.Sequential(*layers)
        self.out = nn.Conv1d(w, cfg.channels, 7, padding=3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def base(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, 1, S]`` at the output rate on every channel (linear interpolation): ``[B, C, S * ratio]``."""
        up = F.interpolate(wav, scale_factor=self.config.ratio, mode="linear", align_corners=False)
        return up.expand(-1, self.config.channels, -1)

    def encode(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``wav [B, 1, S] -> (mean, logvar)``, each ``[B, Z, ceil(S / hop)]``."""
        pad = -wav.shape[-1] % self.config.hop
        h = self.encoder(F.pad(wav, (0, pad)))
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-20.0, 10.0)

    def forward(self, wav: torch.Tensor, sample: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out [B, C, S * ratio], kl)``: ``z`` is drawn from the posterior when ``sample`` (default: in training
        mode), its mean otherwise; ``kl`` is the mean KL divergence from a unit Gaussian per latent value."""
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise UnisonoError(f"the enhancer takes wav [B, 1, S], got {tuple(wav.shape)}")
        mean, logvar = self.encode(wav)
        sample = self.training if sample is None else sample
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if sample else mean
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        n = wav.shape[-1] * self.config.ratio
        base = self.base(wav)
        z_up = z.repeat_interleave(self.config.hop * self.config.ratio, dim=-1)[..., :n]
        residual = self.out(self.decoder(torch.cat([base[:, :1], z_up], dim=1)))
        return base + residual, kl

    def enhance(self, wav: torch.Tensor, sample_rate: int, chunk_s: float = 1.0, overlap_s: float = 0.1
                ) -> torch.Tensor:
        """``wav [S]`` (float, at ``sample_rate`` = ``in_rate`` Hz) -> float32 ``[C, S * ratio]`` at ``out_rate`` Hz
        (on the CPU), in chunks of ``chunk_s`` seconds that overlap by ``overlap_s`` (a linear cross-fade): one
        :class:`EnhancerStream` fed the whole input."""
        if sample_rate != self.config.in_rate:
            raise UnisonoError(f"the enhancer reads {self.config.in_rate} Hz audio, got {sample_rate} Hz")
        stream = EnhancerStream(self, chunk_s, overlap_s)
        return torch.cat([stream.feed(wav), stream.finish()], dim=-1)

    def stream(self, chunk_s: float = 1.0, overlap_s: float = 0.1) -> EnhancerStream:
        """An :class:`EnhancerStream` of this enhancer (streaming: output lags input by at most ``chunk_s``)."""
        return EnhancerStream(self, chunk_s, overlap_s)

    def save_pretrained(self, directory, precision: str = "float32") -> Path:
        """``config.json`` + ``model.safetensors`` (``precision``: :mod:`unisono.weights`) in ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_weights({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                     d / "model.safetensors", precision)
        write_json(d / "config.json", {"model_type": MODEL_TYPE, **asdict(self.config)})
        return d

    @classmethod
    def from_pretrained(cls, directory, map_location: str = "cpu") -> Enhancer:
        d = Path(directory)
        if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
            raise UnisonoError(f"{d} is not an enhancer directory (needs config.json and model.safetensors)")
        cfg = json.loads((d / "config.json").read_text())
        if cfg.pop("model_type", None) != MODEL_TYPE:
            raise UnisonoError(f"{d}/config.json is not an enhancer's (model_type {MODEL_TYPE!r})")
        try:
            model = cls(EnhancerConfig(**cfg))
        except TypeError as e:
            raise UnisonoError(f"{d}/config.json: {e}") from None
        model.load_state_dict(load_weights(d / "model.safetensors"))
        return model.to(map_location).eval()


class EnhancerStream:
    """Chunked enhancement of an input that arrives in pieces: ``feed(wav [S])`` returns the output that is final
    so far, ``finish()`` the rest; both float32 ``[C, n]`` at ``out_rate`` Hz on the CPU.

    Windows of ``chunk_s`` seconds start every ``chunk_s - overlap_s`` seconds; each is enhanced alone and
    windows cross-fade linearly over their overlap. A window runs once the input reaches past its end (so its
    fade-out is known) and everything before the next window's start is then handed out: the joined output is the
    same, sample for sample, however the input is cut into pieces (:meth:`Enhancer.enhance` is one feed), and it
    lags the input by at most one window."""

    def __init__(self, enhancer: Enhancer, chunk_s: float = 1.0, overlap_s: float = 0.1):
        cfg = enhancer.config
        self.model, self.r, self.channels = enhancer, cfg.ratio, cfg.channels
        self.chunk, self.ov = int(chunk_s * cfg.in_rate), int(overlap_s * cfg.in_rate)
        if self.chunk <= 2 * self.ov or self.ov < 0:
            raise UnisonoError("the enhancer's chunk must be longer than twice its overlap")
        self.buf = torch.zeros(0)  # input from sample self.start on (what later windows read)
        self.start = 0  # input index of the next window
        self.total = 0  # input samples fed
        self.done = 0  # input samples whose output has been handed out
        self.acc, self.weight = torch.zeros(self.channels, 0), torch.zeros(0)  # output from self.done * r on

    @torch.inference_mode()
    def _window(self, fade_out: bool) -> None:
        piece = self.buf[: self.chunk]
        device = next(self.model.parameters()).device
        y = self.model(piece.reshape(1, 1, -1).to(device), sample=False)[0][0].float().cpu()
        m, k = y.shape[-1], self.ov * self.r
        fade = torch.ones(m)
        if self.start > 0 and k:
            fade[:k] = torch.linspace(0.0, 1.0, k + 2)[1:-1]
        if fade_out and k:
            fade[-k:] = torch.minimum(fade[-k:], torch.linspace(1.0, 0.0, k + 2)[1:-1])
        at = (self.start - self.done) * self.r
        if self.acc.shape[-1] < at + m:
            grow = at + m - self.acc.shape[-1]
            self.acc = F.pad(self.acc, (0, grow))
            self.weight = F.pad(self.weight, (0, grow))
        self.acc[:, at : at + m] += y * fade
        self.weight[at : at + m] += fade
        step = self.chunk - self.ov
        self.start += step
        self.buf = self.buf[step:]

    def _hand_out(self, upto: int) -> torch.Tensor:
        n = (upto - self.done) * self.r
        out = self.acc[:, :n] / self.weight[:n].clamp_min(1e-8)
        self.acc, self.weight, self.done = self.acc[:, n:], self.weight[n:], upto
        return out

    def feed(self, wav) -> torch.Tensor:
        """Add ``wav [S]`` (float at ``in_rate`` Hz); the output that is final now, ``[C, n]``."""
        x = torch.as_tensor(wav, dtype=torch.float32).reshape(-1).cpu()
        self.buf, self.total = torch.cat([self.buf, x]), self.total + x.shape[0]
        while self.start + self.chunk < self.total:
            self._window(fade_out=True)
        return self._hand_out(min(self.start, self.total))

    def finish(self) -> torch.Tensor:
        """The input has ended: the remaining windows, and the rest of the output ``[C, n]``."""
        while self.total and self.start < max(self.total - self.ov, 1):
            self._window(fade_out=self.start + self.chunk < self.total)
        return self._hand_out(self.total)


def stft_loss(y_hat: torch.Tensor, y: torch.Tensor, n_ffts=(512, 1024, 2048)) -> torch.Tensor:
    """Multi-resolution STFT loss of ``[B, C, S]`` signals: L1 of log magnitudes plus spectral convergence."""
    a, b = y_hat.reshape(-1, y_hat.shape[-1]), y.reshape(-1, y.shape[-1])
    loss = a.new_zeros(())
    for n_fft in n_ffts:
        win = torch.hann_window(n_fft, device=a.device)
        sa = torch.stft(a, n_fft, n_fft // 4, window=win, return_complex=True).abs()
        sb = torch.stft(b, n_fft, n_fft // 4, window=win, return_complex=True).abs()
        loss = loss + F.l1_loss(torch.log(sa.clamp_min(1e-5)), torch.log(sb.clamp_min(1e-5)))
        loss = loss + torch.linalg.vector_norm(sb - sa) / torch.linalg.vector_norm(sb).clamp_min(1e-5)
    return loss / len(n_ffts)


def enhancer_loss(out: torch.Tensor, kl: torch.Tensor, target: torch.Tensor, mel: MultiScaleMelLoss,
                  disc: nn.Module | None = None, weights: dict | None = None) -> dict[str, torch.Tensor]:
    """The generator's losses for ``out``/``target`` ``[B, C, S]`` at the output rate: ``stft``, ``mel``, ``kl``,
    for stereo ``side`` (the multi-resolution STFT loss of the side signal ``(L - R) / 2``: per-channel magnitudes
    are as good for a mono copy as for the stereo image, the side's magnitudes are not) and, with ``disc`` (e.g.
    :class:`unisono.codec.discriminators.Discriminators` over each channel), ``adv`` and ``fm``; ``total`` weighs
    them by ``weights`` (defaults: stft 1, mel 15, kl 0.01, side 1, adv 1, fm 2)."""
    w = {"stft": 1.0, "mel": 15.0, "kl": 0.01, "side": 1.0, "adv": 1.0, "fm": 2.0, **(weights or {})}
    n = min(out.shape[-1], target.shape[-1])
    out, target = out[..., :n], target[..., :n]
    losses = {"stft": stft_loss(out, target), "mel": mel(out.reshape(-1, 1, n), target.reshape(-1, 1, n)), "kl": kl}
    if out.shape[1] == 2 and w["side"]:
        losses["side"] = stft_loss((out[:, :1] - out[:, 1:]) / 2, (target[:, :1] - target[:, 1:]) / 2)
    if disc is not None:
        fake, real = disc(out.reshape(-1, 1, n)), disc(target.reshape(-1, 1, n))
        losses["adv"], losses["fm"] = generator_adv_loss(fake), feature_matching_loss(real, fake)
    losses["total"] = sum(w[k] * v for k, v in losses.items())
    return losses
