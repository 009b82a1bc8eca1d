"""``rap serve --workers 2``: two processes share the store, and /metrics counts both."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from test_server_support import free_port, photo
from waiting import end_process, wait_for_readyz

WORKERS_READY_S = 600.0
"""Two workers exporting and quantizing the default encoder: the test took 2 minutes on 2 cores at load 15."""


@pytest.mark.slow
def test_two_workers_serve_one_store(rap_home):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "rap", "--detector", "none", "serve", "--no-auth", "--port", str(port), "--workers", "2"],
        env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Each worker loads the default encoder, the first exporting and quantizing it: minutes on a loaded
        # machine. /readyz answers from one worker; the other, should it still be loading, answers its
        # first request once it has loaded, hence the long client timeout.
        wait_for_readyz(f"http://127.0.0.1:{port}", server, deadline_s=WORKERS_READY_S, what="rap serve --workers 2")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WORKERS_READY_S) as http:
            assert http.post("/v1/concepts", data={"name": "bo"}, files=[("image", photo())]).status_code == 201
            found = [http.post("/v1/retrieve", data={"text": "where is bo?"}).json()["concepts"][0]["name"] for _ in range(8)]
            assert found == ["bo"] * 8  # whichever worker answered
            assert 'rap_requests_total{method="POST",route="/v1/retrieve",status="200"} 8.0' in http.get("/metrics").text
    finally:
        server.terminate()
        end_process(server, "rap serve, terminated")
    assert not list((rap_home / "server").glob("metrics-*"))
