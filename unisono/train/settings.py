"""Strict settings files: a YAML mapping read into a dataclass, where an unknown key is a one-line error
that names it (the pattern of ``unisono train --config``, shared by fine-tuning and DPO)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from unisono.errors import UnisonoError
from unisono.fileio import load_yaml


def read_settings_file(path: str | Path, hint: str) -> dict:
    """The YAML mapping in ``path`` (an empty file: ``{}``); one-line errors for a missing file (``hint`` says
    where to find examples), invalid YAML or a top level that is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UnisonoError(f"config {path} does not exist; {hint}")
    try:
        data = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UnisonoError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UnisonoError(f"config {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def settings_from_dict(cls: type, d: dict[str, Any], where: str):
    """``cls(**d)`` for a dataclass ``cls``; a key that is not one of its fields is a one-line error naming it
    (``where``: e.g. ``"train config"``)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UnisonoError(f"{where}: unknown keys {unknown}; known keys are {sorted(known)}")
    return cls(**d)


def resolve_paths(d: dict, keys: tuple[str, ...], base: Path) -> dict:
    """``d`` with the relative paths under ``keys`` (a path or a list of paths) read from folder ``base``
    (a settings file's folder), as a recipe's config paths are."""
    def one(p):
        return str(p if Path(p).is_absolute() else (base / p).resolve())

    out = dict(d)
    for k in keys:
        v = out.get(k)
        if isinstance(v, (list, tuple)):
            out[k] = [one(x) for x in v]
        elif v is not None:
            out[k] = one(v)
    return out


def parse_sets(items: list[str]) -> dict:
    """``--set SECTION.KEY=VALUE`` options (values in YAML syntax) as ``{section: {key: value}}``."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise UnisonoError(f"--set {item!r}: use SECTION.KEY=VALUE, e.g. train.batch_size=4")
        try:
            out.setdefault(section, {})[name] = load_yaml(value)
        except yaml.YAMLError as e:
            raise UnisonoError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return out
