"""``kill -9`` of a serving process in the middle of concept adds, then a restart: every
acknowledged concept is there, whole, and retrievable; nothing is half-written."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from test_server_support import add_user, free_port, server_store
from waiting import DEADLINE_S, end_process, join_all, wait_for_readyz, wait_until

TESTS = Path(__file__).parent
SERVER = """
import sys, uvicorn, conftest  # conftest registers the tiny encoder and the echo backend
from test_server_support import settings
from rap.server import create_app
uvicorn.run(create_app(settings()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _start(port: int, store_url: str | None) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])} | ({"RAP_STORE_URL": store_url} if store_url else {})
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], env=env, cwd=TESTS)
    try:
        wait_for_readyz(f"http://127.0.0.1:{port}", process)
    except BaseException:
        process.kill()
        process.wait(DEADLINE_S)
        raise
    return process


def _noise(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(params=["local", "postgres"])
def server_store_url(request):
    return server_store(request)


@pytest.mark.slow
def test_kill_9_during_writes_loses_nothing_acknowledged(rap_home, server_store_url):
    headers = add_user(rap_home, "alice", server_store_url)
    port = free_port()
    server = _start(port, server_store_url)
    acknowledged: list[str] = []
    failures: list[str] = []  # what went wrong before the kill: the test fails at once, saying so
    killed = threading.Event()

    def writer(first: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=DEADLINE_S) as http:
            for n in range(first, first + 10_000, 4):
                if killed.is_set():
                    return
                try:
                    response = http.post("/v1/concepts", data={"name": f"c{n}"}, files=[("image", ("x.png", _noise(n), "image/png"))])
                except httpx.TransportError as error:
                    if not killed.is_set():
                        failures.append(f"c{n}: {error!r}")
                    return
                if response.status_code != 201:
                    failures.append(f"c{n}: {response.status_code} {response.text[:300]}")
                    return
                acknowledged.append(f"c{n}")

    writers = [threading.Thread(target=writer, args=(n,), name=f"writer-{n}") for n in range(4)]
    for thread in writers:
        thread.start()
    try:
        wait_until(
            lambda: len(acknowledged) >= 20 or failures or not any(thread.is_alive() for thread in writers),
            "20 concepts acknowledged by the server before killing it",
        )
    finally:
        killed.set()
        os.kill(server.pid, signal.SIGKILL)
        end_process(server, "the killed server")
        join_all(writers, "the writers to see the server gone")
    assert not failures and len(acknowledged) >= 20, f"{len(acknowledged)} adds acknowledged, then: {failures}"

    server = _start(port, server_store_url)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
            listed = http.get("/v1/concepts", params={"limit": 10_000}).json()["concepts"]
            names = {c["name"] for c in listed}
            assert set(acknowledged) <= names
            for concept in listed:  # whatever was committed is whole
                assert len(concept["images"]) == 1
                assert http.get(f"/v1/concepts/{concept['name']}/images/{concept['images'][0]['id']}").status_code == 200
            for name in acknowledged[-5:]:
                n = int(name[1:])
                found = http.post("/v1/retrieve", data={"k": "1"}, files=[("image", ("q.png", _noise(n), "image/png"))]).json()
                assert found["concepts"][0]["name"] == name
    finally:
        server.kill()
        end_process(server, "the restarted server, killed")
