"""The decoding pieces of the language model (unisono.lm.decoding and UnisonoLM's decode/loss helpers): the
frame cap of each pattern, the one per-token cross entropy, the typed decode state and its step."""

import pytest
import torch
import torch.nn.functional as F

from unisono.errors import UnisonoError
from unisono.lm import PATTERNS, LMConfig, UnisonoLM
from unisono.lm.decoding import NEVER, DecodeState, DrawSettings, Generation, Phase, PhaseHeads, TokenChooser
from unisono.lm.patterns import delay_interleave, delay_position
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


END, PLAN_END, PLAN_START = 1, 2, 3


def audio_mask(end_allowed: bool = True) -> torch.Tensor:
    mask = torch.zeros(K, V, dtype=torch.bool)
    for k in range(K):  # stream k: ids [4 + 10k, 14 + 10k)
        mask[k, 4 + 10 * k: 14 + 10 * k] = True
    mask[0, END] = end_allowed
    return mask


def plan_mask(end_allowed: bool = True) -> torch.Tensor:
    mask = torch.zeros(K, V, dtype=torch.bool)
    mask[:, 4:14] = True
    mask[0, PLAN_END] = end_allowed
    return mask


def prompt(b: int = 3) -> torch.Tensor:
    return torch.randint(4, V, (b, 4, K), generator=torch.Generator().manual_seed(1))


def two_phases(plan_cap=None, plan_end=True, last_cap=None, last_end=True):
    return [Phase(plan_mask(plan_end), PLAN_END, end_frame=torch.full((K,), PLAN_END), max_frames=plan_cap),
            Phase(audio_mask(last_end), END, start_frame=torch.full((K,), PLAN_START), max_frames=last_cap)]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_start_decode_builds_the_typed_state(pattern):
    m = small(pattern)
    p = prompt(2)
    with torch.inference_mode():
        st = m.start_decode(p, 5, END)
    assert isinstance(st, DecodeState)
    assert st.codes.shape == (2, 9, K) and st.codes.dtype == torch.long and st.total == 9
    assert torch.equal(st.codes[:, :4], p) and bool((st.codes[:, 4:] == PAD).all())
    assert st.ended.tolist() == [NEVER, NEVER] and st.step == 4 and st.t0 == 4 and not st.done
    assert st.hidden.shape == ((2, 1, 16) if pattern == "multiscale" else (2, 16))
    assert (st.local_cache is not None) == (pattern == "multiscale")


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("kw", [dict(stream_mask=audio_mask(), end_id=END, top_k=6, seed=5, min_new_frames=2),
                                dict(stream_mask=audio_mask(), end_id=END, top_p=0.9, cfg_scale=2.5, seed=[1, 2, 3]),
                                dict(phases=two_phases(plan_cap=3), top_k=6, seed=[7, 8, 9]),
                                dict(temperature=0.0)], ids=["masked", "cfg", "phases", "greedy"])
def test_stepping_a_generation_gives_the_tokens_of_generate(pattern, kw):
    m = small(pattern)
    want = m.generate(prompt(), 10, **kw)
    with torch.inference_mode():
        gen = Generation(m, prompt(), 10, **kw)
        steps = 1
        while gen.step():
            steps += 1
        assert not gen.step() and gen.state.done  # a finished generation stays finished
    got = gen.frames()
    assert got.shape == want.shape and torch.equal(got, want)
    b_eff = 6 if kw.get("cfg_scale", 1.0) != 1.0 else 3
    assert gen.state.codes.shape == (b_eff, 14, K) and gen.state.ended.shape == (b_eff,)
    frames = got.shape[1]
    # a step is a frame, or for delay a position of the delayed sequence (the last frame's stream K-1 at T+K-2)
    assert steps == (frames + K - 1 if pattern == "delay" else frames)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_frame_cap_ends_every_row(pattern):
    """One phase whose end id is never sampled (not in the mask): max_frames forces it after 3 frames."""
    m = small(pattern)
    out = m.generate(prompt(), 10, phases=[Phase(audio_mask(end_allowed=False), END, max_frames=3)], top_k=6, seed=2)
    assert out.shape == (3, 4, K)
    assert bool((out[:, 3] == END).all()) and bool((out[:, :3] != END).all())
    free = m.generate(prompt(), 10, stream_mask=audio_mask(end_allowed=False), end_id=END, top_k=6, seed=2)
    # the same draws before the cap (stream 0; a later delay stream already sees the forced end)
    assert free.shape == (3, 10, K) and torch.equal(free[:, :3, 0], out[:, :3, 0])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_phases_force_their_end_and_start_frames_and_caps(pattern):
    """A plan capped at 2 frames (its end id not sampleable), then audio capped at 3: plan, plan, the plan's
    end frame, the audio's start frame, 3 audio frames, the end frame, for every row."""
    m = small(pattern)
    ph = two_phases(plan_cap=2, plan_end=False, last_cap=3, last_end=False)
    out = m.generate(prompt(), 12, phases=ph, top_k=6, seed=[4, 5, 6])
    assert out.shape == (3, 8, K)
    plan, audio = plan_mask(), audio_mask()
    for row in out:
        for k in range(K):
            assert bool(plan[k, row[:2, k]].all()) and bool(audio[k, row[4:7, k]].all())
        assert row[2].tolist() == [PLAN_END] * K and row[3].tolist() == [PLAN_START] * K
        assert row[7].tolist() == [END] * K


@pytest.mark.parametrize("pattern", PATTERNS)
def test_rows_switch_phase_at_their_own_frames(pattern):
    m = small(pattern)
    m.head_w.data[0] = 0.0  # stream 0 uniform over its allowed ids: the plan ends early in some rows
    out = m.generate(prompt(6), 14, phases=two_phases(plan_cap=5), seed=[1, 2, 3, 4, 5, 6])
    switched = []
    for row in out:
        e = int((row[:, 0] == PLAN_END).nonzero()[0])  # the plan ends (sampled, or forced at 5)
        assert e <= 5 and row[e].tolist() == [PLAN_END] * K and row[e + 1].tolist() == [PLAN_START] * K
        for k in range(K):
            body = row[e + 2:, k]
            body = body[(body != END) & (body != PAD)]
            assert bool(audio_mask()[k, body].all())
        switched.append(e)
    assert len(set(switched)) > 1  # not in lockstep


@pytest.mark.parametrize("pattern", PATTERNS)
def test_on_frame_gets_each_new_frame_once_complete(pattern):
    m = small(pattern)
    seen = []
    out = m.generate(prompt(), 6, top_k=6, seed=3, on_frame=lambda n, tok: seen.append((n, tok.clone())))
    assert [n for n, _ in seen] == [1, 2, 3, 4, 5, 6]
    for n, tok in seen:
        assert tok.shape == (3, K) and tok.dtype == torch.long and torch.equal(tok, out[:, n - 1])


def test_settle_and_new_frames_apply_the_end_by_hand():
    """Row 0 ends at frame 5 (stream 0 picks END): its later streams of frame 5 become END, frame 6 PAD."""
    codes = torch.full((2, 8, K), PAD)
    codes[:, :4] = 9
    st = DecodeState(codes=codes, ended=torch.full((2,), NEVER), cache=None, hidden=torch.zeros(2, 1), t0=4,
                     step=4, end_id=END, pad_id=PAD)
    tok = st.settle(torch.tensor([[20, 21], [22, 23]]), 0, 5)  # streams 0, 1 at frames 5, 4
    assert tok.tolist() == [[20, 21], [22, 23]] and st.ended.tolist() == [NEVER, NEVER]
    tok = st.settle(torch.tensor([[END], [24]]), 0, 5)
    assert tok.tolist() == [[END], [24]] and st.ended.tolist() == [5, NEVER]
    # streams 0, 1, 2 at frames 7, 6, 5: after the end of row 0, then its end frame
    assert st.settle(torch.tensor([[30, 31, 32]]).expand(2, 3), 0, 7).tolist() == [[PAD, PAD, END], [30, 31, 32]]
    assert st.all_ended() is False
    st.codes[:, 4:] = 7
    new = st.new_frames()
    assert new.shape == (2, 4, K) and new[0, 1].tolist() == [END] * K and bool((new[0, 2:] == PAD).all())
    assert bool((new[1] == 7).all())
    st.ended[1] = 4
    assert st.all_ended() and st.all_ended(by=5) and not st.all_ended(by=4)
    assert st.new_frames().shape == (2, 2, K)  # the longest row: frames 4 and 5


def test_phase_heads_take_the_allowed_rows():
    heads = (torch.randn(K, V, 5),)
    mask = audio_mask()
    ph = PhaseHeads.build(heads, mask, END)
    assert ph.widths == [11, 10, 10] and ph.weights[0].shape == (K, 11, 5) and ph.end_col == 0
    assert ph.ids[0, :11].tolist() == mask[0].nonzero().squeeze(-1).tolist()
    w, ids, ok, widths = ph.rows(1, 1)  # one stream: its own rows, unpadded
    assert torch.equal(w[0], heads[0][1, 14:24]) and ids.tolist() == [list(range(14, 24))]
    assert ok is None and widths is None
    w, ids, ok, widths = ph.rows(0, 2)  # several: the padded block
    assert w[0].shape == (33, 5) and ids.shape == (3, 11) and widths == [11, 10, 10]
    assert ok.sum(1).tolist() == [11, 10, 10] and bool((w[0][21] == 0).all())  # stream 1's padding row
    whole = PhaseHeads.build(heads, None, END)
    assert whole.end_col == END and whole.rows(2, 2)[0][0].shape == (V, 5) and whole.rows(2, 2)[1] is None


def test_a_greedy_draw_is_the_argmax_of_the_allowed_logits():
    m = small("delay")
    mask = audio_mask()
    heads = [PhaseHeads.build(m.head_weights(), mask, END)]
    ch = TokenChooser([Phase(mask, END)], heads, DrawSettings(temperature=0.0), None, batch=2, t0=4, max_new=3)
    feats = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tok = ch.draw(feats, 0, 2, 4, 0)
        logits = torch.stack([m.head(feats, k) for k in range(K)], 1).masked_fill(~mask, float("-inf"))
    assert tok.shape == (2, K) and torch.equal(tok, logits.argmax(-1))
    # the end made the greedy choice of stream 0, then held back before min_new_frames (frame t0 + 1 < t0 + 2)
    m.head_w.data[0, END] = 10 * feats.sum(0)
    heads = [PhaseHeads.build(m.head_weights(), mask, END)]
    free = TokenChooser([Phase(mask, END)], heads, DrawSettings(temperature=0.0), None, 2, 4, 3)
    held = TokenChooser([Phase(mask, END)], heads, DrawSettings(temperature=0.0, min_new_frames=2), None, 2, 4, 3)
    with torch.no_grad():
        assert free.draw(feats, 0, 0, 5, 0)[:, 0].tolist() == [END, END]
        assert bool((held.draw(feats, 0, 0, 5, 0)[:, 0] != END).all())
        assert held.draw(feats, 0, 0, 6, 0)[:, 0].tolist() == [END, END]


def test_generation_rejects_bad_arguments():
    m = small("delay")
    with pytest.raises(UnisonoError, match="max_new_frames"):
        Generation(m, prompt(), 0)
    with pytest.raises(UnisonoError, match="not both"):
        Generation(m, prompt(), 3, end_id=END, phases=two_phases())
    with pytest.raises(UnisonoError, match="seed has 2 values"):
        Generation(m, prompt(), 3, seed=[1, 2])
    with pytest.raises(UnisonoError, match="needs end_frame"):
        Generation(m, prompt(), 3, phases=[Phase(plan_mask(), PLAN_END), two_phases()[1]])


def test_delay_position_is_a_column_of_the_interleaved_sequence():
    frames = torch.randint(4, V, (2, 5, K), generator=torch.Generator().manual_seed(3))
    seq = delay_interleave(frames, PAD)  # [2, 5 + K - 1, K]
    for s in range(-1, 5 + K + 1):
        col = delay_position(frames, s, PAD)
        want = seq[:, s] if 0 <= s < seq.shape[1] else torch.full((2, K), PAD)
        assert col.shape == (2, K) and torch.equal(col, want), s
