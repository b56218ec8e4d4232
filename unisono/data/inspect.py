"""``unisono inspect SHARDS --task tts --n 2``: print token sequences in readable form.

Phones and text are decoded back to text, scores to notes, audio segments are summarised (frames,
codebooks, distinct codes, masked frames), so a person can check what a model will be trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from unisono.errors import UnisonoError
from unisono.tasks import decode_example, load_templates
from unisono.text import midi
from unisono.vocab import Vocab


def find_tokenizers(directory: Path) -> Path:
    for d in (directory, directory.parent):
        if (d / "tokenizers" / "phones.json").exists():
            return d / "tokenizers"
    raise UnisonoError(f"no tokenizers/ directory beside {directory}; is it the output of `unisono tokenize`?")


def describe_example(vocab: Vocab, toks, example: dict, templates=None, max_tokens: int = 80,
                     frame_rate: float | None = None) -> str:
    """A multi-line readable rendering of one example (``frame_rate`` in Hz: show audio durations)."""
    templates = templates or load_templates()
    task, segs = decode_example(vocab, example)
    tpl = templates.get(task)
    names = (
        [s.name for s in tpl.segments]
        if tpl and len(tpl.segments) == len(segs)
        else [f"seg{i}" for i in range(len(segs))]
    )
    frames, lm = example["frames"], example["loss_mask"]
    T, K = frames.shape
    lines = [f"{example['id']}  task={task}  frames={T}x{K}  loss frames={int(lm.any(1).sum())}"
             f"  cond frames={int(example['cond_mask'].sum()) if 'cond_mask' in example else '-'}"]
    for i, (name, seg) in enumerate(zip(names, segs)):
        n_cond = len(tpl.conditions) if tpl and len(tpl.segments) == len(segs) else len(segs) - 1
        role = "target" if i >= n_cond else "cond"
        head = f"  [{role}] {name} ({seg.modality})"
        if seg.modality == "codec":
            codes = seg.codes
            valid = codes[0] >= 0
            distinct = [int(torch.unique(codes[k][valid]).numel()) for k in range(codes.shape[0])]
            dur = f" = {codes.shape[1] / frame_rate:.2f} s" if frame_rate else ""
            lines.append(f"{head}: {codes.shape[1]} frames{dur}, "
                         f"{int((~valid).sum())} masked, distinct codes per codebook {distinct}, "
                         f"first frame {codes[:, 0].tolist()}")
        elif seg.modality == "phones":
            lines.append(f"{head} {len(seg.ids)} tokens: {toks.phones.decode(seg.ids[:max_tokens])}")
        elif seg.modality == "bpe":
            lines.append(f"{head} {len(seg.ids)} tokens: {toks.bpe.decode(seg.ids)!r}")
        elif seg.modality == "midi":
            notes = midi.decode_notes(seg.ids)
            shown = ", ".join(f"{p}@{a:.2f}-{b:.2f}s '{toks.phones.decode(ph)}'" for p, a, b, ph in notes[:12])
            lines.append(f"{head} {len(notes)} notes: {shown}")
        elif seg.modality == "semantic":
            lines.append(f"{head} {len(seg.ids)} units: {seg.ids[:max_tokens]}")
        else:
            lines.append(f"{head}: {tuple(seg.vectors.shape)} vectors")
    return "\n".join(lines)
