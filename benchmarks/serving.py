"""`rap serve` in a subprocess for a benchmark: started on a free port, waited on through `/readyz`."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

READY_WITHIN_S = 600  # a loaded 2-core machine exports and quantizes the int8 encoder on first start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def rap_serve(env: dict[str, str], *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run ``rap serve OPTIONS`` with ``env``; yield its URL and process once it is ready, stop it after."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rap", "serve", *options, "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                raise SystemExit(f"rap serve exited with {server.returncode} before it was ready")
            if time.perf_counter() - started > READY_WITHIN_S:
                raise SystemExit(f"rap serve was not ready at {url}/readyz within {READY_WITHIN_S} s")
            time.sleep(0.2)
        yield url, server
    finally:
        server.terminate()
        server.wait(30)
