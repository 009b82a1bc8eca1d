"""The web page `rap serve` serves at `/`, driven in a real headless Chromium.

The server is the real app under uvicorn on a free loopback port, in a thread
of this process so the tests' tiny encoder and echo generator (registered in
conftest.py) serve it. The browser is the system's Chromium (Debian's
``chromium`` package; ``.ci/run`` installs it), driven by Playwright; where
none is found these tests skip and say why. Screenshots of each main state go
to ``$RAP_WEB_SCREENSHOTS`` if set, else the test's tmp_path.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from waiting import DEADLINE_S, wait_for_readyz, wait_until

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
expect.set_options(timeout=DEADLINE_S * 1000)  # a loaded CI machine is far slower than Playwright's 5 s default expects

from rap.server import create_app  # noqa: E402
from conftest import EchoGenerator  # noqa: E402
from test_server_support import PHOTOS, add_user, settings  # noqa: E402

from rap.generation import GENERATORS  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def find_chromium() -> str | None:
    """The system Chromium: $RAP_CHROMIUM, else the first of the usual names on PATH."""
    if os.environ.get("RAP_CHROMIUM"):
        return shutil.which(os.environ["RAP_CHROMIUM"])
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium found: install Debian's `chromium` package (.ci/run does) or set RAP_CHROMIUM to its path")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


class Server:
    """The app under uvicorn in a thread, on a loopback port the OS picked."""

    def __init__(self, auth: bool, **changes: object) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.app = app = create_app(settings(**{"detector": "multiscale"} | changes), auth=auth)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        wait_for_readyz(self.url, what="rap serve")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RAP_WEB_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(DEADLINE_S * 1000)  # clicks, fills, navigation: as generous as the expects
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, f"the page threw: {errors}"


def shoot(page, path: Path) -> None:
    """A screenshot of the page as it is, less the passing confirmation toast that would cover it."""
    page.evaluate("document.querySelector('#toast').hidden = true")  # (an injected style would break the page's CSP)
    page.screenshot(path=path)


def add_concept(page, photo: str, name: str, category: str, info: str, box: tuple[float, float, float, float] | None = None):
    page.get_by_role("button", name="Add concept").click()
    form = page.get_by_role("dialog", name="Add a concept")
    page.set_input_files("#add-photo", PHOTOS / photo)
    form.get_by_label("Name").fill(name)
    form.get_by_label("Category").fill(category)
    form.get_by_label("Description").fill(info)
    if box is not None:
        image = page.locator("#add-image")
        expect(image).to_be_visible()
        at = image.bounding_box()
        page.mouse.move(at["x"] + box[0] * at["width"], at["y"] + box[1] * at["height"])
        page.mouse.down()
        page.mouse.move(at["x"] + box[2] * at["width"], at["y"] + box[3] * at["height"], steps=6)
        page.mouse.up()
        expect(page.locator("#crop-box")).to_be_visible()


def ask(page, question: str):
    """Ask and wait for the answer to finish streaming; the answer's list item."""
    before = page.locator(".turn.assistant").count()
    page.get_by_label("Your question").fill(question)
    page.get_by_role("button", name="Ask", exact=True).click()
    answer = page.locator(".turn.assistant").nth(before)
    expect(answer.locator(".used")).to_be_visible()
    expect(answer.locator(".text")).not_to_have_class(re.compile("streaming"))
    return answer


def wait_for_free_slot(server: Server) -> None:
    """A hung-up stream frees its generation slot at its next piece: wait for that."""

    def answered() -> bool:
        return httpx.post(server.url + "/v1/ask", data={"question": "ping"}, timeout=DEADLINE_S).status_code == 200

    wait_until(answered, "the hung-up stream's generation slot to be free", interval_s=0.1)


def test_manage_a_concept_and_chat_about_it(page, shots):
    with Server(auth=False) as server:
        page.goto(server.url)
        expect(page.locator("#concepts-empty")).to_be_visible()
        expect(page.get_by_role("dialog")).to_have_count(0)

        # Add a concept through the form with a real photo, boxing the dog out of it.
        add_concept(page, "dog_00.jpg", "bo", "dog", "<bo> is my corgi; he loves sweet potatoes.", box=(0.08, 0.05, 0.92, 0.97))
        shoot(page, shots / "add-concept.png")
        page.get_by_role("dialog").get_by_role("button", name="Add concept").click()
        card = page.locator('#concept-grid .card[data-name="bo"]')
        expect(card).to_have_count(1)
        expect(card.locator(".category")).to_have_text("dog")
        expect(card.locator(".info")).to_have_text("<bo> is my corgi; he loves sweet potatoes.")
        expect(card.locator(".thumb img")).to_have_attribute("src", re.compile("^blob:"))
        stored = httpx.get(server.url + "/v1/concepts/bo").json()["images"][0]
        assert stored["width"] < 512 and stored["height"] < 512, "the box cropped the photo before upload"

        # The grid is searchable by name.
        add_concept(page, "teapot_00.jpg", "pot", "teapot", "<pot> is grandma's blue teapot.")
        page.get_by_role("dialog").get_by_role("button", name="Add concept").click()
        expect(page.locator("#concept-grid .card")).to_have_count(2)
        page.get_by_label("Search concepts by name").fill("po")
        expect(page.locator("#concept-grid .card")).to_have_count(1)
        page.get_by_label("Search concepts by name").fill("")
        expect(page.locator("#concept-grid .card")).to_have_count(2)
        shoot(page, shots / "concepts.png")

        # Ask about another photo of it: the answer streams in, bo is named and boxed on the photo.
        page.set_input_files("#chat-photo", PHOTOS / "dog_01.jpg")
        answer = ask(page, "Who is this?")
        # (the tests' colour-layout encoder ranks crops roughly, so bo is named, not necessarily first)
        expect(answer.locator(".chip strong", has_text="bo")).to_have_count(1)
        expect(answer.locator(".why").first).to_contain_text("distance")
        box = page.locator("#chat-boxes .box", has_text="bo")
        expect(box).to_be_visible()
        assert box.bounding_box()["width"] > 10
        shoot(page, shots / "chat.png")
        page.set_viewport_size(PHONE)  # readable at phone width: nothing wider than the screen
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        shoot(page, shots / "phone.png")
        page.set_viewport_size(DESKTOP)

        # Edit the description inline; the next answer uses it, with no reload.
        # (a new chat each time: a follow-up brings in only concepts the chat has not seen yet)
        page.get_by_role("button", name="New chat", exact=True).click()
        assert "sweet potatoes" in ask(page, "What does <bo> like to eat?").inner_text()
        card.get_by_role("button", name="Edit the description of bo").click()
        card.get_by_role("textbox", name="Description").fill("<bo> is my corgi; he only eats carrots now.")
        card.get_by_role("button", name="Save").click()
        expect(card.locator(".info")).to_have_text("<bo> is my corgi; he only eats carrots now.")
        page.get_by_role("button", name="New chat", exact=True).click()
        later = ask(page, "What does <bo> like to eat?").inner_text()
        assert "carrots" in later and "sweet potatoes" not in later
        shoot(page, shots / "edited.png")

        page.set_input_files("#chat-photo", PHOTOS / "dog_01.jpg")
        # Add a reference image, then remove one; the last one cannot be removed.
        card.get_by_role("button", name="Reference images of bo: 1").click()
        images = page.get_by_role("dialog", name="Reference images of bo")
        images.locator("#images-add").set_input_files(PHOTOS / "dog_02.jpg")
        expect(images.get_by_role("listitem")).to_have_count(2)
        expect(card.get_by_role("button", name="Reference images of bo: 2")).to_be_visible()
        images.get_by_role("button", name="Remove image 1 of bo").click()
        expect(images.get_by_role("listitem")).to_have_count(1)
        expect(images.get_by_role("button", name="Remove image 1 of bo")).to_be_disabled()
        images.get_by_role("button", name="Done").click()
        assert len(httpx.get(server.url + "/v1/concepts/bo").json()["images"]) == 1

        # Caption and "is bo here?" answer beside the concepts they used.
        before = page.locator(".turn.assistant").count()
        page.get_by_role("button", name="Caption").click()
        expect(page.locator(".turn.assistant").nth(before).locator(".used")).to_contain_text("bo")
        page.get_by_label("Concept for “is it here” and “where is it”").select_option("bo")
        page.get_by_role("button", name="Is bo here?").click()
        expect(page.locator(".turn.assistant").nth(before + 1).locator(".text")).to_contain_text("bo")
        expect(page.locator(".turn.assistant").nth(before + 1).locator(".used")).to_contain_text("bo")

        # "Where is bo?" draws its box.
        page.get_by_role("button", name="Where is bo?").click()
        expect(page.locator(".turn.assistant").last).to_contain_text("in the box")
        expect(page.locator("#chat-boxes .box")).to_have_count(1)

        # A non-image is refused as it is chosen (its name and declared type do not fool the check).
        page.get_by_role("button", name="Add concept").click()
        page.set_input_files("#add-photo", {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not a photo at all"})
        error = page.locator("#add-error")
        expect(error).to_contain_text("“notes.jpg” is not an image")
        shoot(page, shots / "error.png")
        submit = page.get_by_role("dialog").get_by_role("button", name="Add concept")
        expect(submit).to_be_enabled()
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#concept-grid .card")).to_have_count(2)

        # A pasted photo becomes the photo asked about.
        page.get_by_role("button", name="Remove photo").click()
        expect(page.locator("#chat-figure")).to_be_hidden()
        page.get_by_label("Your question").focus()
        page.evaluate(
            """bytes => {
                const data = new DataTransfer();
                data.items.add(new File([new Uint8Array(bytes)], "pasted.jpg", {type: "image/jpeg"}));
                document.activeElement.dispatchEvent(new ClipboardEvent("paste", {clipboardData: data, bubbles: true}));
            }""",
            list((PHOTOS / "cat_00.jpg").read_bytes()),
        )
        expect(page.locator("#chat-figure")).to_be_visible()
        expect(page.locator("#chat-photo-name")).to_have_text("pasted.jpg")

        # A phone's HEIC photo: no preview in this browser, but the server takes it.
        pillow_heif = pytest.importorskip("pillow_heif")
        heic = io.BytesIO()
        with Image.open(PHOTOS / "clock_00.jpg") as clock:
            pillow_heif.from_pillow(clock.convert("RGB")).save(heic, quality=60)
        page.get_by_role("button", name="Add concept").click()
        form = page.get_by_role("dialog", name="Add a concept")
        page.set_input_files("#add-photo", {"name": "IMG_0001.HEIC", "mimeType": "image/heic", "buffer": heic.getvalue()})
        expect(form.locator("#add-nopreview")).to_contain_text("No preview")
        form.get_by_label("Name").fill("clock")
        form.get_by_label("Category").fill("clock")
        form.get_by_role("button", name="Add concept").click()
        expect(page.locator('#concept-grid .card[data-name="clock"] .thumb img')).to_have_attribute("src", re.compile("^blob:"))

        # Delete, with confirmation; cancelling keeps it.
        card.get_by_role("button", name="Delete bo").click()
        page.get_by_role("button", name="Keep it").click()
        expect(card).to_have_count(1)
        card.get_by_role("button", name="Delete bo").click()
        page.get_by_role("alertdialog").get_by_role("button", name="Delete").click()
        expect(page.locator("#concept-grid .card")).to_have_count(2)
        assert httpx.get(server.url + "/v1/concepts/bo").status_code == 404

        # Deleted elsewhere (another tab): editing it here says so and drops its card.
        assert httpx.delete(server.url + "/v1/concepts/pot").status_code == 204
        pot = page.locator('#concept-grid .card[data-name="pot"]')
        pot.get_by_role("button", name="Edit the description of pot").click()
        pot.get_by_role("textbox", name="Description").fill("gone")
        pot.get_by_role("button", name="Save").click()
        expect(page.locator("#concepts-error")).to_contain_text("pot")
        expect(page.locator("#concept-grid .card")).to_have_count(1)

        page.set_viewport_size(PHONE)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_too_large_and_busy_are_said_plainly_and_the_page_recovers(page, shots):
    limits = {"generation_slots": 1, "generation_queue": 0, "max_upload_bytes": 16_000}
    with Server(auth=False, generator="slow-echo", generator_options={"delay": 0.1}, **limits) as server:
        page.goto(server.url)
        expect(page.locator("#concepts-empty")).to_be_visible()

        # A photo over the upload limit: said so in the form; a smaller one then goes through.
        assert (PHOTOS / "astronaut.jpg").stat().st_size > 16_000
        add_concept(page, "astronaut.jpg", "eileen", "person", "<eileen> is an astronaut.")
        dialog = page.get_by_role("dialog", name="Add a concept")
        dialog.get_by_role("button", name="Add concept").click()
        expect(page.locator("#add-error")).to_contain_text("too large")
        # The arrow keys draw a box too; the crop is small enough to upload.
        page.locator("#crop-frame").focus()
        for key in ["ArrowRight"] + ["Shift+ArrowLeft", "Shift+ArrowUp"] * 10:
            page.keyboard.press(key)
        expect(page.locator("#crop-box")).to_be_visible()
        dialog.get_by_role("button", name="Add concept").click()
        expect(page.locator("#concept-grid .card")).to_have_count(1)
        assert httpx.get(server.url + "/v1/concepts/eileen").json()["images"][0]["width"] < 256
        question = {"question": " ".join(["word"] * 200), "stream": "true"}
        with httpx.stream("POST", server.url + "/v1/ask", data=question, timeout=DEADLINE_S) as held:  # holds the only slot
            assert held.status_code == 200
            lines = held.iter_lines()  # kept: dropping the iterator would hang up
            next(lines)
            page.get_by_label("Your question").fill("Are you there?")
            page.get_by_role("button", name="Ask", exact=True).click()
            failed = page.locator(".turn.assistant.failed")
            expect(failed).to_contain_text("busy")
            expect(failed).to_contain_text(re.compile(r"Try again in \d+ s"))
            expect(page.get_by_label("Your question")).to_have_value("Are you there?")  # ready to resend
            shoot(page, shots / "busy.png")
        # The slot is free again once that client hangs up; the page was left ready to ask.
        expect(page.get_by_role("button", name="Ask", exact=True)).to_be_enabled()
        wait_for_free_slot(server)
        answer = ask(page, "Are you there now?")
        expect(answer.locator(".text")).to_contain_text("Are you there now?")

        # Stop ends a long answer where it is; the next question works.
        page.get_by_label("Your question").fill(" ".join(["slowly"] * 100))
        page.get_by_role("button", name="Ask", exact=True).click()
        expect(page.locator(".turn.assistant").last.locator(".text")).to_contain_text("slowly")
        page.get_by_role("button", name="Stop").click()
        expect(page.locator(".turn.assistant").last).to_contain_text("(stopped)")
        wait_for_free_slot(server)
        answer = ask(page, "And now?")
        expect(answer.locator(".text")).to_contain_text("And now?")


def test_sign_in_shows_only_your_concepts(page, shots, rap_home):
    alice, bob = add_user(rap_home, "alice"), add_user(rap_home, "bob")
    with Server(auth=True) as server:
        for who, info in ((alice, "alice's dog"), (bob, "bob's dog")):
            with open(PHOTOS / "dog_00.jpg", "rb") as photo:
                response = httpx.post(
                    server.url + "/v1/concepts", headers=who, data={"name": "bo", "category": "dog", "info": info}, files={"image": photo}
                )
            assert response.status_code == 201, response.text

        page.goto(server.url)
        dialog = page.get_by_role("dialog", name="Sign in")
        expect(dialog).to_be_visible()
        page.keyboard.press("Escape")  # there is nothing behind it to go back to
        expect(dialog).to_be_visible()
        page.get_by_label("API key").fill("not-a-key")
        page.keyboard.press("Enter")
        expect(dialog.get_by_role("alert")).to_contain_text("not accepted")
        shoot(page, shots / "sign-in.png")

        page.get_by_label("API key").fill(alice["Authorization"].removeprefix("Bearer "))
        page.keyboard.press("Enter")
        expect(dialog).to_be_hidden()
        expect(page.locator("#session-user")).to_have_text("Signed in as alice")
        expect(page.locator("#concept-grid .card .info")).to_have_text(["alice's dog"])

        # Signing out forgets alice's concepts; bob then sees only his.
        page.get_by_role("button", name="Sign out").click()
        expect(page.locator("#concept-grid .card")).to_have_count(0)
        page.get_by_label("API key").fill(bob["Authorization"].removeprefix("Bearer "))
        page.keyboard.press("Enter")
        expect(page.locator("#concept-grid .card .info")).to_have_text(["bob's dog"])


# -- a layout that holds many concepts ----------------------------------------------------

LAYOUT_PHOTOS = ["dog_00.jpg", "teapot_00.jpg", "cat_00.jpg", "clock_00.jpg"]


def add_by_api(server: Server, name: str, photo: str, info: str = "", category: str = "dog") -> None:
    with open(PHOTOS / photo, "rb") as image:
        response = httpx.post(server.url + "/v1/concepts", data={"name": name, "category": category, "info": info}, files={"image": image}, timeout=60)
    assert response.status_code == 201, response.text


def reachable(locator) -> None:
    """Scrolled into view and clickable (visible, stable, not covered): a trial click succeeds."""
    locator.scroll_into_view_if_needed()
    expect(locator).to_be_visible()
    locator.click(trial=True, timeout=15_000)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_forty_concepts_every_card_reachable_with_one_shape(browser, shots, viewport):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    size = "desktop" if viewport is DESKTOP else "phone"
    with Server(auth=False) as server:
        page.goto(server.url)
        expect(page.locator("#concepts-empty")).to_be_visible()
        shoot(page, shots / f"empty-{size}.png")
        long = "a much longer description than most, which goes on about where it was bought and why it matters " * 2
        for n in range(40):
            category = "teapot" if n % 4 == 1 else "dog"
            add_by_api(server, f"c{n:02d}-{'teapot-with-a-long-name' if n % 4 == 1 else 'bo'}", LAYOUT_PHOTOS[n % 4], long if n % 3 == 0 else "short", category)
        # the list follows changes made elsewhere (polling with ETags): no reload
        cards = page.locator("#concept-grid .card")
        expect(cards).to_have_count(40, timeout=30_000)
        heights = {round(box["height"]) for box in (cards.nth(n).bounding_box() for n in range(40))}
        assert len(heights) == 1, f"cards of different heights: {heights}"
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        for n in range(40):
            card = cards.nth(n)
            name = card.locator(".name")
            name.scroll_into_view_if_needed()
            expect(name).to_be_visible()
            assert name.evaluate("e => e.scrollHeight <= e.clientHeight + 1"), "a name wraps onto a second line"
            reachable(card.get_by_role("button", name=re.compile("^Edit the description")))
            reachable(card.get_by_role("button", name=re.compile("^Delete ")))
        shoot(page, shots / f"concepts-{size}.png")

        # The inline editor of the last card (bottom of the grid) is whole: Save works.
        last = cards.nth(39)
        last.get_by_role("button", name=re.compile("^Edit the description")).click()
        last.get_by_role("textbox", name="Description").fill("edited at the bottom of the grid")
        save = last.get_by_role("button", name="Save")
        reachable(save)
        shoot(page, shots / f"editor-{size}.png")
        save.click()
        expect(last.locator(".info")).to_have_text("edited at the bottom of the grid")
        # Delete on a card in the middle opens its confirmation.
        cards.nth(20).get_by_role("button", name=re.compile("^Delete ")).click()
        expect(page.get_by_role("alertdialog")).to_be_visible()
        page.get_by_role("button", name="Keep it").click()
    context.close()


# -- a chat that remembers, with the evidence first ------------------------------------------

GATE = threading.Event()
GATE.set()


class GatedEchoGenerator(EchoGenerator):
    """The tests' echo backend, but the first word waits for GATE: the time between retrieval and the first token."""

    def _stream(self, conversation, options):
        assert GATE.wait(60), "the test never opened the gate"
        yield from super()._stream(conversation, options)


GENERATORS.register("gated-echo", help="test backend: echoes once the test lets it")(GatedEchoGenerator)


def test_the_chat_remembers_its_turns_and_shows_the_evidence_first(page, shots):
    with Server(auth=False, generator="gated-echo") as server:
        add_by_api(server, "bo", "dog_00.jpg", "<bo> is my corgi.")
        page.goto(server.url)
        expect(page.locator("#concept-grid .card")).to_have_count(1)
        page.set_input_files("#chat-photo", PHOTOS / "dog_01.jpg")

        # With the generator held back, the chips and boxes are there before any word.
        GATE.clear()
        try:
            page.get_by_label("Your question").fill("Who is this?")
            page.get_by_role("button", name="Ask", exact=True).click()
            first = page.locator(".turn.assistant").nth(0)
            expect(first.locator(".chip strong", has_text="bo")).to_be_visible()
            expect(page.locator("#chat-boxes .box", has_text="bo")).to_be_visible()
            expect(first.locator(".text")).to_have_text("")
            shoot(page, shots / "evidence-first.png")
        finally:
            GATE.set()
        expect(first.locator(".text")).not_to_have_class(re.compile("streaming"))
        first_answer = first.locator(".text").text_content()
        assert "Who is this?" in first_answer

        # A follow-up sends the earlier turns, and the backend sees them.
        with page.expect_request("**/v1/chat/completions") as sent:
            answer = ask(page, "And what does he like?")
        messages = sent.value.post_data_json["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user"]
        assert messages[0]["content"][0]["type"] == "image_url" and messages[0]["content"][1]["text"] == "Who is this?"
        assert messages[1]["content"] == first_answer and messages[2]["content"] == "And what does he like?"
        seen = server.app.state.runtime.models.generator.seen[-1]
        assert len(seen) == 2 and seen[0].question == "Who is this?" and seen[0].reply == first_answer
        expect(answer.locator(".text")).to_contain_text("And what does he like?")
        shoot(page, shots / "chat.png")
        page.set_viewport_size(PHONE)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        shoot(page, shots / "chat-phone.png")
        page.set_viewport_size(DESKTOP)

        # A reload brings the chat back, photo and all; "New chat" starts fresh, also after a reload.
        page.reload()
        expect(page.locator(".turn")).to_have_count(4)
        expect(page.locator("#chat-figure")).to_be_visible()
        expect(page.locator(".turn.assistant").nth(1).locator(".text")).to_contain_text("And what does he like?")
        page.get_by_role("button", name="New chat", exact=True).click()
        expect(page.locator(".turn")).to_have_count(0)
        page.reload()
        expect(page.locator("#concept-grid .card")).to_have_count(1)
        expect(page.locator(".turn")).to_have_count(0)
        expect(page.locator("#chat-figure")).to_be_hidden()


# -- remember from any photo ------------------------------------------------------------------


def retrieved(server: Server, photo: str) -> list[str]:
    with open(PHOTOS / photo, "rb") as image:
        found = httpx.post(server.url + "/v1/retrieve", files={"image": image}, timeout=60).json()
    return [c["name"] for c in found["concepts"]]


def test_remember_this_is_and_not_from_a_chat_photo(page, shots):
    with Server(auth=False) as server:
        add_by_api(server, "bo", "dog_00.jpg", "<bo> is my corgi.")
        add_by_api(server, "pot", "teapot_00.jpg", "<pot> is a teapot.", "teapot")
        page.goto(server.url)
        expect(page.locator("#concept-grid .card")).to_have_count(2)
        page.set_input_files("#chat-photo", PHOTOS / "dog_01.jpg")
        answer = ask(page, "Who is this?")

        # "This is bo" on a retrieved box adds the boxed part to bo's images.
        page.locator("#chat-boxes .box", has_text="bo").focus()  # (the keyboard's way: boxes may overlap)
        page.keyboard.press("Enter")
        menu = page.get_by_role("group", name=re.compile("^The box of"))
        expect(menu).to_be_visible()
        menu.get_by_label("Which of your concepts this is").select_option("bo")
        menu.get_by_role("button", name="This is bo").click()
        expect(page.locator('#concept-grid .card[data-name="bo"]').get_by_role("button", name="Reference images of bo: 2")).to_be_visible()
        assert len(httpx.get(server.url + "/v1/concepts/bo").json()["images"]) == 2

        # A box drawn by hand: "Remember as…" makes a new concept of it, described by the conversation.
        image = page.locator("#chat-image")
        at = image.bounding_box()
        page.mouse.move(at["x"] + 0.02 * at["width"], at["y"] + 0.02 * at["height"])
        page.mouse.down()
        page.mouse.move(at["x"] + 0.98 * at["width"], at["y"] + 0.98 * at["height"], steps=6)
        page.mouse.up()
        menu = page.get_by_role("group", name=re.compile("^Your box"))
        expect(menu).to_be_visible()
        shoot(page, shots / "remember.png")
        menu.get_by_role("button", name="Remember as…").click()
        dialog = page.get_by_role("dialog", name="Add a concept")
        expect(dialog.locator("#add-image")).to_be_visible()
        said = " ".join(answer.locator(".text").text_content().split())
        expect(dialog.get_by_label("Description")).to_have_value(said)
        dialog.get_by_label("Name").fill("rex")
        dialog.get_by_label("Category").fill("dog")
        dialog.get_by_role("button", name="Add concept").click()
        expect(dialog).to_be_hidden()
        expect(page.locator('#concept-grid .card[data-name="rex"]')).to_have_count(1)
        assert "rex" in retrieved(server, "dog_01.jpg")
        later = ask(page, "And now?")  # the next answer in the same chat: no reload
        expect(later.locator(".chip strong", has_text="rex")).to_have_count(1)

        # "Not <name>" on a chip records that region as a negative of that concept.
        chip = later.locator(".chip").filter(has=page.get_by_role("button", name=re.compile("^Not "))).first
        name = chip.locator("strong").inner_text()
        chip.get_by_role("button", name=f"Not {name}").click()
        expect(chip.get_by_role("button", name=f"Not {name}: noted")).to_be_visible()
        assert httpx.get(f"{server.url}/v1/concepts/{name}/negatives").json()["negatives"] == 1


# -- bad files said at once, and the page's headers ------------------------------------------------


def test_non_images_and_broken_images_are_said_when_chosen(page, shots):
    truncated = (PHOTOS / "dog_00.jpg").read_bytes()
    truncated = truncated[: len(truncated) // 2]
    with Server(auth=False) as server:
        page.goto(server.url)
        expect(page.locator("#concepts-empty")).to_be_visible()
        error = page.locator("#chat-photo-error")
        page.set_input_files("#chat-photo", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"a shopping list"})
        expect(error).to_have_text("“notes.txt” is not an image. Choose a JPEG, PNG, WebP or HEIC photo.")
        expect(page.locator("#chat-figure")).to_be_hidden()
        page.set_input_files("#chat-photo", {"name": "truncated.jpg", "mimeType": "image/jpeg", "buffer": truncated})
        expect(error).to_contain_text("“truncated.jpg” is a broken JPEG image")
        expect(page.locator("#chat-figure")).to_be_hidden()
        page.set_input_files("#chat-photo", PHOTOS / "dog_00.jpg")
        expect(error).to_be_hidden()
        expect(page.locator("#chat-figure")).to_be_visible()

        page.get_by_role("button", name="Add concept").click()
        page.set_input_files("#add-photo", {"name": "truncated.jpg", "mimeType": "image/jpeg", "buffer": truncated})
        expect(page.locator("#add-error")).to_contain_text("“truncated.jpg” is a broken JPEG image")
        page.set_input_files("#add-photo", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"a shopping list"})
        expect(page.locator("#add-error")).to_contain_text("“notes.txt” is not an image")
        page.set_viewport_size(PHONE)
        shoot(page, shots / "error-phone.png")


def test_security_headers_on_the_page_and_its_files(page):
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None)
    with Server(auth=False) as server:
        for path in ("/", "/app.js", "/app.css", "/chat.js", "/v1/concepts"):
            headers = httpx.get(server.url + path).headers
            csp = headers["content-security-policy"]
            assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert "unsafe-inline" not in csp
            assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer", path
        page.goto(server.url)
        add_by_api(server, "bo", "dog_00.jpg")
        expect(page.locator('#concept-grid .card[data-name="bo"] .thumb img')).to_have_attribute("src", re.compile("^blob:"), timeout=30_000)
        assert not violations, violations
