"""Weight-only int8 and int4 inference (unisono.lm.quant): error bounds, every pattern, generation, guards, CLI."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from unisono.errors import UnisonoError
from unisono.lm import LMConfig, UnisonoLM
from unisono.lm.quant import (
    INT4_GROUP,
    Int4Linear,
    Int8Linear,
    int4_groups,
    int8_inference,
    int8_matmul,
    int8_rows,
    quantize_inference,
)

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
        full, quant = float(lm.loss(frames, torch.ones_like(frames, dtype=torch.bool))["loss"]), \
            float(lm8.loss(frames, torch.ones_like(frames, dtype=torch.bool))["loss"])
    assert abs(full - quant) / full < 0.01


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("pattern", ["delay", "multiscale", "flat"])
def test_quantized_generation_is_seeded_and_keeps_the_stream_masks(pattern, bits):
    lm8 = quantize_inference(tiny(pattern), bits)
    mask = torch.zeros(K, V, dtype=torch.bool)
    for k in range(K):
        mask[k, 1 + 10 * k: 11 + 10 * k] = True
    prompt = torch.randint(1, V, (2, 4, K), generator=torch.Generator().manual_seed(3))
    a = lm8.generate(prompt, 8, stream_mask=mask, top_k=5, seed=7, cfg_scale=2.0)
    b = lm8.generate(prompt, 8, stream_mask=mask, top_k=5, seed=7, cfg_scale=2.0)
    assert a.shape == (2, 8, K) and torch.equal(a, b)
    for k in range(K):
        assert bool(mask[k][a[:, :, k]].all())


def test_int4_groups_are_within_half_a_step_of_the_weights():
    torch.manual_seed(4)
    w = torch.randn(48, 4 * INT4_GROUP) * torch.logspace(-3, 1, 48)[:, None]
    w[0, :INT4_GROUP] = 0.25  # a constant group: scale ~0, every weight at the offset
    q, sz = int4_groups(w)
    assert q.shape == w.shape and int(q.min()) >= 0 and int(q.max()) == 15
    assert sz.shape == (4, 48, 2) and sz.dtype == torch.bfloat16
    scale = sz[..., 0].float().t().repeat_interleave(INT4_GROUP, 1)  # [N, D]
    zero = sz[..., 1].float().t().repeat_interleave(INT4_GROUP, 1)
    back = (q.float() - 8) * scale + zero
    # half a step, plus the bf16 rounding of scale and offset (relative 2^-8 of the group's range and offset)
    bound = 0.5 * scale + (8 * scale + zero.abs()) * 2**-8 + 1e-9
    assert bool(((back - w).abs() <= bound).all())
    assert torch.allclose(back[0, :INT4_GROUP], torch.full((INT4_GROUP,), 0.25), atol=2e-3)


def test_int4_linear_is_close_to_the_float_layer_and_refuses_shapes_it_cannot_take():
    torch.manual_seed(5)
    lin = nn.Linear(64, 48, bias=False)
    x = torch.randn(5, 7, 64)
    q4, q8 = Int4Linear(lin), Int8Linear(lin)
    with torch.no_grad():
        y4, y8, ref = q4(x), q8(x), lin(x)
    assert y4.shape == ref.shape and y4.dtype == x.dtype
    rel4, rel8 = float((y4 - ref).norm() / ref.norm()), float((y8 - ref).norm() / ref.norm())
    assert rel8 < rel4 < 0.15  # coarser than int8, still close
    with pytest.raises(UnisonoError, match="multiple of 16"):
        Int4Linear(nn.Linear(64, 40, bias=False))
    with pytest.raises(UnisonoError, match="bias-free"):
        Int4Linear(nn.Linear(64, 48))


@pytest.mark.parametrize("pattern", ["delay", "multiscale", "flat"])
def test_int4_model_predicts_close_to_the_float_model(pattern):
    lm = tiny(pattern)
    lm4 = quantize_inference(copy.deepcopy(lm), 4)
    assert lm4.int8 and lm4.linear_bits == 4 and quantize_inference(lm4, 4) is lm4
    kinds = {type(m) for m in lm4.modules()}
    assert Int4Linear in kinds and nn.Linear not in kinds
    if pattern == "multiscale":  # the local transformer (width 16) does not fit the int4 kernel: int8
        assert isinstance(lm4.local.layers[0].attn.wqkv, Int8Linear)
    frames = torch.randint(1, V, (2, 6, K), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        p, p4 = lm(frames).softmax(-1), lm4(frames).softmax(-1)
    assert 0 < float((p - p4).abs().max()) < 0.1
    with pytest.raises(UnisonoError, match="already quantized to 4 bits"):
        quantize_inference(lm4, 8)
    with pytest.raises(UnisonoError, match="8 or 4 bits"):
        quantize_inference(tiny(pattern), 5)


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
    from unisono.inference import Pipeline

    pipe = Pipeline.from_pretrained(tiny_checkpoint, int8=True)
    assert pipe.lm.int8
    assert not Pipeline.from_pretrained(tiny_checkpoint).lm.int8
    out = pipe.generate("tts", text="Hello there.", prompt=(np.full(8000, 0.05, np.float32), 16000), seed=1,
                        max_duration=0.3)
    assert out.sample_rate == 16000 and 0 < len(out.wav) <= int(0.32 * 16000)
    assert np.isfinite(out.wav).all()
    with pytest.raises(UnisonoError, match="CPU"):
        Pipeline.from_pretrained(tiny_checkpoint, device="cuda", int8=True)
    with pytest.raises(UnisonoError, match="not both"):
        Pipeline.from_pretrained(tiny_checkpoint, int8=True, int4=True)
    assert Pipeline.from_pretrained(tiny_checkpoint, int4=True).lm.linear_bits == 4
    spk = tmp_path / "spk.wav"
    audio.save(spk, np.full(8000, 0.05, np.float32), 16000)
    o = tmp_path / "o.wav"
    for flag in ("--int8", "--int4"):
        assert main(["generate", "tts", flag, "--checkpoint", str(tiny_checkpoint), "--text", "Hi.", "--prompt",
                     str(spk), "--seed", "2", "--max-duration", "0.3", "-o", str(o)]) == 0
        assert audio.load(o)[1] == 16000
