"""Where a photo library is kept: ``photos.sqlite`` beside the embedded concept store.

SQLite is the source of truth: one row per photo (path, size, mtime, content
hash, pixel size, EXIF date and orientation) and one per region or face with
its box and vector. Each photo is written with all its regions in one
transaction, so a run killed at any point leaves every photo either fully
indexed or absent. The FAISS index of each space (``photos.image.faiss``,
``photos.face.faiss``) is a cache, rebuilt from SQLite whenever the
``generation`` counter that every write bumps says it is stale.

The photos are never copied or changed; rows only name their paths. A shared
(PostgreSQL) store would keep the same rows in its own tables through the same
methods; that variant is not built yet, and :func:`open_library` says so.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from rap.detectors import Region
from rap.encoders.base import Face
from rap.errors import EncoderMismatch, InvalidInput, StoreError
from rap.images import Box
from rap.store.base import ConceptStore
from rap.store.vectors import VectorIndex

DB_NAME = "photos.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, taken TEXT, orientation INTEGER NOT NULL,
    indexed_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS photos_sha256 ON photos (sha256);
CREATE INDEX IF NOT EXISTS photos_taken ON photos (taken);
CREATE TABLE IF NOT EXISTS regions (
    id INTEGER PRIMARY KEY, photo_id INTEGER NOT NULL REFERENCES photos (id) ON DELETE CASCADE,
    space TEXT NOT NULL, source TEXT NOT NULL, label TEXT,
    x0 INTEGER NOT NULL, y0 INTEGER NOT NULL, x1 INTEGER NOT NULL, y1 INTEGER NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS regions_photo ON regions (photo_id);
CREATE TABLE IF NOT EXISTS suggestions (
    grp INTEGER NOT NULL, region_id INTEGER NOT NULL REFERENCES regions (id) ON DELETE CASCADE, rank INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class StoredRegion:
    """One region or face of a photo as indexed; the box is in the photo's full pixels."""

    space: str
    source: str
    label: str | None
    box: Box
    vector: np.ndarray


@dataclass(frozen=True)
class Photo:
    """One indexed photo: where it is and what its header says."""

    id: int
    path: str
    width: int
    height: int
    taken: str | None
    orientation: int

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "path": self.path, "size": [self.width, self.height], "taken": self.taken, "orientation": self.orientation}


@dataclass(frozen=True)
class Known:
    """What the library remembers of a file, to tell whether it changed."""

    id: int
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class Looked:
    """A photo's stored regions split as the retriever's decision takes them."""

    regions: list[Region]
    vectors: np.ndarray
    faces: list[Face]


class PhotoLibrary:
    """One user's indexed photos, in ``photos.sqlite`` in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db_file = folder / DB_NAME
        try:
            self._db = sqlite3.connect(self.db_file, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.db_file}: {exc}") from None
        self._indexes: dict[str, tuple[int, VectorIndex]] = {}

    # -- meta -------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def generation(self) -> int:
        return int(self._meta("generation") or 0)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that bumps the generation, so every index cache sees the change."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute(
                "INSERT INTO meta VALUES ('generation', '1') ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def check_models(self, models: dict[str, str], *, reset: bool = False) -> None:
        """Refuse vectors of other models than ``models`` (encoder, faces, detector) in one line,
        as the store does; an empty library (or ``reset``, which forgets every photo) takes them."""
        recorded = {key: self._meta(key) for key in models}
        if recorded == models and not reset:
            return
        count = self._db.execute("SELECT count(*) FROM photos").fetchone()[0]
        if count and not reset:
            theirs = ", ".join(f"{k} {recorded[k]}" for k in models)
            ours = ", ".join(f"{k} {v}" for k, v in models.items())
            raise EncoderMismatch(
                f"{self.db_file} holds photos indexed with {theirs}, not {ours}; "
                "re-index them with 'rap photos index --reindex PATH...'"
            )
        with self._write() as db:
            db.execute("DELETE FROM photos")
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", models.items())

    # -- what is there ----------------------------------------------------------
    def known(self) -> dict[str, Known]:
        rows = self._db.execute("SELECT path, id, size, mtime_ns, sha256 FROM photos")
        return {path: Known(i, size, mtime, sha) for path, i, size, mtime, sha in rows}

    def photos(self, ids: Iterable[int], since: str | None = None, until: str | None = None) -> dict[int, Photo]:
        """The photos among ``ids`` taken between ``since`` and ``until`` (ISO dates, inclusive; None: open)."""
        found: dict[int, Photo] = {}
        wanted = sorted(set(ids))
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            sql = f"SELECT id, path, width, height, taken, orientation FROM photos WHERE id IN ({','.join('?' * len(chunk))})"
            params: list[object] = list(chunk)
            if since:
                sql += " AND taken IS NOT NULL AND substr(taken, 1, 10) >= ?"
                params.append(since)
            if until:
                sql += " AND taken IS NOT NULL AND substr(taken, 1, 10) <= ?"
                params.append(until)
            for row in self._db.execute(sql, params):
                found[row[0]] = Photo(*row)
        return found

    def looked(self, photo_id: int) -> Looked:
        """A photo's regions, vectors and faces, as :meth:`Retriever.decide` takes them."""
        regions: list[Region] = []
        vectors: list[np.ndarray] = []
        faces: list[Face] = []
        for region in self.regions_of(photo_id):
            if region.space == "face":
                faces.append(Face(region.box, region.vector))
            else:
                regions.append(Region(region.box, label=region.label, source=region.source))
                vectors.append(region.vector)
        return Looked(regions, np.stack(vectors) if vectors else np.zeros((0, 0), np.float32), faces)

    def regions_of(self, photo_id: int) -> list[StoredRegion]:
        rows = self._db.execute(
            "SELECT space, source, label, x0, y0, x1, y1, vector FROM regions WHERE photo_id = ? ORDER BY id", (photo_id,)
        )
        return [StoredRegion(s, src, label, (x0, y0, x1, y1), np.frombuffer(v, np.float32)) for s, src, label, x0, y0, x1, y1, v in rows]

    def region_photos(self, region_ids: Iterable[int]) -> dict[int, int]:
        """The photo of each region id."""
        wanted = sorted(set(int(i) for i in region_ids))
        owners: dict[int, int] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            rows = self._db.execute(f"SELECT id, photo_id FROM regions WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            owners.update(dict(rows))
        return owners

    def vectors(self, space: str, sources: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Region ids and vectors of one space (optionally of some region sources only)."""
        sql, params = "SELECT id, vector FROM regions WHERE space = ?", [space]
        if sources:
            sql += f" AND source IN ({','.join('?' * len(sources))})"
            params += list(sources)
        rows = self._db.execute(sql, params).fetchall()
        if not rows:
            return np.empty(0, np.int64), np.empty((0, 0), np.float32)
        return np.array([r[0] for r in rows], np.int64), np.stack([np.frombuffer(r[1], np.float32) for r in rows])

    def index(self, space: str) -> VectorIndex | None:
        """The FAISS index of one space's region vectors, rebuilt (and saved) when the library changed."""
        generation = self.generation
        cached = self._indexes.get(space)
        if cached and cached[0] == generation:
            return cached[1]
        file = self.folder / f"photos.{space}.faiss"
        stamp = self.folder / f"photos.{space}.generation"
        ids, vectors = self.vectors(space)
        if not len(ids):
            return None
        index = None
        if file.exists() and stamp.exists() and stamp.read_text().strip() == str(generation):
            index = VectorIndex.load(file, vectors.shape[1])
        if index is None:
            index = VectorIndex.build(ids, vectors, vectors.shape[1])
            index.save(file)
            stamp.write_text(str(generation))
        self._indexes[space] = (generation, index)
        return index

    def stats(self) -> dict[str, object]:
        photos = self._db.execute("SELECT count(*) FROM photos").fetchone()[0]
        by_space = dict(self._db.execute("SELECT space, count(*) FROM regions GROUP BY space").fetchall())
        files = [p for p in self.folder.glob("photos.*") if p.is_file()]
        return {
            "photos": photos,
            "regions": by_space.get("image", 0),
            "faces": by_space.get("face", 0),
            "bytes_on_disk": sum(p.stat().st_size for p in files),
            "files": sorted(str(p) for p in files),
            "models": {k: self._meta(k) for k in ("encoder", "faces", "detector")},
        }

    # -- changing it ------------------------------------------------------------
    def put(
        self, path: str, size: int, mtime_ns: int, sha256: str, pixels: tuple[int, int], taken: str | None,
        orientation: int, regions: Sequence[StoredRegion],
    ) -> None:
        """Write one photo and all its regions at once, replacing what the path held."""
        with self._write() as db:
            db.execute("DELETE FROM photos WHERE path = ?", (path,))
            photo_id = db.execute(
                "INSERT INTO photos (path, size, mtime_ns, sha256, width, height, taken, orientation, indexed_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (path, size, mtime_ns, sha256, pixels[0], pixels[1], taken, orientation, datetime.now(timezone.utc).isoformat()),
            ).lastrowid
            db.executemany(
                "INSERT INTO regions (photo_id, space, source, label, x0, y0, x1, y1, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(photo_id, r.space, r.source, r.label, *map(int, r.box), np.asarray(r.vector, np.float32).tobytes()) for r in regions],
            )

    def copy_of(self, sha256: str) -> tuple[Photo, list[StoredRegion]] | None:
        """An indexed photo with these bytes and its regions: a copy of a photo is not looked at twice."""
        row = self._db.execute("SELECT id FROM photos WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone()
        if row is None:
            return None
        return self.photos([row[0]])[row[0]], self.regions_of(row[0])

    def touch(self, path: str, size: int, mtime_ns: int) -> None:
        """A file whose bytes did not change although its size or time did."""
        with self._write() as db:
            db.execute("UPDATE photos SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def forget(self, paths: Iterable[str]) -> int:
        paths = list(paths)
        if not paths:
            return 0
        with self._write() as db:
            db.executemany("DELETE FROM photos WHERE path = ?", [(p,) for p in paths])
        return len(paths)

    # -- suggestions ------------------------------------------------------------
    def save_groups(self, groups: Sequence[Sequence[int]]) -> None:
        """The last suggestion's groups (region ids, best first), numbered from 1, for ``name``."""
        with self._write() as db:
            db.execute("DELETE FROM suggestions")
            db.executemany(
                "INSERT INTO suggestions VALUES (?, ?, ?)",
                [(number, region, rank) for number, regions in enumerate(groups, 1) for rank, region in enumerate(regions)],
            )

    def group(self, number: int) -> list[tuple[Photo, StoredRegion]]:
        """The photos and regions of one suggested group, best first."""
        rows = self._db.execute(
            "SELECT r.photo_id, r.id FROM suggestions s JOIN regions r ON r.id = s.region_id WHERE s.grp = ? ORDER BY s.rank",
            (number,),
        ).fetchall()
        if not rows:
            raise InvalidInput(f"no suggested group {number}; run 'rap photos suggest' and use one of its group numbers")
        photos = self.photos(r[0] for r in rows)
        out = []
        for photo_id, region_id in rows:
            space, source, label, x0, y0, x1, y1, vector = self._db.execute(
                "SELECT space, source, label, x0, y0, x1, y1, vector FROM regions WHERE id = ?", (region_id,)
            ).fetchone()
            out.append((photos[photo_id], StoredRegion(space, source, label, (x0, y0, x1, y1), np.frombuffer(vector, np.float32))))
        return out

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PhotoLibrary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_library(store: ConceptStore) -> PhotoLibrary:
    """The photo library beside ``store``, made on first use; only the embedded store has one yet."""
    from rap.store.local import LocalConceptStore

    if not isinstance(store, LocalConceptStore):
        raise InvalidInput("a photo library is kept beside the embedded store only (local:PATH); PostgreSQL is not supported yet")
    return PhotoLibrary(store.path)
