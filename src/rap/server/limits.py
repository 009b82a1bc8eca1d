"""What keeps one worker responsive under load: a per-key rate limit, a bounded
generation queue, and a deadline on every request.

Generation is the expensive step (seconds of a GPU or CPU per answer), so a
worker runs at most ``generation_slots`` at once and lets at most
``generation_queue`` requests wait; the next one is told 503 with
``Retry-After`` at once, rather than waiting minutes behind the others. A slot
is released when its work ends, including when the client goes away mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from rap.errors import Overloaded, RateLimited, RequestTimeout
from rap.server.errors import error_body, error_code
from rap.server.metrics import ASGIApp, Metrics, Scope


class RateLimiter:
    """A token bucket per API key: ``per_minute`` requests a minute, in bursts of up to that many.

    In memory, per worker: N workers allow N times the rate (a load balancer
    with sticky keys, or a shared bucket, would make it global).
    """

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Spend one token of ``key``'s bucket, or raise :class:`RateLimited`."""
        with self._lock:
            now = time.monotonic()
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                wait = math.ceil((1.0 - tokens) / self.rate)
                raise RateLimited(f"too many requests; the limit is {self.burst:.0f} a minute, retry in {wait} s", wait)
            self._buckets[key] = (tokens - 1.0, now)


class Lease:
    """One generation slot, released exactly once, whoever gets there first."""

    def __init__(self, queue: GenerationQueue) -> None:
        self._queue, self._released = queue, False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._queue._release()

    def __del__(self) -> None:  # a response that was never sent still frees its slot
        self.release()


class GenerationQueue:
    """``slots`` generations at once, at most ``waiting`` more queued, the rest refused with 503."""

    def __init__(self, slots: int, waiting: int, retry_after: int, metrics: Metrics) -> None:
        self.slots, self.waiting, self.retry_after = slots, waiting, retry_after
        self._metrics = metrics
        self._free = threading.Semaphore(slots)
        self._in_use = 0
        self._queued = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    async def acquire(self) -> Lease:
        """Wait for a slot (in a thread, so waiting never blocks the event loop), or refuse at once."""
        with self._lock:
            if self._in_use >= self.slots and self._queued >= self.waiting:
                raise Overloaded(
                    f"the service is busy ({self._in_use} answers being generated, {self._queued} waiting); "
                    f"retry in {self.retry_after} s",
                    self.retry_after,
                )
            self._queued += 1
            self._metrics.queue.inc()
        try:
            await _wait(self._free)
        finally:
            with self._lock:
                self._queued -= 1
                self._metrics.queue.dec()
        with self._lock:
            self._in_use += 1
            self._metrics.busy.inc()
        return Lease(self)

    def _release(self) -> None:
        with self._lock:
            self._in_use -= 1
            self._metrics.busy.dec()
        self._free.release()


async def _wait(semaphore: threading.Semaphore) -> None:
    """Acquire a thread semaphore from async code, giving it back if the waiter is cancelled."""
    while not semaphore.acquire(blocking=False):
        await asyncio.sleep(0.01)


async def run_blocking(work: Callable[[], Any], lease: Lease | None = None) -> Any:
    """Run model or store work in a worker thread; a request deadline abandons the thread, not the
    event loop. A lease is released when the work really ends, not when its request gives up."""

    def guarded() -> Any:
        try:
            return work()
        finally:
            if lease is not None:
                lease.release()

    return await anyio.to_thread.run_sync(guarded, abandon_on_cancel=True)


class TimeoutMiddleware:
    """Answers 504 to a request still running after ``seconds``; a stream already started is cut."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            with anyio.fail_after(self.seconds):
                await self.app(scope, receive, tracking)
        except TimeoutError:
            if started:
                return
            error = RequestTimeout(f"the request took longer than {self.seconds:g} s")
            body = json.dumps(error_body(error_code(error), error.message)).encode()
            await send({"type": "http.response.start", "status": error.http_status, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
