"""Read the manifests of a corpus made by ``unisono synth`` (see docs/corpus.md)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from unisono.errors import UnisonoError

SPLITS = ("train", "valid", "test")


def _resolve_recording(rec, root: Path):
    """A copy of a lhotse Recording whose relative file paths point into ``root``."""
    sources = []
    changed = False
    for s in rec.sources:
        if s.type == "file" and not os.path.isabs(s.source):
            s = type(s)(type=s.type, channels=s.channels, source=str(root / s.source))
            changed = True
        sources.append(s)
    if not changed:
        return rec

    return replace(rec, sources=sources)


def load_cuts(corpus_dir: str | os.PathLike, split: str):
    """The ``split`` CutSet of ``corpus_dir`` (or of ``corpus_dir/manifests``), with absolute audio paths.

    Both the primary recording of each cut and the condition Recordings in ``cut.custom`` are resolved,
    so ``cut.load_audio()`` and ``cut.custom[role].load_audio()`` work from any working directory.
    """
    from lhotse import CutSet, Recording  # noqa: PLC0415 (lhotse: not on the GPU image)

    root = Path(corpus_dir).resolve()
    if root.name == "manifests" and (root / split / "cuts.jsonl").exists():
        root = root.parent  # given DIR/manifests: paths are still relative to DIR
    path = root / "manifests" / split / "cuts.jsonl"
    if split not in SPLITS:
        raise UnisonoError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not path.exists():
        raise UnisonoError(f"{path} does not exist; is {corpus_dir} a corpus made by `unisono synth`?")
    try:
        cuts = CutSet.from_jsonl(path).to_eager()
    except Exception as e:  # lhotse raises assorted errors for a malformed manifest
        raise UnisonoError(f"cannot read {path}: {e}") from None

    def fix(cut):
        if cut.has_recording:
            cut.recording = _resolve_recording(cut.recording, root)
        if cut.custom:
            for key, value in list(cut.custom.items()):
                if isinstance(value, Recording):
                    cut.custom[key] = _resolve_recording(value, root)
        return cut

    return CutSet.from_cuts(fix(c) for c in cuts)
