"""The unisono HTTP API and web page (FastAPI).

Endpoints: ``GET /health``, ``GET /tasks``, ``POST /generate`` (a JSON body with audio inputs as base64
strings, or a multipart form with audio inputs as file uploads), OpenAI's audio routes
(``POST /v1/audio/speech``, ``POST /v1/audio/transcriptions``, ``GET /v1/audio/voices``, ``GET /v1/models``;
:mod:`.openai_compat`), ``GET /`` (the web page), and the OpenAPI description at ``/openapi.json`` (browsable
at ``/docs``). Every route checks a request (:mod:`.parse`) before any work starts and runs it through one
:class:`.scheduler.BatchScheduler`. Every bad request gets a 4xx with a one-line ``{"error": ...}``; a full
queue answers 503 with ``Retry-After``; a generation that runs past the time limit is cancelled and answered
504.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import queue
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from unisono.errors import UnisonoError
from unisono.inference import AudioOutput, GenerationCancelled, TextOutput

from .catalog import task_guide
from .openai_compat import (
    SPEECH_FORMATS,
    TRANSCRIPTION_FORMATS,
    Voices,
    error_body,
    speech_fields,
    transcription_fields,
)
from .output import MEDIA_TYPES, audio_bytes, pcm16, time_stretch, wav_bytes, wav_header
from .parse import (
    BadRequest,
    ParsedRequest,
    ServerLimits,
    check_request,
    parse_request,
    read_fields,
    served_tasks,
    task_defaults,
)
from .scheduler import BatchScheduler, QueueFull
from .schema import openai_schemas, request_schema

STATIC = Path(__file__).parent / "static"


def _stream_wav(wav: np.ndarray, sample_rate: int, chunk_s: float = 0.5):
    """A finished output (``[S]`` or ``[C, S]``) as a WAV header with open-ended sizes, then 16-bit PCM chunks."""
    yield wav_header(sample_rate, wav.shape[0] if wav.ndim == 2 else 1)
    step = max(1, int(chunk_s * sample_rate))
    for i in range(0, wav.shape[-1], step):
        yield pcm16(wav[..., i : i + step])


def _output_rate(pipeline) -> int:
    """The rate of the pipeline's audio outputs: the enhancer's when ``--enhance`` loaded one."""
    return int(getattr(pipeline, "output_rate", pipeline.sample_rate))


def _stream_chunks(job, chunks: queue.Queue, sample_rate: int, timeout_s: float, channels: int = 1):
    """Yield a WAV header, then each chunk as the generator decodes it; cancel the job if the client leaves."""
    deadline = time.monotonic() + timeout_s
    try:
        yield wav_header(sample_rate, channels)
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
            yield pcm16(chunk)
    finally:
        if not job.future.done():
            job.cancel.set()


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


def _submit(scheduler: BatchScheduler, req: ParsedRequest, emit=None):
    """Queue ``req`` for the pipeline; a full queue is a 503 with ``Retry-After``."""
    try:
        return scheduler.submit(req.task, req.inputs, req.options, emit=emit)
    except QueueFull as e:
        raise BadRequest(503, str(e), {"Retry-After": "1"}) from None


def _audio_headers(out: AudioOutput, model: str | None = None) -> dict:
    headers = {"X-Sample-Rate": str(out.sample_rate), "X-Duration": f"{out.duration:.3f}"}
    return {**headers, "X-Model": model} if model else headers


def _respond(req: ParsedRequest, out):
    """The HTTP answer for a finished output: JSON text, an audio file (WAV, FLAC, raw PCM), a chunked WAV, or
    JSON with a base64 WAV."""
    if isinstance(out, TextOutput):
        return {"task": req.task, "text": out.text}
    if not isinstance(out, AudioOutput):
        raise RuntimeError(f"pipeline returned {type(out).__name__}")
    headers = _audio_headers(out)
    if req.response_format == "json":
        return {"task": req.task, "sample_rate": out.sample_rate, "duration": round(out.duration, 4),
                "audio_base64": base64.b64encode(wav_bytes(out.wav, out.sample_rate)).decode()}
    if req.stream:
        return StreamingResponse(_stream_wav(out.wav, out.sample_rate), media_type="audio/wav", headers=headers)
    return Response(audio_bytes(out.wav, out.sample_rate, req.response_format),
                    media_type=MEDIA_TYPES[req.response_format], headers=headers)


ERROR_RESPONSES = {
    400: {"description": "bad input"}, 413: {"description": "too large"},
    415: {"description": "unsupported content type"}, 422: {"description": "invalid request"},
    503: {"description": "busy: retry later"}, 504: {"description": "timed out"},
}
OPENAI_RESPONSES = {
    "speech": {200: {"content": {"audio/wav": {}, "audio/flac": {}, "audio/pcm": {}},
                     "description": "the speech: WAV, FLAC or raw 16-bit little-endian mono PCM at X-Sample-Rate"},
               **ERROR_RESPONSES},
    "transcriptions": {200: {"content": {"application/json": {}, "text/plain": {}},
                             "description": "{\"text\": ...} or the plain text"}, **ERROR_RESPONSES},
}
GENERATE_RESPONSES = {
    200: {"content": {"audio/wav": {}, "audio/flac": {}, "audio/pcm": {}, "application/json": {}},
          "description": "audio (response_format wav, flac or pcm) or JSON (text outputs, or audio with "
                         "response_format=json)"},
    **ERROR_RESPONSES,
}


def create_app(pipeline, limits: ServerLimits | None = None, title: str = "unisono",
               voices: dict | None = None) -> FastAPI:
    """A FastAPI app serving ``pipeline`` (see :mod:`unisono.inference.types` for the pipeline interface)
    within ``limits`` (default :class:`ServerLimits`); ``voices`` (name -> audio file) are voices of
    ``/v1/audio/speech`` beside the checkpoint's default (each file checked now: :class:`UnisonoError`)."""
    limits = limits or ServerLimits()
    known_voices = Voices.of(pipeline, limits, voices)  # before any thread starts: a bad voice file stops here
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
    async def _bad(request: Request, e: BadRequest):
        return JSONResponse(error_body(request.url.path, e), status_code=e.status, headers=e.headers)

    @app.get("/health", summary="Liveness and queue length")
    def health() -> dict:
        return {"status": "ok", "queued": scheduler.pending, "tasks": len(pipeline.tasks)}

    @app.get("/tasks", summary="The tasks this model can do: inputs (each explained), default options, an example")
    def tasks() -> dict:
        listed = []
        for name, spec in served_tasks(pipeline).items():
            guide = task_guide(spec)
            listed.append({**spec.to_json(), "defaults": asdict(task_defaults(pipeline, limits, name)),
                           "title": guide["title"], "summary": guide["summary"], "input_help": guide["inputs"],
                           "example": guide["example"]})
        return {"tasks": listed, "sample_rate": _output_rate(pipeline),
                "channels": getattr(pipeline, "output_channels", 1),
                "defaults": asdict(task_defaults(pipeline, limits, None)), "limits": asdict(limits)}

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.post("/generate", summary="Run a task", openapi_extra={"requestBody": request_schema(pipeline, limits)},
              responses=GENERATE_RESPONSES)
    async def generate(request: Request):
        req = await parse_request(request, pipeline, limits)
        live_stream = (req.stream and req.response_format == "wav" and pipeline.tasks[req.task].output == "audio"
                       and hasattr(pipeline, "generate_stream"))
        chunks: queue.Queue = queue.Queue()
        job = _submit(scheduler, req, emit=chunks.put if live_stream else None)
        if live_stream:
            rate, channels = _output_rate(pipeline), getattr(pipeline, "output_channels", 1)
            headers = {"X-Sample-Rate": str(rate), "X-Streamed": "frames"}
            return StreamingResponse(_stream_chunks(job, chunks, rate, limits.timeout_s, channels),
                                     media_type="audio/wav", headers=headers)
        return _respond(req, await _wait(job, limits))

    _add_openai_routes(app, pipeline, limits, known_voices, openai_schemas(pipeline, limits, known_voices))
    return app


def _add_openai_routes(app: FastAPI, pipeline, limits: ServerLimits, voices: Voices, bodies: dict) -> None:
    """OpenAI's audio routes (:mod:`.openai_compat`) on ``app``: each request becomes a ``tts`` or ``asr``
    request checked by :func:`.parse.check_request` and run by the app's scheduler, as ``/generate``'s are."""
    scheduler = app.state.scheduler
    model = getattr(pipeline, "name", None) or "unisono"
    model_header = model.encode("ascii", "replace").decode()  # a header is latin-1

    @app.get("/v1/models", summary="The one model this server runs (OpenAI's model list)")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "unisono"}]}

    @app.get("/v1/audio/voices", summary="The voices of /v1/audio/speech")
    def list_voices() -> dict:
        return voices.listing()

    @app.post("/v1/audio/speech", summary="Text to speech, as OpenAI's audio API (JSON: model, input, voice, "
              "response_format wav|flac|pcm, speed)", responses=OPENAI_RESPONSES["speech"],
              openapi_extra={"requestBody": bodies["speech"]})
    async def speech(request: Request):
        raw, files = await read_fields(request, limits)
        speed = speech_fields(raw, files, voices, limits)
        req = check_request(pipeline, limits, raw, files, SPEECH_FORMATS)
        out = await _wait(_submit(scheduler, req), limits)
        wav = await asyncio.to_thread(time_stretch, out.wav, speed, out.sample_rate)  # off the event loop
        out = AudioOutput(wav, out.sample_rate, out.task, out.info)
        data = await asyncio.to_thread(audio_bytes, out.wav, out.sample_rate, req.response_format)
        return Response(data, media_type=MEDIA_TYPES[req.response_format], headers=_audio_headers(out, model_header))

    @app.post("/v1/audio/transcriptions", summary="Speech to text, as OpenAI's audio API (multipart: file, model, "
              "response_format json|text)", responses=OPENAI_RESPONSES["transcriptions"],
              openapi_extra={"requestBody": bodies["transcriptions"]})
    async def transcriptions(request: Request):
        raw, files = await read_fields(request, limits)
        transcription_fields(raw, files, pipeline)
        req = check_request(pipeline, limits, raw, files, TRANSCRIPTION_FORMATS)
        out = await _wait(_submit(scheduler, req), limits)
        if req.response_format == "text":
            return PlainTextResponse(out.text, headers={"X-Model": model_header})
        return JSONResponse({"text": out.text}, headers={"X-Model": model_header})
