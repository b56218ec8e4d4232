"""The enhancement stage after the codec (unisono.codec.enhance): 16 kHz mono -> 48 kHz stereo, on CPU with a
tiny config (the real training runs on a GPU: issue 23)."""

import pytest
import torch
import torch.nn.functional as F

from unisono.codec.enhance import Enhancer, EnhancerConfig, enhancer_loss
from unisono.codec.losses import MultiScaleMelLoss
from unisono.errors import UnisonoError

TINY = EnhancerConfig(width=16, latent_dim=8)


def test_shapes_and_an_untrained_enhancer_is_plain_resampling():
    torch.manual_seed(0)
    m = Enhancer(TINY)
    x = 0.1 * torch.randn(2, 1, 4000)
    y, kl = m(x)
    assert y.shape == (2, 2, 12000) and kl.dim() == 0 and float(kl) >= 0
    ref = F.interpolate(x, scale_factor=3, mode="linear", align_corners=False)
    assert torch.equal(y[:, 0], ref[:, 0]) and torch.equal(y[:, 1], ref[:, 0])
    odd = m(0.1 * torch.randn(1, 1, 1234))[0]  # not a multiple of the hop: padded, then cut back
    assert odd.shape == (1, 2, 3702)


def test_bad_input_and_config_are_one_line_errors():
    with pytest.raises(UnisonoError, match=r"wav \[B, 1, S\]"):
        Enhancer(TINY)(torch.zeros(1, 2, 800))
    with pytest.raises(UnisonoError, match="whole multiple"):
        EnhancerConfig(in_rate=16000, out_rate=44100).validate()
    with pytest.raises(UnisonoError, match="reads 16000 Hz"):
        Enhancer(TINY).enhance(torch.zeros(800), 24000)


def _stereo_target(n16: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A 48 kHz stereo target (one channel quieter: a stereo image) and its 16 kHz mono downmix."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n16 * 3) / 48000
    f0 = 200 + 300 * torch.rand(1, generator=g)
    low = 0.3 * torch.sin(2 * torch.pi * f0 * t)
    target = torch.stack([low, 0.4 * low])[None]  # [1, 2, S48]
    mono16 = F.avg_pool1d(target.mean(1, keepdim=True), 3)  # crude band-limit + decimate: the "codec decode"
    return mono16, target


def test_training_lowers_the_loss_on_a_tiny_set():
    torch.manual_seed(0)
    m = Enhancer(TINY)
    mel = MultiScaleMelLoss(sample_rate=48000, windows=(256, 1024), n_mels=(20, 40))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    x, y = _stereo_target(3200)
    first = None
    for _ in range(60):
        out, kl = m(x)
        loss = enhancer_loss(out, kl, y, mel)
        first = float(loss["stft"] + 15 * loss["mel"]) if first is None else first
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
    m.eval()
    out, kl = m(x)
    after = enhancer_loss(out, kl, y, mel)
    assert float(after["stft"] + 15 * after["mel"]) < 0.8 * first


def test_chunked_enhancement_matches_one_pass_and_round_trips(tmp_path):
    torch.manual_seed(0)
    m = Enhancer(TINY).eval()
    torch.nn.init.normal_(m.out.weight, 0.0, 0.05)  # a residual that is not zero, as after training
    x = 0.1 * torch.randn(16000)
    whole = m(x[None, None], sample=False)[0][0]
    chunked = m.enhance(x, 16000, chunk_s=0.4, overlap_s=0.05)
    assert chunked.shape == whole.shape == (2, 48000)
    err = (chunked - whole).abs()
    assert float(err.mean()) < 0.02 * float(whole.abs().mean())  # the cross-fade hides the chunk edges
    back = Enhancer.from_pretrained(m.save_pretrained(tmp_path / "enh"))
    assert torch.equal(back(x[None, None], sample=False)[0], m(x[None, None], sample=False)[0])
    with pytest.raises(UnisonoError, match="not an enhancer directory"):
        Enhancer.from_pretrained(tmp_path)


def test_streamed_enhancement_is_the_same_whatever_the_pieces():
    torch.manual_seed(0)
    m = Enhancer(TINY).eval()
    torch.nn.init.normal_(m.out.weight, 0.0, 0.05)
    x = 0.1 * torch.randn(9000)
    whole = m.enhance(x, 16000, chunk_s=0.1, overlap_s=0.01)
    for cuts in ([3000], [1, 1599, 1600, 1601, 4000], list(range(320, 9000, 320))):
        s, parts, last = m.stream(chunk_s=0.1, overlap_s=0.01), [], 0
        for c in cuts + [9000]:
            parts.append(s.feed(x[last:c]))
            last = c
        parts.append(s.finish())
        assert max(p.shape[-1] for p in parts[:-1]) <= 3 * 9000 and parts[1].shape[0] == 2
        assert torch.allclose(torch.cat(parts, dim=-1), whole, atol=1e-6)
    assert m.stream().finish().shape == (2, 0)  # nothing fed, nothing out
