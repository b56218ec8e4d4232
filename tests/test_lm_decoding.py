"""The decoding pieces of the language model (unisono.lm.decoding and UnisonoLM's decode/loss helpers): the
frame cap of each pattern, the one per-token cross entropy, the typed decode state and its step."""

import pytest
import torch
import torch.nn.functional as F

from unisono.errors import UnisonoError
from unisono.lm import PATTERNS, LMConfig, UnisonoLM
from unisono.lm.quant import quantize_inference
from unisono.train.dpo import sequence_logprobs

V, K, PAD = 40, 3, 0
pytestmark = pytest.mark.usefixtures("one_thread")


def small(pattern: str, max_seq_len: int = 64) -> UnisonoLM:
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=V, num_streams=K, pad_id=PAD, pattern=pattern, d_model=16, n_layers=1, n_heads=2,
                   local_layers=1, local_d_model=8, local_heads=2, max_seq_len=max_seq_len)
    m = UnisonoLM.from_config(cfg).eval()
    g = torch.Generator().manual_seed(5)
    for p in m.parameters():  # peaked, prompt-dependent distributions
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m


@pytest.mark.parametrize("pattern,frames", [("delay", 21), ("multiscale", 23), ("flat", 7)])
def test_max_frames_per_pattern(pattern, frames):
    """delay: positions = frames + K; multiscale: frames + 1; flat: frames * K + 1 (rounded down to whole frames,
    one frame to spare)."""
    m = small(pattern, max_seq_len=24)
    assert m.max_frames() == frames
    prompt = torch.randint(4, V, (1, 2, K), generator=torch.Generator().manual_seed(0))
    out = m.generate(prompt, frames - 2, temperature=0.0)
    assert out.shape == (1, frames - 2, K)
    if pattern != "flat":  # one frame more needs more positions than the model has
        with pytest.raises(UnisonoError, match="max_seq_len"):
            m.generate(prompt, frames - 1, temperature=0.0)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_token_cross_entropy_is_the_masked_cross_entropy_of_the_forward_logits(pattern):
    m = small(pattern)
    g = torch.Generator().manual_seed(2)
    frames = torch.randint(1, V, (2, 5, K), generator=g)
    mask = torch.rand(2, 5, K, generator=g) < 0.5
    mask[:, :, 2] = False  # a stream without loss tokens
    mask[1] = False  # a row without loss tokens
    mask[0, 3, 2] = True
    with torch.no_grad():
        ce = m.token_cross_entropy(frames, mask)
        logits = m(frames)  # [B, T, K, V]
    assert ce.shape == (2, 5, K) and ce.dtype == torch.float32
    want = F.cross_entropy(logits[mask], frames[mask], reduction="none")
    torch.testing.assert_close(ce[mask], want, atol=1e-5, rtol=1e-5)
    assert bool((ce[mask] > 0).all()) and bool((ce[~mask] == 0).all())
    # the owners of the reductions: the weighted mean of loss(), the per-row sums of DPO
    w = torch.tensor([1.0, 0.5, 2.0])
    with torch.no_grad():
        r = m.loss(frames, mask, w.tolist())
        lp = sequence_logprobs(m, frames, mask, w.tolist())
    wm = w.expand_as(mask)[mask]
    torch.testing.assert_close(r["loss"], (want * wm).sum() / wm.sum())
    torch.testing.assert_close(r["example_sum"], torch.stack([ce[0].sum(), ce.new_zeros(())]))
    torch.testing.assert_close(lp, -(ce * w).sum(dim=(1, 2)))
    assert float(lp[1]) == 0.0
    with pytest.raises(UnisonoError, match="must have the shape of frames"):
        m.token_cross_entropy(frames, mask[:, :4])


def test_token_cross_entropy_by_hand():
    """Two streams, one frame, logits set by hand through the heads: CE = logsumexp(logits) - logit[target]."""
    m = small("multiscale")
    frames = torch.tensor([[[5, 7, 9]]])
    with torch.no_grad():
        feats = m.features(frames)[0, 0]  # [K, D]
        logits = torch.stack([m.head(feats[k], k) for k in range(K)])  # [K, V]
        ce = m.token_cross_entropy(frames, torch.tensor([[[True, False, True]]]))
    by_hand = [float(torch.logsumexp(logits[k], 0) - logits[k, frames[0, 0, k]]) for k in (0, 2)]
    assert ce[0, 0, 1] == 0.0
    assert ce[0, 0, [0, 2]].tolist() == pytest.approx(by_hand, abs=1e-5)


def test_quantized_heads_are_declared_and_the_config_is_not_mutated():
    cfg = LMConfig(vocab_size=V, num_streams=K, pad_id=PAD, pattern="delay", d_model=32, n_layers=1, n_heads=2)
    before = cfg.to_dict()
    m = UnisonoLM.from_config(cfg)
    assert m.cfg == cfg and cfg.to_dict() == before
    assert m.head_q is None and m.head_scale is None and m.linear_bits == 32 and not m.int8
    assert m.head_weights() == (m.head_w,)
    assert "head_q" not in m.state_dict()
    quantize_inference(m, 8)
    assert m.linear_bits == 8 and m.int8
    assert m.head_q.shape == (K, V, 32) and m.head_q.dtype == torch.int8 and m.head_scale.shape == (K, V)
    q, sc = m.head_weights()
    assert q is m.head_q and sc is m.head_scale and "head_q" not in m.state_dict()
    feats = torch.randn(4, 32)
    torch.testing.assert_close(m.head(feats, 1), feats @ (q[1].float() * sc[1].float()[:, None]).t(),
                               atol=1e-2, rtol=1e-2)
