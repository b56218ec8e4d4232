"""`unisono recipe`: the stage commands, resuming, and (slow) the tiny recipe end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unisono.cli import main
from unisono.cli.recipe import STAGES


def test_dry_run_lists_every_stage_command(tmp_path, capsys):
    assert main(["recipe", "tiny", "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("]")[0][1:] for line in lines] == list(STAGES)
    assert "unisono synth --out" in lines[0] and "configs/codec/tiny.yaml" in lines[1]
    assert "--shards" in lines[3] and "--checkpoint" in lines[5]


def test_recipes_and_their_configs_ship_in_the_wheel(tmp_path):
    """From an installed wheel, away from the checkout, every stage's config path exists in the package."""
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(repo),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("unisono-*.whl"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    for name in ("tiny", "cpu", "small"):
        run = subprocess.run([sys.executable, "-m", "unisono", "recipe", name, "--out", str(tmp_path / name),
                              "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        configs = [w for w in run.stdout.split() if w.endswith(".yaml")]
        assert len(configs) == 2, run.stdout  # the codec's and the language model's
        for c in configs:
            assert Path(c).is_file() and Path(c).is_relative_to(site), c


def test_bad_recipe_and_stage_are_clear_errors(tmp_path, capsys):
    assert main(["recipe", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "recipe nope not found" in err and "tiny" in err
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
