"""Task templates (declarative, in YAML) and the frame sequences they make.

A template names its conditions and its target, each a :class:`SegmentSpec` with a modality and a
data source (see ``unisono/tasks.yaml``). A training example is the dict

``{"id": str, "task": str, "frames": LongTensor[T, K], "loss_mask": BoolTensor[T, K],
"cond_mask": BoolTensor[T]}`` (+ ``"text_emb": FloatTensor[N, D]`` and/or ``"audio_feat": FloatTensor[N, D]`` when a
condition is continuous: the vectors of that modality's placeholder frames, in frame order)

whose frames follow ``<start> <task:NAME> (<m_start> cond <m_end>)* (<m_start> target <m_end>)+ <end>``.
A template's target is one segment, or a list of segments generated one after another in one pass (a
reasoning task: a text ``plan`` and then the audio, see ``docs/reasoning.md``); the last one is the
task's output (:attr:`TaskTemplate.target`), the ones before it its :attr:`TaskTemplate.plan`.
``loss_mask`` covers every target segment's tokens and end tokens (``loss: all`` in a template: every
segment); ``cond_mask`` marks the condition frames (for condition dropout / classifier-free guidance).
Masked audio frames (``mask_span``) hold ``<mask>`` in every stream.

Audio sources make ``codec`` (tokens), ``semantic`` (units) or ``audio_feat`` (continuous features of a frozen
encoder, :mod:`unisono.features`, one vector per codec frame) segments; a template may list one source twice, e.g.
as codec tokens and as features (each segment needs its own ``name`` then).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from unisono.errors import UnisonoError
from unisono.fileio import load_yaml
from unisono.vocab import CONTINUOUS_MODALITIES, MODALITIES, Vocab

DEFAULT_TEMPLATES = Path(__file__).with_name("tasks.yaml")
SOURCE_KINDS = ("audio", "recording", "speaker_prompt", "text", "phones", "custom", "params", "qa", "plan")
AUDIO_SOURCES = ("audio", "recording", "speaker_prompt")
AUDIO_MODALITIES = ("codec", "semantic", "audio_feat")  # the modalities made from an audio source
_OPTION_KEYS = {"name", "modality", "source", "seconds", "mask_span", "resample"}
TASK_KEYS = {"conditions", "target", "loss", "expand", "description", "kinds", "cuts_from", "length_from", "metrics",
             "baseline_input", "speech"}
# The output-length rule (UniAudio bounds outputs by a ratio of the input): a task with ``length_from`` makes
# 0.8-1.2 x that input's frames; speech from phones at least MIN_FRAMES_PER_PHONE frames per phone token (the
# end token is forbidden before) and, when no score sets the length (singing: 2.6-17 frames per token), at
# most MAX_FRAMES_PER_PHONE per token + PHONE_SLACK_FRAMES. The built-in corpus's TTS targets have 2.1-4.9
# frames per phone token at 50 Hz (median 3.05, 1,234 examples).
SAME_LENGTH_RATIO = (0.8, 1.2)
MIN_FRAMES_PER_PHONE = 2.0
MAX_FRAMES_PER_PHONE = 6.0
PHONE_SLACK_FRAMES = 25


@dataclass(frozen=True)
class SegmentSpec:
    """One condition or target: what modality, from which source, with which options."""

    name: str
    modality: str
    source: str
    seconds: float | None = None
    mask_span: str | None = None
    resample: int | None = None  # Hz: band-limit an audio source by resampling it to this rate and back

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "modality": self.modality, "source": self.source}
        for key in ("seconds", "mask_span", "resample"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        return d

    @property
    def source_kind(self) -> str:
        return self.source.split(".", 1)[0]

    @property
    def source_key(self) -> str | None:
        parts = self.source.split(".", 1)
        return parts[1] if len(parts) == 2 else None

    @property
    def is_audio_source(self) -> bool:
        return self.source_kind in AUDIO_SOURCES


@dataclass(frozen=True)
class TaskTemplate:
    """``target`` is the task's output segment; ``plan`` the target segments generated before it in the same
    pass (empty for a one-segment target); ``cuts_from`` names the task whose cuts serve this one (default:
    the cuts that list this task)."""

    name: str
    conditions: tuple[SegmentSpec, ...]
    target: SegmentSpec
    loss: str = "target"
    expand: str | None = None
    description: str = ""
    kinds: tuple[str, ...] = ()  # cut kinds (cut.custom.kind) that serve this task besides cuts listing it
    plan: tuple[SegmentSpec, ...] = ()
    cuts_from: str | None = None
    # per-task policy (see tasks.yaml): the condition whose length bounds the output, the metrics the
    # evaluation computes, the condition the copy-the-input baseline returns, whether the output is speech
    length_from: str | None = None
    metrics: tuple[str, ...] = ()
    baseline_input: str | None = None
    speech: bool = False

    def condition(self, name: str) -> SegmentSpec:
        """The condition called ``name``."""
        for c in self.conditions:
            if c.name == name:
                return c
        raise UnisonoError(f"task {self.name!r} has no condition {name!r}; it has {[c.name for c in self.conditions]}")

    @property
    def output(self) -> str:
        """``"audio"`` (a codec target) or ``"text"``."""
        return "audio" if self.target.modality == "codec" else "text"

    def length_rule(self) -> tuple[str, str | None]:
        """How the output's length is bounded: ``("input", NAME)`` (0.8-1.2 x the frames of audio condition
        NAME), ``("phones", None)`` (per phone token of the phone conditions; no ceiling when a score sets the
        length), or ``("duration", None)`` (only the requested duration)."""
        if self.length_from is not None:
            return "input", self.length_from
        if self.output == "audio" and any(c.modality == "phones" for c in self.conditions):
            return "phones", None
        return "duration", None

    def to_dict(self) -> dict:
        """The template as its YAML mapping (what :func:`parse_templates` reads back)."""
        d: dict[str, Any] = {"description": self.description,
                             "conditions": [s.to_dict() for s in self.conditions],
                             "target": [x.to_dict() for x in self.targets] if self.plan else self.target.to_dict()}
        for key, default in (("cuts_from", None), ("loss", "target"), ("expand", None), ("length_from", None),
                             ("baseline_input", None), ("speech", False)):
            if getattr(self, key) != default:
                d[key] = getattr(self, key)
        for key in ("kinds", "metrics"):
            if getattr(self, key):
                d[key] = list(getattr(self, key))
        return d

    @property
    def targets(self) -> tuple[SegmentSpec, ...]:
        """Every target segment in generation order (the plan, then the output)."""
        return self.plan + (self.target,)

    @property
    def segments(self) -> tuple[SegmentSpec, ...]:
        return self.conditions + self.targets

    @property
    def serves_cuts_of(self) -> str:
        """The task a cut must list in ``cut.custom.tasks`` to serve this template."""
        return self.cuts_from or self.name

    def serves(self, custom: dict | None) -> bool:
        """Whether a cut with this ``cut.custom`` serves the task: it lists the task (or ``cuts_from``) in
        ``tasks``, or its ``kind`` is one of the template's ``kinds``."""
        custom = custom or {}
        return self.serves_cuts_of in (custom.get("tasks") or []) or custom.get("kind") in self.kinds

    @property
    def modalities(self) -> set[str]:
        return {s.modality for s in self.segments}


def _parse_segment(task: str, d: Any, where: str) -> SegmentSpec:
    if not isinstance(d, dict):
        raise UnisonoError(f"task {task!r}: each {where} must be a mapping with modality and source, got {d!r}")
    unknown = set(d) - _OPTION_KEYS
    if unknown:
        raise UnisonoError(
            f"task {task!r}: unknown key(s) {sorted(unknown)} in a {where}; allowed: {sorted(_OPTION_KEYS)}"
        )
    for key in ("modality", "source"):
        if key not in d:
            raise UnisonoError(f"task {task!r}: a {where} lacks {key!r}")
    spec = SegmentSpec(
        name=str(d.get("name", d["source"])),
        modality=str(d["modality"]),
        source=str(d["source"]),
        seconds=None if d.get("seconds") is None else float(d["seconds"]),
        mask_span=d.get("mask_span"),
        resample=_resample_hz(task, d.get("resample")),
    )
    if spec.modality not in MODALITIES:
        raise UnisonoError(f"task {task!r}: modality {spec.modality!r} unknown; choose one of {', '.join(MODALITIES)}")
    if spec.source_kind not in SOURCE_KINDS:
        raise UnisonoError(f"task {task!r}: source {spec.source!r} unknown; sources: {', '.join(SOURCE_KINDS)}")
    if spec.source_kind in ("recording", "custom", "params", "qa", "plan") and not spec.source_key:
        raise UnisonoError(f"task {task!r}: source {spec.source!r} needs a key, e.g. {spec.source_kind}.NAME")
    audio_modality = spec.modality in AUDIO_MODALITIES
    if audio_modality != spec.is_audio_source:
        raise UnisonoError(
            f"task {task!r}: modality {spec.modality} cannot be made from source {spec.source} "
            "(codec/semantic/audio_feat need an audio source, the others a text or data source)"
        )
    if spec.mask_span and spec.modality != "codec":
        raise UnisonoError(f"task {task!r}: mask_span works on codec segments only")
    if spec.resample and not spec.is_audio_source:
        raise UnisonoError(f"task {task!r}: resample works on audio sources only, not on {spec.source}")
    return spec


def _resample_hz(task: str, value) -> int | None:
    if value is None:
        return None
    try:
        hz = int(value)
    except (TypeError, ValueError):
        hz = 0
    if hz < 1000 or hz != value:
        raise UnisonoError(f"task {task!r}: resample must be a whole number of Hz >= 1000 (e.g. 8000), got {value!r}")
    return hz


def band_limit(wav: torch.Tensor, sample_rate: int, resample_hz: int | None) -> torch.Tensor:
    """``wav [..., S]`` at ``sample_rate`` Hz resampled to ``resample_hz`` and back (same length, content
    above ``resample_hz / 2`` removed): what a template's ``resample`` option does to an audio source.
    Unchanged when ``resample_hz`` is None or not below ``sample_rate``."""
    if not resample_hz or resample_hz >= sample_rate:
        return wav
    from unisono.audio import resample  # noqa: PLC0415 (soundfile/soxr: not on the GPU image)

    x = torch.as_tensor(wav, dtype=torch.float32)
    flat = x.reshape(-1, x.shape[-1])
    y = resample(resample(flat, sample_rate, resample_hz), resample_hz, sample_rate)
    n = x.shape[-1]
    y = y[..., :n] if y.shape[-1] >= n else torch.nn.functional.pad(y, (0, n - y.shape[-1]))
    return y.reshape(x.shape).contiguous()


def parse_templates(data: dict) -> dict[str, TaskTemplate]:
    """Templates from a parsed YAML document ``{"version": 1, "tasks": {name: {...}}}``."""
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise UnisonoError("a task template file must hold a mapping with a 'tasks' mapping")
    out = {}
    for name, t in data["tasks"].items():
        if not isinstance(t, dict) or "target" not in t:
            raise UnisonoError(f"task {name!r} needs a target")
        extra = set(t) - TASK_KEYS
        if extra:
            raise UnisonoError(f"task {name!r}: unknown key(s) {sorted(extra)}; allowed: {sorted(TASK_KEYS)}")
        conds = tuple(_parse_segment(name, c, "condition") for c in (t.get("conditions") or []))
        raw_targets = t["target"] if isinstance(t["target"], list) else [t["target"]]
        if not raw_targets:
            raise UnisonoError(f"task {name!r}: target is an empty list; give one segment or a list of segments")
        targets = tuple(_parse_segment(name, x, "target") for x in raw_targets)
        for i, tg in enumerate(targets):
            if tg.modality in CONTINUOUS_MODALITIES:
                raise UnisonoError(f"task {name!r}: a {tg.modality} (continuous) segment cannot be a target")
            if i and tg.modality == targets[i - 1].modality:
                raise UnisonoError(f"task {name!r}: consecutive target segments must differ in modality "
                                   f"({tg.modality} follows {tg.modality}); the end token of one must not end the next")
        plan, target = targets[:-1], targets[-1]
        cuts_from = t.get("cuts_from")
        if cuts_from is not None and not isinstance(cuts_from, str):
            raise UnisonoError(f"task {name!r}: cuts_from must name a task, got {cuts_from!r}")
        loss = t.get("loss", "target")
        if loss not in ("target", "all"):
            raise UnisonoError(f"task {name!r}: loss must be 'target' or 'all', got {loss!r}")
        expand = t.get("expand")
        if expand not in (None, "qa"):
            raise UnisonoError(f"task {name!r}: expand must be 'qa' or absent, got {expand!r}")
        names = [s.name for s in conds + targets]
        if len(set(names)) != len(names):
            raise UnisonoError(f"task {name!r}: segment names must be unique, got {names} (give a source listed "
                               "twice a `name:` per segment)")
        kinds = t.get("kinds") or []
        if isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds):
            raise UnisonoError(f"task {name!r}: kinds must be a list of cut kinds, e.g. [speech], got {kinds!r}")
        tpl = TaskTemplate(str(name), conds, target, loss, expand, str(t.get("description", "")), tuple(kinds), plan,
                           cuts_from, **_policy(name, t, conds))
        if tpl.length_from is not None and tpl.output != "audio":
            raise UnisonoError(f"task {name!r}: length_from bounds audio outputs; this task answers with text")
        out[str(name)] = tpl
    return out


def _policy(task: str, t: dict, conds: tuple[SegmentSpec, ...]) -> dict:
    """The per-task policy keys of a template mapping, checked (one-line errors)."""
    audio_conds = [c.name for c in conds if c.is_audio_source]
    out: dict[str, Any] = {}
    for key in ("length_from", "baseline_input"):
        v = t.get(key)
        if v is not None and v not in audio_conds:
            raise UnisonoError(f"task {task!r}: {key} must name an audio condition of the task "
                               f"({', '.join(audio_conds) or 'it has none'}), got {v!r}")
        out[key] = v
    metrics = t.get("metrics") or []
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise UnisonoError(f"task {task!r}: metrics must be a list of metric names, e.g. [wer, sim], got {metrics!r}")
    out["metrics"] = tuple(metrics)
    speech = t.get("speech", False)
    if not isinstance(speech, bool):
        raise UnisonoError(f"task {task!r}: speech must be true or false, got {speech!r}")
    out["speech"] = speech
    return out


def load_templates(paths: list[str | os.PathLike] | None = None) -> dict[str, TaskTemplate]:
    """The built-in templates, updated by the templates of ``paths`` (later files win)."""
    out: dict[str, TaskTemplate] = {}
    for p in [DEFAULT_TEMPLATES] + [Path(x) for x in (paths or [])]:
        try:
            data = load_yaml(Path(p).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UnisonoError(f"task template file {p} does not exist") from None
        except yaml.YAMLError as e:
            raise UnisonoError(f"task template file {p} is not valid YAML: {e}") from None
        out.update(parse_templates(data))
    return out


# ------------------------------------------------------------------------------------ segments
@dataclass
class Segment:
    """Encoded content of one segment, in local ids of its modality.

    codec: ``codes LongTensor[K, T]`` (+ ``mask BoolTensor[T]`` for masked frames); phones, bpe,
    semantic: ``ids`` (list of int); midi: ``ids`` as ``[(modality, local_id)]``; text_emb:
    ``vectors FloatTensor[N, D]`` (N text vectors); audio_feat: ``vectors FloatTensor[N, D]`` (N frames at the
    codec's frame rate, from a :class:`unisono.features.FeatureEncoder`).
    """

    modality: str
    ids: list = field(default_factory=list)
    codes: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    vectors: torch.Tensor | None = None


def _segment_frames(vocab: Vocab, seg: Segment) -> torch.Tensor:
    """``LongTensor[n, K]`` of a segment's content (without its start/end tokens)."""
    K = vocab.num_codebooks
    if seg.modality == "codec":
        codes = torch.as_tensor(seg.codes, dtype=torch.long)
        if codes.dim() != 2 or codes.shape[0] < K:
            raise UnisonoError(f"codec segment needs codes [K>={K}, T], got {tuple(codes.shape)}")
        codes = codes[:K]
        frames = torch.stack([vocab.to_global("codec", codes[k], codebook=k) for k in range(K)], dim=1)
        if seg.mask is not None:
            frames[torch.as_tensor(seg.mask, dtype=torch.bool)] = vocab.special_id("<mask>")
        return frames
    if seg.modality in CONTINUOUS_MODALITIES:
        n = int(_vectors(seg).shape[0])
        tok = vocab.placeholder_id(seg.modality)
    elif seg.modality == "midi":
        glob = [int(vocab.to_global(m, i)) for m, i in seg.ids]
        return _token_frames(vocab, torch.tensor(glob, dtype=torch.long))
    else:
        return _token_frames(vocab, vocab.to_global(seg.modality, list(seg.ids)))
    return _token_frames(vocab, torch.full((n,), tok, dtype=torch.long))


def _vectors(seg: Segment) -> torch.Tensor:
    """A continuous segment's ``vectors`` as ``FloatTensor[N, D]`` (one-line error otherwise)."""
    v = None if seg.vectors is None else torch.as_tensor(seg.vectors)
    if v is None or v.dim() != 2 or not v.is_floating_point():
        shape = "None" if v is None else f"{v.dtype} {tuple(v.shape)}"
        raise UnisonoError(f"a {seg.modality} segment needs vectors FloatTensor[N, D], got {shape}")
    return v.float()


def _token_frames(vocab: Vocab, ids: torch.Tensor) -> torch.Tensor:
    K = vocab.num_codebooks
    if vocab.fill == "repeat":
        return ids[:, None].expand(-1, K).clone()
    frames = torch.full((ids.numel(), K), vocab.pad_id, dtype=torch.long)
    frames[:, 0] = ids
    return frames


def build_example(vocab: Vocab, template: TaskTemplate, segments: list[Segment], example_id: str = "") -> dict:
    """The training example of ``segments`` (conditions in template order, then the target segments)."""
    if len(segments) != len(template.segments):
        raise UnisonoError(f"task {template.name} has {len(template.segments)} segments, got {len(segments)}")
    K = vocab.num_codebooks
    pad_mode = vocab.fill == "pad"
    parts: list[torch.Tensor] = []
    loss_parts: list[torch.Tensor] = []
    cond_parts: list[torch.Tensor] = []
    vectors: dict[str, list[torch.Tensor]] = {m: [] for m in CONTINUOUS_MODALITIES}

    def add(frames: torch.Tensor, loss: bool, cond: bool, audio: bool):
        parts.append(frames)
        lm = torch.zeros(frames.shape, dtype=torch.bool)
        if loss:
            if audio or not pad_mode:
                lm[:] = True
            else:
                lm[:, 0] = True
            if audio:  # masked frames are inputs, never targets
                lm &= frames != vocab.special_id("<mask>")
        loss_parts.append(lm)
        cond_parts.append(torch.full((frames.shape[0],), cond, dtype=torch.bool))

    def tok(token_id: int) -> torch.Tensor:
        return vocab.token_frame(token_id)[None]

    add(tok(vocab.special_id("<start>")), False, False, False)
    add(tok(vocab.task_id(template.name)), False, False, False)
    for i, (spec, seg) in enumerate(zip(template.segments, segments)):
        if seg.modality != spec.modality:
            raise UnisonoError(f"task {template.name}: segment {spec.name} must be {spec.modality}, got {seg.modality}")
        is_target = i >= len(template.conditions)
        in_loss = is_target or template.loss == "all"
        cond = not is_target
        add(tok(vocab.start_id(spec.modality)), False, cond, False)
        body = _segment_frames(vocab, seg)
        add(body, in_loss, cond, spec.modality == "codec")
        add(tok(vocab.end_id(spec.modality)), in_loss, cond, False)
        if seg.modality in CONTINUOUS_MODALITIES:
            vectors[seg.modality].append(_vectors(seg))
    add(tok(vocab.special_id("<end>")), False, False, False)
    ex = {
        "id": example_id,
        "task": template.name,
        "frames": torch.cat(parts),
        "loss_mask": torch.cat(loss_parts),
        "cond_mask": torch.cat(cond_parts),
    }
    for m, vs in vectors.items():
        if vs:
            if len({v.shape[1] for v in vs}) > 1:
                raise UnisonoError(f"task {template.name}: the {m} segments have vectors of different sizes "
                                   f"{sorted({v.shape[1] for v in vs})}; one encoder makes them all")
            ex[m] = torch.cat(vs)
    assert ex["frames"].shape[1] == K
    return ex


def example_features(vocab: Vocab, example: dict) -> torch.Tensor | None:
    """``FloatTensor[T, D]`` beside ``example["frames"] [T, K]``: its ``audio_feat`` vectors at its placeholder
    frames (stream 0 ``<audio_feat>``, in order), zeros elsewhere; None when it has no ``audio_feat`` vectors. The
    layout :meth:`unisono.lm.UnisonoLM.generate` reads (``feats``, one row)."""
    vec = example.get("audio_feat")
    if vec is None:
        return None
    rows = (example["frames"][:, 0] == vocab.placeholder_id("audio_feat")).nonzero().squeeze(-1)
    if len(rows) != vec.shape[0]:
        raise UnisonoError(f"example {example.get('id', '?')!r} has {len(rows)} audio_feat frames but "
                           f"{vec.shape[0]} vectors")
    out = torch.zeros(example["frames"].shape[0], vec.shape[1])
    out[rows] = vec.float()
    return out


def split_segments(vocab: Vocab, frames: torch.Tensor) -> tuple[str, list[tuple[str, torch.Tensor]]]:
    """Parse ``frames [T, K]`` into ``(task, [(modality, body_frames [n, K])])`` (inverse of the layout)."""
    frames = torch.as_tensor(frames, dtype=torch.long)
    col = frames[:, 0].tolist()
    if len(col) < 3 or col[0] != vocab.special_id("<start>"):
        raise UnisonoError("sequence does not begin with <start>")
    task = vocab.task_name(col[1])
    starts = {vocab.start_id(m): m for m in MODALITIES}
    out = []
    i = 2
    while i < len(col) and col[i] != vocab.special_id("<end>"):
        if col[i] not in starts:
            raise UnisonoError(f"expected a segment start at frame {i}, got {vocab.name_of(col[i])}")
        m = starts[col[i]]
        end = vocab.end_id(m)
        j = i + 1
        while j < len(col) and col[j] != end:
            j += 1
        if j == len(col):
            raise UnisonoError(f"segment {m} starting at frame {i} has no end token")
        out.append((m, frames[i + 1 : j]))
        i = j + 1
    return task, out


def decode_example(vocab: Vocab, example: dict) -> tuple[str, list[Segment]]:
    """``(task, segments)`` in local ids, the inverse of :func:`build_example` (codec mask frames -> -1)."""
    task, raw = split_segments(vocab, example["frames"])
    segs = []
    vec_off = {m: 0 for m in CONTINUOUS_MODALITIES}
    mask_id = vocab.special_id("<mask>")
    for m, body in raw:
        if m == "codec":
            masked = (body == mask_id).all(dim=1)
            codes = torch.full((vocab.num_codebooks, body.shape[0]), -1, dtype=torch.long)
            for k in range(vocab.num_codebooks):
                codes[k, ~masked] = vocab.to_local("codec", body[~masked, k], codebook=k)
            segs.append(Segment("codec", codes=codes, mask=masked if bool(masked.any()) else None))
        elif m in CONTINUOUS_MODALITIES:
            n = body.shape[0]
            if m not in example or example[m].shape[0] < vec_off[m] + n:
                raise UnisonoError(f"example {example.get('id', '?')!r} has more {m} frames than {m} vectors")
            segs.append(Segment(m, vectors=example[m][vec_off[m] : vec_off[m] + n]))
            vec_off[m] += n
        elif m == "midi":
            segs.append(
                Segment(
                    "midi",
                    ids=[
                        (_mod_of(vocab, int(t)), int(vocab.to_local(_mod_of(vocab, int(t)), int(t))))
                        for t in body[:, 0]
                    ],
                )
            )
        else:
            segs.append(Segment(m, ids=vocab.to_local(m, body[:, 0]).tolist()))
    return task, segs


def _mod_of(vocab: Vocab, token_id: int) -> str:
    r = vocab.range_of(token_id)
    if r not in ("midi", "phones"):
        raise UnisonoError(f"score segment holds a {r} id ({token_id})")
    return r
