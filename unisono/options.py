"""Generation options and their defaults: one source per output kind.

:data:`OUTPUT_DEFAULTS` holds the built-in defaults of tasks whose output is audio and of tasks whose output
is text; a checkpoint may change them (``generation.json``, checked by :func:`check_option_defaults`), and a
request's own options win over both. :func:`default_options` is the one place that combines them: the
pipeline, the CLI, the HTTP server (its OpenAPI schema and ``/tasks``) and the evaluation all use it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

from unisono.errors import UnisonoError

OutputKind = Literal["audio", "text"]

# The built-in defaults per output kind. Audio: sampling with top-k 30, guidance off (a checkpoint's
# generation.json sets the scale measured best for it); text: greedy.
OUTPUT_DEFAULTS: dict[str, dict] = {
    "audio": {"top_k": 30, "top_p": 1.0, "temperature": 1.0, "guidance_scale": 1.0, "seed": 0, "max_duration": 10.0},
    "text": {"top_k": 1, "top_p": 1.0, "temperature": 1.0, "guidance_scale": 1.0, "seed": 0, "max_duration": 10.0},
}


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling options. ``top_k`` 0 = no limit; ``top_p`` 1.0 = off; ``guidance_scale`` 1.0 disables
    classifier-free guidance; ``seed`` makes sampling reproducible; ``max_duration`` in seconds of output
    audio (bounds text length too). Field defaults are those of audio outputs (:data:`OUTPUT_DEFAULTS`)."""

    top_k: int = OUTPUT_DEFAULTS["audio"]["top_k"]
    top_p: float = OUTPUT_DEFAULTS["audio"]["top_p"]
    temperature: float = OUTPUT_DEFAULTS["audio"]["temperature"]
    guidance_scale: float = OUTPUT_DEFAULTS["audio"]["guidance_scale"]
    seed: int = OUTPUT_DEFAULTS["audio"]["seed"]
    max_duration: float = OUTPUT_DEFAULTS["audio"]["max_duration"]

    def validate(self, max_duration_limit: float | None = None) -> GenerationOptions:
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

    def with_(self, **changes) -> GenerationOptions:
        return replace(self, **changes)

    def sampling(self) -> dict:
        """These options as keyword arguments of :meth:`unisono.lm.UnisonoLM.generate` (the one mapping):
        ``top_k``/``top_p`` None when off, ``temperature``, ``cfg_scale``."""
        return {"top_k": self.top_k or None, "top_p": self.top_p if self.top_p < 1.0 else None,
                "temperature": self.temperature, "cfg_scale": self.guidance_scale}


OPTION_NAMES = tuple(f.name for f in fields(GenerationOptions))


def default_options(kind: OutputKind, checkpoint_defaults: dict | None = None) -> GenerationOptions:
    """The defaults of an output ``kind`` (``"audio"`` or ``"text"``), changed by a checkpoint's
    ``generation.json`` (``checkpoint_defaults``: ``{"audio": {...}, "text": {...}}``)."""
    if kind not in OUTPUT_DEFAULTS:
        raise UnisonoError(f"output kind must be one of {', '.join(OUTPUT_DEFAULTS)}, got {kind!r}")
    return GenerationOptions(**{**OUTPUT_DEFAULTS[kind], **((checkpoint_defaults or {}).get(kind) or {})})


def check_option_defaults(spec: dict, where: str) -> dict:
    """``{"audio"|"text": {option: value}}`` checked (names, then values; ``seed`` is a request's own);
    one-line errors naming ``where``."""
    names = set(OPTION_NAMES) - {"seed"}
    if not isinstance(spec, dict) or set(spec) - set(OUTPUT_DEFAULTS):
        raise UnisonoError(f"{where}: expected {{'audio': {{...}}, 'text': {{...}}}}, got {spec!r}")
    for kind, opts in spec.items():
        bad = sorted(set(opts or {}) - names) if isinstance(opts, dict) else [repr(opts)]
        if bad:
            raise UnisonoError(f"{where}: unknown option(s) {', '.join(bad)} for {kind}; "
                               f"choose from {', '.join(sorted(names))}")
        default_options(kind, {kind: opts}).validate()
    return {k: dict(v) for k, v in spec.items() if v}
