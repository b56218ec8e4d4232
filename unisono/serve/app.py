"""The unisono HTTP API and web page (FastAPI).

Endpoints: ``GET /health``, ``GET /tasks``, ``POST /generate`` (a JSON body with audio inputs as base64
strings, or a multipart form with audio inputs as file uploads), ``GET /`` (the web page), and the
OpenAPI description at ``/openapi.json`` (browsable at ``/docs``). Every bad request gets a 4xx with a
one-line ``{"error": ...}``; a full queue answers 503 with ``Retry-After``; a generation that runs past
the time limit is cancelled and answered 504.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import io
import json
import queue
import struct
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from unisono.errors import UnisonoError
from unisono.inference import AudioOutput, GenerationCancelled, TextOutput
from unisono.options import GenerationOptions, default_options

from .scheduler import BatchScheduler, QueueFull

STATIC = Path(__file__).parent / "static"
OPTION_NAMES = [f.name for f in fields(GenerationOptions)]


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
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _decode_audio(name: str, data: bytes, limits: ServerLimits) -> tuple[np.ndarray, int]:
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


def wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _stream_wav(wav: np.ndarray, sample_rate: int, chunk_s: float = 0.5):
    """A finished output as a WAV header with open-ended sizes, then 16-bit PCM chunks."""
    yield _wav_header(sample_rate)
    pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2")
    step = max(1, int(chunk_s * sample_rate))
    for i in range(0, pcm.size, step):
        yield pcm[i : i + step].tobytes()


def _wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header with open-ended sizes (for a response whose length is not known yet)."""
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16) + b"data" + struct.pack("<I", 0xFFFFFFFF)


def _stream_chunks(job, chunks: queue.Queue, sample_rate: int, timeout_s: float):
    """Yield a WAV header, then each chunk as the generator decodes it; cancel the job if the client leaves."""
    deadline = time.monotonic() + timeout_s
    try:
        yield _wav_header(sample_rate)
        while True:
            try:
                chunk = chunks.get(timeout=0.05)
            except queue.Empty:
                if job.future.done() and chunks.empty():
                    return
                if time.monotonic() > deadline:
                    job.cancel.set()
                    return
                continue
            yield (np.clip(chunk, -1, 1) * 32767).astype("<i2").tobytes()
    finally:
        if not job.future.done():
            job.cancel.set()


def _kind_defaults(pipeline, kind: str) -> GenerationOptions:
    """The default options of ``pipeline``'s tasks with ``kind`` outputs (the one source: its
    ``default_options``, else :func:`unisono.options.default_options`)."""
    getter = getattr(pipeline, "default_options", None)
    tasks = [t for t, spec in pipeline.tasks.items() if spec.output == kind]
    return getter(tasks[0]) if getter and tasks else default_options(kind)


def _request_schema(pipeline) -> dict:
    names: dict[str, str] = {}
    for spec in pipeline.tasks.values():
        for name, kind in spec.inputs.items():
            names[name] = kind
    audio, text = _kind_defaults(pipeline, "audio"), _kind_defaults(pipeline, "text")
    props: dict[str, Any] = {"task": {"type": "string", "enum": sorted(pipeline.tasks), "description": "task name"}}
    for name, kind in sorted(names.items()):
        props[name] = {"type": "string", "maxLength": 50_000_000,
                       "description": "text" if kind == "text" else "audio file (WAV/FLAC/OGG), base64-encoded"}
    for f in fields(GenerationOptions):
        typ = "integer" if f.type in ("int", int) else "number"
        a, t = getattr(audio, f.name), getattr(text, f.name)
        props[f.name] = {"type": typ, "default": a,
                         "description": f"default {a} for audio outputs" + ("" if a == t else f", {t} for text")}
    props["response_format"] = {"type": "string", "enum": ["wav", "json"], "default": "wav"}
    props["stream"] = {"type": "boolean", "default": False, "description": "chunked WAV response"}
    json_schema = {"type": "object", "required": ["task"], "properties": props, "additionalProperties": False}
    form_props = {k: ({**v, "format": "binary"} if names.get(k) == "audio" else v) for k, v in props.items()}
    return {
        "required": True,
        "content": {
            "application/json": {"schema": json_schema},
            "multipart/form-data": {"schema": {"type": "object", "required": ["task"], "properties": form_props}},
        },
    }


@dataclass
class ParsedRequest:
    """One ``POST /generate`` request, checked: the task, its decoded inputs (text, or ``(wav [T] float32,
    sample_rate Hz)``), the options, and how to answer."""

    task: str
    inputs: dict[str, Any]
    options: GenerationOptions
    response_format: str
    stream: bool


def task_defaults(pipeline, limits: ServerLimits, task: str | None) -> GenerationOptions:
    """The default options of ``task`` (or of the audio tasks), with ``max_duration`` within the server's limit."""
    getter = getattr(pipeline, "default_options", None)
    opts = getter(task) if getter and task else _kind_defaults(pipeline, "audio")
    return opts.with_(max_duration=min(opts.max_duration, limits.max_output_seconds))


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


async def _read_fields(request: Request, body: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The request's fields and uploaded files, from a JSON or multipart body."""
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


def _number(name: str, value: Any, want: type) -> int | float:
    """``value`` as a finite number of type ``want`` (a whole number when ``want`` is int)."""
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        number = float(value)
        if want is int and (not np.isfinite(number) or number != int(number)):
            raise ValueError
        if not np.isfinite(number) or abs(number) > 2**31:
            raise ValueError
        return want(number)
    except (TypeError, ValueError):
        raise BadRequest(422, f"{name} must be a {'whole ' if want is int else ''}number") from None


def _parse_options(raw: dict[str, Any], defaults: GenerationOptions, limits: ServerLimits) -> GenerationOptions:
    """The generation options named in ``raw`` (removed from it) over ``defaults``, validated."""
    opts = {name: _number(name, raw.pop(name), type(getattr(defaults, name))) for name in OPTION_NAMES if name in raw}
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
    return _decode_audio(name, data, limits)


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


async def parse_request(request: Request, pipeline, limits: ServerLimits) -> ParsedRequest:
    """A ``POST /generate`` request read and checked before any work starts (:class:`BadRequest` if not)."""
    raw, files = await _read_fields(request, await read_body(request, limits))
    task = raw.pop("task", None)
    if not isinstance(task, str) or not task:
        raise BadRequest(422, f"'task' is required; one of: {', '.join(sorted(pipeline.tasks))}")
    if task not in pipeline.tasks:
        raise BadRequest(422, f"unknown task {task!r}; one of: {', '.join(sorted(pipeline.tasks))}")
    response_format = raw.pop("response_format", "wav")
    if response_format not in ("wav", "json"):
        raise BadRequest(422, "response_format must be 'wav' or 'json'")
    stream = raw.pop("stream", False)
    if isinstance(stream, str):
        stream = stream.lower() in ("1", "true", "yes", "on")
    if not isinstance(stream, bool):
        raise BadRequest(422, "stream must be true or false")
    options = _parse_options(raw, task_defaults(pipeline, limits, task), limits)
    inputs = _parse_inputs(task, pipeline.tasks[task], raw, files, limits)
    return ParsedRequest(task, inputs, options, response_format, stream)


async def _wait(job, limits: ServerLimits):
    """The finished job's output; a timeout cancels it (504), a cancelled request cancels it."""
    waiting = asyncio.wrap_future(job.future)
    try:
        return await asyncio.wait_for(asyncio.shield(waiting), limits.timeout_s)
    except TimeoutError:
        job.cancel.set()
        waiting.add_done_callback(lambda f: f.cancelled() or f.exception())  # the caller has gone: consume it
        raise BadRequest(504, f"generation took longer than {limits.timeout_s:g} s and was cancelled; "
                              "ask for a shorter max_duration") from None
    except asyncio.CancelledError:
        job.cancel.set()
        raise
    except GenerationCancelled as e:
        raise BadRequest(504, str(e)) from None
    except UnisonoError as e:
        raise BadRequest(400, str(e)) from None


def _respond(req: ParsedRequest, out):
    """The HTTP answer for a finished output: JSON text, a WAV, a chunked WAV, or JSON with base64 audio."""
    if isinstance(out, TextOutput):
        return {"task": req.task, "text": out.text}
    if not isinstance(out, AudioOutput):
        raise RuntimeError(f"pipeline returned {type(out).__name__}")
    headers = {"X-Sample-Rate": str(out.sample_rate), "X-Duration": f"{out.duration:.3f}"}
    if req.response_format == "json":
        return {"task": req.task, "sample_rate": out.sample_rate, "duration": round(out.duration, 4),
                "audio_base64": base64.b64encode(wav_bytes(out.wav, out.sample_rate)).decode()}
    if req.stream:
        return StreamingResponse(_stream_wav(out.wav, out.sample_rate), media_type="audio/wav", headers=headers)
    return Response(wav_bytes(out.wav, out.sample_rate), media_type="audio/wav", headers=headers)


GENERATE_RESPONSES = {
    200: {"content": {"audio/wav": {}, "application/json": {}},
          "description": "audio (WAV) or JSON (text outputs, or audio with response_format=json)"},
    400: {"description": "bad input"}, 413: {"description": "too large"},
    415: {"description": "unsupported content type"}, 422: {"description": "invalid request"},
    503: {"description": "busy: retry later"}, 504: {"description": "timed out"},
}


def create_app(pipeline, limits: ServerLimits = ServerLimits(), title: str = "unisono") -> FastAPI:
    """A FastAPI app serving ``pipeline`` (see :mod:`unisono.inference.types` for the pipeline interface)."""
    scheduler = BatchScheduler(pipeline, limits.max_queue, limits.max_batch, limits.batch_window_s)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        scheduler.close()

    app = FastAPI(title=title, version="1", description="Generate and understand audio with one model.",
                  lifespan=lifespan)
    app.state.scheduler = scheduler
    app.state.limits = limits

    @app.exception_handler(BadRequest)
    async def _bad(_: Request, e: BadRequest):
        return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)

    @app.get("/health", summary="Liveness and queue length")
    def health() -> dict:
        return {"status": "ok", "queued": scheduler.pending, "tasks": len(pipeline.tasks)}

    @app.get("/tasks", summary="The tasks this model can do, with their inputs and default options")
    def tasks() -> dict:
        listed = [{**s.to_json(), "defaults": asdict(task_defaults(pipeline, limits, name))}
                  for name, s in pipeline.tasks.items()]
        return {"tasks": listed, "sample_rate": pipeline.sample_rate,
                "defaults": asdict(task_defaults(pipeline, limits, None)), "limits": asdict(limits)}

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.post("/generate", summary="Run a task", openapi_extra={"requestBody": _request_schema(pipeline)},
              responses=GENERATE_RESPONSES)
    async def generate(request: Request):
        req = await parse_request(request, pipeline, limits)
        live_stream = (req.stream and req.response_format == "wav" and pipeline.tasks[req.task].output == "audio"
                       and hasattr(pipeline, "generate_stream"))
        chunks: queue.Queue = queue.Queue()
        try:
            job = scheduler.submit(req.task, req.inputs, req.options, emit=chunks.put if live_stream else None)
        except QueueFull as e:
            raise BadRequest(503, str(e), {"Retry-After": "1"}) from None
        if live_stream:
            headers = {"X-Sample-Rate": str(pipeline.sample_rate), "X-Streamed": "frames"}
            return StreamingResponse(_stream_chunks(job, chunks, pipeline.sample_rate, limits.timeout_s),
                                     media_type="audio/wav", headers=headers)
        return _respond(req, await _wait(job, limits))

    return app
