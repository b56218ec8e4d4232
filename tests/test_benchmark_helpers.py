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


def test_codec_by_engine_scores_every_codec_on_the_same_cuts(tmp_path, capsys, tiny_checkpoint):
    """Two names for one codec give the same cells; espeak speech (the engine of cuts that name none) and music are
    scored; an engine with no cuts is left out; a bad --codec is refused."""
    import json

    import codec_by_engine
    import pytest
    from tok_helpers import make_corpus

    corpus = make_corpus(tmp_path / "corpus", per_kind=2, splits=("test",))
    codec = str(tiny_checkpoint / "codec")
    assert codec_by_engine.main(["--codec", f"a={codec}", "--codec", f"b={codec}", "--data", str(corpus),
                                 "--groups", "espeak,kokoro,music", "--limit", "2", "--num-codebooks", "2", "--json",
                                 str(tmp_path / "q.json")]) == 0
    groups = json.loads((tmp_path / "q.json").read_text())["groups"]
    assert set(groups) == {"espeak", "music"}  # no kokoro speech in this corpus
    assert groups["espeak"]["a"] == groups["espeak"]["b"] and groups["espeak"]["a"]["items"] == 2
    assert "| espeak | 2 |" in capsys.readouterr().out
    for bad in (["--codec", str(tmp_path)], ["--codec", f"a={codec}", "--num-codebooks", "64"]):
        with pytest.raises(SystemExit):
            codec_by_engine.main([*bad, "--data", str(corpus)])
