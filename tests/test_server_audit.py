"""The audit's findings, each closed: keys out of the access log, a generic 502, failed sign-ins
limited, an early 413 sized from a chat's images, users whose keys can be rotated and who are
called users."""

from __future__ import annotations

import base64
import json
import logging
import socket

import httpx
import pytest
from fastapi.testclient import TestClient
from test_server_support import PHOTOS, LiveServer, add_user, settings, wait_ready

from rap.cli import run
from rap.errors import ConfigError
from rap.generation import GENERATORS, Generator
from rap.server import create_app
from rap.server.limits import TEXT_ROOM, body_limit
from rap.server.users import open_users


class RefusedKeyGenerator(Generator):
    """A model server that refuses rap's key, as an OpenAI-compatible one says it: internals and all."""

    def __init__(self, argument: str) -> None:
        self.id, self.sees_images, self.max_concepts = "refused", False, 2

    def _stream(self, conversation, options):
        raise ConfigError("http://127.0.0.1:18081/v1/chat/completions refused the API key (401); check RAP_OPENAI_API_KEY")
        yield ""


GENERATORS.register("refused-key", help="test backend: its server refuses the key")(RefusedKeyGenerator)


def test_a_model_server_failure_is_a_generic_502_with_a_request_id(rap_home, caplog):
    with TestClient(create_app(settings(generator="refused-key"))) as api:
        wait_ready(api)
        alice = add_user(rap_home, "alice")
        with caplog.at_level(logging.ERROR, logger="rap.server.errors"):
            answer = api.post("/v1/ask", data={"question": "hi"}, headers=alice)
            streamed = api.post("/v1/ask", data={"question": "hi", "stream": "true"}, headers=alice)
            chat = api.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, headers=alice)
        assert answer.status_code == chat.status_code == 502
        for text in (answer.text, streamed.text, chat.text):
            assert "127.0.0.1" not in text and "RAP_OPENAI" not in text and "request id" in text
        request_id = answer.headers["X-Request-ID"]
        assert request_id in answer.json()["error"]["message"]
        assert any(request_id in r.getMessage() and "RAP_OPENAI_API_KEY" in r.getMessage() for r in caplog.records)


def test_failed_sign_ins_are_limited_per_address_with_retry_after(rap_home):
    with TestClient(create_app(settings(failed_signins="3/minute"))) as api:
        wait_ready(api)
        alice = add_user(rap_home, "alice")
        wrong = {"Authorization": "Bearer rap_guess"}
        assert [api.get("/v1/me", headers=wrong).status_code for _ in range(4)] == [401, 401, 401, 429]
        limited = api.get("/v1/me", headers=alice)  # the address is refused whatever key it now sends
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"


def test_api_keys_in_query_strings_stay_out_of_the_access_log(rap_home):
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    with LiveServer(create_app(settings()), log_level="info") as live:
        logging.getLogger("uvicorn.access").addHandler(handler)
        try:
            answer = httpx.get(live.url + "/v1/me?api_key=rap_secret123&x=1")
        finally:
            logging.getLogger("uvicorn.access").removeHandler(handler)
    assert answer.status_code == 401
    assert any("/v1/me?api_key=" in line for line in lines) and not any("rap_secret123" in line for line in lines)


def _post_raw(url: str, path: str, headers: dict[str, str], chunks: int, chunk: bytes) -> tuple[int, int]:
    """Send a POST over a socket, ``chunks`` pieces of ``chunk`` at most, stopping when the server answers;
    return the status and the bytes of body sent."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        sent = 0
        sock.setblocking(False)
        for _ in range(chunks):
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                pass
            try:
                piece = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if headers.get("Transfer-Encoding") else chunk
                sock.sendall(piece)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        sock.settimeout(30)
        sock.setblocking(True)
        status = int(sock.recv(64).split(b" ")[1])
        return status, sent


def test_a_large_chat_body_is_refused_early_and_its_limit_follows_the_chat_images(rap_home):
    small = settings(max_upload_bytes=2**20, max_chat_images=1)  # a chat body: 1.3 MiB of image + 2 MiB of text
    with LiveServer(create_app(small, auth=False)) as live:
        declared = {"Content-Type": "application/json", "Content-Length": str(200 * 2**20)}
        status, sent = _post_raw(live.url, "/v1/chat/completions", declared, 200, b" " * 2**20)
        assert status == 413 and sent < 10 * 2**20  # answered before the body, not after 200 MiB
        streamed = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        status, sent = _post_raw(live.url, "/v1/chat/completions", streamed, 200, b" " * 2**20)
        assert status == 413 and sent < 20 * 2**20
        assert body_limit(small, "/v1/concepts") == 16 * 2**20 + TEXT_ROOM  # the concept routes take 16 images
        two = "data:image/jpeg;base64," + base64.b64encode((PHOTOS / "dog_01.jpg").read_bytes()).decode()
        parts = [{"type": "image_url", "image_url": {"url": two}}, {"type": "text", "text": "hi"}]
        refused = httpx.post(live.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": parts + parts}]})
        assert refused.status_code == 413 and "at most 1" in refused.json()["error"]["message"]


def test_users_are_called_users_and_their_keys_rotate(rap_home, capsys):
    assert run(["users", "add", "../evil"]) == 2
    err = capsys.readouterr().err
    assert "user name" in err and "concept" not in err
    assert run(["users", "add", "dan", "--json"]) == 0
    old = json.loads(capsys.readouterr().out)["key"]
    assert run(["users", "revoke", "dan"]) == 0
    capsys.readouterr()
    assert run(["users", "rotate", "dan", "--json"]) == 0
    new = json.loads(capsys.readouterr().out)["key"]
    assert run(["users", "rotate", "eve"]) == 3
    with open_users(settings()) as users:
        assert users.authenticate(old) is None and users.authenticate(new).name == "dan"
        assert [(u.name, revoked) for u, revoked in users.list()] == [("dan", False)]
        _, newer = users.rotate("dan")  # a live key is replaced at once too
        assert users.authenticate(new) is None and users.authenticate(newer).name == "dan"
    assert run(["users", "list"]) == 0 and "dan" in capsys.readouterr().out


@pytest.mark.parametrize("store", ["local", "postgres"])
def test_rotation_on_both_user_stores(store, rap_home, request):
    from rap.store.postgres_server import new_database

    url = None if store == "local" else new_database(request.getfixturevalue("postgres_url"))
    with open_users(settings(store_url=url)) as users:
        _, first = users.add("alice")
        users.revoke("alice")
        user, second = users.rotate("alice")
        assert user.name == "alice" and users.authenticate(first) is None and users.authenticate(second) == user
