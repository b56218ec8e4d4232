import pytest
import torch

from unisono.errors import UnisonoError
from unisono.lm import PATTERNS, LMConfig, UnisonoLM
from unisono.lm.patterns import delay_deinterleave, delay_interleave, flat_deinterleave, flat_interleave

V, K, PAD = 40, 3, 0


def tiny(pattern, **kw):
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=V, num_streams=K, pad_id=PAD, pattern=pattern, d_model=32, n_layers=2, n_heads=4,
                   local_layers=1, local_d_model=16, local_heads=2, max_seq_len=256, **kw)
    return UnisonoLM.from_config(cfg).eval()


def test_delay_interleave_matches_reference_loop():
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(1, V, (2, 5, K), generator=g)
    seq = delay_interleave(frames, PAD)
    ref = torch.full((2, 5 + K - 1, K), PAD)
    for b in range(2):
        for s in range(5 + K - 1):
            for k in range(K):
                t = s - k
                if 0 <= t < 5:
                    ref[b, s, k] = frames[b, t, k]
    assert torch.equal(seq, ref)
    assert torch.equal(delay_deinterleave(seq, K), frames)
    # also for per-position values with trailing dims (logits)
    vals = torch.randn(2, 5 + K - 1, K, 7)
    de = delay_deinterleave(vals, K)
    for t in range(5):
        for k in range(K):
            assert torch.equal(de[:, t, k], vals[:, t + k, k])


def test_flat_interleave_matches_reference_loop():
    frames = torch.randint(1, V, (2, 4, K))
    seq = flat_interleave(frames)
    ref = torch.tensor([[frames[b, t, k].item() for t in range(4) for k in range(K)] for b in range(2)])
    assert torch.equal(seq, ref)
    assert torch.equal(flat_deinterleave(seq, K), frames)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_forward_shapes_and_causality(pattern):
    m = tiny(pattern)
    frames = torch.randint(1, V, (2, 6, K))
    logits = m(frames)
    assert logits.shape == (2, 6, K, V)
    # changing frame 4 (all streams) must not change predictions of frames 0..3 stream 0, nor frame 4 stream 0
    f2 = frames.clone()
    f2[:, 4] = (f2[:, 4] + 1) % V
    l2 = m(f2)
    torch.testing.assert_close(l2[:, :5, 0], logits[:, :5, 0])
    assert not torch.allclose(l2[:, 5], logits[:, 5])  # later frames do see it
    if pattern in ("multiscale", "flat"):
        # stream k of frame t sees streams < k of frame t, not streams >= k
        f3 = frames.clone()
        f3[:, 2, 1] = (f3[:, 2, 1] + 1) % V
        l3 = m(f3)
        torch.testing.assert_close(l3[:, 2, :2], logits[:, 2, :2])
        assert not torch.allclose(l3[:, 2, 2], logits[:, 2, 2])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_cached_generation_gives_uncached_logits(pattern):
    m = tiny(pattern)
    frames = torch.randint(1, V, (2, 7, K))
    full = m(frames)
    t0 = 3
    seen = {}

    def pick(feats, k, t):  # teacher forcing: feed the true tokens, record the logits
        seen[(t, k)] = m.head(feats, k)
        return frames[:, t, k]

    out = m.decode(frames[:, :t0], 7 - t0, pick, end_id=None)
    assert torch.equal(out, frames[:, t0:])
    assert len(seen) == (7 - t0) * K
    for (t, k), lg in seen.items():
        torch.testing.assert_close(lg, full[:, t, k], atol=1e-4, rtol=1e-4)


def test_model_rejects_bad_input():
    m = tiny("delay")
    with pytest.raises(UnisonoError, match="outside the vocabulary"):
        m(torch.full((1, 3, K), V))
    with pytest.raises(UnisonoError, match=r"\[B, T, K=3\]"):
        m(torch.zeros(1, 3, K + 1, dtype=torch.long))
    with pytest.raises(UnisonoError, match="unknown codebook pattern"):
        LMConfig(vocab_size=V, num_streams=K, pad_id=PAD, pattern="parallel")
    with pytest.raises(UnisonoError, match="unknown keys"):
        LMConfig.from_dict({"vocab_size": V, "num_streams": K, "pad_id": 0, "d_modle": 3})


@pytest.mark.parametrize("pattern", PATTERNS)
def test_save_and_load_round_trip(pattern, tmp_path):
    m = tiny(pattern)
    vocab = tmp_path / "vocab.json"
    vocab.write_text('{"size": 40}')
    m.save_pretrained(tmp_path / "ckpt", vocab_json=vocab)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    m2 = UnisonoLM.from_pretrained(tmp_path / "ckpt")
    assert type(m2) is type(m)
    frames = torch.randint(1, V, (1, 5, K))
    torch.testing.assert_close(m2(frames), m(frames), atol=0, rtol=0)
    with pytest.raises(UnisonoError, match="not a unisono checkpoint"):
        UnisonoLM.from_pretrained(tmp_path)
