"""CPU work on every core from one process: a shared pool of threads.

Retrieving from a photo is decoding it (Pillow), embedding its crops (ONNX
Runtime) and looking for faces (dlib). All three release the GIL while they
compute, so plain threads run them on separate cores at once. On a 2-core
machine that is faster than handing the cores to one library at a time: the
encoder's own intra-op threads split each small convolution in two and wait on
each other, where two single-threaded runs on two photos keep both cores busy
(6 against 10 photos/s with the float encoder; BENCHMARKS.md, "Third pass").

One pool per size serves the whole process. A function already running on a
pool thread that maps again runs its items in line, so no pool thread ever
waits on work queued behind it.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_local = threading.local()


def cores(threads: int) -> int:
    """The number of threads a ``threads`` setting means: itself, or for 0 every core this process may use."""
    if threads:
        return threads
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def thread_map(function: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``function`` of each item, in order, on up to ``threads`` threads (0: every core);
    the first exception raised is re-raised here (see :func:`thread_imap`)."""
    items = list(items)
    return list(thread_imap(function, items, threads, window=len(items)))


def thread_imap(function: Callable[[T], R], items: Sequence[T], threads: int, window: int) -> Iterator[R]:
    """``function`` of each item, yielded in order as soon as it is ready, with at most
    ``window`` items started and not yet taken: memory stays bounded however many
    items there are, and no thread waits for the slowest of a batch. Items not yet
    started when the caller stops taking results are never started. In line for
    one thread, one item, or when called from a pool thread (so that one item's
    own work can spread over the pool instead)."""
    if cores(threads) == 1 or len(items) <= 1 or getattr(_local, "in_pool", False):
        yield from map(function, items)
        return
    pool = _pool(cores(threads))
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= max(1, window):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def _pool(size: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if size not in _pools:
            _pools[size] = ThreadPoolExecutor(size, thread_name_prefix="rap", initializer=_mark_pool_thread)
        return _pools[size]


def _mark_pool_thread() -> None:
    _local.in_pool = True
