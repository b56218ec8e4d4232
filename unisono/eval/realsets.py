"""Evaluation sets of real recordings that no model trains on, made from installed packages.

A set is written as a corpus directory (``manifests/test/cuts.jsonl`` and friends, the layout of ``unisono synth``)
whose recordings point at the installed files by absolute path: nothing is copied, and ``unisono eval --data NAME``
scores it like any corpus split. Sets:

- ``tuxpaint`` (Debian ``tuxpaint-stamps-default``, GPL-2, used as evaluation data only): the English spoken
  descriptions of the stamps with their text (real human speech, one to three words each, said without the
  text's leading article: ``asr``), and the stamps' sound effects with
  their description as the caption (real sounds: ``caption``, ``text_to_sound``). The stamps' spoken letters and
  digits (``symbols/alphabets``, ``symbols/math``) are not effects and are left out.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from unisono.errors import UnisonoError
from unisono.fileio import write_jsonl, write_text

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
NOT_EFFECTS = ("symbols/alphabets", "symbols/math")  # spoken letters and digits, not sound effects
SETS = {"tuxpaint": "Tux Paint stamps: English human speech with text (asr), captioned sound effects "
                    "(caption, text_to_sound); apt-get install tuxpaint-stamps-default"}


def _description(txt: Path) -> str | None:
    """The stamp's English description: the first line of its ``.txt`` (the other lines are translations)."""
    try:
        first = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
    except (OSError, IndexError):
        return None
    return first or None


def _spoken(description: str) -> str:
    """What the speaker of a description says: the description without its leading article ("A frog." is
    spoken as "Frog.")."""
    words = description.split(maxsplit=1)
    return words[1][:1].upper() + words[1][1:] if len(words) == 2 and words[0].lower() in ("a", "an") else description


def _cut(cut_id: str, path: Path, text: str, kind: str, tasks: list[str], custom: dict) -> dict:
    """One cut (Lhotse MonoCut as a dict) over the whole file ``path``, read where it is installed."""
    info = sf.info(str(path))
    duration = info.frames / info.samplerate
    recording = {"id": cut_id, "sources": [{"type": "file", "channels": [0], "source": str(path)}],
                 "sampling_rate": int(info.samplerate), "num_samples": int(info.frames), "duration": duration,
                 "channel_ids": [0]}
    sup = {"id": cut_id, "recording_id": cut_id, "start": 0.0, "duration": duration, "channel": 0, "text": text,
           "language": "en"}
    return {"id": cut_id, "start": 0.0, "duration": duration, "channel": 0, "type": "MonoCut",
            "recording": recording, "supervisions": [sup],
            "custom": {"kind": kind, "tasks": tasks, "split": "test", "source": "tuxpaint", **custom}}


def tuxpaint_cuts(root: Path | None = None) -> list[dict]:
    """The ``tuxpaint`` set's cuts, in path order: ``speech`` cuts (asr) then ``sound`` cuts (caption,
    text_to_sound); ``root`` defaults to where Debian installs the stamps."""
    root = Path(root or TUXPAINT_STAMPS)
    if not root.is_dir():
        raise UnisonoError(f"{root} does not exist: the tuxpaint set needs Debian's tuxpaint-stamps-default "
                           "(apt-get install tuxpaint-stamps-default)")
    speech, sounds = [], []
    for path in sorted(root.rglob("*_desc.ogg")):
        text = _description(path.with_name(path.name[: -len("_desc.ogg")] + ".txt"))
        if text:
            rel = path.relative_to(root).with_suffix("").as_posix().replace("/", "-")
            speech.append(_cut(f"tuxpaint-speech-{rel}", path, _spoken(text), "speech", ["asr"], {}))
    for path in sorted(root.rglob("*.ogg")):
        rel = path.relative_to(root).as_posix()
        if "_desc" in path.name or rel.startswith(NOT_EFFECTS):
            continue
        caption = _description(path.with_suffix(".txt"))
        if caption:
            cut_id = f"tuxpaint-sound-{Path(rel).with_suffix('').as_posix().replace('/', '-')}"
            sounds.append(_cut(cut_id, path, caption, "sound", ["caption", "text_to_sound"], {"caption": caption}))
    if not speech or not sounds:
        raise UnisonoError(f"{root} holds no described stamps; reinstall tuxpaint-stamps-default")
    return speech + sounds


def write_set(name: str, out_dir: str | Path) -> Path:
    """Write the set ``name`` as a corpus directory in ``out_dir`` (its test split); returns ``out_dir``."""
    if name not in SETS:
        raise UnisonoError(f"unknown evaluation set {name!r}; the sets are: {', '.join(SETS)}")
    cuts = tuxpaint_cuts()
    out = Path(out_dir)
    mdir = out / "manifests" / "test"
    write_jsonl(mdir / "recordings.jsonl", [c["recording"] for c in cuts])
    write_jsonl(mdir / "supervisions.jsonl", [c["supervisions"][0] for c in cuts])
    write_jsonl(mdir / "cuts.jsonl", cuts)
    n_speech = sum(c["custom"]["kind"] == "speech" for c in cuts)
    seconds = {k: sum(c["duration"] for c in cuts if c["custom"]["kind"] == k) for k in ("speech", "sound")}
    write_text(out / "README.md", f"# Evaluation set `{name}`\n\n{SETS[name]}.\n\n"
               f"{n_speech} speech cuts ({seconds['speech'] / 60:.1f} min), {len(cuts) - n_speech} sound cuts "
               f"({seconds['sound'] / 60:.1f} min); the recordings are read where the package installed them "
               "(not copied).\n")
    return out


def resolve_data(data: str, work_dir: str | Path) -> str:
    """``data`` as a corpus directory: a set name is written into ``work_dir/sets/NAME`` first."""
    if data in SETS and not Path(data).exists():
        return str(write_set(data, Path(work_dir) / "sets" / data))
    return data
