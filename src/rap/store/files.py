"""Reference images kept inside the store, addressed by content.

A file's name is the SHA-256 of its bytes, so writing it twice is harmless, two
concepts can share a photo, and a file written before a crash (but never
committed in SQLite) is recognisable as an orphan and collected later.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

ORPHAN_AGE_SECONDS = 600
"""Orphans younger than this may belong to a write still in progress in another process."""


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
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            with tmp.open("wb") as handle:
                handle.write(image.data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        return relative

    def delete_unreferenced(self, candidates: Iterable[str], referenced: set[str]) -> None:
        for relative in set(candidates) - referenced:
            path = self.root / relative
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()
            except OSError:  # not empty, or already gone
                pass

    def collect_orphans(self, referenced: set[str]) -> int:
        """Delete old files no concept refers to (left by a crash); return how many."""
        folder = self.root / "images"
        if not folder.exists():
            return 0
        cutoff = time.time() - ORPHAN_AGE_SECONDS
        removed = 0
        for path in folder.glob("*/*"):
            relative = path.relative_to(self.root).as_posix()
            if relative not in referenced and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
