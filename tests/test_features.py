"""The feature encoders of audio_feat conditions: frames at the codec's rate, fingerprints, the registry, and the
segment encoder's audio_feat segments."""

import numpy as np
import pytest
import torch

from unisono.codec import Codec, CodecConfig
from unisono.encode import SegmentEncoder
from unisono.errors import UnisonoError
from unisono.features import (
    ENCODERS,
    LogMelEncoder,
    build_encoder,
    check_encoder,
    encoder_from_config,
    register_encoder,
    to_frame_rate,
)
from unisono.tasks import SegmentSpec
from unisono.vocab import Vocab

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return Codec(CodecConfig(encoder_channels=4, latent_dim=16, decoder_dim=32, decoder_blocks=1, num_codebooks=2,
                             codebook_size=32, kmeans_iters=2)).eval()


def _wav(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, generator=g)


@pytest.mark.parametrize("n", [16000, 16017, 319, 321])
def test_logmel_frames_match_the_codec_frames(codec, n):
    enc = build_encoder("logmel", codec)
    assert (enc.sample_rate, enc.frame_rate, enc.dim, enc.hop, enc.n_fft) == (16000, 50.0, 80, 320, 1024)
    f = enc.encode(_wav(n), 16000)
    assert f.dtype == torch.float32 and f.shape == (-(-n // 320), 80)
    assert f.shape[0] == codec.encode(_wav(n)[None, None]).shape[-1]
    assert float(f.abs().max()) < 10  # the fixed scaling keeps values near [-2, 2]


def test_logmel_reads_other_rates_and_refuses_bad_input():
    enc = LogMelEncoder()
    f = enc.encode(_wav(8000).numpy(), 8000)  # 1 s at 8 kHz, resampled to 16 kHz
    assert f.shape == (50, 80)
    with pytest.raises(UnisonoError, match="mono waveform"):
        enc.encode(torch.zeros(2, 100), 16000)
    with pytest.raises(UnisonoError, match="whole number of samples"):
        LogMelEncoder(16000, 48.0)


def test_logmel_codec_stacks_the_codec_latents(codec):
    enc = build_encoder("logmel_codec", codec)
    assert enc.dim == 80 + 16
    wav = _wav(4000)
    f = enc.encode(wav, 16000)
    assert f.shape == (13, 96)
    assert torch.allclose(f[:, :80], build_encoder("logmel", codec).encode(wav, 16000))
    assert torch.allclose(f[:, 80:], codec.latents(wav[None, None])[0].T, atol=1e-6)
    with pytest.raises(UnisonoError, match="project's codec"):
        build_encoder("logmel_codec", None)


def test_fingerprints_name_the_encoder_its_parameters_and_weights(codec):
    a, b = build_encoder("logmel", codec), build_encoder("logmel", None, n_mels=64)
    assert a.fingerprint() == LogMelEncoder().fingerprint() and a.fingerprint().startswith("logmel-v1:")
    assert a.fingerprint() != b.fingerprint()
    c = build_encoder("logmel_codec", codec)
    other = Codec(codec.config)
    other.load_state_dict(codec.state_dict())
    assert build_encoder("logmel_codec", other).fingerprint() == c.fingerprint()
    with torch.no_grad():
        other.encoder.parameters().__next__().add_(1e-3)
    assert build_encoder("logmel_codec", other).fingerprint() != c.fingerprint()
    # a checkpoint's description rebuilds its encoder; another encoder is a one-line error
    assert encoder_from_config(a.describe()).fingerprint() == a.fingerprint()
    assert encoder_from_config(c.describe(), codec).dim == 96
    check_encoder(c.describe(), c)
    with pytest.raises(UnisonoError, match=r"^this checkpoint was trained on features of logmel_codec-v1:\w+, not "
                                           r"logmel_codec-v1:\w+; use the checkpoint's feature encoder"):
        encoder_from_config(c.describe(), other)
    with pytest.raises(UnisonoError, match="reads no audio features"):
        check_encoder(None, a)
    with pytest.raises(UnisonoError, match="unknown feature encoder 'whisper'"):
        build_encoder("whisper")
    with pytest.raises(UnisonoError, match="bad parameters"):
        build_encoder("logmel", hop=3)


def test_a_registered_encoder_is_built_by_name():
    class Ones(LogMelEncoder):
        name = "ones"

        def _encode(self, wav):
            return torch.ones(self.num_frames(wav.shape[-1]), self.dim)

    register_encoder("ones", lambda codec=None, **p: Ones(**p))
    try:
        enc = encoder_from_config(build_encoder("ones", n_mels=3).describe())
        assert torch.equal(enc.encode(_wav(640), 16000), torch.ones(2, 3))
    finally:
        del ENCODERS["ones"]


def test_to_frame_rate_averages_whole_multiples():
    x = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 2)
    assert torch.equal(to_frame_rate(x, 50, 50), x)
    y = to_frame_rate(x, 100, 50)
    assert y.shape == (5, 2) and torch.equal(y[:, 0], torch.tensor([0.5, 2.5, 4.5, 6.5, 8.5]))
    z = to_frame_rate(x, 150, 50)  # groups of 3, the last of one frame
    assert torch.equal(z[:, 0], torch.tensor([1.0, 4.0, 7.0, 9.0]))
    with pytest.raises(UnisonoError, match="whole multiple"):
        to_frame_rate(x, 75, 50)


def test_segment_encoder_makes_audio_feat_segments_like_codec_segments(codec):
    vocab = Vocab.build(["asr"], num_codebooks=2, codebook_size=32)
    enc = SegmentEncoder(vocab, None, codec, build_encoder("logmel", codec))
    wav = _wav(16000, seed=3)[None]
    whole = SegmentSpec("speech", "audio_feat", "audio")
    seg = enc.audio_feat_segment(whole, wav)
    assert seg.modality == "audio_feat" and seg.vectors.shape == (50, 80)
    assert seg.vectors.shape[0] == enc.codec_segment(SegmentSpec("s", "codec", "audio"), enc.codes(wav)).codes.shape[1]
    crop = enc.audio_feat_segment(SegmentSpec("p", "audio_feat", "speaker_prompt", seconds=0.2), wav, start=7)
    assert torch.equal(crop.vectors, seg.vectors[7:17])
    band = enc.audio_feat_segment(SegmentSpec("b", "audio_feat", "audio", resample=4000), wav)
    assert band.vectors.shape == (50, 80) and not torch.allclose(band.vectors, seg.vectors)
    with pytest.raises(UnisonoError, match="no feature encoder is configured"):
        SegmentEncoder(vocab, None, codec).audio_feat_segment(whole, wav)
    assert np.isfinite(seg.vectors.numpy()).all()
