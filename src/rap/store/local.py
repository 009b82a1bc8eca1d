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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np

from rap.concepts import (
    MAX_INFO_LENGTH,
    PERSON_CATEGORIES,
    Concept,
    ConceptImage,
    name_key,
    validate_attributes,
    validate_category,
    validate_name,
    validate_text,
)
from rap.embedding import FACE_SPACE, IMAGE_SPACE, Embedder, SpaceVector
from rap.encoders import ImageEncoder
from rap.errors import ConceptExists, ConceptNotFound, EncoderMismatch, InvalidImage, InvalidInput, StoreError
from rap.images import ImageFile, LoadedImage, check_image, load_image, reduce, suffix_for
from rap.store.base import ConceptStore, ImageSource, NewConcept, Progress, ProgressFactory, VectorHit
from rap.store.files import ImageFiles
from rap.store.schema import STORE_FORMAT, migrate
from rap.store.index_cache import IndexCache
from rap.settings import Settings
from rap.store.vectors import DEFAULT_APPROXIMATE_ABOVE

log = logging.getLogger(__name__)

DB_FILE = "rap.sqlite"
DEFAULT_ENCODER = "offline:efficientnet-lite0"
OnEncoderChange = Literal["refuse", "reembed"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class _Bytes:
    """An image file's bytes as they are written into the store."""

    data: bytes
    sha256: str
    suffix: str


@dataclass(frozen=True)
class _Keyed:
    """One reference image embedded but not written: its vectors and what names its bytes.

    Only these are held while a bulk add embeds the rest, never the decoded image;
    a file's bytes are read again when it is written, and must hash as they did.
    """

    source: ImageFile | LoadedImage
    sha256: str
    format: str
    size: tuple[int, int]
    vectors: list[SpaceVector]

    def verified(self) -> _Bytes:
        """The bytes to write, refused if the file changed since it was embedded."""
        if isinstance(self.source, LoadedImage):
            data = self.source.data
        else:
            data = self.source.read()
            if hashlib.sha256(data).hexdigest() != self.sha256:
                raise InvalidImage(f"{self.source.path}: the file changed while it was being added; add it again")
        return _Bytes(data, self.sha256, suffix_for(self.format))


class _Prepared:
    """A concept validated and its image files checked; embedded by ``_embed``; nothing written yet."""

    def __init__(self, name: str, info: str, category: str, attributes: dict[str, str], images: list[ImageFile | LoadedImage]):
        self.name, self.info, self.category, self.attributes = name, info, category, attributes
        self.images = images
        self.keyed: list[_Keyed] = []


class LocalConceptStore(ConceptStore):
    """Concept store in one folder; see the module docstring for how it stays consistent."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encoder: str | ImageEncoder | None = None,
        faces: str | None = None,
        on_encoder_change: OnEncoderChange = "refuse",
        progress: ProgressFactory | None = None,
        approximate_above: int = DEFAULT_APPROXIMATE_ABOVE,
        image_side: int = Settings.model_fields["image_side"].default,
        batch_images: int = Settings.model_fields["batch_images"].default,
    ) -> None:
        self.path = Path(path).expanduser()
        #: reference images are decoded reduced to this shorter side to be embedded
        self.image_side = image_side
        #: reference images decoded and embedded at once
        self.batch_images = batch_images
        self._lock = threading.RLock()
        #: whether opening re-embedded the store for a new encoder
        self.reembedded_on_open = False
        self._db = self._connect()
        self._index = IndexCache(self.path / "index", self._db, (IMAGE_SPACE, FACE_SPACE), approximate_above)
        try:
            migrate(self._db)
            if self._meta("format") != STORE_FORMAT:
                raise StoreError(f"{self.path}: not a rap concept store")
            self.files = ImageFiles(self.path)
            self.embedder = self._choose_models(encoder, faces, on_encoder_change, progress)
            self._index.refresh()
            self._collect_orphans()
        except BaseException:
            self._db.close()
            raise

    # -- opening ----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db_file = self.path / DB_FILE
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: is a file, not a store folder")
        if self.path.is_dir() and not db_file.exists():
            try:
                foreign = any(self.path.iterdir())
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot read the store folder ({exc.strerror})") from None
            if foreign:
                raise StoreError(
                    f"{self.path}: this folder holds other files and no {DB_FILE}; "
                    "give rap an empty or new folder for its store"
                )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(db_file, timeout=30, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {DB_FILE} is not a readable rap store ({exc})") from None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the store ({exc.strerror})") from None
        return connection

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _choose_models(
        self,
        encoder: str | ImageEncoder | None,
        faces: str | None,
        on_change: OnEncoderChange,
        progress: ProgressFactory | None,
    ) -> Embedder:
        recorded = (self._meta("encoder:image"), self._meta("encoder:face"))
        chosen = Embedder(encoder or recorded[0] or DEFAULT_ENCODER, faces or recorded[1] or "none")
        wanted = (chosen.encoder_id, chosen.faces_id)
        if recorded == (None, None):
            with self._write():
                self._set_meta("encoder:image", wanted[0])
                self._set_meta("encoder:face", wanted[1])
        elif recorded != wanted:
            if on_change == "refuse" and len(self):
                raise EncoderMismatch(
                    f"{self.path} holds vectors of encoder {recorded[0]} (faces: {recorded[1]}), not "
                    f"{wanted[0]} (faces: {wanted[1]}); use --encoder {recorded[0]}, or re-embed with "
                    f"'rap reembed --encoder {wanted[0]} --faces {wanted[1]}'"
                )
            self.embedder = chosen
            self.reembedded_on_open = True
            if progress is None:
                self.reembed()
            else:
                with progress("re-embedding", self._count_images()) as advance:
                    self.reembed(advance)
        return chosen

    # -- transactions and the index ---------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; bumps the generation so other processes re-sync."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _collect_orphans(self) -> None:
        referenced = {row[0] for row in self._db.execute("SELECT DISTINCT file FROM images")}
        removed = self.files.collect_orphans(referenced)
        if removed:
            log.info("removed %d image files that no concept refers to", removed)

    # -- reading ----------------------------------------------------------------
    def _concept_id(self, name: str) -> tuple[int, str]:
        cleaned = name.strip()
        if cleaned.startswith("<") and cleaned.endswith(">"):
            cleaned = cleaned[1:-1]
        row = self._db.execute("SELECT id, name FROM concepts WHERE name_key = ?", (name_key(cleaned),)).fetchone()
        if row is None:
            raise ConceptNotFound(f"no concept named {cleaned!r}; 'rap concept list' shows them")
        return row[0], row[1]

    def _load_concepts(self, where: str, params: Sequence[object]) -> list[Concept]:
        rows = self._db.execute(
            "SELECT id, name, info, category, attributes, created_at, updated_at FROM concepts "
            f"WHERE {where} ORDER BY name_key",
            params,
        ).fetchall()
        if not rows:
            return []
        images: dict[int, list[ConceptImage]] = {row[0]: [] for row in rows}
        marks = ",".join("?" * len(rows))
        for image_id, concept_id, file, sha, width, height, box in self._db.execute(
            "SELECT i.id, i.concept_id, i.file, i.sha256, i.width, i.height, v.box FROM images i "
            f"LEFT JOIN vectors v ON v.image_id = i.id AND v.space = '{FACE_SPACE}' "
            f"WHERE i.concept_id IN ({marks}) ORDER BY i.id",
            [row[0] for row in rows],
        ):
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
            for cid, name, info, category, attributes, created, updated in rows
        ]

    def get(self, name: str) -> Concept:
        with self._lock:
            concept_id, _ = self._concept_id(name)
            return self._load_concepts("id = ?", [concept_id])[0]

    def lookup(self, names: Iterable[str]) -> list[Concept]:
        keys = list(dict.fromkeys(name_key(n.strip().strip("<>")) for n in names))
        if not keys:
            return []
        with self._lock:
            found: dict[str, Concept] = {}
            for start in range(0, len(keys), 900):
                chunk = keys[start : start + 900]
                for concept in self._load_concepts(f"name_key IN ({','.join('?' * len(chunk))})", chunk):
                    found[name_key(concept.name)] = concept
        return [found[k] for k in keys if k in found]

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

    def concept_vectors(self, name: str, space: str) -> np.ndarray:
        with self._lock:
            concept_id, _ = self._concept_id(name)
            dim = int(self._meta(f"dim:{space}") or 0)
            rows = self._db.execute(
                "SELECT v.vector FROM vectors v JOIN images i ON i.id = v.image_id "
                "WHERE i.concept_id = ? AND v.space = ? ORDER BY v.id",
                (concept_id, space),
            ).fetchall()
            if not rows:
                return np.empty((0, dim), np.float32)
            return np.stack([np.frombuffer(row[0], np.float32) for row in rows])

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
            distances, ids = index.search(queries, k)
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
    def _decode(self, images: Sequence[ImageSource]) -> list[ImageFile | LoadedImage]:
        """Check each file by its header (cheap); decoding waits for ``_embed``'s batches."""
        return [image if isinstance(image, LoadedImage) else check_image(image) for image in images]

    def _prepare(self, new: NewConcept, taken: set[str]) -> _Prepared:
        name = validate_name(new.name)
        key = name_key(name)
        if key in taken:
            raise ConceptExists(f"a concept named {name!r} already exists; edit it or choose another name")
        taken.add(key)
        if not new.images:
            raise InvalidInput(f"concept {name!r} needs at least one reference image")
        return _Prepared(
            name,
            validate_text(new.info, "info", MAX_INFO_LENGTH),
            validate_category(new.category),
            validate_attributes(dict(new.attributes)),
            self._decode(new.images),
        )

    def _embed(self, prepared: Sequence[_Prepared], progress: Progress | None) -> None:
        """Decode and embed ``batch_images`` images at a time, keeping only their vectors."""
        flat = [(p, image) for p in prepared for image in p.images]
        for start in range(0, len(flat), self.batch_images):
            chunk = flat[start : start + self.batch_images]
            loaded = [image.load(self.image_side) if isinstance(image, ImageFile) else image for _, image in chunk]
            keyed = self.embedder.reference_vectors(
                [reduce(image.image, self.image_side) for image in loaded], [p.category in PERSON_CATEGORIES for p, _ in chunk]
            )
            for (p, source), image, vectors in zip(chunk, loaded, keyed):
                assert image.size is not None
                p.keyed.append(_Keyed(source, image.sha256, image.format, image.size, vectors))
            if progress:
                progress(len(chunk))

    def _insert_images(self, db: sqlite3.Connection, concept_id: int, keyed: list[_Keyed]) -> list[str]:
        files = []
        for image in keyed:
            file = self.files.write(image.verified())
            files.append(file)
            image_id = db.execute(
                "INSERT INTO images (concept_id, file, sha256, width, height) VALUES (?, ?, ?, ?, ?)",
                (concept_id, file, image.sha256, *image.size),
            ).lastrowid
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
        db.execute(
            "INSERT INTO vectors (image_id, space, box, vector) VALUES (?, ?, ?, ?)",
            (image_id, space, json.dumps(list(map(int, box))) if box else None, vector.tobytes()),
        )

    def _after_write(self) -> None:
        """Bring the index up to date with what was just committed and checkpoint it."""
        self._index.refresh()
        self._index.checkpoint_all()

    def add(
        self,
        name: str,
        images: Sequence[ImageSource],
        *,
        info: str = "",
        category: str = "object",
        attributes: Mapping[str, str] | None = None,
    ) -> Concept:
        return self.add_many([NewConcept(name, images, info, category, attributes or {})])[0]

    def add_many(self, concepts: Sequence[NewConcept], progress: Progress | None = None) -> list[Concept]:
        with self._lock:
            taken = {row[0] for row in self._db.execute("SELECT name_key FROM concepts")}
            prepared = [self._prepare(new, taken) for new in concepts]
            self._embed(prepared, progress)
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
                    self._insert_images(db, concept_id, p.keyed)
            self._after_write()
            return self.lookup([p.name for p in prepared])

    def edit(
        self,
        name: str,
        *,
        rename: str | None = None,
        info: str | None = None,
        category: str | None = None,
        set_attributes: Mapping[str, str] | None = None,
        unset_attributes: Iterable[str] = (),
        add_images: Sequence[ImageSource] = (),
        remove_images: Iterable[int] = (),
    ) -> Concept:
        with self._lock:
            concept_id, current_name = self._concept_id(name)
            current = self.get(current_name)
            new_name = validate_name(rename) if rename is not None else current.name
            if name_key(new_name) != name_key(current.name) and self.lookup([new_name]):
                raise ConceptExists(f"a concept named {new_name!r} already exists")
            new_info = validate_text(info, "info", MAX_INFO_LENGTH) if info is not None else current.info
            new_category = validate_category(category) if category is not None else current.category
            attributes = dict(current.attributes)
            for key in unset_attributes:
                if key not in attributes:
                    raise InvalidInput(f"{current.name} has no attribute {key!r}")
                del attributes[key]
            attributes = validate_attributes({**attributes, **(set_attributes or {})})
            drop = set(remove_images)
            known = {image.id for image in current.images}
            if drop - known:
                raise InvalidInput(
                    f"{current.name} has no image {sorted(drop - known)[0]}; its images are {sorted(known)}"
                )
            added = self._decode(add_images)
            if len(known - drop) + len(added) == 0:
                raise InvalidInput(f"{current.name} would have no image left; add one before removing the last")
            person_now = new_category in PERSON_CATEGORIES
            refresh_faces = person_now != current.is_person
            kept = [image for image in current.images if image.id not in drop]
            prepared = _Prepared(new_name, new_info, new_category, attributes, added)
            self._embed([prepared], None)
            face_vectors = self._face_vectors(kept) if refresh_faces and person_now else {}
            with self._write() as db:
                db.execute(
                    "UPDATE concepts SET name = ?, name_key = ?, info = ?, category = ?, attributes = ?, updated_at = ? "
                    "WHERE id = ?",
                    (new_name, name_key(new_name), new_info, new_category, json.dumps(attributes), _now(), concept_id),
                )
                if drop:
                    db.execute(f"DELETE FROM images WHERE id IN ({','.join('?' * len(drop))})", sorted(drop))
                if refresh_faces:
                    ids = [image.id for image in kept]
                    db.execute(
                        f"DELETE FROM vectors WHERE space = ? AND image_id IN ({','.join('?' * len(ids))})",
                        [FACE_SPACE, *ids],
                    )
                    for image_id, face in face_vectors.items():
                        self._insert_vector(db, image_id, FACE_SPACE, face.vector, face.box)
                self._insert_images(db, concept_id, prepared.keyed)
            self._delete_unreferenced([image.file for image in current.images if image.id in drop])
            self._after_write()
            return self.get(new_name)

    def _face_vectors(self, images: Sequence[ConceptImage]) -> dict[int, object]:
        analyzer = self.embedder.face_analyzer
        if analyzer is None:
            return {}
        found = {}
        for image in images:
            faces = analyzer.faces(load_image(self.image_path(image.file), shorter_side=self.image_side).image)
            if faces:
                found[image.id] = faces[0]
        return found

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

    def reembed(self, progress: Progress | None = None) -> None:
        """Recompute every vector with the current encoder and face analyzer, in one transaction."""
        with self._lock:
            rows = self._db.execute(
                "SELECT i.id, i.file, c.category FROM images i JOIN concepts c ON c.id = i.concept_id ORDER BY i.id"
            ).fetchall()
            keyed: list[tuple[int, list]] = []
            for start in range(0, len(rows), self.batch_images):
                chunk = rows[start : start + self.batch_images]
                images = [load_image(self.image_path(file), shorter_side=self.image_side).image for _, file, _ in chunk]
                vectors = self.embedder.reference_vectors(images, [c in PERSON_CATEGORIES for *_, c in chunk])
                keyed += [(image_id, v) for (image_id, _, _), v in zip(chunk, vectors)]
                if progress:
                    progress(len(chunk))
            with self._write() as db:
                db.execute("DELETE FROM vectors")
                db.execute("DELETE FROM meta WHERE key LIKE 'dim:%' OR key LIKE 'index:%'")
                self._set_meta("encoder:image", self.embedder.encoder_id)
                self._set_meta("encoder:face", self.embedder.faces_id)
                for image_id, vectors in keyed:
                    for entry in vectors:
                        self._insert_vector(db, image_id, entry.space, entry.vector, entry.box)
            self._index.forget()
            self._after_write()

    def close(self) -> None:
        with self._lock:
            self._index.checkpoint_all(force=True)
            self._db.close()

