"""The FAISS indexes of a local store, kept in line with the vectors in SQLite.

SQLite is the source of truth; the indexes (in memory, and checkpointed to
``index/<space>.faiss``) are derived from it. :meth:`IndexCache.refresh` is the
one mechanism that keeps them honest: whenever the store's generation counter
differs from the one the indexes were built at (another process wrote, this
process wrote, or the store was just opened after a crash), each index is
compared with SQLite by id and repaired: vectors it lacks are added from their
stored copies, vectors pointing at nothing are removed.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np

from rap.store.vectors import VectorIndex

log = logging.getLogger(__name__)


class IndexCache:
    """One :class:`VectorIndex` per vector space, synced to the ``vectors`` table."""

    def __init__(self, folder: Path, db: sqlite3.Connection, spaces: tuple[str, ...], approximate_above: int) -> None:
        self.folder = folder
        self._db = db
        self._spaces = spaces
        self._approximate_above = approximate_above
        self.indexes: dict[str, VectorIndex] = {}
        self._dirty: dict[str, int] = {}
        self._generation = -1

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def file(self, space: str) -> Path:
        return self.folder / f"{space}.faiss"

    def refresh(self) -> None:
        """Sync every index with SQLite if the store changed since the last look."""
        generation = int(self._meta("generation") or 0)
        if generation == self._generation:
            return
        for space in self._spaces:
            self._sync(space)
        self._generation = generation

    def forget(self) -> None:
        """Drop every index and its checkpoint (the vectors were all replaced)."""
        for space in self._spaces:
            self.indexes.pop(space, None)
            self.file(space).unlink(missing_ok=True)
        self._generation = -1

    def _sync(self, space: str) -> None:
        dim = self._meta(f"dim:{space}")
        if dim is None:
            self.indexes.pop(space, None)
            return
        index = self.indexes.get(space)
        if index is None:
            loaded = VectorIndex.load(self.file(space), int(dim), self._approximate_above)
            index = self.indexes[space] = loaded or VectorIndex(int(dim), self._approximate_above)
        stored = np.fromiter((row[0] for row in self._db.execute("SELECT id FROM vectors WHERE space = ?", (space,))), np.int64)
        present = index.ids()
        missing = np.setdiff1d(stored, present, assume_unique=True)
        dangling = np.setdiff1d(present, stored, assume_unique=True)
        if not len(missing) and not len(dangling):
            return
        index.remove(dangling)
        index.add(missing, self._stored_vectors(missing, int(dim)))
        if self._generation >= 0:
            log.info("index %s: added %d vectors, removed %d", space, len(missing), len(dangling))
        self._dirty[space] = self._dirty.get(space, 0) + len(missing) + len(dangling)
        self.checkpoint(space)

    def _stored_vectors(self, ids: np.ndarray, dim: int) -> np.ndarray:
        out = np.empty((len(ids), dim), np.float32)
        position = {int(i): n for n, i in enumerate(ids)}
        for start in range(0, len(ids), 900):
            chunk = [int(i) for i in ids[start : start + 900]]
            marks = ",".join("?" * len(chunk))
            for vid, blob in self._db.execute(f"SELECT id, vector FROM vectors WHERE id IN ({marks})", chunk):
                out[position[vid]] = np.frombuffer(blob, np.float32)
        return out

    def checkpoint(self, space: str, force: bool = False) -> None:
        """Save an index when enough changed; small indexes are saved on every change."""
        index = self.indexes.get(space)
        dirty = self._dirty.get(space, 0)
        if index is None or not dirty or not (force or dirty >= max(1, index.ntotal // 1000)):
            return
        try:
            index.save(self.file(space))
            self._dirty[space] = 0
        except OSError as exc:  # a read-only store still works, from SQLite
            log.warning("could not save the %s index: %s", space, exc)

    def checkpoint_all(self, force: bool = False) -> None:
        for space in list(self.indexes):
            self.checkpoint(space, force)
