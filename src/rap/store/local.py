"""The embedded concept store: one folder holding SQLite metadata, images and FAISS indexes.

Layout of the folder::

    rap.sqlite          concepts, images, vectors (the source of truth; WAL mode)
    images/ab/abc...jpg reference images, named by the SHA-256 of their bytes
    index/image.faiss   FAISS index of the image space (a cache of the vectors table)
    index/face.faiss    FAISS index of the face space

Crash safety: an add writes its image files first, then commits every row in
one SQLite transaction, then updates the index. SQLite is the only source of
truth; an index file is a checkpoint that is checked against SQLite on open and
whenever another process has changed the store (a generation counter in the
``meta`` table tells), and repaired by adding the vectors it lacks and removing
those that point at nothing. So after ``kill -9`` at any point, reopening gives
a store where every concept is retrievable and no vector dangles.

Damage and missing pieces are refused, never "repaired" by deleting: a folder
with reference images but an empty or unreadable database is not a new store,
and every SQLite failure becomes one :class:`~rap.errors.StoreError` naming the
file (``rap check`` then says what is wrong and repairs what it can). Every row
is checked against its digest when the store is opened and whenever it is read
for use (``schema.py``); a store found damaged takes no more writes. A store
that is opened only to read (``create=False``) is never created, and a store in
a folder this process cannot write is opened read-only.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from rap.concepts import Concept, ConceptImage, name_key
from rap.embedding import FACE_SPACE, IMAGE_SPACE, SpaceVector
from rap.encoders import ENCODERS, FACE_ANALYZERS, Face, ImageEncoder
from rap.errors import ConceptExists, StoreDamaged, StoreError, shell_word
from rap.images import load_image
from rap.settings import Settings, default
from rap.store.base import ConceptStore, VectorHit
from rap.store.inputs import ProgressFactory
from rap.store.files import ImageFiles, remove_stale_temp_files, writable
from rap.store.index_cache import IndexCache
from rap.store.schema import (
    DB_FILE,
    MIGRATIONS,
    READABLE_FROM,
    STORE_FORMAT,
    changed_error,
    connect,
    digest_matches,
    migrate,
    seal,
    sqlite_error,
    verify,
)
from rap.store.prepare import EditPlan, Keyed, Prepared
from rap.store.vectors import DEFAULT_APPROXIMATE_ABOVE

log = logging.getLogger(__name__)

OnEncoderChange = Literal["refuse", "reembed"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class _Guard:
    """The store's lock; it also turns any SQLite failure inside it into one StoreError naming the file,
    and remembers the first damage found (:attr:`damage`) so that no more is written."""

    def __init__(self, db_file: Path) -> None:
        self._lock = threading.RLock()
        self._db_file = db_file
        self.damage: StoreDamaged | None = None

    def __enter__(self) -> _Guard:
        self._lock.acquire()
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        self._lock.release()
        error = sqlite_error(self._db_file, exc) if isinstance(exc, sqlite3.DatabaseError) else exc
        if isinstance(error, StoreDamaged) and self.damage is None:
            self.damage = error
        if error is not exc:
            raise error from None


class LocalConceptStore(ConceptStore):
    """Concept store in one folder; see the module docstring for how it stays consistent.

    ``encoder`` and ``faces`` name the models to key the store with; None keeps
    the ones the store records, and a new store takes them from ``settings``
    (default: the built-in :class:`~rap.settings.Settings`). With ``create``
    False a missing store is an error rather than made.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encoder: str | ImageEncoder | None = None,
        faces: str | None = None,
        settings: Settings | None = None,
        create: bool = True,
        on_encoder_change: OnEncoderChange = "refuse",
        progress: ProgressFactory | None = None,
        approximate_above: int = DEFAULT_APPROXIMATE_ABOVE,
        image_side: int = default("image_side"),
        batch_images: int = default("batch_images"),
    ) -> None:
        self.path = Path(path).expanduser()
        for registry, spec in ((ENCODERS, encoder), (FACE_ANALYZERS, faces)):
            if isinstance(spec, str):
                registry.canonical(spec)  # an unknown name is the first thing to hear about
        #: reference images are decoded reduced to this shorter side to be embedded
        self.image_side = image_side
        #: reference images decoded and embedded at once
        self.batch_images = batch_images
        self._lock = _Guard(self.path / DB_FILE)
        #: whether opening re-embedded the store for a new encoder
        self.reembedded_on_open = False
        self.files = ImageFiles(self.path)
        #: whether the store's folder cannot be written: reading works, changing says why not
        db_file = self.path / DB_FILE
        self.read_only = self.path.is_dir() and not (writable(self.path) and (not db_file.exists() or writable(db_file)))
        made = [folder for folder in (self.path, *reversed(self.path.parents)) if not folder.exists()]
        made_db = not db_file.exists()
        with self._lock:
            self._db = self._connect(create)
            try:
                self._index = IndexCache(
                    self.path / "index", self._db, (IMAGE_SPACE, FACE_SPACE), approximate_above, not self.read_only
                )
                self._open_schema(create)
                defaults = settings or Settings()
                #: FAISS threads one search uses (the setting ``search_threads``)
                self.search_threads = defaults.search_threads
                recorded = (self._meta("encoder:image"), self._meta("encoder:face"))
                self.embedder = self._choose_models(
                    recorded, encoder, faces, (defaults.encoder, defaults.faces), on_encoder_change, progress, self._record_models,
                    defaults,
                )
                self._index.refresh()
                if not self.read_only:
                    remove_stale_temp_files([self.path / "index", *self.files.folders()])
                    self._collect_orphans()
            except BaseException:
                self._db.close()
                if made_db:  # a store that failed to open as it was made (say, its encoder) is not left behind
                    _remove_made(db_file, made)
                raise

    # -- opening ----------------------------------------------------------------
    def _missing(self) -> StoreError:
        return StoreError(f"no store at {self.path}; 'rap concept add' or 'rap import' creates one")

    @property
    def location(self) -> str:
        return str(self.path)

    def _connect(self, create: bool) -> sqlite3.Connection:
        db_file = self.path / DB_FILE
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: is a file, not a store folder")
        if not db_file.exists():
            try:
                foreign = self.path.is_dir() and any(self.path.iterdir())
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot read the store folder ({exc.strerror})") from None
            if foreign:
                raise StoreError(
                    f"{self.path}: this folder holds other files and no {DB_FILE}; "
                    "give rap an empty or new folder for its store"
                )
            if not create:
                raise self._missing()
            if not writable(self.path):
                raise StoreError(f"{self.path}: cannot create a store there, the folder is read-only")
        try:
            if not self.read_only:
                self.path.mkdir(parents=True, exist_ok=True)
            connection = connect(db_file, self.read_only)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{db_file} is not a readable rap store ({exc}); 'rap check' tells more") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the store ({exc.strerror})") from None
        return connection

    def _open_schema(self, create: bool) -> None:
        """Check what the database holds before anything is written to it, then migrate."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError(f"{self.path / DB_FILE} is a database of something else, not a rap store")
            images = sum(1 for _ in self.files.files())
            if images:
                raise StoreError(
                    f"{self.path / DB_FILE} is empty but the folder holds {images} reference image(s): its database "
                    "was lost; restore rap.sqlite from a backup (rap has left the folder as it is)"
                )
            if not create:
                raise self._missing()
        if version < len(MIGRATIONS) and self.read_only:
            if version < READABLE_FROM:
                raise StoreError(f"{self.path}: the store needs an upgrade and its folder is read-only; open it once where it is writable")
            log.info("%s is read-only and from before row digests: read without verifying them", self.path)
        else:
            migrate(self._db)
        if self._meta("format") != STORE_FORMAT:
            raise StoreError(f"{self.path}: not a rap concept store")
        verify(self._db, self.path / DB_FILE)  # before anything is written to a damaged store

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def recorded(self, key: str) -> str | None:
        return self._meta(f"record:{key}")

    def record(self, key: str, value: str | None) -> None:
        with self._write() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (f"record:{key}",))
            else:
                self._set_meta(f"record:{key}", value)

    def _record_models(self, models: tuple[str, str]) -> None:
        with self._write():
            self._set_meta("encoder:image", models[0])
            self._set_meta("encoder:face", models[1])

    def _reembed_command(self, encoder: str, faces: str) -> str:
        return f"rap --db {shell_word(str(self.path))} --encoder {encoder} --faces {faces} reembed"

    # -- transactions and the index ---------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; bumps the generation so other processes re-sync."""
        if self.read_only:
            raise StoreError(f"{self.path} is read-only: rap can list and retrieve from this store but not change it")
        with self._lock:
            if self._lock.damage is not None:
                raise self._lock.damage
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _collect_orphans(self) -> None:
        """Delete image files no row names, taking the write lock only when there are some."""
        if not self.files.orphans(referenced_files(self._db)):
            return
        with self._write() as db:
            removed = self.files.collect_orphans(referenced_files(db))
        log.info("removed %d image files that no concept refers to", removed)

    # -- reading ----------------------------------------------------------------
    def _id_of(self, key: str) -> tuple[int, str] | None:
        with self._lock:
            row = self._db.execute("SELECT id, name FROM concepts WHERE name_key = ?", (key,)).fetchone()
        return None if row is None else (row[0], row[1])

    def _load_concepts(self, where: str, params: Sequence[object]) -> list[Concept]:
        rows = self._db.execute(
            "SELECT id, name, info, category, attributes, created_at, updated_at, "
            f"{digest_matches(self._db, 'concepts')} FROM concepts WHERE {where} ORDER BY name_key",
            params,
        ).fetchall()
        self._refuse_changed("concepts", rows)
        if not rows:
            return []
        images: dict[int, list[ConceptImage]] = {row[0]: [] for row in rows}
        marks = ",".join("?" * len(rows))
        image_rows = self._db.execute(
            "SELECT i.id, i.concept_id, i.file, i.sha256, i.width, i.height, v.box, "
            f"{digest_matches(self._db, 'images', 'i')} FROM images i "
            f"LEFT JOIN vectors v ON v.image_id = i.id AND v.space = '{FACE_SPACE}' "
            f"WHERE i.concept_id IN ({marks}) ORDER BY i.id",
            [row[0] for row in rows],
        ).fetchall()
        self._refuse_changed("images", image_rows)
        for image_id, concept_id, file, sha, width, height, box, _ in image_rows:
            face_box = tuple(json.loads(box)) if box else None
            images[concept_id].append(
                ConceptImage(id=image_id, file=file, sha256=sha, width=width, height=height, face_box=face_box)
            )
        return [
            Concept(
                name=name,
                info=info,
                category=category,
                attributes=json.loads(attributes),
                images=images[cid],
                created_at=datetime.fromisoformat(created),
                updated_at=datetime.fromisoformat(updated),
            )
            for cid, name, info, category, attributes, created, updated, _ in rows
        ]

    def _refuse_changed(self, table: str, rows: Sequence[Sequence[object]]) -> None:
        """Rows read with their id first and whether they match their digest last: any that does not is damage."""
        changed = [row[0] for row in rows if not row[-1]]
        if changed:
            raise changed_error(self.path / DB_FILE, table, changed)

    def _find(self, keys: Sequence[str]) -> list[Concept]:
        found: list[Concept] = []
        with self._lock:
            for start in range(0, len(keys), 900):  # SQLite's limit on a statement's parameters
                chunk = keys[start : start + 900]
                found += self._load_concepts(f"name_key IN ({','.join('?' * len(chunk))})", chunk)
        return found

    def list(self) -> list[Concept]:
        with self._lock:
            return self._load_concepts("1", [])

    def categories(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT DISTINCT category FROM concepts ORDER BY category")]

    def spaces(self) -> list[str]:
        with self._lock:
            self._index.refresh()
            return [space for space, index in self._index.indexes.items() if index.ntotal]

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM concepts").fetchone()[0]

    def _count_images(self) -> int:
        return self._db.execute("SELECT count(*) FROM images").fetchone()[0]

    def image_path(self, image_file: str) -> Path:
        return self.path / image_file

    def _dim(self, space: str) -> int:
        with self._lock:
            return int(self._meta(f"dim:{space}") or 0)

    def _vectors_of(self, concept_id: int, space: str) -> list[np.ndarray]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT v.id, v.vector, {digest_matches(self._db, 'vectors', 'v')} FROM vectors v "
                "JOIN images i ON i.id = v.image_id WHERE i.concept_id = ? AND v.space = ? ORDER BY v.id",
                (concept_id, space),
            ).fetchall()
            self._refuse_changed("vectors", rows)
        return [np.frombuffer(row[1], np.float32) for row in rows]

    def index_info(self) -> dict[str, dict[str, object]]:
        """For each space: vector count, dimension and the FAISS factory string in use."""
        with self._lock:
            self._index.refresh()
            return {
                space: {"vectors": index.ntotal, "dim": index.dim, "factory": index.factory, "search": index.search_params}
                for space, index in self._index.indexes.items()
            }

    def search(self, space: str, queries: np.ndarray, k: int) -> list[list[VectorHit]]:
        with self._lock:
            self._index.refresh()
            index = self._index.indexes.get(space)
            if index is None or index.ntotal == 0:
                return [[] for _ in range(len(queries))]
            distances, ids = index.search(queries, k, self.search_threads)
            wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
            owners: dict[int, tuple[str, int]] = {}
            for start in range(0, len(wanted), 900):
                chunk = wanted[start : start + 900]
                for vid, image_id, concept in self._db.execute(
                    "SELECT v.id, v.image_id, c.name FROM vectors v JOIN images i ON i.id = v.image_id "
                    f"JOIN concepts c ON c.id = i.concept_id WHERE v.id IN ({','.join('?' * len(chunk))})",
                    chunk,
                ):
                    owners[vid] = (concept, image_id)
            return [
                [
                    VectorHit(owners[int(i)][0], owners[int(i)][1], float(d))
                    for d, i in zip(row_d, row_i)
                    if int(i) in owners
                ]
                for row_d, row_i in zip(distances, ids)
            ]

    # -- writing ----------------------------------------------------------------
    def _insert_images(self, db: sqlite3.Connection, concept_id: int, keyed: list[Keyed]) -> list[str]:
        files = []
        for image in keyed:
            file = self.files.write(image.verified())
            files.append(file)
            image_id = db.execute(
                "INSERT INTO images (concept_id, file, sha256, width, height) VALUES (?, ?, ?, ?, ?)",
                (concept_id, file, image.sha256, *image.size),
            ).lastrowid
            seal(db, "images", image_id)
            for entry in image.vectors:
                self._insert_vector(db, image_id, entry.space, entry.vector, entry.box)
        return files

    def _insert_vector(self, db: sqlite3.Connection, image_id: int, space: str, vector: np.ndarray, box: object) -> None:
        vector = np.ascontiguousarray(vector, np.float32)
        dim = self._meta(f"dim:{space}")
        if dim is None:
            self._set_meta(f"dim:{space}", str(len(vector)))
        elif int(dim) != len(vector):
            raise StoreError(f"vector of length {len(vector)} for a {space} space of dimension {dim}")
        vector_id = db.execute(
            "INSERT INTO vectors (image_id, space, box, vector) VALUES (?, ?, ?, ?)",
            (image_id, space, json.dumps(list(map(int, box))) if box else None, vector.tobytes()),
        ).lastrowid
        seal(db, "vectors", vector_id)

    def _after_write(self) -> None:
        """Bring the index up to date with what was just committed and checkpoint it."""
        self._index.refresh()
        self._index.checkpoint_all()

    def _exclusive(self) -> _Guard:
        """The store's lock: writers in this process take turns from reading to writing."""
        return self._lock

    def _name_keys(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT name_key FROM concepts")}

    def _insert_concepts(self, prepared: Sequence[Prepared]) -> None:
        now = _now()
        with self._write() as db:
            for p in prepared:
                if db.execute("SELECT 1 FROM concepts WHERE name_key = ?", (name_key(p.name),)).fetchone():
                    raise ConceptExists(f"a concept named {p.name!r} already exists")
                concept_id = db.execute(
                    "INSERT INTO concepts (name, name_key, info, category, attributes, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (p.name, name_key(p.name), p.info, p.category, json.dumps(p.attributes), now, now),
                ).lastrowid
                seal(db, "concepts", concept_id)
                self._insert_images(db, concept_id, p.keyed)

    def _write_edit(self, current: Concept, plan: EditPlan, faces: Mapping[int, Face]) -> Concept:
        with self._lock:
            concept_id, _ = self._concept_id(current.name)
            changed, drop, kept = plan.changed, plan.drop, plan.kept
            with self._write() as db:
                try:
                    db.execute(
                        "UPDATE concepts SET name = ?, name_key = ?, info = ?, category = ?, attributes = ?, updated_at = ? "
                        "WHERE id = ?",
                        (
                            changed.name,
                            name_key(changed.name),
                            changed.info,
                            changed.category,
                            json.dumps(changed.attributes),
                            _now(),
                            concept_id,
                        ),
                    )
                except sqlite3.IntegrityError:  # another writer took the name since the edit was checked
                    raise ConceptExists(f"a concept named {changed.name!r} already exists") from None
                seal(db, "concepts", concept_id)
                if drop:
                    db.execute(f"DELETE FROM images WHERE id IN ({','.join('?' * len(drop))})", sorted(drop))
                if plan.refresh_faces:
                    ids = [image.id for image in kept]
                    db.execute(
                        f"DELETE FROM vectors WHERE space = ? AND image_id IN ({','.join('?' * len(ids))})",
                        [FACE_SPACE, *ids],
                    )
                    for image_id, face in faces.items():
                        self._insert_vector(db, image_id, FACE_SPACE, face.vector, face.box)
                self._insert_images(db, concept_id, changed.keyed)
            self._delete_unreferenced([image.file for image in current.images if image.id in drop])
            self._after_write()
            return self.get(changed.name)

    def _row_ids(self, images: Sequence[ConceptImage]) -> list[int]:
        return [image.id for image in images]  # users see the row ids

    def remove(self, name: str) -> None:
        with self._lock:
            concept_id, current_name = self._concept_id(name)
            files = [row[0] for row in self._db.execute("SELECT file FROM images WHERE concept_id = ?", (concept_id,))]
            with self._write() as db:
                db.execute("DELETE FROM concepts WHERE id = ?", (concept_id,))
            self._delete_unreferenced(files)
            self._after_write()

    def _delete_unreferenced(self, files: Iterable[str]) -> None:
        files = list(files)
        if not files:
            return
        marks = ",".join("?" * len(files))
        still = {row[0] for row in self._db.execute(f"SELECT file FROM images WHERE file IN ({marks})", files)}
        self.files.delete_unreferenced(files, still)

    def _image_categories(self) -> list[tuple[int, str]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT i.id, c.category FROM images i JOIN concepts c ON c.id = i.concept_id ORDER BY i.id"
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def _reference_images(self, image_ids: Sequence[int]) -> list[Image.Image]:
        with self._lock:
            files = dict(
                self._db.execute(f"SELECT id, file FROM images WHERE id IN ({','.join('?' * len(image_ids))})", image_ids)
            )
        return [load_image(self.image_path(files[image_id]), shorter_side=self.image_side).image for image_id in image_ids]

    def _write_vectors(self, keyed: Sequence[tuple[int, list[SpaceVector]]], every: bool) -> None:
        with self._write() as db:
            if every:
                db.execute("DELETE FROM vectors")
                db.execute("DELETE FROM meta WHERE key LIKE 'dim:%' OR key LIKE 'index:%'")
                self._set_meta("encoder:image", self.embedder.encoder_id)
                self._set_meta("encoder:face", self.embedder.faces_id)
            for image_id, vectors in keyed:
                if not every:
                    db.execute("DELETE FROM vectors WHERE image_id = ?", (image_id,))
                for entry in vectors:
                    self._insert_vector(db, image_id, entry.space, entry.vector, entry.box)
        if every:
            self._index.forget()

    def close(self) -> None:
        with self._lock:
            self._index.checkpoint_all(force=True)
            self._db.close()


def _remove_made(db_file: Path, folders: list[Path]) -> None:
    """Remove a database just made and the folders made for it, if nothing else is in them."""
    for suffix in ("", "-wal", "-shm"):
        db_file.with_name(db_file.name + suffix).unlink(missing_ok=True)
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        with suppress(OSError):
            folder.rmdir()  # only when empty


def referenced_files(db: sqlite3.Connection) -> set[str]:
    """The image files the store's rows name."""
    return {row[0] for row in db.execute("SELECT DISTINCT file FROM images")}
