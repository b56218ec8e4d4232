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
import contextlib
import io
import queue
import struct
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from unisono.errors import UnisonoError
from unisono.inference import AudioOutput, GenerationCancelled, TextOutput

from .catalog import task_guide
from .parse import BadRequest, ParsedRequest, ServerLimits, parse_request, served_tasks, task_defaults
from .scheduler import BatchScheduler, QueueFull
from .schema import request_schema

STATIC = Path(__file__).parent / "static"


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


def create_app(pipeline, limits: ServerLimits | None = None, title: str = "unisono") -> FastAPI:
    """A FastAPI app serving ``pipeline`` (see :mod:`unisono.inference.types` for the pipeline interface)
    within ``limits`` (default :class:`ServerLimits`)."""
    limits = limits or ServerLimits()
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

    @app.get("/tasks", summary="The tasks this model can do: inputs (each explained), default options, an example")
    def tasks() -> dict:
        listed = []
        for name, spec in served_tasks(pipeline).items():
            guide = task_guide(spec)
            listed.append({**spec.to_json(), "defaults": asdict(task_defaults(pipeline, limits, name)),
                           "title": guide["title"], "summary": guide["summary"], "input_help": guide["inputs"],
                           "example": guide["example"]})
        return {"tasks": listed, "sample_rate": pipeline.sample_rate,
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
