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
    for name, n_configs in (("tiny", 2), ("cpu", 2), ("small", 2), ("base", 3)):
        run = subprocess.run([sys.executable, "-m", "unisono", "recipe", name, "--out", str(tmp_path / name),
                              "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        configs = [w for w in run.stdout.split() if w.endswith(".yaml")]
        assert len(configs) == n_configs, run.stdout  # the codec's, the language model's (base: + task templates)
        for c in configs:
            assert Path(c).is_file() and Path(c).is_relative_to(site), c


def test_bad_recipe_and_stage_are_clear_errors(tmp_path, capsys):
    assert main(["recipe", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "recipe nope not found" in err and "tiny" in err
    assert main(["recipe", "tiny", "--out", str(tmp_path), "--stages", "synth,dance"]) == 2
    assert "unknown stage(s) ['dance']" in capsys.readouterr().err


def _fake_checkpoint(model: Path, tasks: list[str], defaults: tuple[str, ...] = ()) -> Path:
    """The files of a checkpoint that say what it can do (vocab.json; built-in task templates), others empty."""
    from unisono.vocab import Vocab

    (model / "tokenizers").mkdir(parents=True)
    Vocab.build(tasks, num_codebooks=2, codebook_size=16).save(model / "vocab.json")
    for name in ("config.json", "model.safetensors"):
        (model / name).write_text("")
    for name in defaults:
        (model / "defaults").mkdir(exist_ok=True)
        (model / "defaults" / f"{name}.wav").write_bytes(b"")
    return model


def test_the_recipe_ends_saying_where_the_model_is_and_how_to_use_it(tmp_path, monkeypatch, capsys):
    from unisono.cli import recipe

    out = tmp_path / "run"
    model = _fake_checkpoint(out / "model", ["asr", "se", "tts"])
    monkeypatch.setattr(recipe, "run", lambda *a, **k: {"package": {"seconds": 1.0}})
    assert main(["recipe", "tiny", "--out", str(out), "--stages", "package"]) == 0
    printed = capsys.readouterr().out
    assert f"the model: {model}" in printed
    assert f'use it: unisono generate tts --checkpoint {model} --text "Hello there." --prompt INPUT.wav -o out.wav' \
        in printed
    assert f"unisono generate --checkpoint {model} --list" in printed


def test_the_usage_example_fits_the_models_tasks_and_defaults(tmp_path):
    from unisono.cli.recipe import usage_lines

    asr = _fake_checkpoint(tmp_path / "asr", ["asr", "caption"])
    assert f"use it: unisono generate asr --checkpoint {asr} --speech INPUT.wav" in usage_lines(asr)
    tts = _fake_checkpoint(tmp_path / "tts", ["tts"], defaults=("prompt",))  # the default voice: no --prompt
    assert f'use it: unisono generate tts --checkpoint {tts} --text "Hello there." -o out.wav' in usage_lines(tts)


def test_the_eval_summary_says_n_a_and_why_instead_of_nan():
    """The tiny recipe's eval (2 items a task) printed ``fd nan``: a value without a mean is "n/a (reason)"."""
    import math

    from unisono.cli.eval import summary_lines

    result = {"tasks": {
        "text_to_sound": {"systems": {"model": {"fd": {"mean": math.nan, "n": 0, "n_items": 2},
                                                "mel": {"mean": 1.25, "n": 2, "n_items": 2}}}},
        "asr": {"systems": {"model": {"wer": {"mean": math.nan, "median": math.nan, "n": 0, "n_items": 0}},
                            "reference": {"wer": {"mean": math.nan, "n": 0, "n_items": 2}}}}},
        "skipped": {"asr": {"model": {"asr_1": "the output is empty (0 samples)", "asr_2": "x"}}}}
    lines = summary_lines(result)
    assert not any("nan" in line for line in lines), lines
    assert "fd n/a (the Frechet distance needs at least 3 items, got 2), mel 1.250" in lines[0]
    assert "wer n/a (2 item(s) skipped, e.g. the output is empty (0 samples); none scored)" in lines[1]
    assert "wer n/a (no item gave a finite value (2 scored))" in lines[2]


@pytest.mark.slow
def test_tiny_recipe_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["recipe", "tiny", "--out", str(out)]) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert "model" in metrics["tasks"]["se"]["systems"]
    for stage in STAGES:
        assert (out / "stages" / f"{stage}.json").exists()
    first = capsys.readouterr().out
    assert f"the model: {out / 'model'}" in first and "use it: unisono generate " in first
    assert " nan" not in first
    assert main(["recipe", "tiny", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("done already") == len(STAGES)


def test_recipe_sections_map_to_their_commands_and_unknown_keys_are_refused(tmp_path):
    from unisono import checkpoint as C
    from unisono.cli.recipe import commands, load_recipe
    from unisono.errors import UnisonoError

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        "codec: {config: c.yaml, init: default, steps: 9, set: [train.num_threads=1, train.lr=0.0005]}\n"
        "tokenize: {format: store, templates: [t.yaml], feature_encoder: 'resynth:num_codebooks=4', jobs: 2}\n")
    recipe, base = load_recipe(str(recipe_file))
    cmds = commands(recipe, base, tmp_path / "out")
    codec = cmds["codec"]
    assert codec[codec.index("--init") + 1] == str(C.DEFAULT_CHECKPOINT / "codec")
    assert codec[codec.index("--config") + 1] == str(tmp_path / "c.yaml")
    assert codec[codec.index("--steps") + 1] == "9"
    assert [codec[i + 1] for i, w in enumerate(codec) if w == "--set"] == ["train.num_threads=1", "train.lr=0.0005"]
    tok = cmds["tokenize"]
    assert tok[tok.index("--format") + 1] == "store" and tok[tok.index("--jobs") + 1] == "2"
    assert tok[tok.index("--templates") + 1] == str(tmp_path / "t.yaml")  # relative to the recipe's folder
    assert tok[tok.index("--feature-encoder") + 1] == "resynth:num_codebooks=4"
    recipe_file.write_text("codec: {steps: 9, stepz: 3}\n")
    with pytest.raises(UnisonoError, match=r"unknown key\(s\) \['stepz'\] in section codec"):
        load_recipe(str(recipe_file))
    for bad in ("{steps: 0}", "{stepz: 3}", "{steps: 3, lr: 0.1}", "4000"):
        recipe_file.write_text(f"codec: {{steps: 9, then: {bad}}}\n")
        with pytest.raises(UnisonoError, match="codec.then is a second phase"):
            load_recipe(str(recipe_file))


def test_codec_precision_makes_the_codec_that_tokenize_and_package_use(tmp_path, monkeypatch):
    """``codec.precision: int8``: after the codec stage its weights are copied as int8 into OUT/codec_int8, which
    tokenize reads (codes, features and the shipped model share one codec)."""
    import shutil

    from unisono import checkpoint as C
    from unisono.cli import recipe as R
    from unisono.weights import read_metadata

    (tmp_path / "r.yaml").write_text("codec: {steps: 1, precision: int8}\n")
    out = tmp_path / "run"

    def fake_main(argv):  # the codec stage's command: a trained codec in OUT/codec
        shutil.copytree(C.DEFAULT_CHECKPOINT / "codec", out / "codec")
        return 0

    monkeypatch.setattr(R, "cli_main", fake_main)
    R.run(str(tmp_path / "r.yaml"), out, stages=["codec"])
    assert read_metadata(out / "codec_int8" / "model.safetensors")["unisono_precision"] == "int8"
    assert (out / "stages" / "codec.json").exists()
    cmds = R.commands(*R.load_recipe(str(tmp_path / "r.yaml")), out)
    assert cmds["tokenize"][cmds["tokenize"].index("--codec") + 1] == str(out / "codec_int8")
    (tmp_path / "r.yaml").write_text("codec: {precision: int4}\n")
    with pytest.raises(Exception, match="codec.precision 'int4'"):
        R.commands(*R.load_recipe(str(tmp_path / "r.yaml")), out)


def test_codec_then_continues_from_the_first_phase_and_its_result_is_the_codec_used(tmp_path, monkeypatch):
    """``codec.then``: the codec stage runs a second ``codec train`` from the first phase's weights into
    OUT/codec_then (the lr it sets applies there only); its int8 copy is what tokenize reads."""
    import shutil

    from safetensors.torch import load_file, save_file

    from unisono import checkpoint as C
    from unisono.cli import recipe as R
    from unisono.weights import load_weights, read_metadata

    (tmp_path / "r.yaml").write_text("codec: {steps: 7, precision: int8, set: [train.lr=0.001],\n"
                                     "        then: {steps: 4, set: [train.lr=0.0005, train.lr_decay=0.9997]}}\n")
    out = tmp_path / "run"
    cmds = R.commands(*R.load_recipe(str(tmp_path / "r.yaml")), out)
    first, then = cmds["codec"], cmds["codec_then"]
    assert first[first.index("--out") + 1] == str(out / "codec") and first[first.index("--steps") + 1] == "7"
    assert then[then.index("--init") + 1] == str(out / "codec") and then[then.index("--out") + 1] == str(
        out / "codec_then")
    assert then[then.index("--steps") + 1] == "4" and "--config" not in then  # the first phase's config goes on
    assert [then[i + 1] for i, w in enumerate(then) if w == "--set"] == ["train.lr=0.0005", "train.lr_decay=0.9997"]
    assert cmds["tokenize"][cmds["tokenize"].index("--codec") + 1] == str(out / "codec_int8")
    ran = []

    def fake_main(argv):  # phase 1 writes the shipped codec, phase 2 a copy with one weight changed
        ran.append(argv)
        dst = Path(argv[argv.index("--out") + 1])
        shutil.copytree(Path(argv[argv.index("--init") + 1]) if "--init" in argv else C.DEFAULT_CHECKPOINT / "codec",
                        dst)
        if dst.name == "codec_then":
            t = load_file(str(dst / "model.safetensors"))
            name = next(k for k, v in t.items() if v.dtype.is_floating_point and v.numel() > 100)
            t[name] = t[name] + 1.0
            save_file(t, str(dst / "model.safetensors"), metadata=read_metadata(dst / "model.safetensors"))
            ran.append(name)
        return 0

    monkeypatch.setattr(R, "cli_main", fake_main)
    R.run(str(tmp_path / "r.yaml"), out, stages=["codec"])
    assert ran[0] == first and ran[1] == then
    assert read_metadata(out / "codec_int8" / "model.safetensors")["unisono_precision"] == "int8"
    name = ran[2]
    int8, phase1, phase2 = (load_weights(out / d / "model.safetensors")[name] for d in ("codec_int8", "codec",
                                                                                         "codec_then"))
    assert (int8 - phase2).abs().mean() < 0.1 < (int8 - phase1).abs().mean()  # the int8 copy is of phase 2


def test_set_overrides_a_recipe_value_and_is_checked_like_the_file(tmp_path, capsys):
    assert main(["recipe", "base", "--out", str(tmp_path / "b"), "--dry-run", "--set", "synth.hours=5",
                 "--set", "codec.steps=100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "--hours 5 " in lines[0] and "--engines espeak=0.5,kokoro=0.2" in lines[0]  # the rest of synth kept
    assert "--steps 100" in lines[1] and "codec_int8" in lines[1]
    assert main(["recipe", "base", "--out", str(tmp_path / "b"), "--dry-run", "--set", "synth.hourz=5"]) == 2
    assert "unknown key(s) ['hourz'] in section synth" in capsys.readouterr().err


def test_help_names_every_shipped_recipe(capsys):
    from unisono.cli.recipe import CONFIGS

    with pytest.raises(SystemExit):
        main(["recipe", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    shipped = sorted(f.stem for f in (CONFIGS / "recipes").glob("*.yaml"))
    assert "base" in shipped and f"({', '.join(shipped)}:" in text
