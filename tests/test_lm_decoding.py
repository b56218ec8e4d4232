"""The decoding pieces of the language model (unisono.lm.decoding and UnisonoLM's decode/loss helpers): the
frame cap of each pattern, the one per-token cross entropy, the typed decode state and its step."""

import pytest
import torch

from unisono.errors import UnisonoError
from unisono.lm import PATTERNS, LMConfig, UnisonoLM

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
