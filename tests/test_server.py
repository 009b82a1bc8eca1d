"""The HTTP API in process (FastAPI's ASGI test client): routes, the CLI's JSON, auth, bad input."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_server_support import add_concept, add_user, client, photo, png, settings, sse_events, wait_ready  # noqa: F401

from rap.cli import run
from rap.server import create_app


@pytest.fixture
def alice(client, rap_home):
    return add_user(rap_home, "alice")


def test_concept_crud_and_images(client, alice):
    bo = add_concept(client, alice, "bo", info="<bo> is my dog", category="dog", attributes='{"age": "3"}')
    assert (bo["name"], bo["token"], bo["category"], bo["attributes"], len(bo["images"])) == ("bo", "<bo>", "dog", {"age": "3"}, 1)
    add_concept(client, alice, "kit", "cat_00.jpg", category="cat")
    add_concept(client, alice, "abe", "clock_00.jpg")

    first = client.get("/v1/concepts", params={"limit": 2}, headers=alice).json()
    second = client.get("/v1/concepts", params={"limit": 2, "cursor": first["next_cursor"]}, headers=alice).json()
    assert [c["name"] for c in first["concepts"]] == ["abe", "bo"] and [c["name"] for c in second["concepts"]] == ["kit"]
    assert second["next_cursor"] is None

    changed = client.patch("/v1/concepts/bo", json={"name": "bobo", "info": "new", "attributes": {"age": None, "food": "fish"}}, headers=alice)
    assert changed.status_code == 200 and (changed.json()["name"], changed.json()["attributes"]) == ("bobo", {"food": "fish"})
    assert client.get("/v1/concepts/bo", headers=alice).status_code == 404

    grown = client.post("/v1/concepts/bobo/images", files=[("image", photo("dog_01.jpg"))], headers=alice).json()
    first_id, second_id = [image["id"] for image in grown["images"]]
    original = client.get(f"/v1/concepts/bobo/images/{first_id}", headers=alice)
    assert original.headers["content-type"] == "image/jpeg" and original.content == photo()[1]
    thumb = client.get(f"/v1/concepts/bobo/images/{first_id}", params={"size": 64}, headers=alice)
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 64
    assert client.delete(f"/v1/concepts/bobo/images/{first_id}", headers=alice).json()["images"][0]["id"] == second_id
    assert client.get(f"/v1/concepts/bobo/images/{first_id}", headers=alice).json()["error"]["code"] == "image_not_found"
    assert client.delete("/v1/concepts/bobo", headers=alice).status_code == 204
    assert client.get("/v1/concepts/bobo", headers=alice).json()["error"]["code"] == "concept_not_found"


def test_answers_stream_as_server_sent_events(client, alice):
    add_concept(client, alice, "bo", info="<bo> is my dog", category="dog")
    response = client.post("/v1/ask", data={"question": "What is <bo> doing?", "stream": "true"}, files=[("image", photo("dog_01.jpg"))], headers=alice)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    tokens = "".join(data["text"] for event, data in events if event == "token")
    (last_event, done) = events[-1]
    assert last_event == "done" and done["answer"] == tokens.strip() and done["concepts"][0]["name"] == "bo"
    assert "<bo> is my dog" in done["answer"]  # the echo backend repeats the prompt it was given
    caption = client.post("/v1/caption", data={"stream": "true"}, files=[("image", photo("dog_01.jpg"))], headers=alice)
    assert sse_events(caption.text)[-1][1]["concepts"][0]["name"] == "bo"


def test_the_api_answers_what_the_cli_prints(rap_home, capsys):
    """No-auth serves the command line's own store, and each route's JSON is the CLI's --json."""
    flags = ["--encoder", "tiny", "--faces", "none", "--detector", "none"]
    dog = str(photo()[0])
    from test_server_support import PHOTOS

    assert run([*flags, "concept", "add", "bo", "-i", str(PHOTOS / dog), "--info", "<bo> is my dog", "-c", "dog"]) == 0
    capsys.readouterr()

    def cli(*args: str) -> dict:
        assert run([*flags, *args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    with TestClient(create_app(settings(threshold=None), auth=False)) as api:
        wait_ready(api)
        assert api.get("/v1/concepts/bo").json() == cli("concept", "show", "bo")
        image = [("image", photo("dog_01.jpg"))]
        retrieved = api.post("/v1/retrieve", data={"text": "where is bo?"}, files=image).json()
        assert retrieved == cli("retrieve", str(PHOTOS / "dog_01.jpg"), "--text", "where is bo?") | {"image": "dog_01.jpg"}
        asked = api.post("/v1/ask", data={"question": "Is <bo> here?"}, files=image).json()
        assert asked == cli("ask", str(PHOTOS / "dog_01.jpg"), "Is <bo> here?", "--backend", "echo")
        located = api.post("/v1/locate", data={"name": "bo"}, files=image).json()
        assert located == cli("locate", str(PHOTOS / "dog_01.jpg"), "bo")
        recognized = api.post("/v1/recognize", data={"name": "bo", "mode": "retriever"}, files=image).json()
        assert recognized == cli("recognize", str(PHOTOS / "dog_01.jpg"), "bo", "--mode", "retriever")
        assert api.post("/v1/recognize", data={"name": "bo"}, files=image).json()["mode"] == "model"


def test_keys(client, rap_home):
    from rap.server.users import UserDB

    assert client.get("/v1/concepts").json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/concepts", headers={"Authorization": "Bearer rap_nope"}).status_code == 401
    headers = add_user(rap_home, "carol")
    assert client.get("/v1/me", headers=headers).json() == {"user": "carol"}
    UserDB.at_home(rap_home).revoke("carol")
    assert client.get("/v1/me", headers=headers).status_code == 401
    assert client.get("/healthz").json() == {"status": "ok"}
    assert (rap_home / "users.sqlite").read_bytes().find(headers["Authorization"][7:].encode()) == -1  # only its hash


def test_no_auth_refuses_other_hosts(rap_home, capsys):
    assert run(["serve", "--no-auth", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err


def test_users_command_prints_the_key_once(rap_home, capsys):
    assert run(["users", "add", "dan", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["user"] == "dan" and made["key"].startswith("rap_")
    assert run(["users", "list", "--json"]) == 0
    assert made["key"] not in capsys.readouterr().out
    assert run(["users", "add", "dan"]) == 4
    assert run(["users", "revoke", "dan"]) == 0 and run(["users", "revoke", "eve"]) == 3


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("post", "/v1/concepts", {"data": {"name": "bo"}}, 422, "invalid_request"),  # no image
        ("post", "/v1/concepts", {"data": {"name": "kit"}, "files": [("image", ("x.jpg", b"not an image", "image/jpeg"))]}, 422, "invalid_image"),
        ("post", "/v1/concepts", {"data": {"name": "b o"}, "files": [("image", ("x.png", png(), "image/png"))]}, 400, "invalid_name"),
        ("post", "/v1/concepts", {"data": {"name": "kit", "attributes": "[1"}, "files": [("image", ("x.png", png(), "image/png"))]}, 400, "invalid_input"),
        ("post", "/v1/concepts", {"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}, 422, None),
        ("patch", "/v1/concepts/bo", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 422, "invalid_request"),
        ("patch", "/v1/concepts/bo", {"json": {"colour": "red"}}, 422, "invalid_request"),
        ("patch", "/v1/concepts/nobody", {"json": {"info": "x"}}, 404, "concept_not_found"),
        ("delete", "/v1/concepts/nobody", {}, 404, "concept_not_found"),
        ("get", "/v1/concepts/bo/images/99", {}, 404, "image_not_found"),
        ("get", "/v1/concepts/bo/images/1", {"params": {"size": 5000}}, 400, "invalid_input"),
        ("get", "/v1/concepts", {"params": {"cursor": "%%%"}}, 400, "invalid_input"),
        ("post", "/v1/ask", {"data": {"question": "x" * 5000}}, 413, "payload_too_large"),
        ("post", "/v1/ask", {"data": {"question": "  "}}, 400, "invalid_input"),
        ("post", "/v1/retrieve", {"data": {}}, 400, "invalid_input"),
        ("post", "/v1/locate", {"data": {"name": "nobody"}, "files": [("image", ("x.png", png(), "image/png"))]}, 404, "concept_not_found"),
        ("post", "/v1/recognize", {"data": {"name": "bo", "mode": "guess"}, "files": [("image", ("x.png", png(), "image/png"))]}, 422, "invalid_request"),
        ("post", "/v1/chat/completions", {"json": {"messages": []}}, 422, "invalid_request"),
        ("post", "/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.jpg"}}, {"type": "text", "text": "hi"}]}]}}, 400, "invalid_input"),
        ("post", "/v1/chat/completions", {"json": {"messages": [{"role": "assistant", "content": "hi"}]}}, 400, "invalid_input"),
        ("get", "/v1/nothing-here", {}, 404, "not_found"),
    ],
)
def test_bad_input_gets_a_4xx_json_error(client, alice, method, path, kwargs, status, code):
    add_concept(client, alice, "bo")
    headers = alice | kwargs.pop("headers", {})
    response = getattr(client, method)(path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"] and "Traceback" not in response.text
    assert code is None or body["error"]["code"] == code


def test_uploads_are_checked_by_content_and_size(rap_home):
    with TestClient(create_app(settings(max_upload_bytes=4096, max_image_pixels=100 * 100, max_images_per_request=2))) as api:
        wait_ready(api)
        alice = add_user(rap_home, "alice")

        def add(name: str, data: bytes, filename: str = "x.jpg"):
            return api.post("/v1/concepts", headers=alice, data={"name": name}, files=[("image", (filename, data, "image/jpeg"))])

        assert add("big", b"\xff\xd8" + bytes(5000)).status_code == 413
        assert add("wide", png((200, 100))).json()["error"]["message"].endswith("pixel limit")
        assert add("text", b"GIF89a but really text", "x.gif").json()["error"]["code"] == "invalid_image"
        assert add("small", png((60, 40)), "x.exe").status_code == 201
        three = [("image", ("x.png", png(), "image/png"))] * 3
        assert api.post("/v1/concepts", headers=alice, data={"name": "many"}, files=three).json()["error"]["code"] == "invalid_input"

        def streamed():  # no Content-Length: counted as it arrives
            yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
            yield from (bytes(2**16) for _ in range(40))
        for body in (bytes(3 * 2**20), streamed()):
            huge = api.post("/v1/concepts", headers=alice | {"Content-Type": "multipart/form-data; boundary=b"}, content=body)
            assert huge.status_code == 413 and huge.json()["error"]["code"] == "payload_too_large"


def test_heic_and_exif_orientation(client, alice):
    pillow_heif = pytest.importorskip("pillow_heif")
    heic = io.BytesIO()
    pillow_heif.from_pillow(Image.new("RGB", (48, 32), "blue")).save(heic, quality=50)
    added = client.post("/v1/concepts", headers=alice, data={"name": "phone"}, files=[("image", ("IMG_1.HEIC", heic.getvalue(), "image/heic"))])
    assert added.status_code == 201 and (added.json()["images"][0]["width"], added.json()["images"][0]["height"]) == (48, 32)

    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.new("RGB", (40, 20), "green").save(rotated, "JPEG", exif=exif)
    turned = client.post("/v1/concepts", headers=alice, data={"name": "turned"}, files=[("image", ("r.jpg", rotated.getvalue(), "image/jpeg"))])
    assert (turned.json()["images"][0]["width"], turned.json()["images"][0]["height"]) == (20, 40)
