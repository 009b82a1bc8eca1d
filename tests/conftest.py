"""Shared fixtures: every test gets its own RAP_HOME, and real photos live in tests/photos."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PHOTOS = Path(__file__).parent / "photos"


@pytest.fixture(scope="session", autouse=True)
def session_rap_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A RAP_HOME for module-scoped fixtures too (they run before rap_home): models write
    caches there, such as the exported ONNX encoder, never in the user's folder. The built-in
    default home (what ``Settings()`` gives a library caller) moves there too, by XDG_DATA_HOME."""
    home = tmp_path_factory.mktemp("rap-session-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAP_HOME", str(home))
        patch.setenv("XDG_DATA_HOME", str(home / "xdg"))
        yield home


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

    def __init__(self, argument: str, settings: object = None) -> None:
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


# -- every concept store backend, for the store's own test suite -------------------------
from dataclasses import dataclass  # noqa: E402
from uuid import uuid4  # noqa: E402

from rap.store.postgres_server import throwaway_server  # noqa: E402


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One PostgreSQL + pgvector server for the whole session, the one ``rap db`` runs (rap.store.postgres_server)."""
    with throwaway_server() as url:
        yield url


@pytest.fixture
def server_store_url() -> str | None:
    """The store the API tests' ``client`` serves: the embedded one (None); a module overrides it to add PostgreSQL."""
    return None


@dataclass(frozen=True)
class StoreTarget:
    """Where a test's store lives: a folder, or a fresh user in the shared test database.

    ``open`` opens it (again), as another process would, through the store registry.
    """

    spec: str
    user: str | None

    def open(self, encoder: str | None = "tiny", faces: str | None = "none", create: bool = True, **options):
        from rap.settings import resolve
        from rap.store.registry import open_store

        settings = resolve({"store_url": self.spec}).settings
        return open_store(settings, user=self.user, encoder=encoder, faces=faces, create=create, **options)

    @property
    def folder(self) -> Path | None:
        """The store's folder, for an embedded store."""
        return Path(self.spec.removeprefix("local:")) if self.spec.startswith("local:") else None


@pytest.fixture(params=["local", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    if request.param == "local":
        return StoreTarget(f"local:{tmp_path / 'store'}", None)
    return StoreTarget(request.getfixturevalue("postgres_url"), f"test-{uuid4().hex[:12]}")


@pytest.fixture
def any_store(store_target: StoreTarget):
    """A new, empty store of each backend (test ids ``local`` and ``postgres``)."""
    with store_target.open() as opened:
        yield opened


@contextmanager
def read_only_folder(folder: Path, mount: Path):
    """``folder`` as a read-only place: a read-only bind mount at ``mount`` for root (whom
    file modes do not stop), else the folder itself with its write bits taken away."""
    if os.geteuid() != 0:
        folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        for each in folders:
            each.chmod(0o555)
        try:
            yield folder
        finally:
            for each in folders:
                each.chmod(0o755)
        return
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(folder), str(mount)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True, capture_output=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
