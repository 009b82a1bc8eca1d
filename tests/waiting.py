"""Waiting in tests: every wait has a deadline, and a wait that runs out says what it waited for.

The deadlines are generous on purpose (a loaded 2-core machine is many times
slower than an idle one): they only decide how long a broken test takes to
fail, never whether a working one passes. Nothing here measures speed; the
per-test limit of pytest-timeout (``pyproject.toml``) stops whatever still hangs.

Not a test module: tests import it (``from waiting import wait_until``).
"""

from __future__ import annotations

import select
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, TypeVar

import httpx

T = TypeVar("T")

DEADLINE_S = 120.0
"""How long a test waits for something that takes a second on an idle machine."""


def wait_until(
    predicate: Callable[[], T],
    what: str,
    deadline_s: float = DEADLINE_S,
    interval_s: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` until it returns something true, and return that.

    Exceptions of the ``ignore`` types count as "not yet" (a server that does
    not accept connections yet); past ``deadline_s`` the test fails with
    ``what`` and the last value or exception seen.
    """
    deadline = time.monotonic() + deadline_s
    last: object = None
    while True:
        try:
            last = predicate()
        except ignore as error:
            last = error
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {deadline_s:g} s for {what}; last seen: {last!r}")
        time.sleep(interval_s)


def wait_for_readyz(url: str, process: subprocess.Popen | None = None, deadline_s: float = DEADLINE_S, what: str = "the server") -> None:
    """Poll ``url``'s readiness probe (``/readyz``) until it answers 200.

    With ``process`` (the server's), a server that exits fails at once with
    its exit code instead of after the deadline.
    """

    def ready() -> bool:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what} exited with code {process.returncode} before {url}/readyz answered 200")
        return httpx.get(f"{url}/readyz", timeout=10).status_code == 200

    wait_until(ready, f"{what} to answer 200 at {url}/readyz", deadline_s, interval_s=0.1, ignore=(httpx.TransportError,))


def read_line(stream: IO[bytes], what: str, deadline_s: float = DEADLINE_S) -> bytes:
    """The first line a child process writes to ``stream`` (a pipe it flushes whole lines to), within the deadline.

    Only for a pipe nothing was read from yet: ``select`` sees the pipe, not
    what Python has already buffered from it.
    """
    readable, _, _ = select.select([stream], [], [], deadline_s)
    if not readable:
        raise AssertionError(f"waited {deadline_s:g} s for {what}; the process wrote nothing")
    return stream.readline()


def join_all(threads: Iterable[threading.Thread], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Join every thread by one shared deadline; fail naming ``what`` if any is still running."""
    deadline = time.monotonic() + deadline_s
    threads = list(threads)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    running = [thread.name for thread in threads if thread.is_alive()]
    assert not running, f"waited {deadline_s:g} s for {what}; still running: {running}"


def end_process(process: subprocess.Popen, what: str, deadline_s: float = DEADLINE_S) -> int:
    """Wait for ``process`` to exit (after it was told to); fail naming ``what`` if it does not, killing it."""
    try:
        return process.wait(deadline_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(deadline_s)
        raise AssertionError(f"waited {deadline_s:g} s for {what} to exit; killed it") from None
