"""`unisono recipe`: the stage commands, resuming, and (slow) the tiny recipe end to end."""

import json

import pytest

from unisono.cli import main
from unisono.recipe import STAGES


def test_dry_run_lists_every_stage_command(tmp_path, capsys):
    assert main(["recipe", "tiny", "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0][1:] for line in lines] == list(STAGES)
    assert "unisono synth --out" in lines[0] and "configs/codec/tiny.yaml" in lines[1]
    assert "--shards" in lines[3] and "--checkpoint" in lines[5]


def test_bad_recipe_and_stage_are_clear_errors(tmp_path, capsys):
    assert main(["recipe", "nope", "--out", str(tmp_path)]) == 2
    assert "recipe nope not found" in capsys.readouterr().err
    assert main(["recipe", "tiny", "--out", str(tmp_path), "--stages", "synth,dance"]) == 2
    assert "unknown stage(s) ['dance']" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_recipe_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["recipe", "tiny", "--out", str(out)]) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert "model" in metrics["tasks"]["se"]["systems"]
    for stage in STAGES:
        assert (out / "stages" / f"{stage}.json").exists()
    capsys.readouterr()
    assert main(["recipe", "tiny", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("done already") == len(STAGES)
