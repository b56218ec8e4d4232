import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from unisono.codec import load_codec  # noqa: E402
from unisono.codec.adapters import HFCodec  # noqa: E402
from unisono.errors import UnisonoError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_encodec():
    cfg = transformers.EncodecConfig(
        sampling_rate=8000, target_bandwidths=[1.0, 4.0], hidden_size=16, num_filters=4, upsampling_ratios=[5, 4, 4],
        num_lstm_layers=1, codebook_size=32, codebook_dim=16, compress=2,
    )
    return transformers.EncodecModel(cfg)


def tiny_dac():
    cfg = transformers.DacConfig(
        encoder_hidden_size=4, downsampling_ratios=[2, 4], decoder_hidden_size=16, upsampling_ratios=[4, 2],
        n_codebooks=3, codebook_size=32, codebook_dim=4, hidden_size=16, sampling_rate=8000,
    )
    return transformers.DacModel(cfg)


def tiny_mimi():
    cfg = transformers.MimiConfig(
        sampling_rate=8000, frame_rate=None, hidden_size=16, num_filters=4, upsampling_ratios=[4, 4],
        codebook_size=32, codebook_dim=16, num_quantizers=4, num_semantic_quantizers=1,
        vector_quantization_hidden_dimension=16, upsample_groups=16, num_hidden_layers=1, intermediate_size=32,
        num_attention_heads=2, num_key_value_heads=2, head_dim=8, sliding_window=16, max_position_embeddings=256,
    )
    return transformers.MimiModel(cfg)


def tiny_xcodec():
    dac = transformers.DacConfig(
        encoder_hidden_size=4, downsampling_ratios=[4, 4, 4, 5], decoder_hidden_size=16, upsampling_ratios=[5, 4, 4, 4],
        n_codebooks=2, codebook_size=32, codebook_dim=4, hidden_size=16, sampling_rate=16000,
    )
    hubert = transformers.HubertConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=[8, 8, 8, 8, 8, 8, 8],
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    cfg = transformers.XcodecConfig(acoustic_model_config=dac, semantic_model_config=hubert, codebook_size=32,
                                    codebook_dim=32, kernel_size=3, channel_ratios=[1, 1], strides=[1, 1],
                                    block_dilations=[1, 1])
    return transformers.XcodecModel(cfg)


BUILDERS = {"encodec": tiny_encodec, "dac": tiny_dac, "mimi": tiny_mimi}
if hasattr(transformers, "XcodecModel"):
    BUILDERS["xcodec"] = tiny_xcodec


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_adapter_save_reload_round_trip(kind, tmp_path):
    torch.manual_seed(0)
    model = BUILDERS[kind]().eval()
    model.save_pretrained(str(tmp_path / kind))
    assert json.loads((tmp_path / kind / "config.json").read_text())["model_type"] == kind
    codec = load_codec(tmp_path / kind)
    assert isinstance(codec, HFCodec) and isinstance(codec, torch.nn.Module)
    sr, k = codec.sample_rate, codec.num_codebooks
    wav = 0.1 * torch.randn(2, 1, sr // 2, generator=torch.Generator().manual_seed(1))
    codes = codec.encode(wav)
    t = codes.shape[-1]
    assert codes.dtype == torch.long and codes.shape[:2] == (2, k)
    assert abs(t - round(sr / 2 / sr * codec.frame_rate)) <= 1
    assert int(codes.min()) >= 0 and int(codes.max()) < codec.codebook_size
    assert torch.equal(codec.encode(wav), codes)  # deterministic
    # the reloaded adapter gives the same codes as the original model wrapped directly
    assert torch.equal(HFCodec(model, kind).encode(wav), codes)
    # prefix of codebooks = lower bitrate of the same audio
    assert torch.equal(codec.encode(wav, num_codebooks=1), codes[:, :1])
    audio = codec.decode(codes)
    assert audio.dim() == 3 and audio.shape[:2] == (2, 1)
    assert abs(audio.shape[-1] - t * sr / codec.frame_rate) <= sr / codec.frame_rate
    assert torch.isfinite(audio).all()
    assert codec.decode(codes[:, :1]).shape == audio.shape
    with pytest.raises(UnisonoError):
        codec.encode(wav, num_codebooks=k + 1)
    with pytest.raises(UnisonoError):
        codec.decode(torch.full_like(codes, codec.codebook_size))


def test_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnisonoError, match="supported"):
        load_codec(tmp_path)


def test_another_models_weights_under_a_config_are_refused(tmp_path):
    """DAC weights under an Encodec config.json would load as a randomly initialised Encodec: a one-line error."""
    import shutil

    tiny_dac().save_pretrained(str(tmp_path / "dac"))
    tiny_encodec().save_pretrained(str(tmp_path / "enc"))
    shutil.copy(tmp_path / "enc" / "config.json", tmp_path / "dac" / "config.json")
    with pytest.raises(UnisonoError, match="do not belong to its config.json's EncodecModel") as e:
        load_codec(tmp_path / "dac")
    assert "missing" in str(e.value) and "unexpected" in str(e.value) and "\n" not in str(e.value)
    # a model of another size (twice the codebook entries) under the same config
    cfg = transformers.EncodecConfig(**{**tiny_encodec().config.to_dict(), "codebook_size": 64})
    transformers.EncodecModel(cfg).save_pretrained(str(tmp_path / "big"))
    shutil.copy(tmp_path / "enc" / "config.json", tmp_path / "big" / "config.json")
    with pytest.raises(UnisonoError, match="other shapes") as e:
        load_codec(tmp_path / "big")
    assert "\n" not in str(e.value)


def test_a_truncated_weights_file_is_a_one_line_error(tmp_path):
    tiny_encodec().save_pretrained(str(tmp_path / "enc"))
    w = tmp_path / "enc" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(UnisonoError, match="truncated") as e:
        load_codec(tmp_path / "enc")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_input_shorter_than_a_frame_gives_one_frame(kind):
    """DAC's (and Xcodec's) convolutions fail on fewer samples than their kernels: the input is padded to a frame."""
    torch.manual_seed(0)
    codec = HFCodec(BUILDERS[kind]().eval(), kind)
    for n in (1, 5, codec.hop_length - 1):
        codes = codec.encode(0.1 * torch.ones(2, 1, n))
        assert codes.shape == (2, codec.num_codebooks, 1), (n, codes.shape)
        assert codec.decode(codes).shape[:2] == (2, 1)
    with pytest.raises(UnisonoError, match="0 samples"):
        codec.encode(torch.zeros(1, 1, 0))
