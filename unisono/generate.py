"""The high-level pipeline interface: task + inputs -> audio or text.

This module holds the types every front end shares (Python API, CLI, HTTP server, web page):
:class:`TaskSpec` describes what a task takes and returns, :class:`GenerationOptions` the sampling
options, :class:`AudioOutput` / :class:`TextOutput` what comes back. A pipeline is any object with

- ``tasks: dict[str, TaskSpec]`` and ``sample_rate`` (Hz of the audio it returns);
- ``generate_batch(task, inputs: list[dict], options: GenerationOptions, cancel=None) -> list[output]``
  where each ``inputs`` dict maps an input name to ``str`` (text inputs) or
  ``(wav float32 ndarray [S], sample_rate)`` (audio inputs), and ``cancel`` is an optional
  ``threading.Event`` that, once set, makes generation stop early with :class:`GenerationCancelled`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
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


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling options. ``max_duration`` in seconds of output audio (or bounds text length);
    ``guidance_scale`` 1.0 disables classifier-free guidance; ``seed`` makes sampling reproducible."""

    top_k: int = 30
    top_p: float = 1.0
    temperature: float = 1.0
    guidance_scale: float = 3.0
    seed: int = 0
    max_duration: float = 10.0

    def validate(self, max_duration_limit: float | None = None) -> "GenerationOptions":
        if self.top_k < 0:
            raise UnisonoError(f"top_k must be >= 0 (0 = no limit), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise UnisonoError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 < self.temperature <= 10.0:
            raise UnisonoError(f"temperature must be in (0, 10], got {self.temperature}")
        if not 0.0 <= self.guidance_scale <= 20.0:
            raise UnisonoError(f"guidance_scale must be in [0, 20], got {self.guidance_scale}")
        if not self.max_duration > 0:
            raise UnisonoError(f"max_duration must be positive seconds, got {self.max_duration}")
        if max_duration_limit is not None and self.max_duration > max_duration_limit:
            raise UnisonoError(f"max_duration {self.max_duration:g} s is over this server's limit of "
                               f"{max_duration_limit:g} s; ask for less")
        return self

    def with_(self, **changes) -> "GenerationOptions":
        return replace(self, **changes)


@dataclass
class AudioOutput:
    """Generated audio: ``wav`` float32 ``[S]`` at ``sample_rate`` Hz."""

    wav: np.ndarray
    sample_rate: int
    task: str = ""
    info: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.wav.shape[-1] / self.sample_rate


@dataclass
class TextOutput:
    """Generated text (transcripts, captions, answers)."""

    text: str
    task: str = ""
    info: dict = field(default_factory=dict)
