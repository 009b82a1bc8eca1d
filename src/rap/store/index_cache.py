"""The FAISS indexes of a local store, kept in line with the vectors in SQLite.

SQLite is the source of truth; the indexes (in memory, and checkpointed to
``index/<space>.faiss``) are derived from it. :meth:`IndexCache.refresh` is the
one mechanism that keeps them honest: whenever the store's generation counter
differs from the one the indexes were built at (another process wrote, this
process wrote, or the store was just opened after a crash), each index is
compared with SQLite by id and repaired: vectors it lacks are added from their
stored copies, vectors pointing at nothing are removed. An index that is
missing, unreadable or outgrown is rebuilt from SQLite, and the factory string
it was built from is recorded in the ``meta`` table (``index:<space>:factory``).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np

from rap.store.schema import DB_FILE, damage_error, digest_matches
from rap.store.vectors import VectorIndex, damaged

log = logging.getLogger(__name__)


def factory_key(space: str) -> str:
    """The ``meta`` key under which the factory string of a space's index is recorded."""
    return f"index:{space}:factory"


class IndexCache:
    """One :class:`VectorIndex` per vector space, synced to the ``vectors`` table."""

    def __init__(
        self, folder: Path, db: sqlite3.Connection, spaces: tuple[str, ...], approximate_above: int, writable: bool = True
    ) -> None:
        self.folder = folder
        self._db = db
        self._spaces = spaces
        self._approximate_above = approximate_above
        self._writable = writable
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

    def rebuild(self, space: str) -> None:
        """Build a space's index afresh from every vector stored in SQLite, and checkpoint it."""
        dim = int(self._meta(f"dim:{space}") or 0)
        ids, vectors = self.stored(space)
        index = self.indexes[space] = VectorIndex.build(ids, vectors, dim, self._approximate_above)
        if self._writable:
            try:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (factory_key(space), index.factory))
            except sqlite3.OperationalError as exc:  # busy with another writer: the record is only informative
                log.warning("could not record the %s index's factory: %s", space, exc)
        self._dirty[space] = max(1, index.ntotal)
        self.checkpoint(space, force=True)

    def _sync(self, space: str) -> None:
        dim = self._meta(f"dim:{space}")
        if dim is None:
            self.indexes.pop(space, None)
            return
        stored = np.fromiter((row[0] for row in self._db.execute("SELECT id FROM vectors WHERE space = ?", (space,))), np.int64)
        index = self.indexes.get(space) or VectorIndex.load(self.file(space), int(dim), self._approximate_above)
        if index is None or index.needs_rebuild(len(stored)):
            self.rebuild(space)
            return
        self.indexes[space] = index
        present = index.ids()
        missing = np.setdiff1d(stored, present, assume_unique=True)
        dangling = np.setdiff1d(present, stored, assume_unique=True)
        if not len(missing) and not len(dangling):
            return
        index.remove(dangling)
        index.add(*self.stored(space, missing))
        if self._generation >= 0:
            log.info("index %s: added %d vectors, removed %d", space, len(missing), len(dangling))
        self._dirty[space] = self._dirty.get(space, 0) + len(missing) + len(dangling)
        self.checkpoint(space)

    def stored(self, space: str, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Ids and vectors of a space as SQLite holds them (all, or those of ``ids``), checked for damage:
        each row against its digest, and each vector's length and norm."""
        dim = int(self._meta(f"dim:{space}") or 0)
        select = f"SELECT id, vector, {digest_matches(self._db, 'vectors')} FROM vectors"
        if ids is None:
            rows = self._db.execute(f"{select} WHERE space = ? ORDER BY id", (space,)).fetchall()
        else:
            rows = []
            for start in range(0, len(ids), 900):
                chunk = [int(i) for i in ids[start : start + 900]]
                rows += self._db.execute(f"{select} WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        found = np.array([row[0] for row in rows], np.int64)
        bad = [vid for vid, blob, sound in rows if not sound or len(blob) != 4 * dim]
        vectors = np.stack([np.frombuffer(blob, np.float32) for _, blob, _ in rows]) if rows and not bad else np.empty((0, dim), np.float32)
        bad += found[damaged(vectors)].tolist() if len(vectors) else []
        if bad:
            raise damage_error(self.folder.parent / DB_FILE, f"{len(bad)} stored {space} vector(s) not as written, the first id {bad[0]}")
        return found, vectors

    def checkpoint(self, space: str, force: bool = False) -> None:
        """Save an index when enough changed; small indexes are saved on every change."""
        index = self.indexes.get(space)
        dirty = self._dirty.get(space, 0)
        if not self._writable or index is None or not dirty or not (force or dirty >= max(1, index.ntotal // 1000)):
            return
        try:
            index.save(self.file(space))
            self._dirty[space] = 0
        except OSError as exc:  # a store on a full disk still works, from SQLite
            log.warning("could not save the %s index: %s", space, exc)

    def checkpoint_all(self, force: bool = False) -> None:
        for space in list(self.indexes):
            self.checkpoint(space, force)
