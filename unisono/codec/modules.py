"""Building blocks of the codec: convolutions that can run offline or in streaming mode.

A causal :class:`SConv1d` pads ``effective_kernel - stride`` samples on the left only. In streaming mode it
keeps those last samples of its input as state, so feeding a signal in chunks (each a multiple of the
stride) gives exactly the output of one offline call.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from unisono.errors import UnisonoError


class StreamingModule(nn.Module):
    """A module with an optional per-stream state (``None`` when not streaming)."""

    def __init__(self):
        super().__init__()
        self._streaming = False
        self._state = None

    def set_streaming(self, on: bool) -> None:
        self._streaming = on
        self._state = None

    def _stream_pad(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        """In streaming mode: ``x`` with the last ``pad`` input samples of the previous call in front."""
        if pad <= 0:
            return x
        buf = self._state if self._state is not None else x.new_zeros(x.shape[0], x.shape[1], pad)
        x = torch.cat([buf, x], dim=-1)
        self._state = x[..., x.shape[-1] - pad:]
        return x


def set_streaming(module: nn.Module, on: bool) -> None:
    for m in module.modules():
        if isinstance(m, StreamingModule):
            m.set_streaming(on)


class SConv1d(StreamingModule):
    """Conv1d ``[B, C_in, S] -> [B, C_out, S // stride]`` with causal or centred ("same") padding."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, causal: bool = True):
        super().__init__()
        self.conv = nn.utils.parametrizations.weight_norm(
            nn.Conv1d(c_in, c_out, kernel, stride=stride, dilation=dilation, groups=groups)
        )
        self.causal, self.stride = causal, stride
        self.pad = (kernel - 1) * dilation + 1 - stride  # samples of context the conv needs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._streaming:
            if not self.causal:
                raise RuntimeError("streaming needs a causal codec (config causal: true)")
            return self.conv(self._stream_pad(x, self.pad))
        if self.causal:
            return self.conv(F.pad(x, (self.pad, 0)))
        left = self.pad // 2
        return self.conv(F.pad(x, (left, self.pad - left), mode="reflect" if x.shape[-1] > self.pad else "constant"))


class ResidualUnit(nn.Module):
    """ELU -> dilated conv k7 -> ELU -> conv k1, added to the input."""

    def __init__(self, channels: int, dilation: int, causal: bool):
        super().__init__()
        self.c1 = SConv1d(channels, channels, 7, dilation=dilation, causal=causal)
        self.c2 = SConv1d(channels, channels, 1, causal=causal)

    def forward(self, x):
        return x + self.c2(F.elu(self.c1(F.elu(x))))


class Encoder(nn.Module):
    """Convolutional (SEANet-style) encoder: ``wav [B, 1, S] -> latents [B, dim, S / prod(strides)]``."""

    def __init__(self, channels: int = 32, dim: int = 128, strides=(2, 4, 5, 8), causal: bool = True):
        super().__init__()
        layers: list[nn.Module] = [SConv1d(1, channels, 7, causal=causal)]
        c = channels
        for s in strides:
            layers += [ResidualUnit(c, 1, causal), ResidualUnit(c, 3, causal), ResidualUnit(c, 9, causal),
                       nn.ELU(), SConv1d(c, 2 * c, 2 * s, stride=s, causal=causal)]
            c *= 2
        layers += [nn.ELU(), SConv1d(c, dim, 3, causal=causal)]
        self.net = nn.Sequential(*layers)

    def forward(self, wav):
        return self.net(wav)


class STFTFrontEnd(StreamingModule):
    """Log-magnitude spectrogram as a fixed strided convolution: ``wav [B, 1, S] -> [B, n_fft // 2 + 1, S / hop]``.

    Causal: frame ``t`` covers the ``n_fft`` samples ending at sample ``(t + 1) * hop`` (left padding only),
    so it streams like :class:`SConv1d`, with the last ``n_fft - hop`` samples as state. Not causal: frame
    ``t`` is centred on sample ``t * hop + hop / 2``.
    """

    def __init__(self, n_fft: int, hop: int, causal: bool = True):
        super().__init__()
        self.n_fft, self.hop, self.causal, self.pad = n_fft, hop, causal, n_fft - hop
        n = torch.arange(n_fft, dtype=torch.float64)
        f = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        ang = 2 * torch.pi * f[:, None] * n[None] / n_fft
        win = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        basis = torch.cat([torch.cos(ang) * win, -torch.sin(ang) * win])  # [2F, n_fft]: real, imaginary
        self.register_buffer("basis", basis.float()[:, None], persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self._streaming:
            x = self._stream_pad(wav, self.pad)
        elif self.causal:
            x = F.pad(wav, (self.pad, 0))
        else:
            x = F.pad(wav, (self.pad // 2, self.pad - self.pad // 2))
        re, im = F.conv1d(x, self.basis, stride=self.hop).chunk(2, dim=1)
        return torch.log(re.square() + im.square() + 1e-7) * 0.5  # log |X|


class STFTEncoder(nn.Module):
    """Encoder over a spectrogram instead of the waveform: ``wav [B, 1, S] -> latents [B, dim, S / hop]``.

    A log-magnitude STFT (``n_fft`` window, ``hop / 2`` hop, so two spectra per frame), a linear
    projection, a strided convolution down to the frame rate and ConvNeXt blocks. It costs a small
    fraction of the waveform encoder's compute (it never runs a convolution at the audio rate), which
    matters when training on a CPU; phase is not encoded (the decoder makes its own, as it must at low
    bitrates anyway).
    """

    def __init__(self, hop: int, dim: int = 128, hidden: int = 256, num_blocks: int = 4, n_fft: int = 640,
                 causal: bool = True):
        super().__init__()
        if hop % 2:
            raise ValueError("the STFT encoder needs an even hop length")
        self.stft = STFTFrontEnd(n_fft, hop // 2, causal)
        self.inp = SConv1d(n_fft // 2 + 1, hidden, 4, stride=2, causal=causal)
        self.norm = nn.LayerNorm(hidden)
        self.blocks = nn.ModuleList(ConvNeXtBlock(hidden, causal) for _ in range(num_blocks))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, dim)

    def forward(self, wav):
        spec = self.stft(wav)  # [B, F, 2T]: two spectra per frame
        x = self.norm(self.inp(spec).transpose(1, 2)).transpose(1, 2)
        for blk in self.blocks:
            x = blk(x)
        return self.out(self.out_norm(x.transpose(1, 2))).transpose(1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv k7 -> LayerNorm -> MLP (x4, GELU) with layer scale, residual; ``[B, C, T]``."""

    def __init__(self, dim: int, causal: bool, layer_scale: float = 1e-2):
        super().__init__()
        self.dw = SConv1d(dim, dim, 7, groups=dim, causal=causal)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x):
        y = self.dw(x).transpose(1, 2)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))) * self.gamma
        return x + y.transpose(1, 2)


class ISTFTHead(StreamingModule):
    """Frames ``[B, C, T]`` -> waveform ``[B, 1, T * hop]`` by predicting STFT magnitude and phase.

    Frame ``t`` is synthesised over samples ``[t * hop, t * hop + n_fft)`` and overlap-added, so the samples
    ``[t * hop, (t + 1) * hop)`` are final once frame ``t`` is known: causal, and streamable with a
    ``n_fft - hop`` sample overlap buffer as state.

    Not causal (``causal=False``): frame ``t`` is centred on sample ``t * hop + hop / 2`` instead, which is
    where the (non-causal) encoder's frame ``t`` is centred, so nothing has to be predicted ahead of time.

    ``phase="direct"`` predicts each frame's phase (Vocos). ``phase="if"`` predicts the instantaneous
    frequency instead: frame ``t``'s phase in bin ``k`` is ``2 pi k hop t / n_fft`` (the advance of a sinusoid
    at the bin's centre) plus the running sum of the predicted deviations, so a steady partial keeps a
    coherent phase from frame to frame by construction (the running sum is the state when streaming).
    """

    def __init__(self, dim: int, hop: int, n_fft: int, phase: str = "direct", causal: bool = True):
        super().__init__()
        if phase not in ("direct", "if"):
            raise ValueError(f"phase must be 'direct' or 'if', got {phase!r}")
        self.hop, self.n_fft, self.phase, self.causal = hop, n_fft, phase, causal
        self.proj = nn.Linear(dim, n_fft + 2)
        if phase == "if":  # start from coherent partials at the bin centres (zero deviations)
            with torch.no_grad():
                self.proj.weight[n_fft // 2 + 1:].zero_()
                self.proj.bias[n_fft // 2 + 1:].zero_()
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        # overlap-added squared window: partial at the start of the signal, constant afterwards
        t = n_fft // hop
        env = torch.zeros((t + 1) * hop)
        for i in range(t + 1):
            env[i * hop: i * hop + n_fft] += self.window[: max(0, min(n_fft, env.numel() - i * hop))].pow(2)
        self.register_buffer("envelope", env[: n_fft].clone(), persistent=False)  # for positions < n_fft
        self.register_buffer("steady", env[t * hop - 1].clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t = x.shape
        h = self.proj(x.transpose(1, 2))  # [B, T, n_fft + 2]
        mag, phase = h.chunk(2, dim=-1)
        mag = torch.exp(mag).clamp_max(1e2)
        tail, start, run = self._state if (self._streaming and self._state is not None) else (None, 0, None)
        if self.phase == "if":
            phase, run = self._integrate(phase, start // self.hop, run)
        spec = torch.polar(mag, phase)  # cos/sin of the phase
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.window  # [B, T, n_fft]
        total = (t - 1) * self.hop + self.n_fft
        ola = F.fold(frames.transpose(1, 2), output_size=(1, total), kernel_size=(1, self.n_fft),
                     stride=(1, self.hop)).reshape(b, total)
        if not self.causal:
            wsum = F.fold(self.window.square()[None, :, None].expand(1, -1, t), output_size=(1, total),
                          kernel_size=(1, self.n_fft), stride=(1, self.hop)).reshape(total)
            off = (self.n_fft - self.hop) // 2
            sl = slice(off, off + t * self.hop)
            return (ola[:, sl] / wsum[sl].clamp_min(0.1 * self.steady)).unsqueeze(1)
        if self._streaming:
            if tail is not None:
                ola[:, : tail.shape[-1]] += tail
            self._state = (ola[:, t * self.hop:], start + t * self.hop, run)
        out = ola[:, : t * self.hop]
        pos = torch.arange(start, start + t * self.hop, device=x.device)
        env = torch.where(pos < self.n_fft, self.envelope[pos.clamp_max(self.n_fft - 1)], self.steady)
        return (out / env.clamp_min(0.1 * self.steady)).unsqueeze(1)

    def _integrate(self, dev: torch.Tensor, t0: int, run: torch.Tensor | None):
        """Phases ``[B, T, F]`` of frames ``t0..t0+T-1`` from predicted deviations ``dev [B, T, F]`` (radians
        per frame); ``run [B, F]`` is the running sum before frame ``t0``. Returns (phases, new running sum)."""
        acc = torch.cumsum(dev.double(), dim=1)
        if run is not None:
            acc = acc + run[:, None]
        acc = torch.remainder(acc, 2 * math.pi)
        k = torch.arange(dev.shape[-1], device=dev.device)
        t = torch.arange(t0, t0 + dev.shape[1], device=dev.device)
        centre = (t[:, None] * k[None] * self.hop) % self.n_fft * (2 * math.pi / self.n_fft)  # exact modulo
        return (acc + centre).to(dev.dtype), acc[:, -1]


class HarmonicHead(StreamingModule):
    """The harmonic half of a harmonic-plus-noise decoder: frames ``[B, C, T]`` -> ``wav [B, 1, T * hop]``.

    Per frame it predicts F0 (in ``[f0_min, f0_max]`` Hz), a voicing gain and a spectral envelope
    (``n_bands`` log-amplitudes, linear in frequency up to Nyquist); harmonic ``h`` gets the envelope's
    amplitude at ``h * F0``. F0 and the amplitudes are interpolated to the audio rate and the phase is the
    running integral of F0, so the harmonics stay phase-coherent by construction: what an ISTFT head
    trained without a discriminator learns only slowly. Harmonics above Nyquist are silent. No gradient
    flows from the audio into F0: it is learned from the F0 loss alone.

    Frame ``t``'s values sit at sample ``t * hop + hop / 2`` (``causal=False``) or at the frame's last sample
    (causal: then samples of frame ``t`` need frames ``t - 1`` and ``t`` only; the last frame's values and
    the phase are the streaming state). ``last`` holds ``(log_f0 [B, T], voicing logit [B, T])`` of the last
    call, for the F0 loss.

    ``harmonic_phase``: ``"sine"`` makes harmonic ``h`` ``sin(h * phase)`` (every harmonic locked to the
    fundamental with no offset); ``"minimum"`` gives harmonic ``h`` the phase of the minimum-phase filter
    whose log-magnitude is the envelope at ``h * F0`` (from the folded real cepstrum of the envelope), as a
    vocal tract filter would; no parameters of its own.
    """

    def __init__(self, dim: int, hop: int, sample_rate: int, n_harmonics: int = 100, n_bands: int = 128,
                 f0_min: float = 50.0, f0_max: float = 800.0, causal: bool = True, harmonic_phase: str = "sine"):
        super().__init__()
        if harmonic_phase not in ("sine", "minimum"):
            raise UnisonoError(f"harmonic_phase must be 'sine' or 'minimum', got {harmonic_phase!r}")
        self.hop, self.sr, self.causal, self.min_phase = hop, sample_rate, causal, harmonic_phase == "minimum"
        self.f0_min, self.f0_max = f0_min, f0_max
        self.proj = nn.Linear(dim, 2 + n_bands)
        with torch.no_grad():
            self.proj.bias[2:].fill_(-6.0)  # start quiet: the noise head does the early work
        self.register_buffer("k", torch.arange(1, n_harmonics + 1, dtype=torch.float32), persistent=False)
        self.last = None

    def forward(self, x: torch.Tensor, f0: torch.Tensor | None = None) -> torch.Tensor:
        """``f0 [B, T]`` in Hz (0 = unvoiced), when given, is used instead of the predicted F0."""
        b, _, t = x.shape
        h = self.proj(x.transpose(1, 2))  # [B, T, 2 + E]
        log_f0 = math.log(self.f0_min) + torch.sigmoid(h[..., 0]) * math.log(self.f0_max / self.f0_min)
        self.last = (log_f0, h[..., 1])
        gain = torch.sigmoid(h[..., 1:2])
        if f0 is not None:
            gain = gain * (f0 > 0)[..., None]
            f0 = torch.where(f0 > 0, f0, torch.full_like(f0, 100.0))  # unvoiced frames: silent, any F0
        else:
            # the F0 head learns from the F0 loss only: the gradient of a spectral loss with respect to F0
            # oscillates (every harmonic moves) and would drown it
            f0 = log_f0.detach().exp()  # [B, T]
        env = h[..., 2:]
        e = env.shape[-1]
        pos = (f0[..., None] * self.k) / (self.sr / 2) * (e - 1)  # [B, T, H] band position of each harmonic
        lo = pos.floor().clamp(0, e - 2)
        w = (pos - lo).clamp(0, 1)
        lo = lo.long()
        amp = (env.gather(-1, lo) * (1 - w) + env.gather(-1, lo + 1) * w).clamp_max(5.0).exp()
        amp = amp * gain  # [B, T, H]
        if self.min_phase:  # the envelope's minimum phase at each harmonic [B, T, H]
            th = minimum_phase(env)
            amp = torch.stack([amp, th.gather(-1, lo) * (1 - w) + th.gather(-1, lo + 1) * w], dim=-1)
        prev = self._state if (self._streaming and self._state is not None) else None
        if self._streaming and not self.causal:
            raise RuntimeError("streaming needs a causal codec (config causal: true)")
        # values per sample: interpolate between neighbouring frames
        n = torch.arange(t * self.hop, device=x.device, dtype=torch.float32)
        if self.causal:  # frame t's value at its last sample; sample n uses frames floor(n/hop) - 1 and floor(n/hop)
            u = (n + 1) / self.hop - 1  # in [-1 + 1/hop, T - 1]
            f_prev, a_prev, ph0 = prev if prev is not None else (f0[:, :1], amp[:, :1], None)
            f0_seq, amp_seq, u = torch.cat([f_prev, f0], 1), torch.cat([a_prev, amp], 1), u + 1
        else:
            u, f0_seq, amp_seq, ph0 = (n - self.hop / 2 + 0.5) / self.hop, f0, amp, None
        i0 = u.floor().clamp(0, f0_seq.shape[1] - 1).long()
        i1 = (i0 + 1).clamp(max=f0_seq.shape[1] - 1)
        frac = (u - u.floor()).clamp(0, 1)
        frac = torch.where(u < 0, torch.zeros_like(frac), frac)
        f0_s = f0_seq[:, i0] * (1 - frac) + f0_seq[:, i1] * frac  # [B, S]
        fr = frac.view(1, -1, *([1] * (amp_seq.dim() - 2)))
        amp_s = amp_seq[:, i0] * (1 - fr) + amp_seq[:, i1] * fr  # [B, S, H] (and [..., 2] with the phase)
        phase = torch.cumsum(f0_s.double() * (2 * math.pi / self.sr), dim=1)
        if ph0 is not None:
            phase = phase + ph0[:, None]
        phase = torch.remainder(phase, 2 * math.pi)
        if self._streaming:
            self._state = (f0[:, -1:], amp[:, -1:], phase[:, -1])
        alias = (f0_s[..., None] * self.k) < (self.sr / 2)  # [B, S, H]
        arg = phase.float()[..., None] * self.k
        if self.min_phase:
            amp_s, arg = amp_s[..., 0], arg + amp_s[..., 1]
        harm = (torch.sin(arg) * amp_s * alias).sum(-1)
        return harm.unsqueeze(1)


def minimum_phase(log_mag: torch.Tensor) -> torch.Tensor:
    """Phase (radians) of the minimum-phase filter with natural-log magnitude ``log_mag [..., E]`` on E bins
    from 0 to Nyquist, from the folded real cepstrum; ``[..., E]``."""
    n = 2 * (log_mag.shape[-1] - 1)
    cep = torch.fft.irfft(log_mag, n=n)
    fold = torch.zeros(n, device=log_mag.device, dtype=cep.dtype)
    fold[0], fold[1 : n // 2], fold[n // 2] = 1.0, 2.0, 1.0
    return torch.fft.rfft(cep * fold, n=n).imag


class Decoder(nn.Module):
    """Vocos-style decoder: latents ``[B, dim, T]`` -> ConvNeXt stack at frame rate -> inverse STFT, plus,
    with ``harmonics > 0``, a :class:`HarmonicHead` whose output is added (harmonic plus noise)."""

    def __init__(self, dim: int = 128, hidden: int = 256, num_blocks: int = 8, hop: int = 320,
                 n_fft: int = 1280, causal: bool = True, phase: str = "direct", harmonics: int = 0,
                 sample_rate: int = 16000, harmonic_phase: str = "sine"):
        super().__init__()
        self.inp = SConv1d(dim, hidden, 7, causal=causal)
        self.norm = nn.LayerNorm(hidden)
        self.blocks = nn.ModuleList(ConvNeXtBlock(hidden, causal) for _ in range(num_blocks))
        self.out_norm = nn.LayerNorm(hidden)
        self.head = ISTFTHead(hidden, hop, n_fft, phase, causal)
        self.harmonic = (HarmonicHead(hidden, hop, sample_rate, harmonics, causal=causal, harmonic_phase=harmonic_phase)
                         if harmonics else None)

    def forward(self, z, f0: torch.Tensor | None = None):
        """``z [B, dim, T]`` -> ``wav [B, 1, T * hop]``; ``f0 [B, T]`` (Hz, 0 = unvoiced) drives the harmonic
        head instead of its own F0 prediction (codecs with an F0 codebook)."""
        x = self.norm(self.inp(z).transpose(1, 2)).transpose(1, 2)
        for blk in self.blocks:
            x = blk(x)
        x = self.out_norm(x.transpose(1, 2)).transpose(1, 2)
        y = self.head(x)
        return y if self.harmonic is None else y + self.harmonic(x, f0)
