"""A checkpoint as a system of the evaluation harness: ``(task, cut) -> (wav, sample_rate) | text``.

The task templates say where each condition of a task comes from (the cut's audio, a condition recording,
another utterance of the speaker, the text, a caption, the score, a question); this adapter reads those
inputs off a corpus cut and runs the :class:`~unisono.inference.Pipeline` on them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from unisono.checkpoint import GENERATION
from unisono.data.sources import source_value
from unisono.eval.corpus import EVAL_SAMPLE_RATE, PromptFinder, cut_audio, load_corpus_cuts, role_audio
from unisono.inference import AudioOutput, Pipeline, input_name
from unisono.options import GenerationOptions


def checkpoint_id(directory: str | Path) -> str:
    """Identity of a checkpoint for the result cache: hash of its config and its weights' size and head."""
    d = Path(directory)
    h = hashlib.sha1((d / "config.json").read_bytes())
    weights = d / "model.safetensors"
    h.update(str(weights.stat().st_size).encode())
    with open(weights, "rb") as f:
        h.update(f.read(1 << 20))
    if (d / GENERATION).exists():  # the checkpoint's default sampling options change its outputs
        h.update((d / GENERATION).read_bytes())
    return h.hexdigest()[:16]


class PipelineSystem:
    """Generates each task's output for a corpus cut with a checkpoint (seeded, options per task)."""

    def __init__(self, pipe: Pipeline, corpus_dir: str | Path, split: str, seed: int = 0,
                 options: dict[str, GenerationOptions] | None = None):
        self.pipe, self.seed, self.options = pipe, seed, options or {}
        self.prompts = PromptFinder(Path(corpus_dir), split, load_corpus_cuts(corpus_dir, split))

    def _value(self, spec, cut):
        kind, key = spec.source_kind, spec.source_key
        sup = cut.supervisions[0] if cut.supervisions else None
        if kind == "audio":
            return (cut_audio(cut), EVAL_SAMPLE_RATE)
        if kind == "recording":
            wav = role_audio(cut, key)
            return None if wav is None else (wav, EVAL_SAMPLE_RATE)
        if kind == "speaker_prompt":
            other = self.prompts.find(cut)
            return None if other is None else (cut_audio(other), EVAL_SAMPLE_RATE)
        if kind == "phones":  # the pipeline makes phones from the text
            return sup.text if sup is not None else None
        value = source_value(spec, cut)
        return json.dumps(value) if kind == "params" and value is not None else value

    def inputs_for(self, task: str, cut) -> dict | None:
        tpl = self.pipe.templates[task]
        inputs = {}
        for spec in tpl.conditions:
            value = self._value(spec, cut)
            if value is None:
                return None
            inputs[input_name(spec, tpl)] = value
            if spec.mask_span:
                span = ((cut.custom or {}).get("params") or {}).get(spec.mask_span.split(".", 1)[1])
                if span is None:
                    return None
                inputs[f"{spec.name}_span"] = f"{span[0]},{span[1]}"
        return inputs

    def __call__(self, task: str, cut):
        if task not in self.pipe.tasks:
            return None
        inputs = self.inputs_for(task, cut)
        if inputs is None:
            return None
        options = self.options.get(task) or self.pipe.default_options(task).with_(seed=self.seed)
        if self.pipe.templates[task].speech and cut.duration:
            options = options.with_(max_duration=min(options.max_duration, 2.0 * cut.duration + 1.0))
        out = self.pipe.generate(task, options=options, **inputs)
        if isinstance(out, AudioOutput):
            return (out.wav, out.sample_rate)
        return out.text


class CodecResynthesisSystem:
    """The ceiling of any model over a checkpoint's tokens: the reference audio encoded with the checkpoint's
    codec at its ``num_codebooks`` and decoded again (``None`` for text tasks). An output of the model can
    only be as good as this, whatever the language model learns."""

    def __init__(self, pipe: Pipeline):
        self.pipe = pipe

    def __call__(self, task: str, cut):
        # a metric's evaluator loads when the metric is used
        from unisono.eval.metrics.common import at_rate  # noqa: PLC0415

        if task not in self.pipe.templates or self.pipe.templates[task].output != "audio":
            return None
        sr = self.pipe.sample_rate
        wav = torch.as_tensor(at_rate(cut_audio(cut), EVAL_SAMPLE_RATE, sr), dtype=torch.float32)
        with torch.inference_mode():
            codes = torch.as_tensor(self.pipe.codec.encode(wav.reshape(1, 1, -1)))[:, : self.pipe.vocab.num_codebooks]
            out = self.pipe.codec.decode(codes.long())[0, 0].float().cpu().numpy()
        return out, sr
