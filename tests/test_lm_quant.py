"""Weight-only int8 inference (unisono.lm.quant): error bounds, every pattern, generation, guards, CLI."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unisono.errors import UnisonoError
from unisono.lm import LMConfig, UnisonoLM
from unisono.lm.quant import Int8Linear, int8_inference, int8_matmul, int8_rows

V, K, PAD = 40, 3, 0


def tiny(pattern):
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=V, num_streams=K, pad_id=PAD, pattern=pattern, d_model=32, n_layers=2, n_heads=4,
                   local_layers=1, local_d_model=16, local_heads=2, max_seq_len=256, init_std=0.1)
    return UnisonoLM.from_config(cfg).eval()


def test_int8_rows_are_within_half_a_step_of_the_weights():
    w = torch.randn(50, 33) * torch.logspace(-3, 1, 50)[:, None]  # rows of very different scales
    q, scale = int8_rows(w)
    assert q.dtype == torch.int8 and q.shape == w.shape and scale.shape == (50,)
    assert int(q.abs().max()) == 127 and int(q.min()) >= -127
    back = q.float() * scale.float()[:, None]
    # bf16 scales add a relative error of at most 2^-8 on top of the rounding step
    step = scale.float()[:, None]
    assert bool(((back - w).abs() <= 0.5 * step + w.abs() * 2**-8 + 1e-9).all())


def test_int8_linear_is_close_to_the_float_layer_but_not_equal():
    torch.manual_seed(1)
    lin = nn.Linear(64, 48, bias=False)
    x = torch.randn(5, 7, 64)
    q = Int8Linear(lin)
    with torch.no_grad():
        y, ref = q(x), lin(x)
    assert y.shape == ref.shape and y.dtype == x.dtype
    rel = float((y - ref).norm() / ref.norm())
    assert 0 < rel < 0.02
    assert torch.allclose(int8_matmul(x, q.q, q.scale), y)
    with pytest.raises(UnisonoError, match="bias-free"):
        Int8Linear(nn.Linear(4, 4))


@pytest.mark.parametrize("pattern", ["delay", "multiscale", "flat"])
def test_quantized_model_predicts_what_the_float_model_predicts(pattern):
    lm = tiny(pattern)
    lm8 = int8_inference(copy.deepcopy(lm))
    assert lm8.int8 and int8_inference(lm8) is lm8  # a second call changes nothing
    assert not any(isinstance(m, nn.Linear) for m in lm8.modules())
    assert lm8.head_q.shape == (K, V, lm.head_dim_in) and lm8.head_q.dtype == torch.int8
    frames = torch.randint(1, V, (2, 6, K), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        p, p8 = lm(frames).softmax(-1), lm8(frames).softmax(-1)
    diff = float((p - p8).abs().max())
    assert 0 < diff < 0.02
    with torch.no_grad():
        l, l8 = float(lm.loss(frames, torch.ones_like(frames, dtype=torch.bool))["loss"]), \
            float(lm8.loss(frames, torch.ones_like(frames, dtype=torch.bool))["loss"])
    assert abs(l - l8) / l < 0.01


@pytest.mark.parametrize("pattern", ["delay", "multiscale", "flat"])
def test_quantized_generation_is_seeded_and_keeps_the_stream_masks(pattern):
    lm8 = int8_inference(tiny(pattern))
    mask = torch.zeros(K, V, dtype=torch.bool)
    for k in range(K):
        mask[k, 1 + 10 * k: 11 + 10 * k] = True
    prompt = torch.randint(1, V, (2, 4, K), generator=torch.Generator().manual_seed(3))
    a = lm8.generate(prompt, 8, stream_mask=mask, top_k=5, seed=7, cfg_scale=2.0)
    b = lm8.generate(prompt, 8, stream_mask=mask, top_k=5, seed=7, cfg_scale=2.0)
    assert a.shape == (2, 8, K) and torch.equal(a, b)
    for k in range(K):
        assert bool(mask[k][a[:, :, k]].all())


def test_a_quantized_model_refuses_training_and_saving(tmp_path):
    lm8 = int8_inference(tiny("delay"))
    frames = torch.randint(1, V, (1, 4, K))
    with pytest.raises(UnisonoError, match="int8"):
        lm8.loss(frames, torch.ones_like(frames, dtype=torch.bool))
    with pytest.raises(UnisonoError, match="float model"):
        lm8.save_pretrained(tmp_path / "x")
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_pipeline_and_cli_take_int8(tiny_checkpoint, tmp_path):
    from unisono import audio
    from unisono.cli import main
    from unisono.generate import Pipeline

    pipe = Pipeline.from_pretrained(tiny_checkpoint, int8=True)
    assert pipe.lm.int8
    assert not Pipeline.from_pretrained(tiny_checkpoint).lm.int8
    out = pipe.generate("tts", text="Hello there.", prompt=(np.full(8000, 0.05, np.float32), 16000), seed=1,
                        max_duration=0.3)
    assert out.sample_rate == 16000 and 0 < len(out.wav) <= int(0.32 * 16000)
    assert np.isfinite(out.wav).all()
    with pytest.raises(UnisonoError, match="CPU"):
        Pipeline.from_pretrained(tiny_checkpoint, device="cuda", int8=True)
    spk = tmp_path / "spk.wav"
    audio.save(spk, np.full(8000, 0.05, np.float32), 16000)
    o = tmp_path / "o.wav"
    assert main(["generate", "tts", "--int8", "--checkpoint", str(tiny_checkpoint), "--text", "Hi.", "--prompt",
                 str(spk), "--seed", "2", "--max-duration", "0.3", "-o", str(o)]) == 0
    assert audio.load(o)[1] == 16000
