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
from test_server_support import PHOTOS, add_user, settings  # noqa: E402

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
        app = create_app(settings(**{"detector": "multiscale"} | changes), auth=auth)
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
    page.screenshot(path=path, style="#toast { display: none !important; }")


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
        assert "sweet potatoes" in ask(page, "What does <bo> like to eat?").inner_text()
        card.get_by_role("button", name="Edit the description of bo").click()
        card.get_by_role("textbox", name="Description").fill("<bo> is my corgi; he only eats carrots now.")
        card.get_by_role("button", name="Save").click()
        expect(card.locator(".info")).to_have_text("<bo> is my corgi; he only eats carrots now.")
        later = ask(page, "What does <bo> like to eat?").inner_text()
        assert "carrots" in later and "sweet potatoes" not in later
        shoot(page, shots / "edited.png")

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

        # A non-image upload says so, and the form still works afterwards.
        page.get_by_role("button", name="Add concept").click()
        page.set_input_files("#add-photo", {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not a photo at all"})
        form = page.get_by_role("dialog", name="Add a concept")
        form.get_by_label("Name").fill("notes")
        form.get_by_label("Category").fill("paper")
        page.get_by_role("dialog").get_by_role("button", name="Add concept").click()
        error = page.locator("#add-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("not an image")
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
