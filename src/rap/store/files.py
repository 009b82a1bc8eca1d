"""Reference images kept inside the store, addressed by content, and the store's temp files.

A file's name is the SHA-256 of its bytes, so writing it twice is harmless, two
concepts can share a photo, and a file written before a crash (but never
committed in SQLite) is recognisable as an orphan and collected later.

Every file the store writes (an image, an index checkpoint) is first written to
``.<name>.<pid>.tmp`` beside its target and renamed into place, so a reader sees
the old file or the new one. A temp file whose process is gone was left by a
crash; :func:`remove_stale_temp_files` deletes it when the store is next opened.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

STALE_TEMP_SECONDS = 600
"""A temp file older than this is left from a crash even if its writer's process id is in use again."""

_TEMP_NAME = re.compile(r"^\..+\.(\d+)\.tmp$")


def writable(path: Path) -> bool:
    """Whether this process can change the file ``path``, or create files in the folder ``path``
    (or in its nearest existing ancestor)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0))


def temp_path(target: Path) -> Path:
    """Where this process writes ``target`` before renaming it into place."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def remove_stale_temp_files(folders: Iterable[Path]) -> int:
    """Delete temp files whose writer no longer runs, or that are old; return how many."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    removed = 0
    for folder in folders:
        for path in folder.glob(".*.tmp"):
            match = _TEMP_NAME.match(path.name)
            try:
                if match and (_process_gone(int(match.group(1))) or path.stat().st_mtime < cutoff):
                    path.unlink()
                    removed += 1
            except OSError:  # gone already, or not ours to delete
                pass
    return removed


class ImageBytes(Protocol):
    """An image's bytes and what names them (a :class:`~rap.images.LoadedImage` is one)."""

    @property
    def data(self) -> bytes: ...

    @property
    def sha256(self) -> str: ...

    @property
    def suffix(self) -> str: ...


class ImageFiles:
    def __init__(self, root: Path) -> None:
        self.root = root

    def relative(self, image: ImageBytes) -> str:
        return f"images/{image.sha256[:2]}/{image.sha256}{image.suffix}"

    def write(self, image: ImageBytes) -> str:
        """Store the image's bytes durably (write, fsync, rename); return its relative path."""
        relative = self.relative(image)
        target = self.root / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(target)
            with tmp.open("wb") as handle:
                handle.write(image.data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        return relative

    def files(self) -> Iterator[str]:
        """Every image file in the store (relative paths), referenced or not; temp files excluded."""
        folder = self.root / "images"
        if folder.is_dir():
            for path in folder.glob("*/*"):
                if not path.name.startswith("."):
                    yield path.relative_to(self.root).as_posix()

    def folders(self) -> list[Path]:
        """The folders that images (and their temp files) are written into."""
        folder = self.root / "images"
        return [path for path in folder.iterdir() if path.is_dir()] if folder.is_dir() else []

    def damage(self, relative: str, sha256: str) -> str | None:
        """What is wrong with a stored image file (missing, or not the bytes it is named by), or None."""
        path = self.root / relative
        try:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            return f"unreadable ({exc.strerror})"
        if digest.hexdigest() != sha256 or not Path(relative).name.startswith(sha256):
            return "changed (its bytes no longer hash to its name)"
        return None

    def delete_unreferenced(self, candidates: Iterable[str], referenced: set[str]) -> None:
        for relative in set(candidates) - referenced:
            path = self.root / relative
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()
            except OSError:  # not empty, or already gone
                pass

    def orphans(self, referenced: set[str]) -> list[str]:
        """The image files no image row names: left by a crash between a file's write and its
        commit, or between a remove's commit and the file's deletion."""
        return sorted(set(self.files()) - referenced)

    def collect_orphans(self, referenced: set[str]) -> int:
        """Delete the files no row names; return how many. Call it holding the store's write lock:
        files are written inside a write transaction, so then none is a write in progress."""
        orphans = self.orphans(referenced)
        self.delete_unreferenced(orphans, referenced)
        return len(orphans)
