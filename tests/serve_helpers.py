"""A tone-making pipeline for testing the server's mechanics (queue, limits, batching, fuzzing).

It is a test double: it follows the pipeline interface of ``unisono.inference.types`` and returns a sine
whose length follows the text length and the request's ``max_duration``, so tests can check that
inputs and options reach it. Tests of real generation use a tiny trained checkpoint instead.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from unisono.errors import UnisonoError
from unisono.inference import AudioOutput, GenerationCancelled, TaskSpec, TextOutput

DEFAULT_PROMPT = {"prompt": Path("defaults/prompt.wav")}


class TonePipeline:
    """Like :class:`unisono.inference.Pipeline`, its task specs mark no input optional and ``default_inputs``
    names the inputs it fills itself when a request leaves them out (by default the ``tts`` prompt, as the
    shipped checkpoint's ``defaults/prompt.wav``; the file is never read). ``seen``: every input set it ran."""

    sample_rate = 16000

    def __init__(self, delay_s: float = 0.0, default_inputs: dict | None = None):
        self.delay_s = delay_s
        self.default_inputs = dict(DEFAULT_PROMPT if default_inputs is None else default_inputs)
        self.batch_sizes: list[int] = []
        self.seen: list[dict] = []
        self.started = threading.Event()
        self.tasks = {
            "tts": TaskSpec("tts", "speech from text", {"text": "text", "prompt": "audio"}, "audio"),
            "se": TaskSpec("se", "enhance noisy speech", {"audio": "audio"}, "audio"),
            "asr": TaskSpec("asr", "transcribe speech", {"audio": "audio"}, "text"),
        }

    def generate_batch(self, task, inputs, options, cancel=None):
        for inp in inputs:
            missing = [n for n in self.tasks[task].inputs if n not in inp and n not in self.default_inputs]
            if missing:
                raise UnisonoError(f"task {task!r} needs the input {missing[0]!r}")
        self.seen += inputs
        self.batch_sizes.append(len(inputs))
        self.started.set()
        t_end = time.monotonic() + self.delay_s
        while time.monotonic() < t_end:
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("cancelled")
            time.sleep(0.005)
        outs = []
        for inp in inputs:
            if task == "asr":
                wav, sr = inp["audio"]
                outs.append(TextOutput(f"{wav.size / sr:.2f} seconds", task))
                continue
            seconds = min(options.max_duration, 0.1 + 0.01 * len(inp.get("text", "")))
            if task == "se":
                wav, sr = inp["audio"]
                seconds = min(options.max_duration, wav.size / sr)
            t = np.arange(int(seconds * self.sample_rate)) / self.sample_rate
            freq = 220.0 + 10 * (options.seed % 10)
            outs.append(AudioOutput((0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), self.sample_rate, task))
        return outs


class LiveServer:
    """Run an ASGI app with uvicorn on a free loopback port in a thread: ``with LiveServer(app) as url``."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def fuzz_no_5xx(app, max_examples: int = 40) -> list:
    """Schema-based fuzzing of every operation of ``app``'s OpenAPI description; returns the 5xx answers."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for result in schema.get_all_operations():
        op = result.ok()

        @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def run(case):
            response = case.call()
            if response.status_code >= 500:
                failures.append((case.method, case.path, str(case.body)[:200], response.status_code,
                                 response.text[:200]))

        run()
    return failures
