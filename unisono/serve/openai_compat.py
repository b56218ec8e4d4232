"""OpenAI's audio API in ``/generate``'s words: the fields of ``POST /v1/audio/speech`` and
``POST /v1/audio/transcriptions`` renamed to a ``tts`` or ``asr`` request that :func:`.parse.check_request`
checks like any other (same limits, same one-line errors), plus what only these routes have: voices, ``speed``
and the answer formats.

- ``model``: any string (OpenAI clients must send one, e.g. ``tts-1``); the server runs its one model and
  names it in the ``X-Model`` header and at ``GET /v1/models``.
- ``voice``: a voice name (or ``{"id": name}``) from :class:`Voices`: ``default``, the checkpoint's own prompt
  (``defaults/prompt.wav``), and any the server was started with (``--voice NAME=FILE``).
- ``speed``: 0.25-4.0, the speech time-scaled after generation at the same pitch
  (:func:`.output.time_stretch`); ``max_duration`` bounds the audio before the change.
- ``language`` (transcriptions): accepted when it is the model's language; ``temperature`` 0 (the default)
  transcribes greedily, above 0 samples at that temperature with no top-k limit.
- unisono's own options (``seed``, ``top_k``, ``max_duration``, ...) may be added (``extra_body``).

Errors are ``/generate``'s one-line messages in OpenAI's error shape (:func:`error_body`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unisono.errors import UnisonoError

from .parse import OPTION_NAMES, BadRequest, ServerLimits, decode_audio, number, served_tasks

SPEECH_FORMATS = ("wav", "flac", "pcm")
TRANSCRIPTION_FORMATS = ("json", "text")
SPEED_RANGE = (0.25, 4.0)
DEFAULT_VOICE = "default"
SPEECH_FIELDS = ("model", "input", "voice", "response_format", "speed")
TRANSCRIPTION_FIELDS = ("file", "model", "response_format", "language", "temperature")


@dataclass
class Voices:
    """The voices of ``tts`` this server knows: ``prompts`` maps a name to the prompt's file bytes (None: the
    checkpoint's own default, left out of the request so the pipeline fills it in, as the CLI does);
    ``prompt_input`` is the tts input a voice fills."""

    prompts: dict[str, bytes | None]
    prompt_input: str | None
    has_tts: bool = True

    @classmethod
    def of(cls, pipeline, limits: ServerLimits, extra: dict | None = None) -> Voices:
        """The checkpoint's default voice (when its tts prompt has a default) and ``extra`` (name -> audio file
        path), each file checked now against the server's limits (a one-line :class:`UnisonoError` if bad)."""
        spec = served_tasks(pipeline).get("tts")
        audio = [n for n, kind in spec.inputs.items() if kind == "audio"] if spec else []
        prompt_input = audio[0] if len(audio) == 1 else None
        prompts: dict[str, bytes | None] = {}
        if spec is not None and (prompt_input is None or prompt_input in spec.optional):
            prompts[DEFAULT_VOICE] = None
        for name, path in (extra or {}).items():
            if prompt_input is None:
                raise UnisonoError(f"voice {name!r}: this model's tts task takes no voice prompt")
            if name in prompts:
                raise UnisonoError(f"voice {name!r}: the checkpoint has its own {name!r} voice; pick another name")
            try:
                data = Path(path).read_bytes()
                decode_audio(f"voice {name}", data, limits)
            except OSError as e:
                raise UnisonoError(f"voice {name!r}: cannot read {path} ({e.strerror})") from None
            except BadRequest as e:
                raise UnisonoError(f"voice {name!r} ({path}): {e.message}") from None
            prompts[name] = data
        return cls(prompts, prompt_input, spec is not None)

    def listing(self) -> dict:
        return {"voices": [{"name": n, "source": "checkpoint" if data is None else "server"}
                           for n, data in self.prompts.items()],
                "default": DEFAULT_VOICE if DEFAULT_VOICE in self.prompts else None}

    def fill(self, voice: Any, files: dict[str, bytes]) -> None:
        """Put ``voice``'s prompt into ``files`` (the checkpoint's default: nothing, the pipeline fills it)."""
        if not self.has_tts:
            raise BadRequest(422, "this model has no tts task (GET /tasks lists what it can do)")
        name = voice.get("id") if isinstance(voice, dict) and set(voice) == {"id"} else voice
        if name is None and DEFAULT_VOICE in self.prompts:
            name = DEFAULT_VOICE
        if not isinstance(name, str):
            raise BadRequest(422, f"voice must be a voice name (or {{\"id\": name}}); {self.known()}")
        if name not in self.prompts:
            raise BadRequest(422, f"unknown voice {name[:40]!r}; {self.known()}")
        if self.prompts[name] is not None:
            files[self.prompt_input] = self.prompts[name]

    def known(self) -> str:
        if not self.prompts:
            return ("this server knows no voices: start it with --voice NAME=FILE, or serve a checkpoint with "
                    "defaults/prompt.wav")
        return f"this server's voices: {', '.join(self.prompts)} (GET /v1/audio/voices)"


def error_body(path: str, e: BadRequest) -> dict:
    """The JSON of an error: ``{"error": message}``, or on OpenAI's routes (``/v1/...``) OpenAI's shape
    ``{"error": {"message", "type", "param", "code"}}`` (its clients show ``message``) with the same one line."""
    if not path.startswith("/v1/"):
        return {"error": e.message}
    kind = "invalid_request_error" if e.status < 500 else "server_error"
    return {"error": {"message": e.message, "type": kind, "param": None, "code": None}}


def _refuse_others(route: str, raw: dict, files: dict, known: tuple[str, ...]) -> None:
    """A 422 naming the fields of ``raw``/``files`` that ``route`` does not take."""
    others = sorted((set(raw) | set(files)) - set(known) - set(OPTION_NAMES))
    if others:
        raise BadRequest(422, f"{route} does not take {', '.join(repr(o[:40]) for o in others[:5])}; it takes "
                              f"{', '.join(known)} (and unisono's options {', '.join(OPTION_NAMES)})")


def _model(raw: dict) -> None:
    model = raw.pop("model", None)
    if model is not None and not isinstance(model, str):
        raise BadRequest(422, "model must be a string (any name: this server runs its one model)")


def speech_fields(raw: dict, files: dict, voices: Voices, limits: ServerLimits) -> float:
    """``POST /v1/audio/speech``'s fields turned, in place, into a ``tts`` request of ``/generate``; returns
    ``speed``. ``max_duration`` defaults to the server's limit: the text bounds the speech's length."""
    _refuse_others("/v1/audio/speech", raw, files, SPEECH_FIELDS)
    _model(raw)
    if not isinstance(raw.get("input"), str) or not raw["input"].strip():
        raise BadRequest(422, "input is required: the text to speak, a non-empty string")
    speed = number("speed", raw.pop("speed"), float) if "speed" in raw else 1.0
    if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
        raise BadRequest(422, f"speed must be between {SPEED_RANGE[0]} and {SPEED_RANGE[1]}, got {speed:g}")
    voices.fill(raw.pop("voice", None), files)
    raw["task"], raw["text"] = "tts", raw.pop("input")
    raw.setdefault("response_format", "wav")
    raw.setdefault("max_duration", limits.max_output_seconds)
    return speed


def transcription_fields(raw: dict, files: dict, pipeline) -> None:
    """``POST /v1/audio/transcriptions``'s fields turned, in place, into an ``asr`` request of ``/generate``."""
    _refuse_others("/v1/audio/transcriptions", raw, files, TRANSCRIPTION_FIELDS)
    _model(raw)
    if "file" in raw:
        raise BadRequest(422, "file must be an uploaded audio file (multipart/form-data), not a text field")
    if "file" not in files:
        raise BadRequest(422, "file is required: the audio to transcribe, uploaded as multipart/form-data")
    spec = served_tasks(pipeline).get("asr")
    audio = [n for n, kind in spec.inputs.items() if kind == "audio"] if spec else ["file"]
    files[audio[0]] = files.pop("file")
    language, model_language = raw.pop("language", None), getattr(pipeline, "language", None)
    if language and model_language and str(language).lower() != model_language.lower().split("-")[0] \
            and str(language).lower() != model_language.lower():
        raise BadRequest(422, f"this model transcribes {model_language}; language {str(language)[:20]!r} is not "
                              "supported")
    if "temperature" in raw:
        temperature = number("temperature", raw.pop("temperature"), float)
        if not 0 <= temperature <= 1:
            raise BadRequest(422, f"temperature must be between 0 and 1, got {temperature:g}")
        if temperature > 0:
            raw["temperature"] = temperature
            raw.setdefault("top_k", 0)
    raw["task"] = "asr"
    raw.setdefault("response_format", "json")
