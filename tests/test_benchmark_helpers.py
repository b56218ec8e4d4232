"""Helpers of the benchmark scripts that carry arithmetic of their own."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from codec_quality import swap_halves  # noqa: E402


def test_swap_halves_takes_one_half_from_each_signal():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(4000)
    # -ref has ref's magnitude and the opposite phase: with ref's magnitude it stays -ref, with ref's phase
    # it becomes ref; 0.5 ref has ref's phase: with ref's magnitude it becomes ref
    flipped = swap_halves(-ref, ref)
    assert np.allclose(flipped["magnitude"], -ref, atol=1e-6) and np.allclose(flipped["phase"], ref, atol=1e-6)
    half = swap_halves(0.5 * ref, ref)
    assert np.allclose(half["magnitude"], ref, atol=1e-6) and np.allclose(half["phase"], 0.5 * ref, atol=1e-6)
    assert flipped["magnitude"].shape == ref.shape
