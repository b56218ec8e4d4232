"""The checkpoint format: what a checkpoint directory holds, how it is checked, and the one writer.

A checkpoint is a directory::

    config.json + model.safetensors   the language model (unisono.lm.UnisonoLM.save_pretrained)
    vocab.json                        the vocabulary (unisono.vocab.Vocab)
    tokenizers/                       phones, BPE, ... (unisono.text.tokenizers.TokenizerSet)
    tasks.yaml                        the task templates it was trained with
    codec/  or  codec.json            the codec, or {"source": DIR} naming a codec directory
    defaults/<input>.wav              optional: audio used for an input a request leaves out
    enhancer/                         optional: the enhancement stage after the codec (config.json +
                                      model.safetensors of unisono.codec.enhance.Enhancer; ``--enhance``)
    generation.json                   optional: this checkpoint's default sampling options per output kind

plus any reports a command adds (``finetune_report.json``, ``dpo_report.json``). Every command that makes a
checkpoint writes it with :func:`write_checkpoint` inside :func:`unisono.fileio.atomic_dir`, so a reader never
sees a half-written one.

``model.safetensors`` records the layout fingerprint of the vocabulary it was written with
(:meth:`unisono.vocab.Vocab.layout_fingerprint`, metadata key :data:`unisono.vocab.LAYOUT_KEY`);
:func:`require_checkpoint` refuses a checkpoint whose ``vocab.json`` no longer matches it (task ids swapped, a
range resized, other tokenizers). Weights without the fingerprint (checkpoints made before it) load as before.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from unisono import audio
from unisono.errors import UnisonoError
from unisono.fileio import read_json, write_json, write_text
from unisono.options import check_option_defaults
from unisono.tasks import load_templates
from unisono.vocab import LAYOUT_KEY, Vocab
from unisono.weights import load_weights, read_metadata, restamp_weights, save_weights

# The shipped model (used when no checkpoint is given).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "unisono-small"
TOKENIZERS = "tokenizers"
CODEC = "codec"
CODEC_REF = "codec.json"
TEMPLATES = "tasks.yaml"
DEFAULTS = "defaults"
GENERATION = "generation.json"
ENHANCER = "enhancer"
ENHANCER_HINT = "train one with `unisono codec train-enhancer` and copy its OUT/enhancer to"
LM_PARTS = ("config.json", "model.safetensors", "vocab.json")  # a trained language model
REQUIRED = LM_PARTS + (TOKENIZERS,)  # a checkpoint the pipeline loads (and a codec: codec/ or codec.json)


def is_checkpoint(directory) -> bool:
    """Whether ``directory`` holds every file a checkpoint needs (:data:`REQUIRED`)."""
    d = Path(directory)
    return d.is_dir() and all((d / need).exists() for need in REQUIRED)


def require_checkpoint(directory, what: str = "checkpoint", parts: tuple[str, ...] = REQUIRED) -> Path:
    """``directory`` as a Path, checked to hold ``parts`` (default: a complete checkpoint; :data:`LM_PARTS`: a
    trained language model); a one-line error naming what is missing."""
    d = Path(directory)
    if not d.is_dir():
        raise UnisonoError(f"{what} directory {d} does not exist")
    for need in parts:
        if not (d / need).exists():
            raise UnisonoError(f"{d} is not a complete unisono checkpoint: {need} is missing "
                               "(make one with `unisono train` + `unisono package`, or Pipeline.package)")
    if "model.safetensors" in parts and "vocab.json" in parts:
        check_layout(d)
    return d


def check_layout(directory, vocab: Vocab | None = None) -> None:
    """Refuse a checkpoint whose ``vocab.json`` (or ``vocab``) is not the layout its weights were written with
    (the fingerprint in ``model.safetensors``' metadata); weights without a fingerprint pass."""
    d = Path(directory)
    stamp = read_metadata(d / "model.safetensors").get(LAYOUT_KEY)
    if stamp is None:
        return
    got = (vocab or Vocab.load(d / "vocab.json")).layout_fingerprint()
    if got != stamp:
        raise UnisonoError(f"{d}: vocab.json is not the vocabulary the model was written with (layout fingerprint "
                           f"{got}, the weights record {stamp}): task ids, ranges or tokenizers changed; put back "
                           "the checkpoint's own vocab.json")


def enhancer_dir(directory) -> Path:
    """The enhancer directory of checkpoint ``directory`` (its ``enhancer/``); a one-line error when it has none."""
    d = Path(directory) / ENHANCER
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise UnisonoError(f"this checkpoint ({directory}) has no enhancer; {ENHANCER_HINT} {d}, or pass "
                           "--enhance DIR")
    return d


def task_templates(directory) -> dict:
    """``{name: TaskTemplate}`` of the tasks checkpoint ``directory`` knows: its ``tasks.yaml`` (the built-in
    templates for a checkpoint without one) restricted to the tasks its ``vocab.json`` has an id for. Reads those
    two files only (no weights), so a command can check a request before it loads the model."""
    d = Path(directory)
    templates = load_templates([d / TEMPLATES] if (d / TEMPLATES).exists() else None)
    known = Vocab.load(d / "vocab.json").tasks
    return {name: tpl for name, tpl in templates.items() if name in known}


def codec_dir(directory) -> Path:
    """The codec directory of checkpoint ``directory``: its ``codec/``, or the one ``codec.json`` names."""
    d = Path(directory)
    if (d / CODEC / "config.json").exists():
        return d / CODEC
    if (d / CODEC_REF).exists():
        src = read_json(d / CODEC_REF).get("source")
        path = (d / src) if src and not Path(src).is_absolute() else Path(src or "")
        if not src or not (path / "config.json").exists():
            raise UnisonoError(f"{d}/{CODEC_REF} names codec {src!r}, which is not a codec directory")
        return path
    raise UnisonoError(f"{d} has no {CODEC}/ directory and no {CODEC_REF}")


def templates_yaml(templates: dict) -> str:
    """The YAML text of ``templates`` (``{name: TaskTemplate}``) as :func:`unisono.tasks.parse_templates`
    reads it back."""
    tasks = {name: tpl.to_dict() for name, tpl in sorted(templates.items())}
    return yaml.safe_dump({"version": 1, "tasks": tasks}, sort_keys=False, allow_unicode=True)


def copy_weights(src: Path, dst: Path, precision: str, metadata: dict[str, str] | None = None) -> None:
    """Copy a safetensors file, storing its float tensors in ``precision`` (see :mod:`unisono.weights`; float32:
    as they are stored), its metadata kept and ``metadata`` added."""
    if precision == "float32" and not metadata:
        shutil.copy2(src, dst)
    elif precision == "float32":
        restamp_weights(src, dst, metadata)
    else:
        save_weights(load_weights(src), dst, precision, {**read_metadata(src), **(metadata or {})})


def copy_codec(src: Path, dst: Path, precision: str = "float32") -> None:
    """Copy the codec directory ``src`` (``config.json``, ``model.safetensors``) into ``dst`` (created), its weights
    stored in ``precision`` (float32: byte for byte, so its fingerprint holds)."""
    Path(dst).mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(src) / "config.json", Path(dst) / "config.json")
    copy_weights(Path(src) / "model.safetensors", Path(dst) / "model.safetensors", precision)


def write_checkpoint(out: Path, lm, vocab, tokenizers: Path | None, codec: Path | None, templates: dict,
                     precision: str = "float32", codec_precision: str | None = None, defaults: dict | None = None,
                     generation: dict | None = None, link_codec: bool = False, enhancer: Path | None = None) -> None:
    """Write every part of a checkpoint into the (empty) directory ``out``.

    ``tokenizers`` or ``codec`` None: not written (a trained LM fine-tuned before packaging).
    ``lm``: a :class:`unisono.lm.UnisonoLM` or a directory holding its ``config.json`` + ``model.safetensors``;
    ``vocab``: a :class:`unisono.vocab.Vocab` or its ``vocab.json`` (its layout fingerprint goes into the weights'
    metadata; weights from a directory that record another layout are refused); ``tokenizers`` (a directory) is copied;
    ``codec`` (a codec directory) is copied, or named in ``codec.json`` when ``link_codec``; ``templates`` are
    written as ``tasks.yaml``. ``precision`` (LM) and ``codec_precision`` (default: the same) store float weights
    as ``float32``, ``float16`` or ``int8`` (:mod:`unisono.weights`). ``defaults`` maps input names to audio
    files (or arrays with their rate) copied into ``defaults/``; ``generation`` (``{"audio": {...}, "text":
    {...}}``) becomes ``generation.json``; ``enhancer`` (an enhancer directory) is copied to ``enhancer/``."""
    out = Path(out)
    generation = check_option_defaults(generation or {}, "checkpoint generation defaults")
    vocab = Vocab.load(vocab) if isinstance(vocab, (str, Path)) else vocab
    layout = {LAYOUT_KEY: vocab.layout_fingerprint()}  # the weights record the layout written beside them
    if isinstance(lm, (str, Path)):
        check_layout(lm, vocab)  # weights written with another layout are not relabelled
        shutil.copy2(Path(lm) / "config.json", out / "config.json")
        copy_weights(Path(lm) / "model.safetensors", out / "model.safetensors", precision, layout)
    else:
        lm.save_pretrained(out, vocab=vocab)
        if precision != "float32":
            copy_weights(out / "model.safetensors", out / "model.safetensors", precision)
    vocab.save(out / "vocab.json")
    if tokenizers is not None:
        shutil.copytree(tokenizers, out / TOKENIZERS)
    if codec is None:
        pass
    elif link_codec:
        write_json(out / CODEC_REF, {"source": str(Path(codec).resolve())})
    else:
        copy_codec(Path(codec), out / CODEC, codec_precision or precision)
    if defaults:
        (out / DEFAULTS).mkdir()
        for name, src in defaults.items():
            wav, sr = audio.load(src) if isinstance(src, (str, Path)) else src
            audio.save(out / DEFAULTS / f"{name}.wav", wav, sr)
    if enhancer is not None:
        (out / ENHANCER).mkdir()
        for name in ("config.json", "model.safetensors"):
            shutil.copy2(Path(enhancer) / name, out / ENHANCER / name)
    write_text(out / TEMPLATES, templates_yaml(templates))
    if generation:
        write_json(out / GENERATION, generation)


def carried_parts(directory) -> dict:
    """The parts of ``directory`` (a checkpoint, or a trained language model without tokenizers or codec) that a
    derived checkpoint (fine-tuned, preference-tuned) keeps: keyword arguments of :func:`write_checkpoint`
    (tokenizers, codec, defaults, generation, enhancer; None where ``directory`` has none)."""
    d = require_checkpoint(directory, parts=LM_PARTS)
    has_codec = (d / CODEC / "config.json").exists() or (d / CODEC_REF).exists()
    codec = codec_dir(d) if has_codec else None
    parts = {"tokenizers": d / TOKENIZERS if (d / TOKENIZERS).is_dir() else None, "codec": codec,
             "link_codec": codec is not None and codec != d / CODEC,
             "defaults": {f.stem: f for f in sorted((d / DEFAULTS).glob("*.wav"))} or None,
             "generation": read_json(d / GENERATION) if (d / GENERATION).exists() else None,
             "enhancer": d / ENHANCER if (d / ENHANCER / "model.safetensors").is_file() else None}
    return parts
