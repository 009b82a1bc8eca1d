"""Which files a list of paths names: folders walked recursively, each real file once."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rap.images import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Found:
    """A file to index, or a path given that could not be walked (``error`` says why)."""

    path: Path
    size: int = 0
    mtime_ns: int = 0
    error: str | None = None


def scan(paths: Iterable[Path]) -> Iterator[Found]:
    """Every image file under ``paths``, absolute, in a stable order.

    A file named explicitly is taken whatever its suffix (a bad one is then
    reported); in folders only image suffixes are taken. Symbolic links are
    followed, but each real folder and file is visited once, so a link loop
    ends and a photo linked twice is indexed once.
    """
    seen: set[tuple[int, int]] = set()
    for given in paths:
        path = Path(os.path.abspath(given))
        try:
            info = path.stat()
        except OSError as exc:
            yield Found(path, error=f"{path}: {exc.strerror or 'cannot read'}")
            continue
        if path.is_dir():
            yield from _walk(path, seen)
        elif _first_visit(info, seen):
            yield Found(path, info.st_size, info.st_mtime_ns)


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[Found]:
    try:
        info = folder.stat()
        if not _first_visit(info, seen):
            return
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            if entry.is_dir():
                yield from _walk(path, seen)
            elif entry.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                info = entry.stat()
                if _first_visit(info, seen):
                    yield Found(path, info.st_size, info.st_mtime_ns)
        except OSError:
            continue  # vanished or unreadable while walking: not there to index


def _first_visit(info: os.stat_result, seen: set[tuple[int, int]]) -> bool:
    key = (info.st_dev, info.st_ino)
    if key in seen:
        return False
    seen.add(key)
    return True
