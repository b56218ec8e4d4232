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
    from unisono.cli.codec import parse_sets

    assert parse_sets(["train.lr=3e-4", "model.quantizer=factorized"]) == {
        "train": {"lr": 3e-4}, "model": {"quantizer": "factorized"}}


@pytest.mark.parametrize("precision", ["float32", "float16", "int8"])
def test_weight_files_round_trip_in_every_precision(tmp_path, precision):
    import torch

    from unisono.weights import SCALE_SUFFIX, load_weights, save_weights

    g = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(64, 128, generator=g) * torch.linspace(0.01, 3, 64)[:, None],  # rows of many scales
             "conv": torch.randn(16, 8, 40, generator=g), "bias": torch.randn(64, generator=g),
             "count": torch.arange(5), "flag": torch.tensor(True)}
    save_weights(state, tmp_path / "m.safetensors", precision)
    back = load_weights(tmp_path / "m.safetensors")
    assert set(back) == set(state) and back["count"].dtype == torch.int64 and bool(back["flag"])
    for name in ("w", "conv", "bias"):
        a, b = state[name], back[name]
        assert b.dtype == torch.float32 and b.shape == a.shape
        rows = a.reshape(a.shape[0], -1)
        bound = {"float32": 0.0, "float16": 1e-3 * rows.abs().amax(1), "int8": rows.abs().amax(1) / 254 + 1e-6}[
            precision
        ]
        if precision == "int8" and name == "bias":  # 1-D: float16, not int8
            bound = 1e-3 * rows.abs().amax(1)
        assert bool(((b - a).reshape(a.shape[0], -1).abs() <= torch.as_tensor(bound).reshape(-1, 1) + 1e-7).all()), name
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "m.safetensors"))
    assert (stored["w"].dtype == torch.int8) == (precision == "int8") and (("w" + SCALE_SUFFIX) in stored) == (
        precision == "int8"
    )


def test_a_truncated_weight_file_is_a_one_line_error(tmp_path):
    import torch

    from unisono.weights import load_weights, save_weights

    save_weights({"w": torch.ones(100, 100)}, tmp_path / "m.safetensors", "int8")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnisonoError, match="truncated or corrupt"):
        load_weights(tmp_path / "m.safetensors")
    with pytest.raises(UnisonoError, match="does not exist"):
        load_weights(tmp_path / "none.safetensors")


def test_a_commands_library_notes_reach_stderr_once(tmp_path, monkeypatch, capsys):
    """The dispatcher shows the library's ``logging.getLogger("unisono")`` notes on stderr, and only once however
    many commands run in one process."""
    from unisono import cli

    (tmp_path / "noisy_cmd.py").write_text(
        "import logging\n"
        "def add_arguments(p):\n    p.add_argument('--word')\n"
        "def main(args):\n    logging.getLogger('unisono').info('note: %s', args.word)\n    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "noisy", ("noisy_cmd", "a test command"))
    assert cli.main(["noisy", "--word", "one"]) == 0
    assert cli.main(["noisy", "--word", "two"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["note: one", "note: two"] and captured.out == ""


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    import os

    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750),
                                                      (0o077, 0o600, 0o700)])
def test_atomic_files_and_dirs_respect_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    import numpy as np
    import torch

    from unisono import audio
    from unisono.weights import save_weights

    umask(mask)
    assert fileio.current_umask() == mask
    fileio.write_json(tmp_path / "a.json", {"a": 1})
    save_weights({"w": torch.ones(3)}, tmp_path / "m.safetensors")
    audio.save(tmp_path / "x.wav", np.zeros(160, np.float32), 16000)
    with fileio.atomic_dir(tmp_path / "d") as d:
        fileio.write_text(d / "inner.txt", "x")
    for name in ("a.json", "m.safetensors", "x.wav", "d/inner.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == file_mode, name
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode
