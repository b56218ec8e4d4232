"""One task of one checkpoint, as the language model sees it: the public seam of inference.

:class:`TaskIO` turns a task's user-facing inputs into prompt frames and sampled frames into an output:

- :meth:`TaskIO.prepare` ``(inputs, options) -> PreparedPrompt``: conditions encoded by the one segment
  encoder (:mod:`unisono.encode`), the prompt and its unconditional twin, the output's length bounds (the
  template's length rule);
- :meth:`TaskIO.sample` ``(prepared, options, seeds) -> frames [B, T, K]``: the one mapping of generation
  options onto :meth:`unisono.lm.UnisonoLM.generate` (stream masks, or a reasoning task's phases; CFG);
- :meth:`TaskIO.decode` ``(frames [T, K]) -> Decoded`` (plans, output frames, target segments) and
  :meth:`TaskIO.finish` ``(frames [T, K]) -> AudioOutput | TextOutput``.

The pipeline, streaming, listen-and-revise, preference tuning (DPO) and the trainer's audio sampler all go
through it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from unisono import audio as A
from unisono.encode import SegmentEncoder
from unisono.errors import UnisonoError
from unisono.features import FeatureEncoder, encoder_from_config
from unisono.inference.types import AudioOutput, TextOutput, check_input_names, input_name, task_spec
from unisono.lm.decoding import Phase
from unisono.options import GenerationOptions
from unisono.tasks import (
    MAX_FRAMES_PER_PHONE,
    MIN_FRAMES_PER_PHONE,
    PHONE_SLACK_FRAMES,
    SAME_LENGTH_RATIO,
    Segment,
    TaskTemplate,
    build_example,
    example_features,
)
from unisono.text.g2p import phonemize

TEXT_TARGET_MAX_TOKENS = 256
PLAN_MAX_TOKENS = 128  # a reasoning task's plan is ended (forced) after this many tokens
PROMPT_MARGIN_SECONDS = 1.0  # audio kept past a cropped condition's length before encoding (codec context)


def until_end(frames: torch.Tensor, end_id: int) -> torch.Tensor:
    """Generated ``frames [T, K]`` up to (without) the first frame whose stream 0 is ``end_id``."""
    hits = (frames[:, 0] == end_id).nonzero()
    return frames[: int(hits[0, 0])] if len(hits) else frames


def target_phases(vocab, template: TaskTemplate, plan_max_tokens: int = PLAN_MAX_TOKENS) -> list[Phase] | None:
    """The LM's generation phases of a template with a plan: one per target segment, each with its modality's
    mask and end token; a plan ends (forced) after ``plan_max_tokens``. None for a one-segment target."""
    if not template.plan:
        return None
    out = []
    for i, seg in enumerate(template.targets):
        last = i == len(template.targets) - 1
        out.append(Phase(vocab.generation_mask(seg.modality), vocab.end_id(seg.modality),
                         end_frame=None if last else vocab.token_frame(vocab.end_id(seg.modality)),
                         start_frame=None if i == 0 else vocab.token_frame(vocab.start_id(seg.modality)),
                         max_frames=None if last else plan_max_tokens))
    return out


@dataclass
class PreparedPrompt:
    """A request made ready for the model: ``prompt [T0, K]`` (``<start> <task> conditions`` and the first
    target's start token), ``uncond [T0, K]`` (the same with the condition frames padded: classifier-free
    guidance's unconditional prompt), at most ``max_new`` and no end before ``min_new`` generated frames,
    the encoded ``conditions`` (template order), each audio condition's ``audio`` (``[1, S]`` at the
    codec's rate) and, for a template with ``audio_feat`` conditions, ``feats [T0, D]`` beside the prompt (the
    features at its placeholder frames, zeros elsewhere)."""

    prompt: torch.Tensor
    uncond: torch.Tensor
    max_new: int
    min_new: int
    conditions: list[Segment]
    audio: dict[str, torch.Tensor] = field(default_factory=dict)
    feats: torch.Tensor | None = None


def feature_encoder_for(template: TaskTemplate, codec, lm) -> FeatureEncoder | None:
    """The frozen encoder of a template's ``audio_feat`` conditions: the one the model names
    (``lm.cfg.feature_encoder``, rebuilt with the checkpoint's codec); None for a template without them."""
    if not any(c.modality == "audio_feat" for c in template.conditions):
        return None
    desc = getattr(getattr(lm, "cfg", None), "feature_encoder", None)
    if not desc:
        raise UnisonoError(f"task {template.name!r} reads audio features, but this model names no feature encoder "
                           "(a model trained with feature_dim and a feature_encoder reads them)")
    return encoder_from_config(desc, codec)


@dataclass
class Decoded:
    """Generated frames taken apart: the ``plans`` (texts), the output segment's ``body [n, K]``, whether it
    ``ended`` (an end token was sampled), and the ``targets`` as segments (plans, then the output)."""

    plans: list[str]
    body: torch.Tensor
    ended: bool
    targets: list[Segment]


class TaskIO:
    """Inputs -> prompt -> frames -> output for ``template`` with one checkpoint's parts."""

    def __init__(self, template: TaskTemplate, vocab, tokenizers, codec, lm, language: str = "en-us",
                 default_inputs: dict[str, Path] | None = None):
        self.template, self.vocab, self.tok, self.codec, self.lm = template, vocab, tokenizers, codec, lm
        self.language = language
        self.default_inputs = default_inputs or {}
        self.spec = task_spec(template)
        self.encoder = SegmentEncoder(vocab, tokenizers, codec, feature_encoder_for(template, codec, lm))
        self.sample_rate = int(codec.sample_rate)

    @property
    def task(self) -> str:
        return self.template.name

    # -- inputs
    def check_inputs(self, inputs: dict) -> dict:
        """``inputs`` with ``audio`` renamed to the task's only audio input; unknown names refused
        (:func:`unisono.inference.types.check_input_names`)."""
        return check_input_names(self.spec, inputs)

    def load_audio(self, name: str, value) -> torch.Tensor:
        """An audio input (a file path, ``(wav, sample_rate)`` or a float array at the codec's rate) ->
        ``wav [1, S]`` float32 at the codec's rate."""
        if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
            wav, _ = A.load(value, sample_rate=self.sample_rate)
            return wav
        if isinstance(value, tuple) and len(value) == 2:
            wav, sr = value
            wav = A.resample(np.asarray(wav, dtype=np.float32).reshape(-1), int(sr), self.sample_rate)
            return torch.from_numpy(np.ascontiguousarray(wav))[None]
        arr = np.asarray(value, dtype=np.float32).reshape(-1)
        if arr.size == 0:
            raise UnisonoError(f"audio input {name!r} is empty")
        return torch.from_numpy(arr)[None]

    def _value(self, spec, inputs: dict):
        name = input_name(spec, self.template)
        value = inputs.get(name)
        if value is None and name in self.default_inputs:
            value = self.default_inputs[name]
        if value is None:
            raise UnisonoError(f"task {self.task!r} needs the input {name!r} ({self.spec.inputs[name]})")
        return value

    @staticmethod
    def _span(spec, inputs: dict) -> tuple[float, float] | None:
        if not spec.mask_span:
            return None
        span = inputs.get(f"{spec.name}_span")
        if span is None:
            raise UnisonoError(f"this task needs {spec.name}_span: 'start,end' in seconds of the words to replace")
        try:
            start, end = (float(x) for x in str(span).replace(" ", "").split(","))
        except ValueError:
            raise UnisonoError(f"{spec.name}_span must be 'start,end' in seconds, got {span!r}") from None
        return start, end

    def condition(self, spec, inputs: dict, lyric_phones: str | None = None) -> tuple[Segment, torch.Tensor | None]:
        """One condition encoded: ``(segment, wav [1, S] or None)``."""
        value = self._value(spec, inputs)
        name = input_name(spec, self.template)
        if spec.is_audio_source:
            wav = self.load_audio(name, value)
            if spec.modality == "semantic":
                return self.encoder.semantic_segment(spec, wav), wav
            if spec.modality == "audio_feat":
                return self.encoder.audio_feat_segment(spec, wav), wav
            keep = wav
            if spec.seconds is not None:  # encode what the crop keeps, with some context after it
                keep = wav[:, : int((spec.seconds + PROMPT_MARGIN_SECONDS) * self.sample_rate)]
            codes = self.encoder.codes(keep, spec.resample)
            return self.encoder.codec_segment(spec, codes, 0, self._span(spec, inputs), f"input {name!r}"), wav
        if not isinstance(value, str) or not value.strip():
            raise UnisonoError(f"text input {name!r} of task {self.task!r} is empty")
        if spec.modality == "phones":
            return self.encoder.phones_segment(self.phones(value), f"input {name!r}"), None
        if spec.modality == "midi":
            try:
                notes = json.loads(value)
            except ValueError:
                raise UnisonoError(
                    f"{name!r} must be JSON notes [[midi_pitch, start_s, end_s, syllable], ...]"
                ) from None
            return self.encoder.midi_segment(notes, lyric_phones), None
        return self.encoder.text_segment(spec, value, what=f"input {name!r}"), None

    def phones(self, text: str) -> str:
        """The phone string of ``text`` in this checkpoint's language."""
        return phonemize([text], self.language)[0]

    # -- prompt
    def prepare(self, inputs: dict, options: GenerationOptions) -> PreparedPrompt:
        """The prompt of one request (inputs checked, conditions encoded, output length bounded)."""
        inputs = self.check_inputs(inputs)
        tpl = self.template
        lyric = None
        phone_specs = [c for c in tpl.conditions if c.modality == "phones"]
        if any(c.modality == "midi" for c in tpl.conditions) and phone_specs:
            lyric = self.phones(str(self._value(phone_specs[0], inputs)))
        segs, wavs = [], {}
        for spec in tpl.conditions:
            seg, wav = self.condition(spec, inputs, lyric)
            segs.append(seg)
            if wav is not None:
                wavs[spec.name] = wav
        empty = [Segment("codec", codes=torch.zeros(self.vocab.num_codebooks, 0, dtype=torch.long))
                 if s.modality == "codec" else Segment(s.modality, ids=[]) for s in tpl.targets]
        ex = build_example(self.vocab, tpl, segs + empty)
        # the example ends with (<m_start> <m_end>) per target segment, then <end>: the prompt stops after the
        # first target's start token
        cut = 2 * len(tpl.targets)
        prompt = ex["frames"][:-cut]
        uncond = prompt.clone()
        uncond[ex["cond_mask"][:-cut]] = self.vocab.pad_id
        min_new, max_new = self.length_bounds(segs, wavs, options)
        room = self.max_frames() - prompt.shape[0]
        if room < 2:
            raise UnisonoError(f"the inputs of this {self.task} request take {prompt.shape[0]} frames, leaving no "
                               f"room in the model's context of {self.max_frames()} frames; use shorter inputs")
        max_new = max(1, min(max_new, room))
        feats = example_features(self.vocab, ex)
        return PreparedPrompt(prompt, uncond, max_new, min(min_new, max_new - 1), segs, wavs,
                              None if feats is None else feats[:-cut])

    def length_bounds(self, segs: list[Segment], wavs: dict, options: GenerationOptions) -> tuple[int, int]:
        """``(min_new, max_new)`` generated frames by the template's length rule (plans included)."""
        tpl = self.template
        min_new = 0
        if tpl.output == "audio":
            fr = float(self.codec.frame_rate)
            max_new = int(options.max_duration * fr) + 1
            rule, name = tpl.length_rule()
            if rule == "input":
                frames_in = wavs[name].shape[-1] / self.sample_rate * fr
                max_new = min(max_new, int(frames_in * SAME_LENGTH_RATIO[1]) + 5)
                min_new = int(frames_in * SAME_LENGTH_RATIO[0])
            elif rule == "phones":
                phones = sum(len(sg.ids) for sg, sp in zip(segs, tpl.conditions) if sp.modality == "phones")
                min_new = int(phones * MIN_FRAMES_PER_PHONE)
                if not any(sp.modality == "midi" for sp in tpl.conditions):  # a score sets its own length
                    max_new = min(max_new, int(phones * MAX_FRAMES_PER_PHONE) + PHONE_SLACK_FRAMES)
        else:
            max_new = TEXT_TARGET_MAX_TOKENS
        return min_new, max_new + len(tpl.plan) * (PLAN_MAX_TOKENS + 2)  # a plan, its end and the next start

    def max_frames(self) -> int:
        """Frames (prompt + generated) that fit the model's positions (:meth:`unisono.lm.UnisonoLM.max_frames`)."""
        return self.lm.max_frames()

    # -- sampling
    def sample(self, prepared: list[PreparedPrompt], options: GenerationOptions, seeds: list[int] | None = None,
               lm=None, on_frame=None) -> torch.Tensor:
        """New frames ``LongTensor [B, T, K]`` (on the CPU) for prompts of equal length, one row each; row ``b``
        samples with its own generator seeded with ``seeds[b]`` (default ``options.seed``), so a row equals
        the same request run alone. ``lm``: the model to sample from (default this checkpoint's);
        ``on_frame(n, tokens [B, K])`` is called after each frame."""
        lm = self.lm if lm is None else lm
        if len({p.prompt.shape[0] for p in prepared}) != 1:
            raise UnisonoError("prompts sampled together must have the same length; group them first")
        seeds = [options.seed] * len(prepared) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != len(prepared):
            raise UnisonoError(f"{len(seeds)} seeds for {len(prepared)} prompts; give one seed per prompt")
        dev = next(lm.parameters()).device
        prompt = torch.stack([p.prompt for p in prepared]).to(dev)
        uncond = torch.stack([p.uncond for p in prepared]).to(dev) if options.guidance_scale != 1.0 else None
        feats = None if prepared[0].feats is None else torch.stack([p.feats for p in prepared]).to(dev)
        phases = target_phases(self.vocab, self.template)
        modality = self.template.target.modality
        ends = {"phases": phases} if phases else {"stream_mask": self.vocab.generation_mask(modality),
                                                  "end_id": self.vocab.end_id(modality)}
        with torch.inference_mode():
            new = lm.generate(prompt, max_new_frames=max(p.max_new for p in prepared), **ends,
                              **options.sampling(), uncond_prompt_frames=uncond, seed=seeds, on_frame=on_frame,
                              min_new_frames=prepared[0].min_new, feats=feats)
        return new.cpu()

    # -- outputs
    def text(self, modality: str, body: torch.Tensor) -> str:
        """The text of token frames ``body [n, K]`` of a bpe or phones segment."""
        ids = [i for i in self.vocab.to_local(modality, body[:, 0]).tolist() if i >= 0]
        return self.tok.bpe.decode(ids) if modality == "bpe" else self.tok.phones.decode(ids)

    def decode(self, frames: torch.Tensor) -> Decoded:
        """Generated ``frames [T, K]`` taken apart into plans and the output segment."""
        plans, targets = [], []
        for seg in self.template.plan:
            body = until_end(frames, self.vocab.end_id(seg.modality))
            plans.append(self.text(seg.modality, body))
            targets.append(Segment(seg.modality, ids=[i for i in self.vocab.to_local(seg.modality, body[:, 0]).tolist()
                                                       if i >= 0]))
            frames = frames[body.shape[0] + 2 :]  # the plan's end frame and the next segment's start frame
        modality = self.template.target.modality
        body = until_end(frames, self.vocab.end_id(modality))
        if modality == "codec":
            targets.append(Segment("codec", codes=self.vocab.codec_codes(body)))
        else:
            targets.append(Segment(modality, ids=[i for i in self.vocab.to_local(modality, body[:, 0]).tolist()
                                                  if i >= 0]))
        return Decoded(plans, body, body.shape[0] < frames.shape[0], targets)

    def codec_decode(self, codes: torch.Tensor) -> np.ndarray:
        """``codes [K, T]`` -> float32 ``[S]`` at the codec's rate (empty for no frames)."""
        if codes.shape[-1] == 0:
            return np.zeros(0, np.float32)
        dev = next(self.codec.parameters()).device if hasattr(self.codec, "parameters") else "cpu"
        with torch.inference_mode():
            wav = self.codec.decode(codes[None].to(dev))[0, 0]
        return np.ascontiguousarray(wav.float().cpu().numpy())

    def finish(self, frames: torch.Tensor) -> AudioOutput | TextOutput:
        """The output of generated ``frames [T, K]``."""
        d = self.decode(frames)
        plan = "\n".join(d.plans) if self.template.plan else None
        if self.template.output == "audio":
            codes = d.targets[-1].codes
            info = {"frames": int(codes.shape[-1]), "ended": d.ended}
            if plan is not None:
                info["plan"] = plan
            return AudioOutput(self.codec_decode(codes), self.sample_rate, self.task, info, plan)
        info = {"tokens": int(d.body.shape[0]), "ended": d.ended}
        if plan is not None:
            info["plan"] = plan
        return TextOutput(self.text(self.template.target.modality, d.body), self.task, info)

    def example(self, conditions: list[Segment], decoded: Decoded, example_id: str = "") -> dict:
        """The training example of a sampled output (DPO's chosen and rejected sequences): the template's
        frames with its loss mask, trimmed after the last frame that carries loss; an output that never ended
        (cut at the length limit) has no loss on its end token, which it never sampled."""
        ex = build_example(self.vocab, self.template, list(conditions) + list(decoded.targets), example_id)
        frames, mask = ex["frames"], ex["loss_mask"].clone()
        if not decoded.ended:  # the layout ends with <m_end> <end>
            mask[frames.shape[0] - 2] = False
        last = int(mask.any(-1).nonzero()[-1, 0]) + 1 if bool(mask.any()) else frames.shape[0]
        return {"id": example_id, "task": self.task, "frames": frames[:last], "loss_mask": mask[:last],
                "cond_mask": ex["cond_mask"][:last]}
