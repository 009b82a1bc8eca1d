"""The page's Photos view in a real headless Chromium (see test_web.py): a concept's photos as a grid
with its box on each, and the subjects that recur unnamed, one named with "Name this…"."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from test_photos import _variants
from test_web import Server, browser, expect, page, shoot, shots  # noqa: F401, F811 (fixtures used by name)
from waiting import DEADLINE_S, wait_until

from test_server_support import PHOTOS

pytestmark = pytest.mark.slow


def upload(server: Server, files: list[Path]) -> list[str]:
    response = httpx.post(
        server.url + "/v1/photos", files=[("image", (f.name, f.read_bytes(), "image/jpeg")) for f in files], timeout=DEADLINE_S
    )
    assert response.status_code == 202, response.text
    ids = [p["id"] for p in response.json()["photos"]]

    def indexed() -> bool:
        return all(httpx.get(f"{server.url}/v1/photos/{i}/state").json()["state"] == "indexed" for i in ids)

    wait_until(indexed, f"{len(ids)} photos to be indexed", interval_s=0.1)
    return ids


def test_a_concepts_photos_with_boxes_and_naming_a_suggestion(page, shots, rap_home, tmp_path):  # noqa: F811
    with Server(auth=False, threshold=None, photos_min_photos=4) as server:
        page.goto(server.url)
        # photos added from the page are indexed in the background
        page.get_by_role("button", name="Photos").click()
        dialog = page.get_by_role("dialog", name="Your photos")
        page.set_input_files("#photos-upload", [PHOTOS / n for n in ("teapot_00.jpg", "dog_00.jpg", "cat_00.jpg")])
        expect(dialog.get_by_text("3 photos added")).to_be_visible()
        ids = [hashlib.sha256((PHOTOS / n).read_bytes()).hexdigest() for n in ("teapot_00.jpg", "dog_00.jpg", "cat_00.jpg")]
        wait_until(
            lambda: all(httpx.get(f"{server.url}/v1/photos/{i}/state").json()["state"] == "indexed" for i in ids),
            "the page's uploads to be indexed", interval_s=0.1,
        )
        with (PHOTOS / "teapot_00.jpg").open("rb") as f:
            added = httpx.post(server.url + "/v1/concepts", data={"name": "pot", "category": "teapot"}, files={"image": f})
        assert added.status_code == 201, added.text
        dialog.get_by_role("button", name="Done").click()
        page.get_by_role("button", name="Photos").click()
        dialog.get_by_label("Which concept's photos to show").select_option("pot")
        dialog.get_by_role("button", name="Show its photos").click()
        first = page.locator("#photos-grid .photo-tile").first
        expect(first.locator("img")).to_have_attribute("alt", "A photo of <pot> (match)")
        expect(first.locator(".tile-box")).to_be_visible()
        shoot(page, shots / "photos-concept.png")

        # what recurs unnamed is offered, and naming it makes a concept
        folder = tmp_path / "many"
        folder.mkdir()
        upload(server, _variants(PHOTOS / "clock_00.jpg", folder, 6, "clock") + _variants(PHOTOS / "dog_01.jpg", folder, 6, "dog"))
        dialog.get_by_role("button", name="Who and what is unnamed?").click()
        group = page.locator("#suggestions .suggestion").first
        expect(group.locator(".tile-box").first).to_be_visible()
        shoot(page, shots / "photos-suggestions.png")
        group.get_by_role("button", name="Name this…").click()
        group.get_by_label("Name").fill("thing")
        group.get_by_label("Category").fill("object")
        group.get_by_role("button", name="Remember").click()
        expect(page.locator("#toast")).to_have_text("Remembered <thing>")
        assert httpx.get(server.url + "/v1/concepts/thing").status_code == 200
        expect(page.locator("#concept-grid .name", has_text="thing")).to_be_visible()
