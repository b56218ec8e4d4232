"""The types every front end shares (Python API, CLI, HTTP server, web page).

:class:`TaskSpec` describes what a task takes and returns, :class:`AudioOutput` / :class:`TextOutput` what
comes back (sampling options: :class:`unisono.options.GenerationOptions`). A pipeline is any object with

- ``tasks: dict[str, TaskSpec]`` and ``sample_rate`` (Hz of the audio it returns);
- ``generate_batch(task, inputs: list[dict], options: GenerationOptions, cancel=None) -> list[output]``
  where each ``inputs`` dict maps an input name to ``str`` (text inputs) or
  ``(wav float32 ndarray [S], sample_rate)`` (audio inputs), and ``cancel`` is an optional
  ``threading.Event`` that, once set, makes generation stop early with :class:`GenerationCancelled`;
- optionally ``default_options(task) -> GenerationOptions``.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from unisono.errors import UnisonoError

InputKind = Literal["text", "audio"]


class GenerationCancelled(UnisonoError):
    """Generation was stopped by its ``cancel`` event (a timeout or a client that went away)."""


@dataclass(frozen=True)
class TaskSpec:
    """What a task takes and gives: ``inputs`` maps each input name to ``"text"`` or ``"audio"``."""

    name: str
    description: str
    inputs: dict[str, InputKind]
    output: Literal["audio", "text"]
    optional: tuple[str, ...] = ()

    def to_json(self) -> dict:
        d = asdict(self)
        d["optional"] = list(self.optional)
        return d


@dataclass
class AudioOutput:
    """Generated audio: ``wav`` float32 ``[S]`` at ``sample_rate`` Hz (``[C, S]``, e.g. 48 kHz stereo, once the
    enhancement stage has run); ``plan``: the text plan a reasoning task wrote before the audio in the same pass
    (None for other tasks)."""

    wav: np.ndarray
    sample_rate: int
    task: str = ""
    info: dict = field(default_factory=dict)
    plan: str | None = None

    @property
    def duration(self) -> float:
        return self.wav.shape[-1] / self.sample_rate


@dataclass
class TextOutput:
    """Generated text (transcripts, captions, answers)."""

    text: str
    task: str = ""
    info: dict = field(default_factory=dict)


def input_name(spec, template=None) -> str:
    """The user-facing name of a template condition: phones are given as text (``text`` for the condition
    called ``phones``). The conditions of ``template`` that read one audio source (e.g. its codec tokens and its
    continuous features) take one input, named after the first of them."""
    if template is not None and spec.is_audio_source:
        spec = next((c for c in template.conditions if c.source == spec.source), spec)
    if spec.modality == "phones":
        return "text" if spec.name == "phones" else spec.name
    return spec.name


def task_spec(template, defaults=()) -> TaskSpec:
    """The :class:`TaskSpec` of a task template (inputs named as users give them); an input named in
    ``defaults`` (the inputs a checkpoint has a default for, e.g. its default voice) is optional."""
    inputs: dict[str, InputKind] = {}
    for c in template.conditions:
        inputs[input_name(c, template)] = "audio" if c.is_audio_source else "text"
        if c.mask_span:
            inputs[f"{c.name}_span"] = "text"
    optional = tuple(n for n in inputs if n in defaults)
    return TaskSpec(template.name, template.description, inputs, template.output, optional)


def check_input_names(spec: TaskSpec, inputs: dict) -> dict:
    """``inputs`` with ``audio`` renamed to the task's only audio input; an unknown name is refused (with the
    closest input name where one is close)."""
    names = spec.inputs
    audio_names = [n for n, k in names.items() if k == "audio"]
    if "audio" in inputs and "audio" not in names and len(audio_names) == 1:
        inputs = {**inputs, audio_names[0]: inputs["audio"]}
        del inputs["audio"]
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(names), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnisonoError(f"task {spec.name!r} does not take {unknown}{hint}; it takes {list(names)}")
    return inputs
