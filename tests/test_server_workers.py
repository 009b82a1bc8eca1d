"""``rap serve --workers 2``: two processes share the store, and /metrics counts both."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from test_server_support import free_port, photo


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
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for _ in range(600):
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            assert http.post("/v1/concepts", data={"name": "bo"}, files=[("image", photo())]).status_code == 201
            found = [http.post("/v1/retrieve", data={"text": "where is bo?"}).json()["concepts"][0]["name"] for _ in range(8)]
            assert found == ["bo"] * 8  # whichever worker answered
            assert 'rap_requests_total{method="POST",route="/v1/retrieve",status="200"} 8.0' in http.get("/metrics").text
    finally:
        server.terminate()
        server.wait(30)
    assert not list((rap_home / "server").glob("metrics-*"))
