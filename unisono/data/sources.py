"""Where a template condition's value comes from on a Lhotse cut: the one source resolver.

A template names each segment's source (``audio``, ``recording.ROLE``, ``speaker_prompt``, ``text``,
``phones``, ``custom.KEY``, ``params.KEY``, ``qa.question``/``qa.answer``, ``plan.KIND``; see tasks.yaml).
:func:`source_value` reads the text and data sources; :func:`choose_prompt` picks the other utterance a
speaker prompt comes from. Tokenization (training examples) and the evaluation / preference tuning (inference
inputs read off corpus cuts) both use them.
"""

from __future__ import annotations

import random

from unisono.errors import UnisonoError
from unisono.reasoning import build_plan
from unisono.tasks import SegmentSpec


def speaker_of(cut) -> str | None:
    """The speaker of a cut's first supervision (None when it has none)."""
    if cut.supervisions and cut.supervisions[0].speaker:
        return str(cut.supervisions[0].speaker)
    return None


def source_value(spec: SegmentSpec, cut, variant: int = 0):
    """The value of a text or data source of a template on a Lhotse cut (``text``, ``phones``,
    ``custom.KEY``, ``params.KEY``, ``qa.question``/``qa.answer`` of pair ``variant``, ``plan.KIND``: a
    plan written from the cut's metadata by :func:`unisono.reasoning.build_plan`); None if absent."""
    kind, key = spec.source_kind, spec.source_key
    sup = cut.supervisions[0] if cut.supervisions else None
    custom = cut.custom or {}
    if kind == "text":
        return sup.text if sup is not None else None
    if kind == "phones":
        return (sup.custom or {}).get("phones") if sup is not None else None
    if kind == "custom":
        return custom.get(key)
    if kind == "params":
        return (custom.get("params") or {}).get(key)
    if kind == "qa":
        qa = custom.get("qa") or []
        if variant >= len(qa) or len(qa[variant]) != 2:
            return None
        return qa[variant][0 if key == "question" else 1]
    if kind == "plan":
        return build_plan(key, cut)
    raise UnisonoError(f"source {spec.source!r} is not a text or data source")


def choose_prompt(cut, candidates: list, rng: random.Random | None = None, other_text: bool = False):
    """The utterance a speaker prompt of ``cut`` comes from: one of ``candidates`` (cuts of its speaker, in
    any order), never ``cut`` itself, of the same kind when there is one (``other_text``: only cuts that say
    something else). A seeded choice of ``rng`` (training), or the first by id (evaluation); None when there
    is no candidate."""
    kind = (cut.custom or {}).get("kind")
    text = cut.supervisions[0].text if cut.supervisions else None
    others = sorted((c for c in candidates if c.id != cut.id), key=lambda c: c.id)
    if other_text:
        others = [c for c in others if not c.supervisions or c.supervisions[0].text != text]
    pool = [c for c in others if (c.custom or {}).get("kind") == kind] or others
    if not pool:
        return None
    return rng.choice(pool) if rng is not None else pool[0]
