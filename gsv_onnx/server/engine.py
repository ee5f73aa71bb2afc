"""Bounded, cancellable synthesis for the HTTP server.

A job runs `TTS.stream` in a worker thread and hands each chunk to the event loop through an
asyncio queue. Admission is bounded: at most `workers` jobs run and `queue_size` wait; a request
beyond that is refused at once (429) rather than left hanging. Each job has a cancel event that the
worker checks between chunks (and that the runtime checks between decode steps where it takes a
`cancel` callback), set when the client disconnects or the request times out.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

log = logging.getLogger("gsv_onnx.server")

_DONE = object()


class QueueFull(Exception):
    """Every worker is busy and the waiting line is full."""


class JobTimeout(Exception):
    """The job ran past the request timeout."""


@dataclass
class Job:
    """One admitted synthesis request."""

    deadline: float
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.perf_counter)
    first_audio: float | None = None


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

    @property
    def queue_depth(self) -> int:
        """Jobs admitted but not yet running."""
        with self._lock:
            return self._admitted - self._running

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def admit(self) -> Job:
        """Reserve a place for a job or raise `QueueFull`."""
        with self._lock:
            if self._admitted >= self.capacity:
                raise QueueFull()
            self._admitted += 1
        return Job(deadline=time.monotonic() + self.timeout)

    def release(self, job: Job) -> None:
        job.cancel.set()
        with self._lock:
            self._admitted -= 1

    async def run(self, job: Job, make_chunks: Callable[..., Iterator]) -> AsyncIterator:
        """Yield what `make_chunks()` yields, computed in a worker thread.

        `make_chunks` receives `cancel` (a callable returning True once the job is cancelled) when
        it accepts that keyword. Stopping the iteration early (client gone) cancels the job.
        Raises `JobTimeout` past the deadline and re-raises the worker's exceptions.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            with self._lock:
                self._running += 1
            try:
                if job.cancel.is_set():
                    return
                accepts_cancel = "cancel" in inspect.signature(make_chunks).parameters
                chunks = make_chunks(cancel=job.cancel.is_set) if accepts_cancel else make_chunks()
                try:
                    for chunk in chunks:
                        if job.cancel.is_set():
                            break
                        put(chunk)
                finally:
                    close = getattr(chunks, "close", None)
                    if close:
                        close()
            except BaseException as exc:  # handed to the event loop, re-raised there
                put(exc)
            finally:
                with self._lock:
                    self._running -= 1
                put(_DONE)

        self._executor.submit(work)
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
        self._executor.shutdown(wait=False, cancel_futures=True)
