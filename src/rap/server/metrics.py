"""Prometheus metrics of one app: requests, latencies, retrieval and generation time, queue depth.

Each app has its own registry (tests build many apps in one process). With
several uvicorn workers, ``rap serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
folder the workers share, and ``/metrics`` then sums every worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Metrics:
    """The service's metrics, registered in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("rap_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("rap_request_seconds", "time to answer a request (to the end of a stream)", ["route"], registry=self.registry)
        self.retrieval = Histogram("rap_retrieval_seconds", "time to retrieve concepts for one query", registry=self.registry)
        self.generation = Histogram("rap_generation_seconds", "time to generate one answer", registry=self.registry)
        self.queue = Gauge("rap_generation_queue", "requests waiting for a generation slot", registry=self.registry, multiprocess_mode="livesum")
        self.photo_queue = Gauge(
            "rap_photo_index_queue", "photo libraries with uploads queued or being indexed", registry=self.registry, multiprocess_mode="livesum"
        )
        self.busy = Gauge("rap_generation_busy", "generation slots in use", registry=self.registry, multiprocess_mode="livesum")

    def exposition(self) -> bytes:
        """The text ``/metrics`` answers: this worker's, or every worker's in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request and times it to its last byte, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def record(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
