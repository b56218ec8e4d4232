"""The one assembler of training examples: a task template, a cut and a variant -> the example's frames.

:class:`ExampleMaker` resolves each template segment on a cut (which recording, which speaker prompt, which window:
seeded by task, cut id and variant) and builds the example with the one segment encoder (:mod:`unisono.encode`) and
:func:`unisono.tasks.build_example`. Where the values come from is a subclass's job, behind six methods:

- :meth:`~ExampleMaker.codes` ``(recording, spec) -> LongTensor[K, T]``: the codes of a whole recording;
- :meth:`~ExampleMaker.feats` ``(recording, spec) -> HalfTensor[T, D]``: its continuous features;
- :meth:`~ExampleMaker.recording` ``(cut, role)``: the condition recording ``recording.ROLE`` of a cut;
- :meth:`~ExampleMaker.text_segment` ``(spec, cut, variant) -> Segment``: a phones/bpe/midi/text_emb segment;
- :meth:`~ExampleMaker.semantic_segment` ``(spec, cut, rng) -> Segment``: semantic units of an audio source;
- :meth:`~ExampleMaker.span` ``(spec, cut, variant)``: the ``(start_s, end_s)`` a ``mask_span`` segment masks.

``unisono tokenize`` reads them off the corpus (Lhotse cuts, the codec, the tokenizers:
:class:`unisono.data.tokenize.CorpusExampleMaker`); training reads them off a token store
(:class:`unisono.data.store.StoreExampleMaker`, which imports none of soundfile, soxr, lhotse, espeak or a codec).
Both assemble through this class, so an example from the store equals the one tokenize writes (tested).
"""

from __future__ import annotations

import abc
import hashlib
import json
import random
from collections import defaultdict

import torch

from unisono.data.sources import choose_prompt, speaker_of
from unisono.encode import SegmentEncoder
from unisono.errors import UnisonoError
from unisono.tasks import Segment, SegmentSpec, TaskTemplate, build_example
from unisono.vocab import Vocab


def recording_key(obj, spec: SegmentSpec | None = None) -> str:
    """The name of a recording's codes (``"MonoCut:ID"``, ``"Recording:ID"``, ``"@8000Hz"`` appended when ``spec``
    band-limits it): the codes cache (``OUT/.codes``) and the token store file codes under it. An object may carry
    its key (``store_key``, the store's cuts and recordings)."""
    base = getattr(obj, "store_key", None) or f"{type(obj).__name__}:{obj.id}"
    return base + (f"@{spec.resample}Hz" if spec is not None and spec.resample else "")


def span_spec(path: str) -> SegmentSpec:
    """The data source ``path`` (e.g. ``params.original_span``) as a spec :func:`unisono.data.sources.source_value`
    reads."""
    return SegmentSpec(name="span", modality="bpe", source=path)


class ExampleMaker(abc.ABC):
    """Builds the examples of one split's ``cuts`` (objects with ``id``, ``custom`` and ``supervisions`` as Lhotse
    cuts have them) from ``templates`` with ``encoder`` (:class:`SegmentEncoder`); ``seed`` seeds the speaker prompts'
    choice and windows. A subclass supplies the values (see the module doc)."""

    def __init__(self, templates: dict[str, TaskTemplate], vocab: Vocab, encoder: SegmentEncoder, cuts,
                 seed: int = 0):
        self.templates, self.vocab, self.encoder, self.seed = templates, vocab, encoder, seed
        self.cuts = {c.id: c for c in cuts}
        self.by_speaker: dict[str, list] = defaultdict(list)
        for c in sorted(self.cuts.values(), key=lambda c: c.id):
            spk = speaker_of(c)
            if spk is not None:
                self.by_speaker[spk].append(c)

    # --- the values (a subclass's)
    @abc.abstractmethod
    def codes(self, obj, spec: SegmentSpec) -> torch.Tensor:
        """``codes LongTensor[K, T]`` of the whole recording ``obj`` (band-limited as ``spec`` says)."""

    def feats(self, obj, spec: SegmentSpec) -> torch.Tensor:
        """``feats HalfTensor[T, D]`` of the whole recording ``obj`` at the codec's frame rate."""
        raise UnisonoError(f"segment {spec.name} is audio_feat and this data holds no audio features")

    @abc.abstractmethod
    def recording(self, cut, role: str):
        """The condition recording ``role`` of ``cut`` (a one-line error when it has none)."""

    @abc.abstractmethod
    def text_segment(self, spec: SegmentSpec, cut, variant: int) -> Segment:
        """The phones, bpe, midi or text_emb segment ``spec`` of ``cut`` (qa pair ``variant``)."""

    @abc.abstractmethod
    def semantic_segment(self, spec: SegmentSpec, cut, rng: random.Random) -> Segment:
        """The semantic units of ``spec``'s audio source on ``cut``."""

    @abc.abstractmethod
    def span(self, spec: SegmentSpec, cut, variant: int):
        """``(start_s, end_s)``: the frames a ``mask_span`` segment masks."""

    # --- assembly
    def _rng(self, *keys) -> random.Random:
        h = hashlib.sha256(json.dumps([self.seed, *keys]).encode()).digest()
        return random.Random(int.from_bytes(h[:8], "little"))

    def make(self, task: str, cut_id: str, variant: int = 0) -> dict:
        """The example of ``task`` on cut ``cut_id`` (qa pair ``variant``): :func:`unisono.tasks.build_example`'s
        dict (``frames LongTensor[T, K]``, ``loss_mask BoolTensor[T, K]``, ``cond_mask BoolTensor[T]``, ...)."""
        tpl = self.templates[task]
        cut = self.cuts[cut_id]
        rng = self._rng(task, cut_id, variant)
        picks: dict = {}  # one source read by several segments (codec and audio_feat): one recording, one window
        segs = [self.segment(spec, cut, variant, rng, picks) for spec in tpl.segments]
        ex_id = cut_id if tpl.expand is None else f"{cut_id}#{tpl.expand}{variant}"
        return build_example(self.vocab, tpl, segs, ex_id)

    def source(self, spec, cut, rng):
        """The cut or recording that an audio source of ``spec`` reads on ``cut``."""
        kind, key = spec.source_kind, spec.source_key
        if kind == "audio":
            return cut
        if kind == "recording":
            return self.recording(cut, key)
        spk = speaker_of(cut)  # speaker_prompt: another cut of the same speaker, same kind if possible
        if spk is None:
            raise UnisonoError(f"cut {cut.id} has no speaker; a speaker prompt needs one")
        other = choose_prompt(cut, self.by_speaker[spk], rng)
        if other is None:
            raise UnisonoError(f"no other utterance of speaker {spk!r} in this split for the prompt of {cut.id}")
        return other

    @staticmethod
    def window_start(length: int, n: int, spec, rng) -> int:
        """Where a crop of ``n`` steps of ``length`` starts: a random window for prompts, the start otherwise."""
        if spec.seconds is None or length <= n or spec.source_kind != "speaker_prompt":
            return 0
        return rng.randrange(length - n + 1)

    def _pick(self, spec, cut, rng, picks: dict | None, length_of) -> tuple:
        """``(source object, start frame)`` of an audio ``spec`` on ``cut``. With ``picks`` (a dict shared by the
        segments of one example) a source is drawn once and a window once per source and length, so the codec
        and audio_feat segments of one source read the same recording and window; ``length_of(obj)``: the
        recording's length in frames (the same for codes and features: ``ceil(S / hop)``)."""
        picks = {} if picks is None else picks
        if spec.source not in picks:
            picks[spec.source] = self.source(spec, cut, rng)
        obj, key = picks[spec.source], (spec.source, spec.seconds)
        if key not in picks:
            length = length_of(obj)
            n = self.encoder.frames(spec.seconds) if spec.seconds is not None else length
            picks[key] = self.window_start(length, n, spec, rng)
        return obj, picks[key]

    def segment(self, spec, cut, variant: int, rng, picks: dict | None = None) -> Segment:
        """Segment ``spec`` of ``cut`` (qa pair ``variant``) encoded; ``rng`` picks prompts and their windows
        (once per source of an example when ``picks``, a dict, is shared by its segments)."""
        m = spec.modality
        if m == "codec":
            obj, start = self._pick(spec, cut, rng, picks, lambda o: self.codes(o, spec).shape[1])
            span = self.span(span_spec(spec.mask_span), cut, variant) if spec.mask_span else None
            return self.encoder.codec_segment(spec, self.codes(obj, spec), start, span, f"cut {cut.id}")
        if m == "audio_feat":
            obj, start = self._pick(spec, cut, rng, picks, lambda o: self.feats(o, spec).shape[0])
            return self.encoder.feat_segment(spec, self.feats(obj, spec), start)
        if m == "semantic":
            return self.semantic_segment(spec, cut, rng)
        return self.text_segment(spec, cut, variant)
