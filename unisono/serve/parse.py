"""A request read and checked before any work starts: the server's limits, its one-line errors, and the one
path every route (``/generate`` and the OpenAI-compatible ones) takes from fields to a :class:`ParsedRequest`.

A route reads the body (:func:`read_fields`: JSON or multipart, bounded by ``max_body_bytes``), may rename
its own fields to ``/generate``'s (``task``, the task's input names, the option names, ``response_format``,
``stream``), and hands them to :func:`check_request`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import Request

from unisono.errors import UnisonoError
from unisono.inference import TaskSpec
from unisono.options import GenerationOptions, default_options

OPTION_NAMES = [f.name for f in fields(GenerationOptions)]
GENERATE_FORMATS = ("wav", "flac", "pcm", "json")  # response_format of POST /generate


@dataclass(frozen=True)
class ServerLimits:
    max_body_bytes: int = 16 * 1024 * 1024  # whole request
    max_input_seconds: float = 30.0  # each audio input
    max_output_seconds: float = 30.0  # max_duration a request may ask for
    max_text_chars: int = 2000  # each text input
    max_queue: int = 32  # requests waiting or running
    max_batch: int = 8
    batch_window_s: float = 0.01
    timeout_s: float = 120.0


class BadRequest(Exception):
    """A request the server refuses: HTTP ``status`` and a one-line ``message`` (answered as ``{"error": ...}``)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class ParsedRequest:
    """One request, checked: the task, its decoded inputs (text, or ``(wav [T] float32, sample_rate Hz)``),
    the options, and how to answer (``response_format``, ``stream``)."""

    task: str
    inputs: dict[str, Any]
    options: GenerationOptions
    response_format: str
    stream: bool


def served_tasks(pipeline) -> dict[str, TaskSpec]:
    """``pipeline.tasks`` as the server offers them: an input the pipeline fills itself when a request leaves it
    out (``pipeline.default_inputs``, a checkpoint's ``defaults/<input>.wav``, e.g. the default voice of ``tts``)
    is optional, as it is for the CLI and the Python API."""
    defaults = getattr(pipeline, "default_inputs", None) or {}
    out = {}
    for name, spec in pipeline.tasks.items():
        extra = tuple(n for n in spec.inputs if n in defaults and n not in spec.optional)
        out[name] = replace(spec, optional=spec.optional + extra) if extra else spec
    return out


def kind_defaults(pipeline, kind: str) -> GenerationOptions:
    """The default options of ``pipeline``'s tasks with ``kind`` outputs (the one source: its
    ``default_options``, else :func:`unisono.options.default_options`)."""
    getter = getattr(pipeline, "default_options", None)
    tasks = [t for t, spec in pipeline.tasks.items() if spec.output == kind]
    return getter(tasks[0]) if getter and tasks else default_options(kind)


def task_defaults(pipeline, limits: ServerLimits, task: str | None) -> GenerationOptions:
    """The default options of ``task`` (or of the audio tasks), with ``max_duration`` within the server's limit."""
    getter = getattr(pipeline, "default_options", None)
    opts = getter(task) if getter and task else kind_defaults(pipeline, "audio")
    return opts.with_(max_duration=min(opts.max_duration, limits.max_output_seconds))


def decode_audio(name: str, data: bytes, limits: ServerLimits) -> tuple[np.ndarray, int]:
    """Uploaded bytes -> ``(wav [T] float32 mono, sample_rate Hz)``; refused if empty, undecodable, too long or
    not finite."""
    if not data:
        raise BadRequest(400, f"audio input {name!r} is empty; upload a WAV or FLAC file")
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception:
        raise BadRequest(400, f"audio input {name!r} could not be decoded; upload a WAV, FLAC or OGG file") from None
    if wav.shape[0] == 0:
        raise BadRequest(400, f"audio input {name!r} has no samples")
    if wav.shape[0] / sr > limits.max_input_seconds:
        raise BadRequest(413, f"audio input {name!r} is {wav.shape[0] / sr:.1f} s long; the limit is "
                              f"{limits.max_input_seconds:g} s")
    if not np.all(np.isfinite(wav)):
        raise BadRequest(400, f"audio input {name!r} contains NaN or Inf samples")
    return np.ascontiguousarray(wav.mean(axis=1), dtype=np.float32), int(sr)


async def read_body(request: Request, limits: ServerLimits) -> bytes:
    """The request body, refused (413) as soon as it is over ``limits.max_body_bytes``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise BadRequest(413, f"request body of {int(declared)} bytes is over the limit of {limits.max_body_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise BadRequest(413, f"request body is over the limit of {limits.max_body_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_fields(request: Request, limits: ServerLimits) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The request's fields and uploaded files (bytes), from a JSON or multipart body within the limits."""
    body = await read_body(request, limits)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    if ctype == "application/json":
        try:
            raw = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(400, "the body is not valid JSON") from None
        if not isinstance(raw, dict):
            raise BadRequest(422, "the JSON body must be an object such as {\"task\": \"tts\", \"text\": \"...\"}")
    elif ctype == "multipart/form-data":
        request._body = body  # let Starlette parse the bytes we already read (and bounded)
        try:
            form = await request.form(max_files=16, max_fields=64)
        except Exception:
            raise BadRequest(400, "the multipart body could not be parsed") from None
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                files[key] = await value.read()
            else:
                raw[key] = value
    else:
        raise BadRequest(415, "send the request as application/json or multipart/form-data")
    return raw, files


def number(name: str, value: Any, want: type) -> int | float:
    """``value`` as a finite number of type ``want`` (a whole number when ``want`` is int); a 422 if not."""
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        x = float(value)
        if want is int and (not np.isfinite(x) or x != int(x)):
            raise ValueError
        if not np.isfinite(x) or abs(x) > 2**31:
            raise ValueError
        return want(x)
    except (TypeError, ValueError):
        raise BadRequest(422, f"{name} must be a {'whole ' if want is int else ''}number") from None


def _parse_options(raw: dict[str, Any], defaults: GenerationOptions, limits: ServerLimits) -> GenerationOptions:
    """The generation options named in ``raw`` (removed from it) over ``defaults``, validated."""
    opts = {name: number(name, raw.pop(name), type(getattr(defaults, name))) for name in OPTION_NAMES if name in raw}
    try:
        return defaults.with_(**opts).validate(limits.max_output_seconds)
    except UnisonoError as e:
        raise BadRequest(422, str(e)) from None


def _audio_input(name: str, raw: dict[str, Any], files: dict[str, bytes], limits: ServerLimits):
    """Audio input ``name`` from an upload or a base64 JSON string (removed from ``raw``/``files``); None if absent."""
    if name in files:
        data = files.pop(name)
    elif name in raw:
        value = raw.pop(name)
        if not isinstance(value, str):
            raise BadRequest(422, f"audio input {name!r} must be a base64 string in JSON, or a file upload")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(422, f"audio input {name!r} is not valid base64") from None
    else:
        return None
    return decode_audio(name, data, limits)


def _text_input(name: str, raw: dict[str, Any], limits: ServerLimits) -> str | None:
    """Text input ``name`` (removed from ``raw``); None if absent or blank."""
    if name not in raw:
        return None
    value = raw.pop(name)
    if not isinstance(value, str):
        raise BadRequest(422, f"text input {name!r} must be a string")
    if len(value) > limits.max_text_chars:
        raise BadRequest(413, f"text input {name!r} has {len(value)} characters; the limit is {limits.max_text_chars}")
    return value if value.strip() else None


def _parse_inputs(task: str, spec, raw: dict[str, Any], files: dict[str, bytes], limits: ServerLimits) -> dict:
    """The task's inputs, each checked; a missing required input or a field the task does not take is a 422."""
    inputs: dict[str, Any] = {}
    for name, kind in spec.inputs.items():
        value = _audio_input(name, raw, files, limits) if kind == "audio" else _text_input(name, raw, limits)
        if value is not None:
            inputs[name] = value
        elif name not in spec.optional:
            raise BadRequest(422, f"task {task!r} needs the {kind} input {name!r}")
    leftover = sorted(set(raw) | set(files))
    if leftover:
        raise BadRequest(422, f"task {task!r} does not take {', '.join(map(repr, leftover))}; it takes "
                              f"{', '.join(spec.inputs)}")
    return inputs


def check_request(pipeline, limits: ServerLimits, raw: dict[str, Any], files: dict[str, bytes],
                  formats: tuple[str, ...] = GENERATE_FORMATS) -> ParsedRequest:
    """``/generate``'s fields (``raw``, ``files``; both emptied) checked: the task, ``response_format`` (one of
    ``formats``), ``stream``, the options over the task's defaults, the task's inputs. :class:`BadRequest` if not."""
    tasks = served_tasks(pipeline)
    task = raw.pop("task", None)
    if not isinstance(task, str) or not task:
        raise BadRequest(422, f"'task' is required; one of: {', '.join(sorted(tasks))}")
    if task not in tasks:
        raise BadRequest(422, f"unknown task {task!r}; one of: {', '.join(sorted(tasks))}")
    response_format = raw.pop("response_format", formats[0])
    if response_format not in formats:
        raise BadRequest(422, f"response_format must be one of {', '.join(map(repr, formats))}, "
                              f"got {str(response_format)[:40]!r}")
    stream = raw.pop("stream", False)
    if isinstance(stream, str):
        stream = stream.lower() in ("1", "true", "yes", "on")
    if not isinstance(stream, bool):
        raise BadRequest(422, "stream must be true or false")
    if stream and response_format in ("flac", "pcm"):
        raise BadRequest(422, f"stream answers a chunked WAV; ask for response_format 'wav' (not "
                              f"{response_format!r}) or leave stream out")
    options = _parse_options(raw, task_defaults(pipeline, limits, task), limits)
    inputs = _parse_inputs(task, tasks[task], raw, files, limits)
    return ParsedRequest(task, inputs, options, response_format, stream)


async def parse_request(request: Request, pipeline, limits: ServerLimits) -> ParsedRequest:
    """A ``POST /generate`` request read and checked before any work starts (:class:`BadRequest` if not)."""
    raw, files = await read_fields(request, limits)
    return check_request(pipeline, limits, raw, files)
