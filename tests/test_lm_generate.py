import pytest
import torch
from test_lm_core import PAD, K, V, tiny

from unisono.errors import UnisonoError
from unisono.lm import PATTERNS
from unisono.lm.sampling import cfg_mix, filter_logits, sample_next

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


@pytest.mark.parametrize("per_row", [False, True])
def test_sampling_several_streams_draws_as_one_stream_after_another(per_row):
    """``sample_next`` on ``[B, M, V]`` (with ``widths`` for padded streams) gives the tokens of M calls on
    ``[B, w_m]``, and the exponential race matches ``torch.multinomial`` draw for draw."""
    torch.manual_seed(0)
    widths = [7, 5, 7]
    b, vm = 3, max(widths)
    logits = torch.randn(b, len(widths), vm)
    for m, w in enumerate(widths):
        logits[:, m, w:] = float("-inf")

    def gens():
        return (
            [torch.Generator().manual_seed(10 + i) for i in range(b)] if per_row else torch.Generator().manual_seed(9)
        )

    for top_k, top_p in [(None, None), (3, None), (None, 0.7)]:
        g1, g2 = gens(), gens()
        together = torch.stack([sample_next(logits, 1.0, top_k, top_p, g1, widths) for _ in range(6)])
        apart = torch.stack([torch.stack([sample_next(logits[:, m, :w], 1.0, top_k, top_p, g2)
                                          for m, w in enumerate(widths)], dim=1) for _ in range(6)])
        assert together.shape == (6, b, len(widths)) and torch.equal(together, apart)
        assert bool((together < torch.tensor(widths)).all())  # never a padding column
    probs = torch.softmax(torch.randn(4, 30), -1)
    a = torch.cat([torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(s))[:, 0] for s in range(20)])
    c = torch.cat([sample_next(probs.log(), generator=torch.Generator().manual_seed(s)) for s in range(20)])
    assert torch.equal(a, c)


def test_delay_samples_the_streams_of_a_step_together_as_it_would_one_by_one(monkeypatch):
    """The delay pattern draws the K streams of a step in one call; the tokens equal stream-by-stream picking,
    with masks of unequal widths, guidance, per-row seeds, an end id and phases."""
    from unisono.lm.model import DelayLM, Phase

    m = tiny("delay")
    for p in m.parameters():
        p.data.normal_(0, 0.5)
    mask = torch.zeros(K, V, dtype=torch.bool)
    for k in range(K):
        mask[k, 4 + 10 * k: 14 + 10 * k] = True
    mask[0, END] = True  # stream 0 one id wider
    prompt = torch.randint(4, V, (3, 4, K), generator=torch.Generator().manual_seed(1))
    runs = [dict(stream_mask=mask, end_id=END, top_k=6, seed=5, min_new_frames=3),
            dict(stream_mask=mask, end_id=END, top_p=0.9, cfg_scale=2.5, seed=[1, 2, 3]),
            dict(top_k=8, seed=4)]
    end_frame = torch.full((K,), 2)
    phased = torch.zeros(K, V, dtype=torch.bool)
    phased[:, 4:14] = True
    phased[0, 2] = True
    runs.append(dict(phases=[Phase(phased, 2, end_frame=end_frame, max_frames=4),
                             Phase(mask, END, start_frame=torch.full((K,), 3))], top_k=6, seed=[7, 8, 9]))
    together = [m.generate(prompt, 12, **kw) for kw in runs]
    one_by_one = DelayLM.decode_step
    monkeypatch.setattr(DelayLM, "decode_step", lambda self, state, pick, pick_streams=None:
                        one_by_one(self, state, pick, None))
    for kw, a in zip(runs, together):
        assert torch.equal(a, m.generate(prompt, 12, **kw)), kw
