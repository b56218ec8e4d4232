"""``unisono recipe``: one command from nothing to an evaluated model, resumable stage by stage.

Stages, in order: ``synth`` (built-in corpus) -> ``codec`` (train the codec; with ``codec.then`` a second phase
from the first one's weights, e.g. at a lower, decaying lr) -> ``tokenize`` (tokenizers,
vocab, shards) -> ``train`` (the language model) -> ``package`` (a self-contained checkpoint) -> ``eval``
(every task on the test split, beside the reference ceiling). Each stage runs the same command a user
would type (see ``--dry-run``), each of those commands resumes by itself, and a finished stage leaves
``OUT/stages/<stage>.json``: running the recipe again continues with the first unfinished stage.

A recipe is a YAML file with one section per stage (the shipped ones are in ``unisono/configs/recipes/``,
also reachable as ``configs/recipes/`` in a checkout); relative config paths are read from the recipe file's
folder.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import yaml

from unisono import checkpoint as C
from unisono.cli import main as cli_main
from unisono.errors import UnisonoError
from unisono.fileio import check_writable, load_yaml, read_json, write_json
from unisono.inference import Pipeline
from unisono.inference.types import task_spec
from unisono.tasks import load_templates
from unisono.train.settings import parse_sets
from unisono.vocab import Vocab
from unisono.weights import PRECISIONS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # shipped in the package: recipes work from a wheel

STAGES = ("synth", "codec", "tokenize", "train", "package", "eval")
# the ``tokenize`` section's keys, each passed as ``unisono tokenize --key-with-dashes VALUE`` (a list: repeated)
TOKENIZE_OPTIONS = ("tasks", "num_codebooks", "bpe_size", "semantic_units", "jobs", "format", "templates",
                    "feature_encoder", "seed")
SECTION_KEYS = {"synth": {"hours", "seed", "workers", "engines", "sound_font", "real_sounds"},
                "codec": {"config", "init", "steps", "set", "precision", "then"}, "tokenize": set(TOKENIZE_OPTIONS),
                "train": {"config", "max_steps"}, "package": {"precision", "codec_precision", "defaults", "generation"},
                "eval": {"split", "n", "tasks"}}
CODEC_THEN_KEYS = {"steps", "set"}  # codec.then: a second phase (e.g. a lower, decaying lr) from the first's weights
EXAMPLE_TASKS = ("tts", "text_to_sound", "asr", "se")  # the first of these a model knows is shown as an example
EXAMPLE_TEXT = {"text": '"Hello there."', "caption": '"A dog barks, then a bell rings."'}
DESCRIPTION = __doc__


def load_recipe(name_or_path: str, sets: list[str] | None = None) -> tuple[dict, Path]:
    """A recipe by name (one shipped in ``unisono/configs/recipes/``) or path, with ``sets`` (``SECTION.KEY=VALUE``,
    values in YAML) over it, and the folder its relative config paths are read from."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS / "recipes" / f"{name_or_path}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in (CONFIGS / "recipes").glob("*.yaml")))
        raise UnisonoError(f"recipe {name_or_path} not found (looked for {path}); the shipped recipes are "
                           f"{shipped}, or give a YAML file")
    try:
        recipe = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UnisonoError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    for section, values in parse_sets(sets or []).items():
        recipe[section] = {**(recipe.get(section) or {}), **values}
    unknown = sorted(set(recipe) - set(STAGES))
    if unknown:
        raise UnisonoError(f"recipe {path}: unknown sections {unknown}; stages are {', '.join(STAGES)}")
    for section, keys in SECTION_KEYS.items():
        extra = sorted(set(recipe.get(section) or {}) - keys)
        if extra:
            raise UnisonoError(f"recipe {path}: unknown key(s) {extra} in section {section}; it takes "
                               f"{', '.join(sorted(keys))}")
    then = (recipe.get("codec") or {}).get("then")
    if then is not None and (not isinstance(then, dict) or set(then) - CODEC_THEN_KEYS or not then.get("steps")):
        raise UnisonoError(f"recipe {path}: codec.then is a second phase from the first one's weights, "
                           f"{{steps: N, set: [SECTION.KEY=VALUE, ...]}} (steps required); got {then!r}")
    return recipe, path.parent


def _engines_arg(value) -> str:
    """``synth.engines`` as ``unisono synth --engines`` takes it: a string as it is, a mapping as ``e=w,...``."""
    if isinstance(value, dict):
        return ",".join(f"{e}={w}" for e, w in value.items())
    return str(value)


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def _codec_init(base: Path, value: str) -> str:
    """``codec.init``: a codec directory (relative to the recipe's folder), or ``default`` for the codec of the
    shipped model (fine-tuned on the recipe's corpus instead of trained from nothing)."""
    return str(C.DEFAULT_CHECKPOINT / "codec") if value == "default" else _cfg_path(base, value)


def codec_trained(out: Path, section: dict) -> Path:
    """The codec stage's last phase: ``OUT/codec``, or with ``codec.then`` its continuation ``OUT/codec_then``."""
    return out / "codec_then" if section.get("then") else out / "codec"


def codec_in_use(out: Path, section: dict) -> Path:
    """The codec that tokenize and package use: the trained one (:func:`codec_trained`), or with ``codec.precision``
    its copy in that precision (``OUT/codec_int8``, ...), written by the codec stage: the codes, the features computed
    from them and the shipped model then share one codec (and an int8 codec travels to a GPU in ~7 MB)."""
    precision = section.get("precision") or "float32"
    if precision not in PRECISIONS:
        raise UnisonoError(f"codec.precision {precision!r}: use {', '.join(PRECISIONS)}")
    return codec_trained(out, section) if precision == "float32" else out / f"codec_{precision}"


def _cfg_path(base: Path, value: str) -> str:
    p = Path(value)
    return str(p if p.is_absolute() else (base / p).resolve())


def commands(recipe: dict, base: Path, out: Path) -> dict[str, list[str] | None]:
    """The CLI command of each stage (``package`` is a Python call, listed as None); with ``codec.then`` the codec
    stage's second command is ``codec_then``."""
    s, c, t, tr, ev = (recipe.get(k) or {} for k in ("synth", "codec", "tokenize", "train", "eval"))
    corpus, codec, shards, lm = out / "corpus", out / "codec", out / "shards", out / "lm"
    used = codec_in_use(out, c)
    cmds: dict[str, list[str] | None] = {}
    cmds["synth"] = ["synth", "--out", str(corpus), "--hours", str(s.get("hours", 0.2)), "--seed",
                     str(s.get("seed", 1)), "--workers", str(s.get("workers", 2)), "--quiet",
                     *(["--engines", _engines_arg(s["engines"])] if s.get("engines") else []),
                     *(["--sound-font", str(s["sound_font"])] if s.get("sound_font") else []),
                     *(["--real-sounds", "on" if s["real_sounds"] else "off"] if "real_sounds" in s else [])]
    cmds["codec"] = ["codec", "train", "--data", str(corpus), "--out", str(codec), "--no-progress",
                     *(["--config", _cfg_path(base, c["config"])] if c.get("config") else []),
                     *(["--init", _codec_init(base, c["init"])] if c.get("init") else []),
                     *(["--steps", str(c["steps"])] if c.get("steps") else []),
                     *[x for kv in _as_list(c.get("set")) for x in ("--set", str(kv))]]
    if c.get("then"):  # not a stage of its own: the codec stage runs it after the first phase
        cmds["codec_then"] = ["codec", "train", "--data", str(corpus), "--out", str(codec_trained(out, c)),
                              "--no-progress", "--init", str(codec), "--steps", str(c["then"]["steps"]),
                              *[x for kv in _as_list(c["then"].get("set")) for x in ("--set", str(kv))]]
    cmds["tokenize"] = ["tokenize", "--data", str(corpus), "--codec", str(used), "--out", str(shards), "--no-progress",
                        *[x for k in TOKENIZE_OPTIONS if t.get(k) is not None
                          for v in _as_list(t[k])
                          for x in (f"--{k.replace('_', '-')}", _cfg_path(base, v) if k == "templates" else str(v))]]
    cmds["train"] = ["train", "--config", _cfg_path(base, tr.get("config", "../lm/tiny.yaml")), "--shards", str(shards),
                     "--val-shards", str(shards / "valid"), "--out", str(lm), "--no-progress",
                     *(["--max-steps", str(tr["max_steps"])] if tr.get("max_steps") else [])]
    cmds["package"] = None
    cmds["eval"] = ["eval", "--checkpoint", str(out / "model"), "--data", str(corpus), "--split",
                    str(ev.get("split", "test")), "--tasks", str(ev.get("tasks", "all")), "--out", str(out / "eval"),
                    "--quiet", *(["--n", str(ev["n"])] if ev.get("n") else [])]
    return cmds


def _defaults(corpus: Path, spec: dict | None) -> dict | None:
    """``package.defaults`` ({input name: audio path relative to the corpus}) as absolute paths."""
    if not spec:
        return None
    out = {}
    for name, rel in spec.items():
        p = Path(rel) if Path(rel).is_absolute() else corpus / rel
        if not p.is_file():
            raise UnisonoError(f"package.defaults.{name}: {p} does not exist (paths are relative to the corpus)")
        out[name] = p
    return out


def run(recipe_name: str, out: str | Path, stages: list[str] | None = None, dry_run: bool = False,
        sets: list[str] | None = None) -> dict:
    recipe, base = load_recipe(recipe_name, sets)
    out = Path(out)
    cmds = commands(recipe, base, out)
    used = codec_in_use(out, recipe.get("codec") or {})
    todo = stages or list(STAGES)
    bad = [s for s in todo if s not in STAGES]
    if bad:
        raise UnisonoError(f"unknown stage(s) {bad}; stages are {', '.join(STAGES)}")
    done_dir = out / "stages"
    report = {}
    for stage in STAGES:
        if stage not in todo:
            continue
        marker = done_dir / f"{stage}.json"
        argvs = [cmds[stage]] + ([cmds["codec_then"]] if stage == "codec" and "codec_then" in cmds else [])
        shown = "Pipeline.package(LM checkpoint, shards, OUT/model)" if cmds[stage] is None else \
            "; then ".join("unisono " + " ".join(a) for a in argvs)
        trained = codec_trained(out, recipe.get("codec") or {})
        if stage == "codec" and used != trained:
            shown += f"; then its weights as {recipe['codec']['precision']} into {used}"
        if dry_run:
            print(f"[{stage}] {shown}")
            continue
        if marker.exists():
            print(f"[{stage}] done already ({marker}); skipping")
            report[stage] = read_json(marker)
            continue
        print(f"[{stage}] {shown}", flush=True)
        t0 = time.perf_counter()
        if stage == "package":
            pk = recipe.get("package") or {}
            latest = out / "lm" / json.loads((out / "lm" / "latest.json").read_text())["path"]
            Pipeline.package(latest, out / "shards", out / "model", codec_dir=used,
                             precision=pk.get("precision", "float32"), codec_precision=pk.get("codec_precision"),
                             defaults=_defaults(out / "corpus", pk.get("defaults")), generation=pk.get("generation"))
        else:
            for argv in argvs:
                code = cli_main(argv)
                if code != 0:
                    raise UnisonoError(f"stage {stage} failed (exit {code}); fix the cause and run the recipe again "
                                       "to resume from this stage")
            if stage == "codec" and used != trained:
                C.copy_codec(trained, used, recipe["codec"]["precision"])
        report[stage] = {"seconds": round(time.perf_counter() - t0, 1), "command": shown}
        write_json(marker, report[stage])
    return report


def usage_lines(model: Path) -> list[str]:
    """Where the recipe's model is and how to use it: a ready ``unisono generate`` line for one of its tasks (read
    from its ``vocab.json`` and ``tasks.yaml``; nothing is loaded)."""
    lines = [f"the model: {model} (a checkpoint: language model, codec, tokenizers and tasks in one folder; "
             f"Python: Pipeline.from_pretrained({str(model)!r}))"]
    templates = load_templates([model / C.TEMPLATES] if (model / C.TEMPLATES).exists() else None)
    known = Vocab.load(model / "vocab.json").tasks
    specs = {name: task_spec(tpl) for name, tpl in templates.items() if name in known}
    if specs:
        task = next((t for t in EXAMPLE_TASKS if t in specs), sorted(specs)[0])
        spec = specs[task]
        words = ["unisono", "generate", task, "--checkpoint", shlex.quote(str(model))]
        for name, kind in spec.inputs.items():
            if not (model / C.DEFAULTS / f"{name}.wav").exists():  # an input with a default may be left out
                value = "0.5,1.0" if name.endswith("_span") else EXAMPLE_TEXT.get(name, "TEXT")
                words += [f"--{name}", value if kind == "text" else "INPUT.wav"]
        words += ["-o", "out.wav"] if spec.output == "audio" else []
        lines.append("use it: " + " ".join(words))
    lines.append(f"its tasks and their inputs: unisono generate --checkpoint {shlex.quote(str(model))} --list")
    return lines


def add_arguments(p) -> None:
    shipped = ", ".join(sorted(f.stem for f in (CONFIGS / "recipes").glob("*.yaml")))
    p.add_argument("recipe", help=f"a shipped recipe ({shipped}: unisono/configs/recipes/) or a YAML file")
    p.add_argument("--out", required=True, help="run directory (run again with the same --out to resume)")
    p.add_argument("--stages", help=f"comma-separated subset of: {', '.join(STAGES)}")
    p.add_argument("--dry-run", action="store_true", help="print each stage's command and exit")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one recipe value (YAML syntax), e.g. --set synth.hours=5; give the same ones "
                        "again when resuming")


def main(args) -> int:
    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    if not args.dry_run:
        check_writable(args.out, "dir", "--out")
    report = run(args.recipe, args.out, stages, dry_run=args.dry_run, sets=args.set)
    if report:
        print("stage times (s): " + ", ".join(f"{k} {v.get('seconds', '?')}" for k, v in report.items()))
    model = Path(args.out) / "model"
    if not args.dry_run and C.is_checkpoint(model):
        for line in usage_lines(model):
            print(line)
        if (Path(args.out) / "eval" / "report.md").exists():
            print(f"its evaluation: {Path(args.out) / 'eval' / 'report.md'}")
    return 0
