import json
import subprocess
import sys

import pytest

from unisono import fileio
from unisono.errors import MissingToolError, UnisonoError


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_json_helpers_are_deterministic(tmp_path):
    fileio.write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    fileio.write_json(tmp_path / "b.json", {"a": [1, 2], "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    fileio.write_jsonl(tmp_path / "r.jsonl", [{"x": 1}, {"y": "é"}])
    assert [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()] == [{"x": 1}, {"y": "é"}]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UnisonoError, match="not valid JSON"):
        fileio.read_json(tmp_path / "bad.json")


def test_missing_tool_message_names_apt_package():
    err = MissingToolError("espeak-ng", "espeak-ng", "speech synthesis")
    assert "apt-get install espeak-ng" in str(err)
    assert "\n" not in str(err)


def test_cli_help_and_unknown_command():

    out = subprocess.run([sys.executable, "-m", "unisono", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: unisono" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "unisono", "no-such-command"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'no-such-command'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_load_yaml_reads_exponent_floats():
    got = fileio.load_yaml("a: 3e-4\nb: 1.5E+3\nc: 10\nd: 2.0\ne: abc\nf: -1e-2\ng: 1e3x\n")
    assert got == {"a": 3e-4, "b": 1500.0, "c": 10, "d": 2.0, "e": "abc", "f": -0.01, "g": "1e3x"}
    assert isinstance(got["a"], float) and isinstance(got["c"], int)


def test_codec_set_override_takes_exponent_floats():
    from unisono.codec.cli import _overrides

    assert _overrides(["train.lr=3e-4", "model.quantizer=factorized"]) == {
        "train": {"lr": 3e-4}, "model": {"quantizer": "factorized"}}
