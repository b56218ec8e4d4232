import pytest
import torch

from unisono.errors import UnisonoError
from unisono.lm import PATTERNS
from unisono.lm.sampling import cfg_mix, filter_logits, sample_next

from test_lm_core import PAD, K, V, tiny

END = 1


def test_filter_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    k2 = filter_logits(logits, top_k=2)
    assert torch.isfinite(k2).tolist() == [[True, True, False, False, False]]
    p = filter_logits(logits, top_p=0.8)  # 0.5 + 0.2 = 0.7 < 0.8, so the third token is needed
    assert torch.isfinite(p).tolist() == [[True, True, True, False, False]]
    p1 = filter_logits(logits, top_p=0.4)
    assert torch.isfinite(p1).tolist() == [[True, False, False, False, False]]


def test_sample_respects_filters_and_seed():
    logits = torch.randn(4, 50)
    g1 = torch.Generator().manual_seed(3)
    g2 = torch.Generator().manual_seed(3)
    a = torch.stack([sample_next(logits, 1.0, 5, None, g1) for _ in range(20)])
    b = torch.stack([sample_next(logits, 1.0, 5, None, g2) for _ in range(20)])
    assert torch.equal(a, b)
    top5 = torch.topk(logits, 5).indices
    for row in range(4):
        assert set(a[:, row].tolist()) <= set(top5[row].tolist())
    assert torch.equal(sample_next(logits, 0.0), logits.argmax(-1))
    with pytest.raises(UnisonoError, match="masked out"):
        sample_next(torch.full((1, 3), float("-inf")))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_generate_masks_seed_and_end(pattern):
    m = tiny(pattern)
    prompt = torch.randint(2, V, (3, 4, K))
    mask = torch.zeros(K, V, dtype=torch.bool)
    for k in range(K):  # stream k may emit ids [2 + 10k, 12 + 10k) or the end id
        mask[k, 2 + 10 * k : 12 + 10 * k] = True
        mask[k, END] = True
    kw = dict(stream_mask=mask, end_id=END, top_k=20, temperature=1.5, seed=7)
    a = m.generate(prompt, 12, **kw)
    b = m.generate(prompt, 12, **kw)
    assert torch.equal(a, b)
    assert a.shape[0] == 3 and a.shape[2] == K and 1 <= a.shape[1] <= 12
    for row in range(3):
        ends = (a[row, :, 0] == END).nonzero()
        stop = int(ends[0]) if len(ends) else a.shape[1]
        if len(ends):
            assert (a[row, stop] == END).all()  # the end frame is all end ids
            assert (a[row, stop + 1 :] == PAD).all()  # padded after
        for k in range(K):
            assert mask[k, a[row, :stop, k]].all()
            assert (a[row, :stop, k] != END).all() or k > 0
    c = m.generate(prompt, 12, **{**kw, "seed": 8})
    assert not torch.equal(a, c)
    # min_new_frames forbids an early end; a never-ending row returns max_new_frames frames
    d = m.generate(prompt, 6, **{**kw, "min_new_frames": 6})
    assert d.shape[1] == 6 and (d[:, :, 0] != END).all()


@pytest.mark.parametrize("pattern", PATTERNS)
def test_cfg_greedy_matches_manual_mix(pattern):
    m = tiny(pattern)
    prompt = torch.randint(2, V, (2, 4, K))
    uncond = prompt.clone()
    uncond[:, 1:] = PAD
    scale = 3.0
    out = m.generate(prompt, 2, temperature=0.0, cfg_scale=scale, uncond_prompt_frames=uncond)
    next_slot = torch.zeros(2, 1, K, dtype=torch.long)  # a frame after the prompt: its logits are read
    lc = m(torch.cat([prompt, next_slot], 1))[:, 4, 0]
    lu = m(torch.cat([uncond, next_slot], 1))[:, 4, 0]
    expect = cfg_mix(lc, lu, scale).argmax(-1)
    assert torch.equal(out[:, 0, 0], expect)
    plain = m.generate(prompt, 2, temperature=0.0)
    assert torch.equal(plain[:, 0, 0], lc.argmax(-1))
    with pytest.raises(UnisonoError, match="must match"):
        m.generate(prompt, 2, cfg_scale=2.0, uncond_prompt_frames=prompt[:, :2])


def test_generate_rejects_bad_arguments():
    m = tiny("delay")
    p = torch.randint(2, V, (1, 3, K))
    with pytest.raises(UnisonoError, match="stream_mask"):
        m.generate(p, 3, stream_mask=torch.ones(K, V + 1, dtype=torch.bool))
    with pytest.raises(UnisonoError, match="allows no token"):
        m.generate(p, 3, stream_mask=torch.zeros(K, V, dtype=torch.bool))
    with pytest.raises(UnisonoError, match="end_id"):
        m.generate(p, 3, end_id=V)
