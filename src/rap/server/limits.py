"""What keeps one worker responsive under load: a per-key rate limit, a limit on wrong keys per
client address, a bounded generation queue, and a deadline on every request.

Generation is the expensive step (seconds of a GPU or CPU per answer), so a
worker runs at most ``generation_slots`` at once and lets at most
``generation_queue`` requests wait; the next one is told 503 with
``Retry-After`` at once, rather than waiting minutes behind the others. A slot
is released when its work ends, including when the client goes away mid-stream.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from rap.errors import ConfigError, Overloaded, PayloadTooLarge, RateLimited, RequestTimeout
from rap.server.errors import error_body, error_code
from rap.server.metrics import ASGIApp, Metrics, Scope
from rap.settings import Settings


class RateLimiter:
    """Rates per key, counted by the ``limits`` package in this worker's memory (a moving window).

    Per worker: N workers allow N times the rate (a load balancer with sticky
    keys, or ``limits``' Redis storage, would make it global).
    """

    def __init__(self, rate: str | RateLimitItem, what: str) -> None:
        try:
            self.item = rate if isinstance(rate, RateLimitItem) else parse(rate)
        except ValueError:
            raise ConfigError(f"{what}: {rate!r} is not a rate; write it as '10/minute'") from None
        self.what = what
        self._window = MovingWindowRateLimiter(MemoryStorage())

    def _refusal(self, key: str) -> RateLimited:
        reset = self._window.get_window_stats(self.item, key).reset_time
        wait = max(1, math.ceil(reset - time.time()))
        return RateLimited(f"{self.what}; the limit is {self.item.amount} per {self.item.get_expiry()} s, retry in {wait} s", wait)

    def check(self, key: str) -> None:
        """Count one for ``key``, or raise :class:`RateLimited` with the seconds until it may try again."""
        if not self._window.hit(self.item, key):
            raise self._refusal(key)

    def hit(self, key: str) -> None:
        """Count one for ``key`` (what is left shows in :meth:`refuse_if_spent`)."""
        self._window.hit(self.item, key)

    def refuse_if_spent(self, key: str) -> None:
        """Raise :class:`RateLimited` if ``key`` has nothing left, without counting."""
        if not self._window.test(self.item, key):
            raise self._refusal(key)


class Lease:
    """One generation slot, released exactly once, on the event loop, whoever gets there first:
    the worker thread that ran the work, the stream that ended, or the response's background task."""

    def __init__(self, queue: GenerationQueue) -> None:
        self._queue, self._released = queue, False

    def release(self) -> None:
        """Give the slot back (call it on the event loop)."""
        if not self._released:
            self._released = True
            self._queue._release(self)

    async def end(self) -> None:
        """:meth:`release` as a response's background task: a stream never started still frees its slot."""
        self.release()

    def release_from_thread(self) -> None:
        """:meth:`release` from the worker thread that did the work, however long after its request gave up."""
        try:
            anyio.from_thread.run_sync(self.release)
        except RuntimeError:  # the event loop is gone, and its slots with it
            pass


class GenerationQueue:
    """``slots`` generations at once, at most ``waiting`` more queued, the rest refused with 503."""

    def __init__(self, slots: int, waiting: int, retry_after: int, metrics: Metrics) -> None:
        self.slots, self.waiting, self.retry_after = slots, waiting, retry_after
        self._metrics = metrics
        self._free = anyio.CapacityLimiter(slots)
        self._queued = 0

    @property
    def in_use(self) -> int:
        return int(self._free.borrowed_tokens)

    async def acquire(self) -> Lease:
        """Wait for a slot, or refuse at once when ``waiting`` requests already do."""
        if self._free.available_tokens < 1 and self._queued >= self.waiting:
            raise Overloaded(
                f"the service is busy ({self.in_use} answers being generated, {self._queued} waiting); "
                f"retry in {self.retry_after} s",
                self.retry_after,
            )
        lease = Lease(self)
        self._queued += 1
        self._metrics.queue.inc()
        try:
            await self._free.acquire_on_behalf_of(lease)
        finally:
            self._queued -= 1
            self._metrics.queue.dec()
        self._metrics.busy.inc()
        return lease

    def _release(self, lease: Lease) -> None:
        self._free.release_on_behalf_of(lease)
        self._metrics.busy.dec()


async def run_blocking(work: Callable[[], Any], lease: Lease | None = None) -> Any:
    """Run model or store work in a worker thread; a request deadline abandons the thread, not the
    event loop. A lease is released when the work really ends, not when its request gives up."""

    def guarded() -> Any:
        try:
            return work()
        finally:
            if lease is not None:
                lease.release_from_thread()

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


TEXT_ROOM = 2**21
"""Bytes of a request body beyond its images: form fields, a chat's messages."""


def body_limit(settings: Settings, path: str) -> int:
    """The largest body a route takes, from the images it may carry: a chat's JSON holds at most
    ``max_chat_images`` images in base64; a concept's form ``max_images_per_request``; any other one."""
    if path == "/v1/chat/completions":
        return settings.max_chat_images * (settings.max_upload_bytes * 4 // 3 + 64) + TEXT_ROOM
    if path == "/v1/concepts" or path.endswith("/images"):
        return settings.max_images_per_request * settings.max_upload_bytes + TEXT_ROOM
    return settings.max_upload_bytes + TEXT_ROOM


class BodyLimitMiddleware:
    """Refuses a request body larger than its route's :func:`body_limit` with 413 and the JSON error
    body, at once when it declares its length, as soon as it passes it when it streams, and in
    either case before it is parsed or spooled to disk."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def _refuse(self, send: Callable[[Any], Awaitable[None]], max_bytes: int) -> None:
        error = PayloadTooLarge(f"the request body is larger than the {max_bytes / 2**20:.1f} MiB this route takes")
        body = json.dumps(error_body(error_code(error), error.message)).encode()
        await send({"type": "http.response.start", "status": error.http_status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = body_limit(self.settings, scope["path"])
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(send, max_bytes)
            return
        seen, exceeded = 0, False

        async def counted() -> Any:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                exceeded = True  # the app sees the client leave, and its answer is replaced by the 413
                return {"type": "http.disconnect"}
            return message

        async def guarded(message: Any) -> None:
            if not exceeded:
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not exceeded:
                raise
        if exceeded:
            await self._refuse(send, max_bytes)
