import json
import subprocess
import sys
from pathlib import Path

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
    from unisono.train.settings import parse_sets

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


def _unwritable(tmp_path, case: str, kind: str, name: str):
    """An output path that cannot be written (``None`` where this process writes anyway)."""
    if case == "exists":  # a directory where a file goes, a file where a directory goes
        (tmp_path / name).mkdir() if kind == "file" else (tmp_path / name).write_text("x")
        return tmp_path / name
    if case == "below_a_file":
        (tmp_path / "plain.txt").write_text("x")
        return tmp_path / "plain.txt" / "sub" / name
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    for folder in (locked, Path("/sys")):  # root writes into a 0555 folder, not into sysfs
        try:
            (folder / ".unisono-probe").write_text("x")
        except OSError:
            return folder / "new" / name
    return None


@pytest.mark.parametrize("case", ["exists", "below_a_file", "read_only"])
@pytest.mark.parametrize("command", ["generate", "encode", "decode", "synth", "tokenize", "finetune", "dpo"])
def test_an_unwritable_output_is_refused_before_any_work(tmp_path, monkeypatch, capsys, command, case):
    """``generate -o``, ``codec encode/decode -o``, ``synth --out``, ``tokenize --out``, ``finetune/dpo --out``: a
    one-line error, exit 2, and the work (loading the model or codec, synthesis, tokenizing, tuning) never starts."""
    import unisono.cli.dpo
    import unisono.cli.finetune
    import unisono.cli.synth
    import unisono.cli.tokenize
    import unisono.codec
    from unisono.cli import main
    from unisono.inference import Pipeline

    def work(*a, **k):
        raise AssertionError("the work started before the output was checked")

    monkeypatch.setattr(Pipeline, "from_pretrained", work)
    monkeypatch.setattr(unisono.codec, "load_codec", work)
    monkeypatch.setattr(unisono.cli.synth, "synthesize", work)
    monkeypatch.setattr(unisono.cli.tokenize, "tokenize_corpus", work)
    monkeypatch.setattr(unisono.cli.finetune, "finetune", work)
    monkeypatch.setattr(unisono.cli.dpo, "run_dpo", work)
    kind = "file" if command in ("generate", "encode", "decode") else "dir"
    out = _unwritable(tmp_path, case, kind, {"encode": "out.npy", "generate": "out.wav", "decode": "out.wav"}.get(
        command, "out_dir"))
    if out is None:
        pytest.skip("this process writes into a read-only directory and into /sys")
    argv = {"generate": ["generate", "tts", "--text", "hi", "-o", str(out)],
            "encode": ["codec", "encode", str(tmp_path / "in.wav"), "--codec", str(tmp_path), "-o", str(out)],
            "decode": ["codec", "decode", str(tmp_path / "c.npy"), "--codec", str(tmp_path), "-o", str(out)],
            "synth": ["synth", "--out", str(out)],
            "tokenize": ["tokenize", "--data", str(tmp_path), "--codec", str(tmp_path), "--out", str(out)],
            "finetune": ["finetune", "--checkpoint", str(tmp_path), "--shards", str(tmp_path), "--out", str(out)],
            "dpo": ["dpo", "--checkpoint", str(tmp_path), "--data", str(tmp_path), "--out", str(out)]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    why = {"exists": "is a directory" if kind == "file" else "is a file", "below_a_file": "is a file, not a directory",
           "read_only": "is not writable"}[case]
    assert str(out) in err and why in err.replace(str(out), "OUT"), err


def test_atomic_writes_onto_a_directory_or_below_a_file_are_one_line_errors(tmp_path):
    with pytest.raises(UnisonoError, match="is a directory"):
        fileio.write_text(tmp_path, "x")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(UnisonoError, match="cannot create directory"):
        fileio.write_text(tmp_path / "plain" / "a.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]
