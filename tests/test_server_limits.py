"""The service's limits: per-key rate, the bounded generation queue, request deadlines, metrics."""

from __future__ import annotations

from types import SimpleNamespace

import anyio
from fastapi.testclient import TestClient
from test_server_support import add_concept, add_user, client, photo, settings, wait_ready  # noqa: F401
from waiting import wait_until

from rap.server import create_app, limits


def test_each_key_has_its_own_rate(rap_home, monkeypatch):
    # the clock stands still, so no token comes back however slowly a loaded machine sends the requests
    monkeypatch.setattr(limits, "time", SimpleNamespace(monotonic=lambda: 1000.0))
    with TestClient(create_app(settings(rate_limit=3))) as api:
        wait_ready(api)
        alice, bob = add_user(rap_home, "alice"), add_user(rap_home, "bob")
        assert [api.get("/v1/me", headers=alice).status_code for _ in range(4)] == [200, 200, 200, 429]
        limited = api.get("/v1/me", headers=alice)
        assert limited.json()["error"]["code"] == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
        assert api.get("/v1/me", headers=bob).status_code == 200


def test_a_full_generation_queue_answers_503_with_retry_after(rap_home):
    with TestClient(create_app(settings(generation_slots=1, generation_queue=0, retry_after=7))) as api:
        wait_ready(api)
        alice = add_user(rap_home, "alice")
        queue = api.app.state.runtime.queue
        lease = anyio.run(queue.acquire)  # someone else's answer is being generated
        busy = api.post("/v1/ask", data={"question": "hi"}, headers=alice)
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "7" and busy.json()["error"]["code"] == "overloaded"
        # retrieval needs no slot
        assert api.post("/v1/retrieve", data={"text": "hi"}, headers=alice).status_code == 200
        lease.release()
        assert api.post("/v1/ask", data={"question": "hi"}, headers=alice).status_code == 200
        assert queue.in_use == 0


def test_a_request_past_its_deadline_gets_504_and_frees_its_slot(rap_home):
    # 25 words at 0.2 s each take 5 s whatever the load, past the 2 s deadline; 2 s leave a loaded
    # machine time to reach the generator, which then runs to its end after the 504.
    with TestClient(create_app(settings(generator="slow-echo", request_timeout=2.0))) as api:
        wait_ready(api)
        alice = add_user(rap_home, "alice")
        late = api.post("/v1/ask", data={"question": " ".join(f"w{n}" for n in range(25))}, headers=alice)
        assert late.status_code == 504 and late.json()["error"]["code"] == "request_timeout"
        generator = api.app.state.runtime.models.generator
        # the abandoned generation ends in its thread, then gives its slot back
        wait_until(lambda: api.app.state.runtime.queue.in_use == 0, "the timed-out generation to give its slot back")
        assert generator.pieces_sent == 25


def test_metrics(client, rap_home):
    alice = add_user(rap_home, "alice")
    add_concept(client, alice, "bo")
    client.post("/v1/ask", data={"question": "where is bo?"}, files=[("image", photo())], headers=alice)
    text = client.get("/metrics").text
    assert 'rap_requests_total{method="POST",route="/v1/ask",status="200"} 1.0' in text
    assert 'rap_requests_total{method="POST",route="/v1/concepts",status="201"} 1.0' in text
    for name in ("rap_request_seconds_bucket", "rap_retrieval_seconds_count 1.0", "rap_generation_seconds_count 1.0", "rap_generation_queue 0.0"):
        assert name in text
