"""``locate``: the model's grounding answer (tiny LLaVA, an OpenAI-compatible server) or the retriever's region."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from rap import Retriever
from rap.answers import parse_box
from rap.assistant import Assistant
from rap.cli import run
from rap.data.tasks import GROUNDING
from rap.errors import InvalidInput
from rap.generation import create_generator


@pytest.mark.parametrize(
    ("reply", "box"),
    [
        ("[0.10, 0.20, 0.50, 0.80]", (20, 20, 100, 80)),
        ("<bo> is at [0.1,0.2,0.5,0.8].", (20, 20, 100, 80)),
        ("(.1, .2, .5, .8)", (20, 20, 100, 80)),
        ("[20, 20, 100, 80]", (20, 20, 100, 80)),  # pixels
        ("[0.0, 0.0, 1.0, 1.0]", (0, 0, 200, 100)),
        ("[150, 50, 400, 300]", (150, 50, 200, 100)),  # clipped to the image
        ("[0.5, 0.5, 0.5, 0.9]", None),  # no area
        ("[0.1, 0.2, 0.5]", None),
        ("bottom left", None),
    ],
)
def test_parse_box(reply, box):
    assert parse_box(reply, (200, 100)) == box


@pytest.fixture
def filled(store, photos):
    store.add("bo", [photos / "dog_00.jpg"], info="<bo> is my corgi.", category="dog")
    store.add("kit", [photos / "cat_00.jpg"], info="<kit> is a cat.", category="cat")
    return store


def located(store, photos, generator, mode="model"):
    bot = Assistant(store, Retriever(store, "none", top_k=2, threshold=float("inf")), generator)
    return bot, bot.locate(photos / "dog_01.jpg", "bo", mode)


def test_model_mode_asks_the_grounding_question_and_reads_the_box(filled, photos):
    bot, location = located(filled, photos, create_generator("echo", reply="[0.25, 0.50, 0.75, 1.00]"))
    width, height = Image.open(photos / "dog_01.jpg").size
    assert location.mode == "model" and location.found
    assert location.box == (round(width / 4), round(height / 2), round(3 * width / 4), height)
    turn = bot.generator.seen[0][-1]
    assert turn.text().endswith(GROUNDING[0].format("<bo>")) and "Name: <bo>" in turn.text()
    assert location.to_dict()["reply"].strip() == "[0.25, 0.50, 0.75, 1.00]" and location.match.concept.name == "bo"


def test_model_mode_without_a_box_is_not_found(filled, photos):
    _, location = located(filled, photos, create_generator("echo", reply="I cannot tell."))
    assert (location.found, location.box, location.reply.strip()) == (False, None, "I cannot tell.")


def test_retriever_mode_needs_no_model_and_a_blind_model_is_not_asked(filled, photos):
    _, location = located(filled, photos, "no-such-backend:never-loaded", mode="retriever")
    assert location.mode == "retriever" and location.reply is None and location.box is not None
    blind, by_retriever = located(filled, photos, create_generator("echo", sees_images=False))
    assert by_retriever.mode == "retriever" and by_retriever.box == location.box and blind.generator.seen == []
    with pytest.raises(InvalidInput, match="mode"):
        located(filled, photos, create_generator("echo"), mode="psychic")


@pytest.mark.slow  # transformers and a model built from its config: about 20 s on 2 busy cores
def test_tiny_llava_answers_the_grounding_question(filled, photos, tmp_path):
    pytest.importorskip("transformers")
    from support.random_models import save_random_llava

    folder = save_random_llava(tmp_path / "llava")
    generator = create_generator(f"llava:{folder}", device="cpu")
    bot = Assistant(filled, Retriever(filled, "none", top_k=2, threshold=float("inf")), generator)
    bot.options = bot.options.model_copy(update={"max_new_tokens": 8})
    location = bot.locate(photos / "dog_01.jpg", "bo", "model")
    assert location.mode == "model" and isinstance(location.reply, str) and location.reply
    assert location.box == parse_box(location.reply, Image.open(photos / "dog_01.jpg").size)  # random weights: most likely no box


@pytest.fixture
def grounding_server(monkeypatch) -> Iterator[list[dict]]:
    """An OpenAI-compatible server that streams one box, recording what it was asked."""
    asked: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            asked.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": piece}, "finish_reason": None}]} for piece in ("[0.10, 0.20", ", 0.60, 0.90]")]
            events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            body = "".join(f"data: {json.dumps({'id': 'c', 'object': 'chat.completion.chunk', 'model': 'm', 'created': 0} | e)}\n\n" for e in events) + "data: [DONE]\n\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAP_OPENAI_BASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    monkeypatch.setenv("RAP_OPENAI_API_KEY", "sk-test")
    try:
        yield asked
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_cli_locate_by_an_openai_compatible_server(grounding_server, photos, tmp_path, capsys):
    db = ["--db", str(tmp_path / "db"), "--encoder", "tiny", "--faces", "none", "--detector", "none"]
    assert run([*db, "concept", "add", "bo", "-i", str(photos / "dog_00.jpg"), "-c", "dog"]) == 0
    capsys.readouterr()
    assert run([*db, "locate", str(photos / "dog_01.jpg"), "bo", "--backend", "openai:tiny-vlm", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    width, height = Image.open(photos / "dog_01.jpg").size
    assert shown["mode"] == "model" and shown["found"] and shown["box"] == [round(0.1 * width), round(0.2 * height), round(0.6 * width), round(0.9 * height)]
    [request] = grounding_server
    assert request["model"] == "tiny-vlm"
    texts = [part["text"] for part in request["messages"][-1]["content"] if part["type"] == "text"]
    assert GROUNDING[0].format("<bo>") in "".join(texts)
    # the retriever mode is still there, and is the default without --backend or --model
    assert run([*db, "locate", str(photos / "dog_01.jpg"), "bo", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "retriever"
