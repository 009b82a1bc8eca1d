"""The API over a real socket (uvicorn on a free loopback port): the official OpenAI client,
and a client that hangs up mid-stream."""

from __future__ import annotations

import base64

import httpx
import pytest
from test_server_support import PHOTOS, LiveServer, add_concept, add_user, settings
from waiting import wait_until

from rap.server import create_app

openai = pytest.importorskip("openai")


def test_the_openai_client_chats_with_my_concepts(rap_home):
    with LiveServer(create_app(settings())) as live:
        alice = add_user(rap_home, "alice")
        with httpx.Client(base_url=live.url) as http:
            assert http.get("/readyz").status_code == 200
            add_concept(http, alice, "bo", info="<bo> is my Shiba Inu", category="dog")
        client = openai.OpenAI(base_url=live.url + "/v1", api_key=alice["Authorization"][7:], max_retries=0)
        assert [m.id for m in client.models.list()] == ["echo"]
        url = "data:image/jpeg;base64," + base64.b64encode((PHOTOS / "dog_01.jpg").read_bytes()).decode()
        messages = [{"role": "user", "content": [{"type": "text", "text": "Who is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]

        completion = client.chat.completions.create(model="echo", messages=messages)  # the id /v1/models lists
        assert "<bo> is my Shiba Inu" in completion.choices[0].message.content
        assert [c["name"] for c in completion.model_extra["rap_concepts"]] == ["bo"]

        chunks = list(client.chat.completions.create(model="echo", messages=messages, stream=True))
        text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
        assert text.strip() == completion.choices[0].message.content
        assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].model_extra["rap_concepts"][0]["name"] == "bo"

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=live.url + "/v1", api_key="rap_wrong", max_retries=0).models.list()


def test_a_client_that_hangs_up_mid_stream_frees_its_slot(rap_home):
    app = create_app(settings(generator="slow-echo", generation_slots=1, generation_queue=0))
    with LiveServer(app) as live:
        alice = add_user(rap_home, "alice")
        runtime = app.state.runtime
        question = " ".join(f"w{n}" for n in range(100))  # 20 s of words at 0.2 s each
        with httpx.Client(base_url=live.url, headers=alice, timeout=10) as http:
            with http.stream("POST", "/v1/ask", data={"question": question, "stream": "true"}) as response:
                assert response.status_code == 200
                next(response.iter_lines())
                assert http.post("/v1/ask", data={"question": "me too"}).status_code == 503
            # hung up after one piece: the slot comes back, and the generation ended before its 100 words
            wait_until(lambda: runtime.queue.in_use == 0, "the hung-up stream to give its generation slot back")
            assert runtime.models.generator.pieces_sent < 100
            assert http.post("/v1/ask", data={"question": "me too"}).status_code == 200
