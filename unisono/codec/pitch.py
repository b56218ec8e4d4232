"""A fast F0 tracker in torch: the training target of the codec's harmonic decoder head.

Normalised cross-correlation (NCCF) of each frame with itself, computed with FFTs; the F0 of a frame is the
shortest lag whose correlation is within ``octave_tolerance`` of the best one (which avoids the usual
octave-too-low errors), refined by parabolic interpolation. Built for clean, single-voice signals (the
built-in corpus's speech and singing); on noise or polyphony it mostly says "unvoiced".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def f0_track(wav: torch.Tensor, sample_rate: int = 16000, hop: int = 320, window: int = 1024,
             f0_min: float = 60.0, f0_max: float = 500.0, threshold: float = 0.6,
             octave_tolerance: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """F0 of ``wav [B, S]`` per frame of ``hop`` samples: ``(f0 [B, T] in Hz, voiced [B, T] bool)``,
    ``T = S // hop``, frame ``t`` centred on sample ``t * hop + hop / 2``; ``f0`` is 0 where unvoiced."""
    if wav.dim() != 2:
        raise ValueError(f"f0_track expects wav [B, S], got {tuple(wav.shape)}")
    b, s = wav.shape
    t = s // hop
    x = F.pad(wav.float(), (window // 2, window // 2))
    idx = (torch.arange(t, device=wav.device) * hop + hop // 2)[:, None] + torch.arange(window, device=wav.device)
    frames = x[:, idx]  # [B, T, window]
    frames = frames - frames.mean(-1, keepdim=True)
    spec = torch.fft.rfft(frames, n=2 * window)
    ac = torch.fft.irfft(spec.real.square() + spec.imag.square(), n=2 * window)[..., :window]  # [B, T, lag]
    sq = frames.square()
    head = torch.cumsum(sq, -1)  # energy of frames[:n + 1]
    tail = torch.cumsum(sq.flip(-1), -1).flip(-1)  # energy of frames[n:]
    # lag L correlates frames[:window - L] with frames[L:]
    nccf = ac / torch.sqrt(head.flip(-1) * tail + 1e-12)
    lo, hi = max(2, int(sample_rate / f0_max)), min(window - 2, int(sample_rate / f0_min))
    seg = nccf[..., lo:hi + 1]
    best = seg.max(-1, keepdim=True).values
    peak = torch.zeros_like(seg, dtype=torch.bool)
    peak[..., 1:-1] = (seg[..., 1:-1] >= seg[..., :-2]) & (seg[..., 1:-1] >= seg[..., 2:])
    ok = peak & (seg >= octave_tolerance * best)
    first = torch.where(ok.any(-1), ok.int().argmax(-1), seg.argmax(-1))  # shortest good lag
    lag = first + lo
    a = nccf.gather(-1, (lag - 1)[..., None])[..., 0]
    c = nccf.gather(-1, lag[..., None])[..., 0]
    d = nccf.gather(-1, (lag + 1)[..., None])[..., 0]
    curv = a - 2 * c + d
    shift = torch.where(curv < 0, 0.5 * (a - d) / curv.clamp(max=-1e-9), torch.zeros_like(c)).clamp(-0.5, 0.5)
    f0 = sample_rate / (lag.float() + shift)
    loud = frames.square().mean(-1) > 1e-6
    voiced = (c > threshold) & loud & (f0 >= f0_min) & (f0 <= f0_max)
    return torch.where(voiced, f0, torch.zeros_like(f0)), voiced
