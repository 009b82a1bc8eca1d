"""Shared fixtures: every test gets its own RAP_HOME, and real photos live in tests/photos."""

from __future__ import annotations

from pathlib import Path

import pytest

PHOTOS = Path(__file__).parent / "photos"


@pytest.fixture(autouse=True)
def rap_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point RAP_HOME at a fresh folder so no test touches the user's real store."""
    home = tmp_path / "rap-home"
    monkeypatch.setenv("RAP_HOME", str(home))
    for var in ("RAP_DB", "RAP_ENCODER", "RAP_DETECTOR", "RAP_FACES", "RAP_CONFIG", "RAP_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture
def photos() -> Path:
    return PHOTOS


# -- a tiny, deterministic image encoder registered through the real registry ---------
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from rap.encoders import ENCODERS, ImageEncoder, l2_normalize  # noqa: E402


class TinyEncoder(ImageEncoder):
    """Colour layout at 6x6: cheap, no torch, and similar photos land near each other."""

    dim = 108
    match_threshold = 0.6

    def __init__(self, argument: str) -> None:
        self.id = f"tiny:{argument}" if argument else "tiny"

    def embed(self, images):
        rows = [np.asarray(image.convert("RGB").resize((6, 6), Image.BILINEAR), np.float32).ravel() for image in images]
        rows = np.stack(rows) / 255.0
        return l2_normalize(rows - rows.mean(axis=1, keepdims=True))


ENCODERS.register("tiny", help="test encoder: colour layout at 6x6")(TinyEncoder)


@pytest.fixture
def store(tmp_path: Path):
    from rap import LocalConceptStore

    with LocalConceptStore(tmp_path / "store", encoder="tiny", faces="none") as opened:
        yield opened


# -- a generation backend that repeats its prompt, registered through the real registry ---
from rap.generation import GENERATORS, Generator  # noqa: E402


class EchoGenerator(Generator):
    """Replies with the last user message as the model would receive it (images as <image>)."""

    def __init__(self, argument: str, reply: str | None = None, sees_images: bool = True, max_concepts: int = 2):
        self.id = "echo"
        self.reply, self.sees_images, self.max_concepts = reply, sees_images, max_concepts
        self.seen: list = []

    def _stream(self, conversation, options):
        self.seen.append(list(conversation))
        last = conversation[-1]
        text = self.reply if self.reply is not None else (last.text() if self.sees_images else last.text_only())
        for word in text.split(" "):
            yield word + " "


GENERATORS.register("echo", help="test backend: repeats its prompt")(EchoGenerator)
