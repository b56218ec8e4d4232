"""The OpenAPI description of the request bodies. ``POST /generate``: one schema per task (``oneOf``, told apart
by the ``task`` constant), each with the inputs that task takes and needs, its own option defaults
(``max_duration`` within the server's limit), and the limits the server enforces (text length, option ranges).
OpenAI's routes: their fields (:mod:`.openai_compat`) with the same limits."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from unisono.options import GenerationOptions

from .catalog import task_guide
from .openai_compat import SPEECH_FORMATS, SPEED_RANGE, TRANSCRIPTION_FORMATS, Voices
from .parse import GENERATE_FORMATS, ServerLimits, served_tasks, task_defaults

# The ranges GenerationOptions.validate and the request parser (every number within +-2**31) accept;
# max_duration's maximum is the server's limit.
OPTION_BOUNDS: dict[str, dict[str, float]] = {
    "top_k": {"minimum": 0, "maximum": 2**31},
    "top_p": {"exclusiveMinimum": 0, "maximum": 1},
    "temperature": {"exclusiveMinimum": 0, "maximum": 10},
    "guidance_scale": {"minimum": 0, "maximum": 20},
    "seed": {"minimum": -(2**31), "maximum": 2**31},
    "max_duration": {"exclusiveMinimum": 0},
}
OPTION_HELP = {
    "top_k": "sample from the k likeliest tokens (0: no limit)",
    "top_p": "sample from the smallest set of tokens whose probability reaches p (1: off)",
    "temperature": "sharpen (<1) or flatten (>1) the distribution",
    "guidance_scale": "classifier-free guidance (1: off)",
    "seed": "the same seed and inputs give the same output",
    "max_duration": "longest output, in seconds of audio",
}


def _option_schemas(defaults: GenerationOptions, limits: ServerLimits) -> dict[str, dict]:
    """Each generation option: its type, ``defaults``' value, the accepted range and what it does."""
    props = {}
    for f in fields(GenerationOptions):
        bounds = {**OPTION_BOUNDS[f.name], **({"maximum": limits.max_output_seconds} if f.name == "max_duration"
                                              else {})}
        props[f.name] = {"type": "integer" if f.type in ("int", int) else "number",
                         "default": getattr(defaults, f.name), **bounds, "description": OPTION_HELP[f.name]}
    return props


def _input_schema(kind: str, help_line: str, limits: ServerLimits, binary: bool) -> dict:
    if kind == "text":
        return {"type": "string", "maxLength": limits.max_text_chars,
                "description": f"{help_line} At most {limits.max_text_chars} characters."}
    if binary:
        return {"type": "string", "format": "binary", "description": f"{help_line} An uploaded file."}
    return {"type": "string", "maxLength": limits.max_body_bytes,
            "description": f"{help_line} The file's bytes, base64-encoded."}


def task_schema(spec, defaults: GenerationOptions, limits: ServerLimits, binary: bool) -> dict:
    """The body schema of one task (``binary``: audio inputs as multipart uploads, else base64 JSON strings)."""
    guide = task_guide(spec)
    props: dict[str, Any] = {"task": {"type": "string", "const": spec.name, "description": guide["title"]}}
    for name, kind in spec.inputs.items():
        props[name] = _input_schema(kind, guide["inputs"][name], limits, binary)
        if name in spec.optional:
            props[name]["description"] += " Optional: the model's default is used when it is left out."
    props.update(_option_schemas(defaults, limits))
    if spec.output == "audio":
        props["response_format"] = {"type": "string", "enum": list(GENERATE_FORMATS), "default": GENERATE_FORMATS[0],
                                    "description": "a 16-bit audio file (pcm: raw little-endian mono samples at "
                                                   "X-Sample-Rate), or JSON with a WAV base64-encoded"}
        props["stream"] = {"type": "boolean", "default": False,
                           "description": "chunked WAV response (response_format wav)"}
    else:
        props["response_format"] = {"type": "string", "enum": ["json"], "description": "text answers are JSON"}
    required = ["task", *(n for n in spec.inputs if n not in spec.optional)]
    inputs = ", ".join(f"{n} ({k}{', optional' if n in spec.optional else ''})" for n, k in spec.inputs.items())
    schema = {"title": f"{spec.name}: {guide['title']}", "type": "object", "required": required,
              "properties": props, "additionalProperties": False,
              "description": f"{guide['summary']} Inputs: {inputs}. Answers with {spec.output}."}
    if guide["example"] and not binary:
        schema["examples"] = [{"task": spec.name, **guide["example"]}]
    return schema


def request_schema(pipeline, limits: ServerLimits) -> dict:
    """The ``requestBody`` of ``POST /generate``: JSON (audio as base64) or multipart (audio as uploads), each
    one of the per-task schemas."""
    tasks = served_tasks(pipeline)
    content = {}
    for media, binary in (("application/json", False), ("multipart/form-data", True)):
        branches = [task_schema(spec, task_defaults(pipeline, limits, name), limits, binary)
                    for name, spec in sorted(tasks.items())]
        content[media] = {"schema": {"oneOf": branches}}
    return {"required": True, "content": content}


def openai_schemas(pipeline, limits: ServerLimits, voices: Voices) -> dict[str, dict]:
    """The ``requestBody`` of ``/v1/audio/speech`` (JSON) and ``/v1/audio/transcriptions`` (multipart)."""
    speech_defaults = task_defaults(pipeline, limits, "tts").with_(max_duration=limits.max_output_seconds)
    speech = {"type": "object", "required": ["model", "input", "voice"], "properties": {
        "model": {"type": "string", "description": "any name; the server runs its one model (X-Model)"},
        "input": {"type": "string", "minLength": 1, "maxLength": limits.max_text_chars,
                  "description": f"the text to speak, at most {limits.max_text_chars} characters"},
        "voice": {"type": "string", "enum": list(voices.prompts) or ["default"],
                  "description": "a voice of GET /v1/audio/voices"},
        "response_format": {"type": "string", "enum": list(SPEECH_FORMATS), "default": SPEECH_FORMATS[0],
                            "description": "16-bit mono; pcm: raw little-endian samples at X-Sample-Rate"},
        "speed": {"type": "number", "minimum": SPEED_RANGE[0], "maximum": SPEED_RANGE[1], "default": 1.0,
                  "description": "time-scales the generated speech, same pitch (WSOLA)"},
        **_option_schemas(speech_defaults, limits)}, "additionalProperties": False}
    asr_defaults = task_defaults(pipeline, limits, "asr")
    transcription = {"type": "object", "required": ["file", "model"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "the audio (WAV, FLAC or OGG)"},
        "model": {"type": "string", "description": "any name; the server runs its one model (X-Model)"},
        "response_format": {"type": "string", "enum": list(TRANSCRIPTION_FORMATS), "default": "json"},
        "language": {"type": "string", "description": "the model's language (e.g. en), or leave it out"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0,
                        "description": "0: greedy; above 0: sampling at that temperature, no top-k limit"},
        **{k: v for k, v in _option_schemas(asr_defaults, limits).items() if k != "temperature"}},
        "additionalProperties": False}
    return {"speech": {"required": True, "content": {"application/json": {"schema": speech}}},
            "transcriptions": {"required": True, "content": {"multipart/form-data": {"schema": transcription}}}}
