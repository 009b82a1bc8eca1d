"""Two users, concepts of the same name: neither sees, finds, edits or infers the other's, on any route."""

from __future__ import annotations

import base64
import json

import pytest
from test_server_support import PHOTOS, add_concept, add_user, client, photo, server_store  # noqa: F401


@pytest.fixture(params=["local", "postgres"])
def server_store_url(request):
    return server_store(request)


@pytest.fixture
def pair(client, rap_home, server_store_url):
    alice, bob = add_user(rap_home, "alice", server_store_url), add_user(rap_home, "bob", server_store_url)
    add_concept(client, alice, "bo", "dog_00.jpg", info="<bo> is alice's secret dog", category="dog")
    add_concept(client, alice, "kit", "cat_00.jpg", info="<kit> is alice's cat", category="cat")
    add_concept(client, bob, "bo", "teapot_00.jpg", info="<bo> is bob's teapot", category="teapot")
    return alice, bob


def _texts(response) -> str:
    return response.text.replace("\\u2019", "'")


def test_concept_routes(client, pair):
    alice, bob = pair
    assert [c["name"] for c in client.get("/v1/concepts", headers=bob).json()["concepts"]] == ["bo"]
    assert client.get("/v1/concepts/bo", headers=bob).json()["info"] == "<bo> is bob's teapot"
    assert client.get("/v1/concepts/bo", headers=alice).json()["info"] == "<bo> is alice's secret dog"
    # alice's kit and a name nobody has answer alike, to the byte but for the name
    for method, path, kwargs in [
        ("get", "/v1/concepts/{}", {}),
        ("patch", "/v1/concepts/{}", {"json": {"info": "mine now"}}),
        ("delete", "/v1/concepts/{}", {}),
        ("get", "/v1/concepts/{}/images/1", {}),
        ("delete", "/v1/concepts/{}/images/1", {}),
        ("post", "/v1/concepts/{}/images", {"files": [("image", photo("cat_01.jpg"))]}),
    ]:
        theirs = getattr(client, method)(path.format("kit"), headers=bob, **kwargs)
        nobodys = getattr(client, method)(path.format("zed"), headers=bob, **kwargs)
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.text.replace("kit", "zed") == nobodys.text
    # bob may take the name alice uses, and renaming into it does not collide with hers
    assert add_concept(client, bob, "kit", "clock_00.jpg")["info"] == ""
    assert client.patch("/v1/concepts/kit", json={"name": "kat"}, headers=bob).status_code == 200
    assert client.get("/v1/concepts/kit", headers=alice).json()["info"] == "<kit> is alice's cat"
    # bob's images are his own: the same image id gives each their own photo
    assert client.get("/v1/concepts/bo/images/1", headers=bob).content == photo("teapot_00.jpg")[1]
    assert client.get("/v1/concepts/bo/images/1", headers=alice).content == photo("dog_00.jpg")[1]
    assert client.delete("/v1/concepts/bo", headers=bob).status_code == 204
    assert client.get("/v1/concepts/bo", headers=alice).status_code == 200


def test_retrieval_and_answers(client, pair):
    alice, bob = pair
    dog = [("image", photo("dog_00.jpg"))]  # alice's very photo of her bo
    found = client.post("/v1/retrieve", data={"text": "is kit with bo?", "k": "5"}, files=dog, headers=bob).json()
    assert [c["name"] for c in found["concepts"]] == ["bo"] and "secret" not in _texts(client.get("/v1/concepts", headers=bob))
    for route, data in [("/v1/ask", {"question": "Where are <kit> and <bo>?"}), ("/v1/caption", {})]:
        for stream in ("false", "true"):
            answer = client.post(route, data=data | {"stream": stream}, files=dog, headers=bob)
            assert answer.status_code == 200 and "alice" not in _texts(answer) and "bob's teapot" in _texts(answer)
    for route in ("/v1/locate", "/v1/recognize"):
        theirs = client.post(route, data={"name": "kit"}, files=dog, headers=bob)
        nobodys = client.post(route, data={"name": "zed"}, files=dog, headers=bob)
        assert theirs.status_code == 404 and theirs.text.replace("kit", "zed") == nobodys.text
        assert client.post(route, data={"name": "bo"}, files=dog, headers=bob).json()["match"]["category"] == "teapot"


def test_chat_completions(client, pair):
    alice, bob = pair
    url = "data:image/jpeg;base64," + base64.b64encode((PHOTOS / "dog_00.jpg").read_bytes()).decode()
    messages = [
        {"role": "user", "content": "Tell me about kit."},
        {"role": "assistant", "content": "I do not know kit."},
        {"role": "user", "content": [{"type": "text", "text": "And <bo> in this photo?"}, {"type": "image_url", "image_url": {"url": url}}]},
    ]
    for stream in (False, True):
        response = client.post("/v1/chat/completions", json={"messages": messages, "stream": stream}, headers=bob)
        assert response.status_code == 200 and "alice" not in _texts(response)
        last = json.loads(response.text.split("data: ")[-2]) if stream else response.json()
        assert [(c["name"], c["category"]) for c in last["rap_concepts"]] == [("bo", "teapot")]
    mine = client.post("/v1/chat/completions", json={"messages": messages}, headers=alice).json()
    assert {c["name"] for c in mine["rap_concepts"]} == {"kit", "bo"}


def test_a_worker_keeps_the_most_recently_used_stores_open(rap_home):
    from rap.server.runtime import Runtime
    from rap.server.users import User
    from rap.settings import Settings

    runtime = Runtime(Settings(home=rap_home, encoder="tiny", faces="none", open_stores=2), auth=False)
    alice, bob, carol = (User(n, name, "") for n, name in enumerate(["alice", "bob", "carol"], start=1))
    try:
        kept = runtime.store(alice)
        held = runtime.store(bob)
        assert runtime.store(alice) is kept  # alice is now the most recent: bob goes first
        runtime.store(carol)
        assert runtime.store(alice) is kept and runtime.store(bob) is not held
        assert len(held) == 0  # dropped, not closed: a request that holds it still reads it
    finally:
        runtime.close()
