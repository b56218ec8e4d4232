"""Your own data: Lhotse sources read as a unisono corpus split (see docs/own-data.md).

``--data`` of ``unisono tokenize`` (and of the library functions below) names one or more sources, each a path,
or ``SPLIT=PATH`` to give its cuts to one split:

- a unisono corpus (a folder with ``manifests/{train,valid,test}/cuts.jsonl``: its own splits);
- a Lhotse cuts manifest (``.jsonl`` or ``.jsonl.gz``, e.g. from ``lhotse.recipes``);
- a Lhotse Shar folder (``cuts.000000.jsonl.gz`` and its audio tars).

A Lhotse source without a split gets a deterministic validation part: one speaker in :data:`VALID_ONE_IN`
(by a hash of the speaker id) where it has at least that many speakers, else one cut in :data:`VALID_ONE_IN`
(at least one); the rest is train. It has no test split unless one is given (``test=PATH``).

A cut without unisono's fields (``custom.tasks``) serves the tasks whose templates it can fill: each template
names its sources (``tasks.yaml``), and a cut serves a task when it has every one of them: audio, text, phones
(made from English text when absent), a second utterance of its speaker for a speaker prompt, a caption, a
condition recording... So text + speaker give ``tts`` and ``asr``, a caption gives ``caption`` and the
text-to-audio tasks. The tasks are written into ``cut.custom["tasks"]``, as a unisono corpus has them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from pathlib import Path

from unisono.data.manifests import SPLITS, load_cuts
from unisono.data.sources import source_value, speaker_of
from unisono.errors import UnisonoError
from unisono.tasks import TaskTemplate
from unisono.text.g2p import phonemize

log = logging.getLogger("unisono")

VALID_ONE_IN = 20  # one speaker (or cut) in 20 is the validation part of a source without splits


def parse_sources(data) -> list[tuple[str | None, Path]]:
    """``--data`` values (a string, or a list of them; ``PATH`` or ``SPLIT=PATH``) as ``(split or None, path)``,
    each checked to exist."""
    values = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    out = []
    for v in values:
        split, sep, path = str(v).partition("=")
        if not sep or split not in SPLITS:
            split, path = None, str(v)
        p = Path(path)
        if not p.exists():
            raise UnisonoError(f"--data {v}: {p} does not exist; give a unisono corpus folder, a Lhotse cuts "
                               "manifest (.jsonl/.jsonl.gz) or a Lhotse Shar folder (optionally as SPLIT=PATH)")
        out.append((split, p))
    if not out:
        raise UnisonoError("no --data given")
    return out


def is_corpus(path: Path) -> bool:
    return path.is_dir() and (path / "manifests").is_dir()


def is_shar(path: Path) -> bool:
    return path.is_dir() and any(path.glob("cuts.*.jsonl*"))


def read_lhotse(path: Path) -> list:
    """The cuts of a Lhotse manifest or Shar folder, in memory (their audio read when used)."""
    from lhotse import CutSet  # noqa: PLC0415 (lhotse: not on the GPU image)

    try:
        if is_shar(path):
            cuts = CutSet.from_shar(in_dir=path).to_eager()
        elif path.is_file() and (path.name.endswith(".jsonl") or path.name.endswith(".jsonl.gz")):
            cuts = CutSet.from_file(path).to_eager()
        else:
            raise UnisonoError(f"{path} is neither a unisono corpus, a Lhotse cuts manifest (.jsonl, .jsonl.gz) "
                               "nor a Lhotse Shar folder")
    except UnisonoError:
        raise
    except Exception as e:  # lhotse raises assorted errors for a malformed manifest
        raise UnisonoError(f"cannot read {path} with Lhotse: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return [c.to_mono(mono_downmix=True) if c.num_channels and c.num_channels > 1 else c for c in cuts]


def split_of(key: str) -> str:
    """``valid`` for one key in :data:`VALID_ONE_IN` (by a stable hash), else ``train``."""
    return "valid" if int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % VALID_ONE_IN == 0 else "train"


def own_splits(cuts: list) -> dict[str, list]:
    """``{"train": [...], "valid": [...]}``: the parts of a source without splits (see the module doc)."""
    speakers = {speaker_of(c) for c in cuts} - {None}
    by_speaker = len(speakers) >= VALID_ONE_IN
    keys = {c.id: (speaker_of(c) or c.id) if by_speaker else c.id for c in cuts}
    chosen = {c.id: split_of(keys[c.id]) for c in cuts}
    if len(cuts) > 1 and "valid" not in chosen.values():  # a small set: its first cut by hash validates
        first = min(cuts, key=lambda c: hashlib.sha1(keys[c.id].encode()).hexdigest())
        chosen = {cid: ("valid" if keys[cid] == keys[first.id] else "train") for cid in chosen}
    return {s: [c for c in cuts if chosen[c.id] == s] for s in ("train", "valid")}


def english(sup) -> bool:
    lang = (sup.language or "en").lower()
    return lang.startswith("en") or lang in ("english", "eng")


def add_phones(cuts: list) -> None:
    """Phones (espeak-ng, en-us) for the English supervisions that have text and no phones, in one batch."""
    todo = [s for c in cuts for s in c.supervisions
            if s.text and s.text.strip() and not (s.custom or {}).get("phones") and english(s)]
    if not todo:
        return
    for sup, phones in zip(todo, phonemize([s.text for s in todo])):
        sup.custom = {**(sup.custom or {}), "phones": phones}


def fits(tpl: TaskTemplate, cut, speaker_counts: Counter) -> bool:
    """Whether ``cut`` has every source of ``tpl`` (a speaker prompt: another utterance of its speaker)."""
    for spec in tpl.segments:
        kind, key = spec.source_kind, spec.source_key
        if kind == "audio":
            ok = cut.has_recording
        elif kind == "recording":
            ok = hasattr((cut.custom or {}).get(key), "load_audio")
        elif kind == "speaker_prompt":
            ok = speaker_counts[speaker_of(cut)] >= 2 if speaker_of(cut) else False
        elif kind == "phones":  # made from the text (English) when absent
            sup = cut.supervisions[0] if cut.supervisions else None
            ok = sup is not None and bool((sup.custom or {}).get("phones") or (sup.text or "").strip())
        else:
            try:
                value = source_value(spec, cut)
            except UnisonoError:
                value = None
            ok = value is not None and value != "" and value != []
        if spec.mask_span and ok:
            ok = (cut.custom or {}).get("params", {}).get(spec.mask_span.partition(".")[2]) is not None
        if not ok:
            return False
    return True


def assign_tasks(cuts: list, templates: dict[str, TaskTemplate]) -> dict[str, int]:
    """Write ``custom["tasks"]`` on every cut that has none (the templates it can fill); returns cuts per task."""
    speaker_counts = Counter(speaker_of(c) for c in cuts)
    counts: Counter = Counter()
    for c in cuts:
        if (c.custom or {}).get("tasks") is not None:
            continue
        tasks = sorted(name for name, tpl in templates.items()
                       if tpl.cuts_from is None and fits(tpl, c, speaker_counts))
        c.custom = {**(c.custom or {}), "tasks": tasks}
        counts.update(tasks)
    return dict(sorted(counts.items()))


def load_splits(data, splits, templates: dict[str, TaskTemplate]) -> dict[str, list]:
    """``{split: cuts}`` for each of ``splits`` over every source of ``data`` (each source read once; see the
    module doc), with unisono's fields filled in on Lhotse cuts (phones, tasks); a split no source has is empty."""
    out: dict[str, list] = {s: [] for s in splits}
    for given, path in parse_sources(data):
        if is_corpus(path):
            if given is not None:
                raise UnisonoError(f"--data {given}={path}: a unisono corpus has its own splits; give its folder alone")
            for split in splits:
                if (path / "manifests" / split / "cuts.jsonl").exists():
                    out[split] += list(load_cuts(path, split))
            continue
        if given is not None and given not in splits:
            continue
        own = read_lhotse(path)
        parts = {given: own} if given is not None else own_splits(own)
        for split, part in parts.items():
            if split in out:
                add_phones(part)
                assign_tasks(part, templates)
                out[split] += part
    for split, cuts in out.items():
        dup = [i for i, n in Counter(c.id for c in cuts).items() if n > 1]
        if dup:
            raise UnisonoError(f"cut id {dup[0]!r} is in more than one source of split {split}; cut ids must be unique")
    return out


def load_split(data, split: str, templates: dict[str, TaskTemplate]) -> list:
    """The cuts of ``split`` (:func:`load_splits` of one split)."""
    return load_splits(data, [split], templates)[split]
