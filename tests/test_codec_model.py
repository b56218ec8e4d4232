import json
import math

import pytest
import torch

from unisono.codec import Codec, CodecConfig, load_codec
from unisono.codec.quantizer import ResidualVectorQuantizer, kmeans
from unisono.errors import UnisonoError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(strides=[2, 4, 5, 8], encoder_channels=4, latent_dim=16, decoder_dim=32, decoder_blocks=2,
            num_codebooks=4, codebook_size=32, kmeans_iters=3)


def tiny_codec(**kw) -> Codec:
    torch.manual_seed(0)
    return Codec(CodecConfig(**{**TINY, **kw}))


def speechlike(b=2, s=8000, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(s) / 16000
    f0 = 100 + 100 * torch.rand(b, 1, 1, generator=g)
    x = sum(torch.sin(2 * torch.pi * f0 * h * t) / h for h in range(1, 6)) * 0.2
    return x + 0.01 * torch.randn(b, 1, s, generator=g)


def test_shapes_and_code_range():
    c = tiny_codec().eval()
    w = speechlike(2, 8000 + 17)
    codes = c.encode(w)
    assert codes.dtype == torch.long
    assert codes.shape == (2, 4, 26)  # ceil(8017 / 320)
    assert int(codes.min()) >= 0 and int(codes.max()) < c.codebook_size
    y = c.decode(codes)
    assert y.shape == (2, 1, 26 * 320)
    assert c.frame_rate == 50 and c.sample_rate == 16000 and c.num_codebooks == 4 and c.codebook_size == 32


def test_deterministic_in_eval():
    c = tiny_codec()
    c.train()
    c(speechlike())  # k-means init + EMA update
    c.eval()
    w = speechlike(seed=1)
    assert torch.equal(c.encode(w), c.encode(w))
    codes = c.encode(w)
    assert torch.equal(c.decode(codes), c.decode(codes))


def test_codebook_prefix():
    c = tiny_codec()
    c.train()
    c(speechlike())
    c.eval()
    w = speechlike(seed=2)
    full = c.encode(w)
    for k in (1, 2, 3):
        assert torch.equal(c.encode(w, num_codebooks=k), full[:, :k])
        assert c.decode(full[:, :k]).shape == (2, 1, full.shape[-1] * 320)
    # more codebooks -> latent closer to the encoder output
    z = c.latents(w)
    errs = [float((c.quantizer.decode(full[:, :k]) - z.detach()).pow(2).mean()) for k in (1, 2, 4)]
    assert errs[0] > errs[1] > errs[2]
    with pytest.raises(UnisonoError):
        c.encode(w, num_codebooks=5)


def test_quantizer_round_trip_kmeans_ema_and_restart():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=8, num_codebooks=3, codebook_size=16, kmeans_iters=5, dropout=0.0,
                                  dead_threshold=0.5)
    z = torch.randn(4, 8, 64)
    rvq.train()
    zq, codes, commit, cb_loss, stats = rvq(z)
    assert float(cb_loss) == 0.0 and float(commit) > 0
    assert all(bool(layer.initialized) for layer in rvq.layers)
    assert "perplexity_0" in stats and stats["perplexity_0"] > 4  # k-means spreads codes
    rvq.eval()
    codes2 = rvq.encode(z)
    # decode(encode(z)) is exactly the sum of the chosen code vectors, and re-encoding it is stable
    zq2 = rvq.decode(codes2)
    manual = sum(rvq.layers[i].embed[codes2[:, i]] for i in range(3)).permute(0, 2, 1)
    assert torch.allclose(zq2, manual)
    # each code vector of a stage quantizes to itself
    e = rvq.layers[0].embed
    assert torch.equal(rvq.layers[0].quantize(e), torch.arange(16))
    assert float((zq2 - z).pow(2).mean()) < float(z.pow(2).mean())
    # a code that is never used gets restarted onto a data vector
    layer = rvq.layers[0]
    layer.cluster_size[3] = 0.0
    layer.embed[3] = 1e6
    rvq.train()
    rvq(z)
    assert float(layer.embed[3].abs().max()) < 100
    # k-means centroids lie near well separated clusters
    pts = torch.cat([torch.randn(50, 2) * 0.01 + c for c in (torch.tensor([5.0, 0]), torch.tensor([-5.0, 0]))])
    cent = kmeans(pts, 2, 10)
    assert sorted(cent[:, 0].round().tolist()) == [-5.0, 5.0]


def test_quantizer_dropout_uses_prefixes():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=4, num_codebooks=4, codebook_size=8, dropout=1.0, kmeans_iters=2)
    rvq.train()
    z = torch.randn(64, 4, 5)
    zq, *_ = rvq(z)
    rvq.eval()
    full = rvq.decode(rvq.encode(z))
    # with dropout, some items were quantized with fewer codebooks than 4
    differs = ((zq - full).abs().amax(dim=(1, 2)) > 1e-5).sum()
    assert int(differs) > 0


@pytest.mark.parametrize("encoder,phase", [("conv", "direct"), ("stft", "direct"), ("conv", "if")])
def test_streaming_equals_offline(encoder, phase):
    c = tiny_codec(encoder=encoder, encoder_dim=32, encoder_blocks=1, phase=phase)
    c.train()
    c(speechlike())
    c.eval()
    w = speechlike(2, 320 * 30, seed=3)
    codes = c.encode(w)
    audio = c.decode(codes)
    with c.streaming():
        sc = torch.cat([c.encode(w[..., i:i + 320 * 4]) for i in range(0, w.shape[-1], 320 * 4)], -1)
    assert torch.equal(sc, codes)
    with c.streaming():
        sa = torch.cat([c.decode(codes[..., i:i + 3]) for i in range(0, codes.shape[-1], 3)], -1)
    assert sa.shape == audio.shape
    assert torch.allclose(sa, audio, atol=1e-5)
    with c.streaming(), pytest.raises(UnisonoError):
        c.encode(w[..., :100])
    with pytest.raises(UnisonoError):
        with tiny_codec(causal=False).streaming():
            pass


@pytest.mark.parametrize("encoder", ["conv", "stft"])
def test_noncausal_runs(encoder):
    c = tiny_codec(causal=False, encoder=encoder, encoder_dim=32, encoder_blocks=1).eval()
    w = speechlike(1, 3200)
    assert c.decode(c.encode(w)).shape == (1, 1, 3200)


def test_stft_front_end_is_the_log_magnitude_spectrogram():
    from unisono.codec.modules import STFTFrontEnd

    w = speechlike(2, 3200)
    fe = STFTFrontEnd(640, 160, causal=True)
    got = fe(w)  # [B, 321, 20]: frame t ends at sample 160 (t + 1)
    ref = torch.stft(torch.nn.functional.pad(w[:, 0], (480, 0)), 640, 160, window=torch.hann_window(640),
                     center=False, return_complex=True).abs()
    assert got.shape == (2, 321, 20) and ref.shape == got.shape
    assert torch.allclose(got.exp(), ref, rtol=1e-3, atol=1e-3)
    with pytest.raises(UnisonoError, match="encoder must be"):
        tiny_codec(encoder="lstm")


@pytest.mark.parametrize("encoder", ["conv", "stft"])
def test_save_load_equal(tmp_path, encoder):
    c = tiny_codec(encoder=encoder, encoder_dim=32, encoder_blocks=1)
    c.train()
    c(speechlike())
    c.eval()
    c.save_pretrained(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["config.json", "model.safetensors"]
    d = Codec.from_pretrained(tmp_path / "c")
    e = load_codec(tmp_path / "c")
    w = speechlike(seed=4)
    codes = c.encode(w)
    assert torch.equal(d.encode(w), codes) and torch.equal(e.encode(w), codes)
    assert torch.equal(d.decode(codes), c.decode(codes))
    assert json.loads((tmp_path / "c" / "config.json").read_text())["model_type"] == "unisono-codec"


def test_bad_inputs(tmp_path):
    c = tiny_codec().eval()
    with pytest.raises(UnisonoError):
        c.encode(torch.zeros(2, 8000))
    with pytest.raises(UnisonoError):
        c.decode(torch.full((1, 4, 3), 32))
    with pytest.raises(UnisonoError):
        c.decode(torch.zeros(1, 5, 3, dtype=torch.long))
    with pytest.raises(UnisonoError):
        load_codec(tmp_path)
    with pytest.raises(UnisonoError):
        CodecConfig.from_dict({"latent_dims": 3})


def test_factorized_quantizer_prefix_restart_and_save(tmp_path):
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=8, num_codebooks=3, codebook_size=16, kmeans_iters=3, dropout=0.0,
                                  kind="factorized", code_dim=4)
    z = torch.randn(4, 8, 32)
    rvq.train()
    zq, codes, commit, cb_loss, stats = rvq(z)
    assert cb_loss.item() > 0 and stats["perplexity_0"] > 4
    cb_loss.backward()
    assert rvq.layers[0].codebook.grad is not None  # learned by gradient
    rvq.eval()
    full = rvq.encode(z)
    assert (full == codes).float().mean() > 0.5  # same lookup (a few codes were restarted after the step)
    assert torch.equal(rvq.encode(z, 2), full[:, :2])
    zq_eval, codes_eval, *_ = rvq(z)
    assert torch.equal(codes_eval, full)
    assert torch.allclose(rvq.decode(full), zq_eval.detach(), atol=1e-5)
    layer = rvq.layers[0]
    with torch.no_grad():
        layer.codebook[5] = torch.tensor([1e3, 0, 0, 0])
    layer.cluster_size[5] = 0.0
    rvq.train()
    rvq(z)
    assert layer.codebook[5].detach().abs().max().item() < 10  # restarted onto a projected data vector
    c = tiny_codec(quantizer="factorized", code_dim=4)
    c.train()
    c(speechlike())
    c.eval()
    c.save_pretrained(tmp_path / "f")
    w = speechlike(seed=5)
    assert torch.equal(load_codec(tmp_path / "f").encode(w), c.encode(w))
    with pytest.raises(UnisonoError):
        ResidualVectorQuantizer(dim=4, kind="fsq")


def test_if_phase_head_makes_a_coherent_sinusoid():
    """With zero predicted deviations, one active bin synthesises a steady sinusoid at its centre frequency
    across frames (the direct head with a constant phase would not: its frames would interfere)."""
    from unisono.codec.modules import ISTFTHead

    head = ISTFTHead(4, 320, 1280, phase="if")
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.fill_(-30.0)  # log-magnitudes: silence, deviations: 0
        head.proj.bias[40] = 0.0  # bin 40 = 40 * 16000 / 1280 = 500 Hz
        head.proj.bias[641:] = 0.0
    with torch.no_grad():
        y = head(torch.zeros(1, 4, 40)).reshape(-1)[1280:]
    n = torch.arange(1280, 1280 + y.numel())
    basis = torch.stack([torch.cos(2 * torch.pi * 500 * n / 16000), torch.sin(2 * torch.pi * 500 * n / 16000)], 1)
    fit = basis @ torch.linalg.lstsq(basis, y[:, None]).solution
    assert float(((y - fit[:, 0]) ** 2).sum() / (y ** 2).sum()) < 1e-6
    # chunked integration carries the running phase: equal to one call
    dev = torch.randn(2, 9, 641)
    whole, _ = head._integrate(dev, 0, None)
    a, run = head._integrate(dev[:, :4], 0, None)
    b, _ = head._integrate(dev[:, 4:], 4, run)
    assert torch.allclose(torch.cat([a, b], 1), whole, atol=1e-5)


def test_f0_tracker_on_harmonic_tones_and_noise():
    from unisono.codec.pitch import f0_track

    t = torch.arange(16000) / 16000
    for f in (80.0, 123.4, 220.0, 410.0):  # a strong second harmonic must not fool it an octave off
        x = sum(torch.sin(2 * torch.pi * f * h * t) * (1.5 if h == 2 else 1.0) / h for h in range(1, 8))
        f0, voiced = f0_track(x[None])
        assert f0.shape == (1, 50) and bool(voiced[0, 3:47].all())
        assert float((f0[0, 3:47] / f - 1).abs().max()) < 0.005, f
    f0, voiced = f0_track(0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)))
    assert float(voiced.float().mean()) < 0.05 and bool((f0[~voiced] == 0).all())
    f0, voiced = f0_track(torch.zeros(1, 3200))
    assert not bool(voiced.any())


@pytest.mark.parametrize("causal", [True, False])
def test_harmonic_decoder_shapes_streaming_and_f0_range(causal):
    c = tiny_codec(harmonics=16, causal=causal)
    c.train()
    out = c(speechlike())
    assert out["audio"].shape == (2, 1, 8000) and out["log_f0"].shape == (2, 25) == out["voiced_logit"].shape
    f0 = out["log_f0"].exp()
    assert bool(((f0 >= 50 - 1e-3) & (f0 <= 800 + 1e-3)).all())
    c.eval()
    w = speechlike(2, 320 * 20, seed=5)
    codes = c.encode(w)
    audio = c.decode(codes)
    assert audio.shape == (2, 1, 6400) and bool(torch.isfinite(audio).all())
    if causal:
        with c.streaming():
            sa = torch.cat([c.decode(codes[..., i:i + 3]) for i in range(0, 20, 3)], -1)
        assert torch.allclose(sa, audio, atol=1e-4)


def test_harmonic_head_makes_the_harmonics_of_its_f0():
    """Bias-only head: a fixed F0 and a flat envelope give a sum of harmonics of exactly that F0."""
    from unisono.codec.modules import HarmonicHead

    head = HarmonicHead(4, 320, 16000, n_harmonics=10, n_bands=16, causal=False)
    f0 = 200.0
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias[0] = math.log(math.log(f0 / 50) / (math.log(800 / 50) - math.log(f0 / 50)))  # logit
        head.proj.bias[1] = 20.0  # voiced
        head.proj.bias[2:] = math.log(0.1)
        y = head(torch.zeros(1, 4, 20)).reshape(-1)
    spec = torch.fft.rfft(y * torch.hann_window(y.numel())).abs()
    freqs = torch.fft.rfftfreq(y.numel(), 1 / 16000)
    peaks = freqs[spec > 0.5 * spec.max()]
    assert all(min(abs(p - f0 * h) for h in range(1, 11)) < 5 for p in peaks.tolist())
    assert float(head.last[0].exp().mean()) == pytest.approx(f0, rel=1e-4)


def test_minimum_phase_of_a_one_pole_filter():
    """The folded-cepstrum phase of |1 / (1 - a e^-jw)| is that filter's own (minimum) phase."""
    from unisono.codec.modules import minimum_phase

    w = torch.linspace(0, math.pi, 129, dtype=torch.float64)
    for a in (0.5, -0.7):
        h = 1 / (1 - a * torch.exp(-1j * w))
        got = minimum_phase(h.abs().log())
        assert torch.allclose(got, h.angle(), atol=1e-6)
    assert torch.allclose(minimum_phase(torch.full((3, 65), 0.7)), torch.zeros(3, 65), atol=1e-6)  # flat: zero


@pytest.mark.parametrize("causal", [True, False])
def test_minimum_phase_harmonics_keep_their_spectrum_and_stream(causal):
    """With a flat envelope the minimum phase is zero (the same output as "sine"); with a sloped one the
    harmonics keep their amplitudes but not their waveform; streaming equals offline."""
    from unisono.codec.modules import HarmonicHead

    torch.manual_seed(0)
    heads = {ph: HarmonicHead(4, 320, 16000, n_harmonics=12, n_bands=16, causal=causal, harmonic_phase=ph)
             for ph in ("sine", "minimum")}
    heads["minimum"].load_state_dict(heads["sine"].state_dict())
    x = torch.zeros(1, 4, 12)
    with torch.no_grad():
        for h in heads.values():
            h.proj.weight.zero_()
            h.proj.bias[0], h.proj.bias[1] = 0.0, 20.0  # F0 ~ 200 Hz, voiced
            h.proj.bias[2:] = math.log(0.1)
        ys = {ph: h(x).reshape(-1) for ph, h in heads.items()}
        assert torch.allclose(ys["sine"], ys["minimum"], atol=1e-5)
        for h in heads.values():
            h.proj.bias[2:] = torch.linspace(0.0, -4.0, 16)  # a falling envelope
        ys = {ph: h(x).reshape(-1) for ph, h in heads.items()}
        mags = {ph: torch.fft.rfft(y[640:] * torch.hann_window(y.numel() - 640)).abs() for ph, y in ys.items()}
        assert float((ys["sine"] - ys["minimum"]).abs().max()) > 0.05
        assert torch.allclose(mags["sine"], mags["minimum"], rtol=0.05, atol=0.05 * float(mags["sine"].max()))
        if causal:
            h = heads["minimum"]
            h.set_streaming(True)
            streamed = torch.cat([h(x[..., i:i + 5]) for i in range(0, 12, 5)], -1).reshape(-1)
            h.set_streaming(False)
            assert torch.allclose(streamed, ys["minimum"], atol=1e-4)
    with pytest.raises(UnisonoError, match="harmonic_phase"):
        HarmonicHead(4, 320, 16000, harmonic_phase="random")
    with pytest.raises(UnisonoError, match="harmonic_phase"):
        tiny_codec(harmonics=16, harmonic_phase="linear")


def test_f0_codebook_codes_decode_and_prefixes():
    c = tiny_codec(encoder="stft", causal=False, harmonics=16, f0_codebook=True, codebook_size=1024,
                   encoder_dim=32, encoder_blocks=1)
    t = torch.arange(16000) / 16000
    tone = (sum(torch.sin(2 * torch.pi * 150 * h * t) / h for h in range(1, 6)) * 0.2)[None, None]
    x = torch.cat([tone, torch.zeros_like(tone)])  # voiced, silent
    c.train()
    out = c(x)
    assert out["codes"].shape == (2, 4, 50) and "log_f0" not in out  # F0 comes from the code, not a head
    c.eval()
    codes = c.encode(x)
    assert codes.shape == (2, 4, 50)
    f0 = c.f0_from_codes(codes[:, 0])
    assert float((f0[0, 3:47] / 150 - 1).abs().max()) < 0.003  # within 5 cents
    assert bool((codes[1, 0] == 0).all()) and bool((f0[1] == 0).all())  # silence: unvoiced
    for k in (1, 2, 4):
        pk = c.encode(x, num_codebooks=k)
        assert torch.equal(pk, codes[:, :k])
        assert c.decode(pk).shape == (2, 1, 16000)
    with pytest.raises(UnisonoError, match="f0_codebook"):
        tiny_codec(harmonics=16, f0_codebook=True)  # causal
    with pytest.raises(UnisonoError, match="f0_codebook"):
        tiny_codec(causal=False, f0_codebook=True)  # no harmonic head
