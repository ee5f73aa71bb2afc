"""Prometheus metrics of the server (one registry per app, so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)


class Metrics:
    """Counters, gauges and histograms exposed on GET /metrics."""

    def __init__(self, engine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gsv_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "gsv_errors",
            "Requests answered with status >= 400, by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gsv_request_seconds",
            "Synthesis request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_audio = Histogram(
            "gsv_time_to_first_audio_seconds",
            "Time from admission to the first audio chunk",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rtf = Histogram(
            "gsv_real_time_factor",
            "Synthesis seconds per second of audio",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5),
            registry=self.registry,
        )
        self.audio_seconds = Counter("gsv_audio_seconds", "Seconds of audio produced", registry=self.registry)
        queue = Gauge("gsv_queue_depth", "Jobs waiting for a synthesis worker", registry=self.registry)
        queue.set_function(lambda: engine.queue_depth)
        running = Gauge("gsv_jobs_running", "Synthesis jobs running", registry=self.registry)
        running.set_function(lambda: engine.running)
        workers = Gauge("gsv_workers", "Synthesis workers configured", registry=self.registry)
        workers.set(engine.workers)

    def render(self) -> bytes:
        """The registry in Prometheus' text exposition format."""
        return generate_latest(self.registry)
