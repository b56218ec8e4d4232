"""A bounded queue in front of the pipeline that batches concurrent requests of the same task.

One worker thread runs the pipeline (models are not thread-safe and one CPU has no spare cores): it
takes the oldest request, waits up to ``batch_window_s`` for more requests with the same task and
options, and runs them as one batch. A full queue refuses new work (:class:`QueueFull`) instead of
growing; a request whose caller gave up is cancelled before it starts, or stops its batch when every
request of the batch was cancelled.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from unisono.options import GenerationOptions


class QueueFull(Exception):
    """The server has ``max_queue`` requests waiting or running: try again later."""


@dataclass
class Job:
    task: str
    inputs: dict
    options: GenerationOptions
    future: Future = field(default_factory=Future)
    cancel: threading.Event = field(default_factory=threading.Event)
    emit: object = None  # for a streamed request: called with each decoded audio chunk


class BatchScheduler:
    def __init__(self, pipeline, max_queue: int = 32, max_batch: int = 8, batch_window_s: float = 0.01):
        self.pipeline = pipeline
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.batch_window_s = batch_window_s
        self._queue: queue.Queue[Job] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.batches_run = 0
        self.largest_batch = 0
        self._thread = threading.Thread(target=self._run, name="unisono-generate", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, task: str, inputs: dict, options: GenerationOptions, emit=None) -> Job:
        with self._lock:
            if self._pending >= self.max_queue:
                raise QueueFull(f"the server is busy ({self._pending} requests queued); try again shortly")
            self._pending += 1
        job = Job(task, inputs, options, emit=emit)
        self._queue.put(job)
        return job

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _done(self, n: int) -> None:
        with self._lock:
            self._pending -= n

    def _collect(self, first: Job) -> list[Job]:
        if first.emit is not None:  # a streamed request runs alone
            return [first]
        batch, held = [first], []
        deadline = time.monotonic() + self.batch_window_s
        while len(batch) < self.max_batch:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                job = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if job.task == first.task and job.options == first.options and job.emit is None:
                batch.append(job)
            else:
                held.append(job)
        for job in held:  # other tasks wait for the next round, in order
            self._queue.put(job)
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = self._collect(first)
            live = [j for j in batch if not j.cancel.is_set() and j.future.set_running_or_notify_cancel()]
            self._done(len(batch) - len(live))
            if not live:
                continue
            batch_cancel = _AllSet([j.cancel for j in live])
            try:
                if first.emit is not None:
                    outputs = [self.pipeline.generate_stream(first.task, first.inputs, first.options,
                                                             cancel=first.cancel, emit=first.emit)]
                else:
                    outputs = self.pipeline.generate_batch(first.task, [j.inputs for j in live], first.options,
                                                           cancel=batch_cancel)
                for job, out in zip(live, outputs):
                    job.future.set_result(out)
            except BaseException as e:  # delivered to every caller of the batch
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(e)
            finally:
                self.batches_run += 1
                self.largest_batch = max(self.largest_batch, len(live))
                self._done(len(live))


class _AllSet:
    """An event-like object that is set when all of its events are set."""

    def __init__(self, events: list[threading.Event]):
        self._events = events

    def is_set(self) -> bool:
        return all(e.is_set() for e in self._events)
