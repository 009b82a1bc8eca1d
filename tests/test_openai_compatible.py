"""The ``openai`` backend against a real HTTP server on the loopback interface.

Each test scripts what the server answers; the server records what it was sent,
so the tests check both the wire format going out and the errors coming back.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image
from waiting import DEADLINE_S

from rap.errors import ConfigError, InvalidInput, MissingDependency
from rap.generation import GENERATORS, GenerationOptions, PromptConcept, Turn, create_generator, user_turn
from rap.errors import BackendError
from rap.generation.openai_compatible import OpenAICompatible

KEY = "sk-test-0123456789abcdef"
RED, GREEN, BLUE = (220, 20, 20), (20, 200, 20), (20, 20, 220)

Script = Callable[[BaseHTTPRequestHandler], object]


@dataclass
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeServer:
    """A chat-completions server whose answer each test scripts."""

    url: str
    script: Script | None = None
    requests: list[Recorded] = field(default_factory=list)
    #: lets a scripted handler wait for the test; set at teardown so no handler outlives it
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No endpoint, key or proxy from the machine running the tests."""
    for name in ("RAP_OPENAI_BASE_URL", "OPENAI_BASE_URL", "RAP_OPENAI_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            fake.requests.append(Recorded({k.lower(): v for k, v in self.headers.items()}, json.loads(raw)))
            assert self.path == "/v1/chat/completions"
            assert fake.script is not None
            fake.script(self)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def respond(handler: BaseHTTPRequestHandler, status: int, body: str | bytes, content_type: str) -> None:
    data = body.encode() if isinstance(body, str) else body
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def start_events(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()


def chunk(content: str | None = None, finish: str | None = None, role: str | None = None) -> str:
    delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    payload = {"id": "c1", "object": "chat.completion.chunk", "choices": [choice]}
    return f"data: {json.dumps(payload)}\n\n"


def sse(*events: str) -> Script:
    def script(handler: BaseHTTPRequestHandler) -> None:
        start_events(handler)
        handler.wfile.write("".join(events).encode())

    return script


def swatch(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, colour)


def decoded(url: str) -> Image.Image:
    head, _, data = url.partition(",")
    assert head in ("data:image/jpeg;base64", "data:image/png;base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


def near(pixel: object, colour: tuple[int, int, int]) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) < 30 for a, b in zip(pixel, colour, strict=True))


def backend(server: FakeServer, **options: object) -> OpenAICompatible:
    generator = create_generator("openai:test-vlm", base_url=server.url, api_key=KEY, **options)
    assert isinstance(generator, OpenAICompatible)
    return generator


def question(text: str = "What is <bo> doing?") -> list[Turn]:
    return [Turn([text])]


def test_streams_pieces_as_they_arrive_and_sends_the_paper_prompt(server: FakeServer) -> None:
    gate = threading.Event()
    waited: list[bool] = []

    def script(handler: BaseHTTPRequestHandler) -> None:
        start_events(handler)
        handler.wfile.write((": keep-alive\n\n" + chunk(role="assistant") + chunk("<bo> is ")).encode())
        waited.append(gate.wait(DEADLINE_S))  # the client must see the first piece before the rest is sent
        rest = chunk("sleeping") + chunk(" on the sofa.") + chunk(finish="stop") + "data: [DONE]\n\n"
        handler.wfile.write(rest.encode())

    server.script = script
    earlier = Turn(["Who is in this photo?"], reply="That is <bo>.")
    concepts = [
        PromptConcept("<bo>", "<bo> is a Shiba Inu.", swatch(GREEN)),
        PromptConcept("<kit>", "<kit> is a ginger cat.", swatch(BLUE, (2000, 1000))),
    ]
    current = user_turn("What is <bo> doing?", swatch(RED), concepts)
    generator = backend(server, system="You know the user's pets.", max_image_side=64)

    options = GenerationOptions(temperature=0.7, top_p=0.9, max_new_tokens=77, seed=5)
    pieces = generator.stream([earlier, current], options)
    first = next(pieces)
    gate.set()
    rest = list(pieces)

    assert [first, *rest] == ["<bo> is ", "sleeping", " on the sofa."]
    assert waited == [True]
    (request,) = server.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = request.body
    assert body["model"] == "test-vlm" and body["stream"] is True
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (0.7, 0.9, 77, 5)
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == "You know the user's pets."
    assert messages[1]["content"] == [{"type": "text", "text": "Who is in this photo?"}]
    assert messages[2]["content"] == "That is <bo>."
    content = messages[3]["content"]
    assert [item["type"] for item in content] == [
        "image_url", "text", "image_url", "text", "image_url", "text"
    ]
    texts = [item["text"] for item in content if item["type"] == "text"]
    assert texts == [
        "\n[1.",
        "\n Name: <bo>, Info: <bo> is a Shiba Inu.\n2.",
        "\n Name: <kit>, Info: <kit> is a ginger cat.\n]What is <bo> doing?",
    ]
    images = [decoded(item["image_url"]["url"]) for item in content if item["type"] == "image_url"]
    colours = [image.convert("RGB").getpixel((5, 5)) for image in images]
    assert [near(colour, expected) for colour, expected in zip(colours, (RED, GREEN, BLUE), strict=True)] == [True] * 3
    assert images[2].size == (64, 32)  # scaled down to max_image_side, aspect kept
    assert images[0].size == (40, 30)  # smaller images are left as they are


def test_endpoint_and_key_come_from_the_environment(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    server.script = sse(chunk("hi", finish="stop"), "data: [DONE]\n\n")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("RAP_OPENAI_BASE_URL", server.url + "/")  # the rap variable wins
    monkeypatch.setenv("OPENAI_API_KEY", KEY)

    generator = create_generator("openai:test-vlm", image_format="png")
    reply = generator.generate([Turn(["Describe", swatch(RED)])])

    assert reply == "hi"
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    url = server.requests[0].body["messages"][0]["content"][1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert "seed" not in server.requests[0].body


def test_a_local_server_without_a_key_gets_no_authorization_header(server: FakeServer) -> None:
    server.script = sse(chunk("ok", finish="stop"), "data: [DONE]\n\n")
    generator = create_generator("openai:test-vlm", base_url=server.url)
    assert generator.generate(question()) == "ok"
    assert "authorization" not in server.requests[0].headers


def test_a_refused_key_says_which_variable_to_check_and_never_shows_the_key(server: FakeServer) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}.", "type": "invalid_request_error"}}
    server.script = lambda h: respond(h, 401, json.dumps(echo), "application/json")
    generator = backend(server)

    with pytest.raises(ConfigError) as caught:
        generator.generate(question())

    message = str(caught.value)
    assert "401" in message and "Incorrect API key provided" in message
    assert "RAP_OPENAI_API_KEY" in message and server.url in message
    assert KEY not in message and "\n" not in message
    assert KEY not in repr(generator) and KEY not in repr(generator.options) and KEY not in str(generator.options)


@pytest.mark.parametrize(
    ("status", "body", "error", "says"),
    [
        (404, {"error": {"message": "The model `test-vlm` does not exist."}}, ConfigError, "not found on the server"),
        (400, {"error": {"message": "At most 1 image(s) may be provided."}}, InvalidInput, "At most 1 image"),
        (500, {"detail": "CUDA out of memory"}, BackendError, "CUDA out of memory"),
        (429, {"error": "quota exceeded"}, BackendError, "try again later"),
    ],
)
def test_error_statuses_become_errors_that_say_what_to_change(
    server: FakeServer, status: int, body: dict[str, Any], error: type[Exception], says: str
) -> None:
    server.script = lambda h: respond(h, status, json.dumps(body), "application/json")
    with pytest.raises(error, match=str(status)) as caught:
        backend(server).generate(question())
    assert says in str(caught.value)


def test_backend_errors_are_bad_gateway() -> None:
    assert (BackendError.exit_code, BackendError.http_status) == (7, 502)


def test_a_slow_server_times_out_quickly_and_says_after_how_long(server: FakeServer) -> None:
    answered = threading.Event()

    def script(handler: BaseHTTPRequestHandler) -> None:  # says nothing until the test ends
        server.release.wait(DEADLINE_S)
        answered.set()

    server.script = script
    generator = backend(server, timeout=0.3)

    with pytest.raises(BackendError, match=r"sent nothing for 0\.3 s"):
        generator.generate(question())
    assert not answered.is_set()  # the client gave up by itself, while the server still held the request


def test_an_unreachable_endpoint_names_the_url() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    generator = create_generator("openai:test-vlm", base_url=url, api_key=KEY, timeout=2)

    with pytest.raises(BackendError, match="cannot reach") as caught:
        generator.generate(question())
    assert f"{url}/chat/completions" in str(caught.value) and KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("events", "says"),
    [
        (["data: {not json\n\n"], "not JSON"),
        (['data: {"object": "chat.completion.chunk"}\n\n'], "no choices list"),
        (["<html><body>Welcome to nginx!</body></html>\n"], "was no event stream"),
        ([chunk("half a repl")], "ended before the reply was finished"),
    ],
)
def test_a_malformed_stream_is_a_clear_error(server: FakeServer, events: list[str], says: str) -> None:
    server.script = sse(*events)
    with pytest.raises(BackendError, match="malformed stream") as caught:
        backend(server).generate(question())
    assert says in str(caught.value)


def test_an_error_sent_mid_stream_is_reported(server: FakeServer) -> None:
    server.script = sse(chunk("Once"), 'data: {"error": {"message": "engine died"}}\n\n')
    with pytest.raises(BackendError, match="failed mid-reply: engine died"):
        backend(server).generate(question())


def test_a_server_that_ignores_streaming_still_answers(server: FakeServer) -> None:
    message = {"role": "assistant", "content": "All at once."}
    whole = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    server.script = lambda h: respond(h, 200, json.dumps(whole), "application/json")
    assert backend(server).generate(question()) == "All at once."


def test_too_many_images_are_refused_before_anything_is_sent(server: FakeServer) -> None:
    generator = backend(server, max_images=1)
    with pytest.raises(InvalidInput, match="at most 1 images"):
        generator.generate([Turn([swatch(RED), "and", swatch(GREEN), "?"])])
    assert server.requests == []


def test_options_are_validated_and_the_registry_knows_the_backend() -> None:
    with pytest.raises(InvalidInput, match="temperature"):
        create_generator("openai:m", temperature=0.5)
    with pytest.raises(InvalidInput, match="base_url"):
        create_generator("openai:m", base_url="localhost:8000")
    generator = create_generator("openai:m")
    assert isinstance(generator, OpenAICompatible)
    assert generator.max_concepts == 3 and generator.sees_images
    assert generator.options.base_url == "https://api.openai.com/v1"
    assert GENERATORS.canonical("openai") == "openai:gpt-4o-mini"


def test_the_key_never_reaches_the_logs(server: FakeServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the SDK and httpx log requests and responses at debug level
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}."}}
    server.script = lambda h: respond(h, 401, json.dumps(echo), "application/json")
    with pytest.raises(ConfigError):
        backend(server).generate(question())
    server.script = sse(chunk("ok", finish="stop"), "data: [DONE]\n\n")
    assert backend(server).generate(question()) == "ok"
    assert caplog.records and KEY not in caplog.text


def test_the_sdk_retries_a_failing_server_when_asked(server: FakeServer) -> None:
    answers = iter([lambda h: respond(h, 503, '{"error": "warming up"}', "application/json"),
                    sse(chunk("ready", finish="stop"), "data: [DONE]\n\n")])
    server.script = lambda h: next(answers)(h)
    assert backend(server, max_retries=1).generate(question()) == "ready"
    assert len(server.requests) == 2


def test_a_request_too_large_asks_for_smaller_images(server: FakeServer) -> None:
    server.script = lambda h: respond(h, 413, "Request Entity Too Large", "text/plain")
    with pytest.raises(InvalidInput, match="413: Request Entity Too Large.*lower max_image_side"):
        backend(server).generate(question())


def test_without_the_sdk_the_error_names_the_extra(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # as if it were not installed
    with pytest.raises(MissingDependency, match=r"pip install 'rap-mllm\[offline\]'"):
        backend(server).generate(question())
    assert server.requests == []
