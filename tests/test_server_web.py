"""What the web page needs of the API: the evidence before the first token, negatives, ETags,
OpenAI-style ``usage`` and ``model``, concept JSON without store paths, quiet start-up logs."""

from __future__ import annotations

import base64
import json
import logging

from fastapi.testclient import TestClient
from rap.store.postgres_server import new_database
from test_server_support import add_concept, add_user, client, photo, settings, sse_events, wait_ready  # noqa: F401

from rap.errors import NotReady
from rap.server import create_app
from rap.server.errors import rap_error_response


def _alice(rap_home):
    return add_user(rap_home, "alice")


def _names(client, headers, image: str) -> list[str]:
    found = client.post("/v1/retrieve", files=[("image", photo(image))], headers=headers).json()
    return [c["name"] for c in found["concepts"]]


def test_the_retrieval_event_comes_before_the_first_token(client, rap_home):
    alice = _alice(rap_home)
    add_concept(client, alice, "bo", info="<bo> is my corgi")
    streamed = client.post("/v1/ask", data={"question": "Who is this?", "stream": "true"}, files=[("image", photo("dog_01.jpg"))], headers=alice)
    events = sse_events(streamed.text)
    assert [e for e, _ in events[:2]] == ["retrieval", "token"] and events[-1][0] == "done"
    assert [c["name"] for c in events[0][1]["concepts"]] == ["bo"] and events[0][1]["concepts"][0]["box"]

    image = "data:image/jpeg;base64," + base64.b64encode(photo("dog_01.jpg")[1]).decode()
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "Who?"}]}
    chunks = client.post("/v1/chat/completions", json={"messages": [message], "stream": True}, headers=alice).text
    data = [json.loads(line[6:]) for line in chunks.splitlines() if line.startswith("data: {")]
    assert data[0]["choices"][0]["delta"]["role"] == "assistant" and [c["name"] for c in data[0]["rap_concepts"]] == ["bo"]
    assert data[1]["choices"][0]["delta"]["content"]  # the words come after the evidence
    assert data[-1]["choices"][0]["finish_reason"] == "stop" and data[-1]["usage"]["completion_tokens"] > 0


def test_chat_completions_give_usage_and_answer_only_as_the_model_they_list(client, rap_home):
    alice = _alice(rap_home)
    add_concept(client, alice, "bo", info="<bo> is my corgi")
    served = client.get("/v1/models", headers=alice).json()["data"][0]["id"]
    messages = [{"role": "user", "content": "What is <bo>?"}]
    for asked in (None, served):
        body = client.post("/v1/chat/completions", json={"messages": messages} | ({"model": asked} if asked else {}), headers=alice).json()
        usage = body["usage"]
        assert body["model"] == served and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    refused = client.post("/v1/chat/completions", json={"messages": messages, "model": "gpt-4o"}, headers=alice)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
    assert served in refused.json()["error"]["message"] and "/v1/models" in refused.json()["error"]["message"]


def test_a_negative_stops_that_wrong_match_and_follows_the_concept(client, rap_home):
    _negatives(client, _alice(rap_home))


def test_negatives_on_postgresql(postgres_url, rap_home):
    database = new_database(postgres_url)
    with TestClient(create_app(settings(store_url=database))) as on_postgres:
        wait_ready(on_postgres)
        _negatives(on_postgres, add_user(rap_home, "alice", store_url=database))


def _negatives(client, alice):
    add_concept(client, alice, "bo", "dog_00.jpg")
    assert _names(client, alice, "cat_00.jpg") == ["bo"]  # the tests keep every match: a wrong one
    marked = client.post("/v1/concepts/bo/negatives", files=[("image", photo("cat_00.jpg"))], headers=alice)
    assert marked.status_code == 200 and marked.json() == {"name": "bo", "negatives": 1}
    assert _names(client, alice, "cat_00.jpg") == []  # the next retrieval: no reload, no restart
    assert _names(client, alice, "dog_01.jpg") == ["bo"]  # other photos still match

    assert client.patch("/v1/concepts/bo", json={"name": "rex"}, headers=alice).status_code == 200
    assert client.get("/v1/concepts/rex/negatives", headers=alice).json()["negatives"] == 1
    assert client.delete("/v1/concepts/rex", headers=alice).status_code == 204
    add_concept(client, alice, "rex", "dog_00.jpg")
    assert client.get("/v1/concepts/rex/negatives", headers=alice).json()["negatives"] == 0
    assert client.post("/v1/concepts/nobody/negatives", files=[("image", photo())], headers=alice).status_code == 404


def test_the_concept_list_has_an_etag_and_json_names_no_store_file(client, rap_home):
    alice = _alice(rap_home)
    bo = add_concept(client, alice, "bo")
    assert set(bo["images"][0]) == {"id", "sha256", "width", "height", "face_box"}
    first = client.get("/v1/concepts", headers=alice)
    etag = first.headers["etag"]
    assert client.get("/v1/concepts", headers=alice | {"If-None-Match": etag}).status_code == 304
    add_concept(client, alice, "kit", "cat_00.jpg")
    changed = client.get("/v1/concepts", headers=alice | {"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag and len(changed.json()["concepts"]) == 2


def test_still_loading_is_not_a_warning(caplog):
    with caplog.at_level(logging.INFO, logger="rap"):
        assert rap_error_response(NotReady("loading the models")).status_code == 503
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
