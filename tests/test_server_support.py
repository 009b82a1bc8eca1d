"""What the API tests share: settings with the tests' tiny encoder and echo backend, users, clients.

Not a test module of its own; the test_server*.py modules import from it.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from rap.store.postgres_server import new_database

from rap.generation import GENERATORS, Generator
from rap.server import create_app
from rap.server.users import open_users
from rap.settings import Settings, resolve
from waiting import wait_for_readyz, wait_until

PHOTOS = Path(__file__).parent / "photos"
TINY = {"encoder": "tiny", "faces": "none", "detector": "none", "generator": "echo", "threshold": float("inf")}


class SlowEchoGenerator(Generator):
    """Echoes the question a word every ``delay`` seconds: long enough to time out or hang up on."""

    def __init__(self, argument: str, delay: float = 0.2) -> None:
        self.id, self.delay = "slow-echo", delay
        self.sees_images, self.max_concepts = False, 2
        self.pieces_sent = 0

    def _stream(self, conversation, options):
        for word in conversation[-1].text_only().split(" "):
            time.sleep(self.delay)
            self.pieces_sent += 1
            yield word + " "


GENERATORS.register("slow-echo", help="test backend: echoes slowly")(SlowEchoGenerator)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def settings(**changes: Any) -> Settings:
    return resolve().settings.model_copy(update=TINY | changes)


def photo(name: str = "dog_00.jpg") -> tuple[str, bytes, str]:
    return (name, (PHOTOS / name).read_bytes(), "image/jpeg")


def png(size: tuple[int, int] = (32, 32), colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def add_user(home: Path, name: str, store_url: str | None = None) -> dict[str, str]:
    """Make a user of the server on ``store_url`` (default: the embedded store); return the header that authenticates as them."""
    with open_users(settings(home=home, store_url=store_url)) as users:
        _, key = users.add(name)
    return {"Authorization": f"Bearer {key}"}


def wait_ready(client: TestClient) -> None:
    """Wait for the in-process app's models to load (its readiness probe, ``/readyz``)."""
    wait_until(lambda: client.get("/readyz").status_code == 200, "the app to answer 200 at /readyz", interval_s=0.02)


def server_store(request: pytest.FixtureRequest) -> str | None:
    """For a module's ``server_store_url`` fixture with params ``["local", "postgres"]``: None, or a new empty database."""
    if request.param == "local":
        return None
    return new_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def client(rap_home: Path, server_store_url: str | None) -> Iterator[TestClient]:
    """The API in process (auth on, tiny models) on ``server_store_url`` (conftest), ready."""
    with TestClient(create_app(settings(store_url=server_store_url))) as test_client:
        wait_ready(test_client)
        yield test_client


def add_concept(client: TestClient, headers: dict[str, str], name: str, image: str = "dog_00.jpg", **fields: str) -> dict:
    response = client.post("/v1/concepts", headers=headers, data={"name": name, **fields}, files=[("image", photo(image))])
    assert response.status_code == 201, response.text
    return response.json()


def sse_events(text: str) -> list[tuple[str, Any]]:
    """``(event, data)`` for each Server-Sent Event in a response body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


class LiveServer:
    """uvicorn on a free loopback port, in a thread of this process (so test backends are registered)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()

        def started() -> bool:
            assert self.thread.is_alive(), "uvicorn's thread ended before it was serving"
            return self.server.started

        wait_until(started, "uvicorn to listen", interval_s=0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        wait_for_readyz(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
