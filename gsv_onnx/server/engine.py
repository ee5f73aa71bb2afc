"""Bounded, cancellable synthesis for the HTTP server.

A job runs a chunk generator (normally `TTS.stream`) in a worker thread and hands each chunk to
the event loop through an asyncio queue. Admission is bounded: at most `workers` jobs run and
`queue_size` wait; a request beyond that is refused at once (429) rather than left hanging.

Each job has a cancel event, set when the client disconnects, the request times out or the
response ends early. The worker checks it between chunks, and the runtime checks it between decode
steps where its generator takes a `cancel` callback. A job's place is given back only when its
worker has really stopped (or when it never started), so a disconnected client's synthesis that
is still finishing a piece keeps counting against the capacity: the bound holds for CPU work, not
just for open connections.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from gsv_onnx.errors import GsvError

log = logging.getLogger("gsv_onnx.server")

_DONE = object()


class QueueFull(GsvError):
    """Every worker is busy and the waiting line is full (the app answers 429)."""


class JobTimeout(GsvError):
    """The job ran past the request timeout (the app answers 504)."""


@dataclass
class Job:
    """One admitted synthesis request.

    `deadline` is on the `time.monotonic` clock; `started` and `first_audio` use `perf_counter`
    (`first_audio` is seconds from admission to the first chunk, None until one exists).
    """

    deadline: float
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.perf_counter)
    first_audio: float | None = None
    submitted: bool = False
    slot_held: bool = True


class Engine:
    """Runs synthesis jobs on a bounded pool of worker threads."""

    def __init__(self, workers: int, queue_size: int, timeout: float) -> None:
        self.workers = workers
        self.capacity = workers + queue_size
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gsv-synth")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        # Moving average of job durations (seconds), for the Retry-After estimate.
        self._mean_job_seconds: float | None = None

    @property
    def queue_depth(self) -> int:
        """Jobs admitted but not yet running."""
        with self._lock:
            return max(0, self._admitted - self._running)

    @property
    def running(self) -> int:
        """Jobs whose worker thread is running now."""
        with self._lock:
            return self._running

    @property
    def admitted(self) -> int:
        """Jobs holding a place (running or waiting)."""
        with self._lock:
            return self._admitted

    def retry_after(self) -> int:
        """Seconds a refused client should wait: about the time for the queue ahead to drain."""
        with self._lock:
            mean = self._mean_job_seconds
            ahead = self._admitted
        if mean is None:
            mean = min(self.timeout, 5.0)
        return int(min(max(1, math.ceil(mean * max(1, ahead) / self.workers)), 300))

    def admit(self) -> Job:
        """Reserve a place for a job or raise `QueueFull`."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise QueueFull()
            self._admitted += 1
        return Job(deadline=time.monotonic() + self.timeout)

    def _free(self, job: Job) -> None:
        with self._lock:
            if job.slot_held:
                job.slot_held = False
                self._admitted -= 1

    def release(self, job: Job) -> None:
        """The request is over: cancel the job; its place is freed once its worker stops."""
        job.cancel.set()
        with self._lock:
            submitted = job.submitted
        if not submitted:
            self._free(job)

    async def run(self, job: Job, make_chunks: Callable[..., Iterator]) -> AsyncIterator:
        """Yield what `make_chunks()` yields, computed in a worker thread.

        `make_chunks` receives `cancel` (a callable returning True once the job is cancelled) when
        it accepts that keyword. Stopping the iteration early (client gone) cancels the job.
        Raises `JobTimeout` past the deadline and re-raises the worker's exceptions.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone (server shutting down)
                pass

        def work() -> None:
            began = time.perf_counter()
            with self._lock:
                self._running += 1
            try:
                if job.cancel.is_set():
                    return
                try:
                    accepts_cancel = "cancel" in inspect.signature(make_chunks).parameters
                except (TypeError, ValueError):
                    accepts_cancel = False
                chunks = make_chunks(cancel=job.cancel.is_set) if accepts_cancel else make_chunks()
                try:
                    for chunk in chunks:
                        if job.cancel.is_set():
                            break
                        put(chunk)
                        if job.cancel.is_set():
                            break
                finally:
                    close = getattr(chunks, "close", None)
                    if close:
                        close()
            except BaseException as exc:  # handed to the event loop, re-raised there
                put(exc)
            finally:
                seconds = time.perf_counter() - began
                with self._lock:
                    self._running -= 1
                    if not job.cancel.is_set() or seconds > 0.05:
                        previous = self._mean_job_seconds
                        self._mean_job_seconds = (
                            seconds if previous is None else 0.8 * previous + 0.2 * seconds
                        )
                self._free(job)
                put(_DONE)

        with self._lock:
            job.submitted = True
        try:
            self._executor.submit(work)
        except RuntimeError:  # executor shut down
            with self._lock:
                job.submitted = False
            self._free(job)
            raise
        try:
            while True:
                remaining = job.deadline - time.monotonic()
                if remaining <= 0:
                    raise JobTimeout()
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=remaining)
                except asyncio.TimeoutError:
                    raise JobTimeout() from None
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                if job.first_audio is None:
                    job.first_audio = time.perf_counter() - job.started
                yield item
        finally:
            job.cancel.set()

    def shutdown(self) -> None:
        """Stop accepting work; jobs not yet started are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
