"""Seeded generation pinned token for token (tests/golden/generate.json): the reference a rewrite of the decoding
code must reproduce. Every pattern; plain sampling, top-p, greedy, a minimum length, classifier-free guidance, stream
masks with an end id, per-row seeds, reasoning phases, int8 and int4 weights; each on a tiny seeded model.

After a change that is meant to change sampled tokens, rewrite the file and say why in the commit:
``UNISONO_WRITE_GOLDEN=1 python -m pytest tests/test_golden_generate.py``.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from test_lm_core import K, V, tiny

from unisono.lm import PATTERNS
from unisono.lm.model import Phase
from unisono.lm.quant import quantize_inference

GOLDEN = Path(__file__).parent / "golden" / "generate.json"
END, PLAN_END, PLAN_START = 1, 2, 3
pytestmark = pytest.mark.usefixtures("one_thread")


def _masks():
    mask = torch.zeros(K, V, dtype=torch.bool)
    for k in range(K):  # stream k: ids [4 + 10k, 14 + 10k), stream 0 also the end id
        mask[k, 4 + 10 * k: 14 + 10 * k] = True
    mask[0, END] = True
    plan = torch.zeros(K, V, dtype=torch.bool)
    plan[:, 4:14] = True
    plan[0, PLAN_END] = True
    return mask, plan


def scenarios() -> dict[str, dict]:
    mask, plan = _masks()
    phases = [Phase(plan, PLAN_END, end_frame=torch.full((K,), PLAN_END), max_frames=4),
              Phase(mask, END, start_frame=torch.full((K,), PLAN_START))]
    return {
        "sample": dict(top_k=8, temperature=1.2, seed=11),
        "top_p": dict(top_p=0.8, seed=3),
        "greedy": dict(temperature=0.0),
        "masked_end": dict(stream_mask=mask, end_id=END, top_k=6, seed=5),
        "min_frames": dict(stream_mask=mask, end_id=END, top_k=6, seed=5, min_new_frames=6),
        "cfg": dict(stream_mask=mask, end_id=END, top_p=0.9, cfg_scale=2.5, seed=7),
        "cfg_off": dict(stream_mask=mask, end_id=END, top_p=0.9, cfg_scale=1.0, seed=7),
        "row_seeds": dict(stream_mask=mask, end_id=END, top_k=10, seed=[1, 2, 3]),
        "phases": dict(phases=phases, top_k=6, seed=[7, 8, 9]),
    }


def model(pattern: str, bits: int | None = None):
    m = tiny(pattern)
    g = torch.Generator().manual_seed(123)
    for p in m.parameters():  # weights large enough for peaked, prompt-dependent distributions
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return quantize_inference(m, bits) if bits else m


def prompt() -> torch.Tensor:
    return torch.randint(4, V, (3, 4, K), generator=torch.Generator().manual_seed(1))


def outputs() -> dict[str, list]:
    out = {}
    for pattern in PATTERNS:
        for bits in (None, 8, 4):
            m = model(pattern, bits)
            names = scenarios() if bits is None else {k: v for k, v in scenarios().items()
                                                      if k in ("masked_end", "cfg", "phases")}
            for name, kw in names.items():
                key = f"{pattern}/{'float' if bits is None else f'int{bits}'}/{name}"
                out[key] = m.generate(prompt(), 10, **kw).tolist()
    return out


def test_seeded_generation_equals_the_golden_file():
    got = outputs()
    if os.environ.get("UNISONO_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, separators=(",", ":"), sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want), "the scenarios changed: rewrite the golden file (see the module docstring)"
    differ = [k for k in sorted(want) if got[k] != want[k]]
    assert not differ, f"{len(differ)} of {len(want)} seeded outputs changed, e.g. {differ[:4]}"


def test_the_golden_outputs_are_not_trivial():
    """The pinned outputs exercise what they name: the end id ends rows, the minimum length holds it back,
    rows differ, guidance changes the tokens."""
    want = json.loads(GOLDEN.read_text())
    ended = 0
    for pattern in PATTERNS:
        rows = want[f"{pattern}/float/sample"]
        assert rows[0] != rows[1] and rows[1] != rows[2]
        assert want[f"{pattern}/float/cfg"] != want[f"{pattern}/float/cfg_off"]  # guidance alone changes tokens
        ended += sum(any(frame[0] == END for frame in row[:6]) for row in want[f"{pattern}/float/masked_end"])
        for row in want[f"{pattern}/float/min_frames"]:
            assert all(frame[0] != END for frame in row[:6])
    assert ended >= 2  # rows that end within 6 frames, which the min_frames rows may not


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_row_alone_samples_as_in_the_batch(pattern):
    """With one seed per row, a row's tokens do not depend on the other rows of the batch."""
    m = model(pattern)
    kw = scenarios()["row_seeds"]
    batch = m.generate(prompt(), 10, **kw)
    for r in range(3):
        alone = m.generate(prompt()[r:r + 1], 10, **{**kw, "seed": [kw["seed"][r]]})
        n = alone.shape[1]
        assert torch.equal(alone[0], batch[r, :n]) and (batch[r, n:] == 0).all()
