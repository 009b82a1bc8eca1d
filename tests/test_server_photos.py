"""``/v1/photos``: each user's photo library on the server: upload, background indexing, find, the
photo served only to its owner, delete, suggestions named, bad uploads, and 501 on PostgreSQL."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_photos import _variants
from test_server_support import PHOTOS, add_concept, add_user, photo, png, settings, wait_ready
from waiting import wait_until

from rap.server import create_app

LIBRARY = {"detector": "multiscale", "threshold": None}
"""The command line's defaults for what the library decides with (the API tests' TINY turns both off)."""


@pytest.fixture
def library_client(rap_home: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(**LIBRARY))) as test_client:
        wait_ready(test_client)
        yield test_client


def upload(client: TestClient, headers: dict[str, str], *files: tuple[str, bytes, str]) -> list[dict]:
    response = client.post("/v1/photos", headers=headers, files=[("image", f) for f in files])
    assert response.status_code == 202, response.text
    return response.json()["photos"]


def indexed(client: TestClient, headers: dict[str, str], ids: list[str]) -> None:
    def states() -> bool:
        got = [client.get(f"/v1/photos/{i}/state", headers=headers).json()["state"] for i in ids]
        assert "failed" not in got, got
        return all(s == "indexed" for s in got)

    wait_until(states, f"{len(ids)} uploaded photos to be indexed")


def found(client: TestClient, headers: dict[str, str], concept: str) -> list[str]:
    response = client.get("/v1/photos", params={"concept": concept}, headers=headers)
    assert response.status_code == 200, response.text
    return [p["id"] for p in response.json()["photos"]]


def sha(name: str) -> str:
    return hashlib.sha256((PHOTOS / name).read_bytes()).hexdigest()


def test_upload_index_find_serve_only_to_its_owner_and_delete(library_client, rap_home):
    client = library_client
    alice, bob = add_user(rap_home, "alice"), add_user(rap_home, "bob")
    names = ["teapot_00.jpg", "dog_00.jpg", "cat_00.jpg", "clock_00.jpg"]
    states = upload(client, alice, *map(photo, names))
    assert [s["id"] for s in states] == [sha(n) for n in names]
    assert {s["state"] for s in states} <= {"queued", "indexed"}
    indexed(client, alice, [s["id"] for s in states])
    wait_until(lambda: "rap_photo_index_queue 0.0" in client.get("/metrics").text, "/metrics to show no library left to index")
    # the same bytes again are the same photo, already indexed
    assert upload(client, alice, photo("dog_00.jpg")) == [{"id": sha("dog_00.jpg"), "state": "indexed", "reason": None}]

    add_concept(client, alice, "teapot", "teapot_00.jpg", category="teapot")
    listed = found(client, alice, "teapot")
    assert listed[0] == sha("teapot_00.jpg") and sha("dog_00.jpg") not in listed
    first = client.get("/v1/photos", params={"concept": "teapot"}, headers=alice).json()["photos"][0]
    assert set(first) == {"id", "size", "taken", "orientation", "box", "distance", "score", "region", "match"}
    # a concept added later is found at once, with nothing re-indexed
    add_concept(client, alice, "rex", "dog_00.jpg", category="dog")
    assert found(client, alice, "rex")[0] == sha("dog_00.jpg")

    # the photo is alice's alone: bob gets the 404 of a photo nobody has, to the byte
    dog = sha("dog_00.jpg")
    assert client.get(f"/v1/photos/{dog}", headers=alice).content == photo("dog_00.jpg")[1]
    nobody = "0" * 64
    for method in ("get", "delete"):
        for path in ("/v1/photos/{}", "/v1/photos/{}/state"):
            if method == "delete" and path.endswith("state"):
                continue
            theirs = getattr(client, method)(path.format(dog), headers=bob)
            nobodys = getattr(client, method)(path.format(nobody), headers=bob)
            assert theirs.status_code == nobodys.status_code == 404
            assert theirs.content == nobodys.content
    assert client.get("/v1/photos", params={"concept": "rex"}, headers=bob).status_code == 404  # bob has no rex

    assert client.delete(f"/v1/photos/{dog}", headers=alice).status_code == 204
    assert client.get(f"/v1/photos/{dog}", headers=alice).status_code == 404
    assert dog not in found(client, alice, "rex")


def test_suggestions_named_become_a_concept_find_returns(library_client, rap_home, tmp_path):
    client = library_client
    alice = add_user(rap_home, "alice")
    folder = tmp_path / "many"
    folder.mkdir()
    files = _variants(PHOTOS / "clock_00.jpg", folder, 6, "clock") + _variants(PHOTOS / "dog_01.jpg", folder, 6, "dog")
    states = upload(client, alice, *[(f.name, f.read_bytes(), "image/jpeg") for f in files])
    indexed(client, alice, [s["id"] for s in states])
    subject = {s["id"]: f.name.split("_")[0] for s, f in zip(states, files)}

    response = client.get("/v1/photos/suggestions", params={"min_photos": 4}, headers=alice)
    assert response.status_code == 200, response.text
    groups = response.json()["groups"]
    assert groups and all(g["photos"] >= 4 for g in groups)
    chosen = next(g for g in groups if {subject[s["id"]] for s in g["sample"]} == {"dog"})
    named = client.post(f"/v1/photos/suggestions/{chosen['group']}/name", json={"name": "rex", "category": "dog"}, headers=alice)
    assert named.status_code == 201, named.text
    assert named.json()["name"] == "rex" and named.json()["category"] == "dog"
    listed = found(client, alice, "rex")
    assert sum(subject[i] == "dog" for i in listed) >= 4 and all(subject[i] == "dog" for i in listed[:4])
    missing = client.post("/v1/photos/suggestions/99/name", json={"name": "nobody"}, headers=alice)
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"code", "message"}


def test_bad_uploads_are_refused_or_fail_with_their_reason(library_client, rap_home):
    client = library_client
    alice = add_user(rap_home, "alice")
    for bad in [("notes.jpg", b"not a photo at all", "image/jpeg"), ("empty.png", b"", "image/png")]:
        response = client.post("/v1/photos", headers=alice, files=[("image", bad)])
        assert response.status_code == 422, response.text
        assert set(response.json()["error"]) == {"code", "message"}
    assert client.post("/v1/photos", headers=alice).status_code == 422  # no photo at all
    # a JPEG whose header is whole but whose pixels are cut off is taken, then fails indexing with its reason
    whole = io.BytesIO()
    Image.open(PHOTOS / "cat_00.jpg").save(whole, "JPEG", quality=95)
    cut = whole.getvalue()[: len(whole.getvalue()) // 2]
    [state] = upload(client, alice, ("cut.jpg", cut, "image/jpeg"))
    failed = wait_until(
        lambda: (s := client.get(f"/v1/photos/{state['id']}/state", headers=alice).json())["state"] == "failed" and s,
        "the truncated photo's indexing to fail",
    )
    assert failed["reason"].startswith(f"{state['id']}.jpg: ") and str(rap_home) not in failed["reason"]  # no server path
    assert client.get(f"/v1/photos/{state['id']}", headers=alice).status_code == 404
    # a good photo after it is indexed as ever
    [good] = upload(client, alice, ("red.png", png((64, 48)), "image/png"))
    indexed(client, alice, [good["id"]])
    assert client.get(f"/v1/photos/{good['id']}", headers=alice).headers["content-type"] == "image/png"


def test_every_photos_route_answers_501_on_postgresql(rap_home, postgres_url):
    from rap.store.postgres_server import new_database

    store_url = new_database(postgres_url)
    with TestClient(create_app(settings(store_url=store_url))) as client:
        wait_ready(client)
        alice = add_user(rap_home, "alice", store_url)
        some = "0" * 64
        for method, path, kwargs in [
            ("post", "/v1/photos", {"files": [("image", photo())]}),
            ("get", "/v1/photos?concept=bo", {}),
            ("get", f"/v1/photos/{some}", {}),
            ("get", f"/v1/photos/{some}/state", {}),
            ("delete", f"/v1/photos/{some}", {}),
            ("get", "/v1/photos/suggestions", {}),
            ("post", "/v1/photos/suggestions/1/name", {"json": {"name": "x"}}),
        ]:
            response = getattr(client, method)(path, headers=alice, **kwargs)
            assert response.status_code == 501, (path, response.text)
            error = response.json()["error"]
            assert error["code"] == "not_supported" and "embedded store" in error["message"]


def test_a_photo_kept_but_never_indexed_before_a_restart_is_indexed_when_asked_for(library_client, rap_home):
    client = library_client
    alice = add_user(rap_home, "alice")
    [first] = upload(client, alice, photo("dog_00.jpg"))
    indexed(client, alice, [first["id"]])
    # what a server stopped between keeping an upload and indexing it leaves behind
    runtime = client.app.state.runtime
    store = runtime.store(next(user for user, _ in runtime.users.list() if user.name == "alice"))
    left = sha("cat_00.jpg")
    (store.path / "library" / f"{left}.jpg").write_bytes((PHOTOS / "cat_00.jpg").read_bytes())
    indexed(client, alice, [left])
