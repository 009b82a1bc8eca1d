"""A concept store in PostgreSQL with pgvector, shared by many users, workers and machines.

One database holds every user's concepts; a store object is bound to one user
and every statement it runs filters by that user, so no call can reach another
user's concepts, images or vectors, and nothing a user sees (image numbers
included: they are counted per user) depends on what others hold.

Images are kept as ``bytea`` in the images row, not as large objects: a
reference photo is bounded by the upload limit (tens of MB, far under bytea's
1 GB), it is read and written whole, and as a column it is inserted, deleted
(``ON DELETE CASCADE``) and filtered by user in the same statement and
transaction as its concept. Large objects live outside the row: each would need
its own ``lo_unlink`` (or ``vacuumlo``) on every delete path, and their
permissions are per object, not per row. The column's storage is ``EXTERNAL``:
JPEG and PNG bytes do not compress, so PostgreSQL does not try.

Search is a pgvector query on the user's vectors of one space: exact while the
user holds few, through an HNSW index past that (:mod:`rap.store.postgres_search`).

Writes are all or nothing: each add, edit or removal is one transaction that
first locks the user's row, so writers of one user (in any process) take turns,
and what one commits is what the next search anywhere sees.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from PIL import Image

from rap.concepts import Concept, ConceptImage, name_key
from rap.embedding import FACE_SPACE, IMAGE_SPACE, SpaceVector
from rap.encoders import Face, FaceAnalyzer, ImageEncoder
from rap.errors import ConceptExists, ConceptNotFound, RapError, StoreError, shell_word
from rap.images import decode_image
from rap.store.base import ConceptStore, VectorHit
from rap.store.inputs import ProgressFactory
from rap.store.files import ImageFiles
from rap.store.postgres_schema import HNSW_MAX_DIM, ensure_hnsw_index, migrate
from rap.settings import Settings, default
from rap.store.prepare import EditPlan, Prepared
from rap.store.postgres_search import nearest
from rap.redact import redact

OnEncoderChange = Literal["refuse", "reembed"]
SPACES = (IMAGE_SPACE, FACE_SPACE)

_CONCEPT_COLUMNS = "id, name, info, category, attributes, created_at, updated_at"


SERVER_DIED = (
    "the connection broke in the middle of a statement without a word from the server, so its server process most "
    "likely died; the likely cause is a pgvector built for AVX-512 on a CPU without it (the server's log then says "
    "'terminated by signal 4: Illegal instruction'): install a pgvector built for that CPU (docs/deploy.md)"
)
"""What a backend that dies of a signal (SIGILL in an AVX-512 pgvector, SIGSEGV, the OOM killer) looks like to a
client: the socket closes with no error message, so no SQLSTATE (a network that cuts the connection looks the
same). A server that ends a session on purpose (a shutdown, pg_terminate_backend, a cancel) says why first."""


def _one_line(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    return " ".join((getattr(diag, "message_primary", None) or str(exc) or type(exc).__name__).split())


class PostgresConceptStore(ConceptStore):
    """The concepts of one ``user`` in a shared PostgreSQL database; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        user: str,
        encoder: str | ImageEncoder | None = None,
        faces: str | FaceAnalyzer | None = None,
        default_encoder: str,
        default_faces: str = "none",
        exact_below: int,
        ef_search: int,
        on_encoder_change: OnEncoderChange = "refuse",
        progress: ProgressFactory | None = None,
        image_side: int = default("image_side"),
        batch_images: int = default("batch_images"),
        settings: Settings | None = None,
    ) -> None:
        """``settings`` build the models named by spec (None: the built-in defaults)."""
        self.url, self.user = url, user
        #: reference images are decoded reduced to this shorter side, this many at a time, to be embedded
        self.image_side, self.batch_images = image_side, batch_images
        self.exact_below, self.ef_search = exact_below, ef_search
        self._lock = threading.RLock()
        self._cache: Path | None = None
        self._indexed_dims: set[int] = set()
        self._names = ImageFiles(Path())  # names images as the embedded store does: by content
        #: whether opening re-embedded the store for a new encoder
        self.reembedded_on_open = False
        self._db = self._connect()
        try:
            with self._session():
                migrate(self._db)
                register_vector(self._db)
                self._user_id = self._ensure_user()
                recorded = self._db.execute(
                    "SELECT encoder_image, encoder_face FROM rap.users WHERE id = %s", (self._user_id,)
                ).fetchone()
                self.embedder = self._choose_models(
                    tuple(recorded), encoder, faces, (default_encoder, default_faces), on_encoder_change, progress,
                    self._record_models, settings,
                )
        except BaseException:
            self._db.close()
            raise

    # -- opening ----------------------------------------------------------------
    @property
    def location(self) -> str:
        return f"{redact(self.url)} (user {self.user})"

    def _connect(self) -> psycopg.Connection:
        try:
            connection = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {redact(self.url)}: {_one_line(exc)}") from None
        # Iterative scans (pgvector >= 0.8) keep walking the HNSW graph until k rows pass the user filter.
        connection.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(self.ef_search),))
        connection.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', false)")
        return connection

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection]:
        """The connection, for one thread at a time; database failures become one-line StoreErrors.

        A connection the server dropped (a restart, a failover) is replaced on next use.
        """
        with self._lock:
            try:
                if self._db.broken:
                    self._db = self._connect()
                    register_vector(self._db)
                yield self._db
            except RapError:
                raise
            except psycopg.Error as exc:
                died = isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None and self._db.broken
                raise StoreError(f"PostgreSQL at {redact(self.url)}: {SERVER_DIED if died else _one_line(exc)}") from None

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection]:
        """One transaction holding the user's row lock: this user's writers take turns."""
        with self._session() as db, db.transaction():
            db.execute("SELECT 1 FROM rap.users WHERE id = %s FOR UPDATE", (self._user_id,))
            yield db

    def _ensure_user(self) -> int:
        row = self._db.execute("SELECT id FROM rap.users WHERE name = %s", (self.user,)).fetchone()
        if row is None:  # a new user; another process may be adding them too
            self._db.execute("INSERT INTO rap.users (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (self.user,))
            row = self._db.execute("SELECT id FROM rap.users WHERE name = %s", (self.user,)).fetchone()
        return row[0]

    def _reembed_command(self, encoder: str, faces: str) -> str:
        user = "" if self.user == default("store_user") else f"RAP_STORE_USER={self.user} "
        return f"{user}rap --store {shell_word(redact(self.url))} --encoder {encoder} --faces {faces} reembed"

    def recorded(self, key: str) -> str | None:
        with self._session() as db:
            row = db.execute(
                "SELECT value FROM rap.user_records WHERE user_id = %s AND key = %s", (self._user_id, key)
            ).fetchone()
        return row[0] if row else None

    def record(self, key: str, value: str | None) -> None:
        with self._write() as db:
            if value is None:
                db.execute("DELETE FROM rap.user_records WHERE user_id = %s AND key = %s", (self._user_id, key))
            else:
                db.execute(
                    "INSERT INTO rap.user_records VALUES (%s, %s, %s) "
                    "ON CONFLICT (user_id, key) DO UPDATE SET value = EXCLUDED.value",
                    (self._user_id, key, value),
                )

    def _record_models(self, models: tuple[str, str]) -> None:
        self._db.execute(
            "UPDATE rap.users SET encoder_image = %s, encoder_face = %s WHERE id = %s", (*models, self._user_id)
        )

    # -- reading ----------------------------------------------------------------
    def _id_of(self, key: str) -> tuple[int, str] | None:
        with self._session() as db:
            row = db.execute(
                "SELECT id, name FROM rap.concepts WHERE user_id = %s AND name_key = %s", (self._user_id, key)
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def _load_concepts(self, where: str, params: Sequence[object]) -> list[Concept]:
        rows = self._db.execute(
            f"SELECT {_CONCEPT_COLUMNS} FROM rap.concepts WHERE user_id = %s AND {where} ORDER BY name_key",
            [self._user_id, *params],
        ).fetchall()
        if not rows:
            return []
        images: dict[int, list[ConceptImage]] = {row[0]: [] for row in rows}
        for number, concept_id, file, sha, width, height, box in self._db.execute(
            "SELECT i.number, i.concept_id, i.file, i.sha256, i.width, i.height, v.box FROM rap.images i "
            "LEFT JOIN rap.vectors v ON v.image_id = i.id AND v.space = %s "
            "WHERE i.user_id = %s AND i.concept_id = ANY(%s) ORDER BY i.number",
            (FACE_SPACE, self._user_id, list(images)),
        ):
            images[concept_id].append(
                ConceptImage(
                    id=number, file=file, sha256=sha, width=width, height=height, face_box=tuple(box) if box else None
                )
            )
        return [
            Concept(
                name=name,
                info=info,
                category=category,
                attributes=attributes,
                images=images[cid],
                created_at=created,
                updated_at=updated,
            )
            for cid, name, info, category, attributes, created, updated in rows
        ]

    def _find(self, keys: Sequence[str]) -> list[Concept]:
        with self._session():
            return self._load_concepts("name_key = ANY(%s)", [list(keys)])

    def list(self) -> list[Concept]:
        with self._session():
            return self._load_concepts("true", [])

    def categories(self) -> list[str]:
        with self._session() as db:
            rows = db.execute(
                "SELECT DISTINCT category FROM rap.concepts WHERE user_id = %s ORDER BY category", (self._user_id,)
            )
            return [row[0] for row in rows]

    def _space_counts(self) -> dict[str, tuple[int, int]]:
        """For each space holding vectors: (count, dimension)."""
        rows = self._db.execute(
            "SELECT space, dim, count(*) FROM rap.vectors WHERE user_id = %s GROUP BY space, dim", (self._user_id,)
        ).fetchall()
        return {space: (count, dim) for space, dim, count in rows}

    def spaces(self) -> list[str]:
        with self._session():
            held = self._space_counts()
        return [space for space in SPACES if space in held]

    def index_info(self) -> dict[str, dict[str, object]]:
        """For each space: vector count, dimension, and how it is searched for this user."""
        with self._session():
            held = self._space_counts()
        info: dict[str, dict[str, object]] = {}
        for space in SPACES:
            if space in held:
                count, dim = held[space]
                approximate = count > self.exact_below and dim <= HNSW_MAX_DIM
                info[space] = {
                    "vectors": count,
                    "dim": dim,
                    "factory": "pgvector hnsw" if approximate else "pgvector exact",
                    "search": f"ef_search={self.ef_search}" if approximate else "",
                }
        return info

    def __len__(self) -> int:
        with self._session() as db:
            return db.execute("SELECT count(*) FROM rap.concepts WHERE user_id = %s", (self._user_id,)).fetchone()[0]

    def _count_images(self) -> int:
        return self._db.execute("SELECT count(*) FROM rap.images WHERE user_id = %s", (self._user_id,)).fetchone()[0]

    def image_path(self, image_file: str) -> Path:
        """A local copy of the stored image (written once per store object, in a private temporary folder)."""
        with self._session() as db:
            if self._cache is None:
                self._cache = Path(tempfile.mkdtemp(prefix="rap-pg-images-"))
            target = self._cache / image_file
            cached = target.exists()  # then ask only whether the user still holds it
            row = db.execute(
                f"SELECT {'NULL' if cached else 'data'} FROM rap.images WHERE user_id = %s AND file = %s LIMIT 1",
                (self._user_id, image_file),
            ).fetchone()
            if row is None:
                raise ConceptNotFound(f"no stored image {image_file!r}")
            if not cached:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_bytes(row[0])
                os.replace(tmp, target)
            return target

    def _dim(self, space: str) -> int:
        with self._session():
            return self._space_counts().get(space, (0, 0))[1]

    def _vectors_of(self, concept_id: int, space: str) -> list[np.ndarray]:
        with self._session() as db:
            rows = db.execute(
                "SELECT v.embedding::real[] FROM rap.vectors v JOIN rap.images i ON i.id = v.image_id "
                "WHERE v.user_id = %s AND i.concept_id = %s AND v.space = %s ORDER BY v.id",
                (self._user_id, concept_id, space),
            ).fetchall()
        return [np.asarray(row[0], np.float32) for row in rows]

    def search(self, space: str, queries: np.ndarray, k: int) -> list[list[VectorHit]]:
        with self._session() as db:
            return nearest(db, self._user_id, space, queries, k, self.exact_below)

    # -- writing ----------------------------------------------------------------
    def _ensure_indexes(self, vectors: Iterable[list[SpaceVector]]) -> None:
        """Create the HNSW index of each new dimension before its first vector is written."""
        dims = {len(v.vector) for keyed in vectors for v in keyed} - self._indexed_dims
        with self._session() as db:
            for dim in sorted(dims):
                ensure_hnsw_index(db, dim)
                self._indexed_dims.add(dim)

    def _insert_images(self, db: psycopg.Connection, concept_id: int, prepared: Prepared) -> None:
        for keyed in prepared.keyed:
            image = keyed.verified()
            number = db.execute(
                "UPDATE rap.users SET last_image = last_image + 1 WHERE id = %s RETURNING last_image", (self._user_id,)
            ).fetchone()[0]
            image_id = db.execute(
                "INSERT INTO rap.images (user_id, number, concept_id, file, sha256, width, height, data) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (self._user_id, number, concept_id, self._names.relative(image), image.sha256, *keyed.size, image.data),
            ).fetchone()[0]
            for entry in keyed.vectors:
                self._insert_vector(db, image_id, entry.space, entry.vector, entry.box)

    def _insert_vector(self, db: psycopg.Connection, image_id: int, space: str, vector: np.ndarray, box: object) -> None:
        vector = np.ascontiguousarray(vector, np.float32)
        db.execute(
            "INSERT INTO rap.vectors (user_id, image_id, space, dim, box, embedding) VALUES (%s, %s, %s, %s, %s, %s)",
            (self._user_id, image_id, space, len(vector), list(map(int, box)) if box else None, vector),
        )

    def _name_keys(self) -> set[str]:
        with self._session() as db:
            return {
                row[0] for row in db.execute("SELECT name_key FROM rap.concepts WHERE user_id = %s", (self._user_id,))
            }

    def _insert_concepts(self, prepared: Sequence[Prepared]) -> None:
        self._ensure_indexes(k.vectors for p in prepared for k in p.keyed)
        now = datetime.now(timezone.utc)
        with self._write() as db:
            for p in prepared:
                concept_id = db.execute(
                    "INSERT INTO rap.concepts (user_id, name, name_key, info, category, attributes, created_at, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, name_key) DO NOTHING RETURNING id",
                    (self._user_id, p.name, name_key(p.name), p.info, p.category, json.dumps(p.attributes), now, now),
                ).fetchone()
                if concept_id is None:  # another process took the name since we checked
                    raise ConceptExists(f"a concept named {p.name!r} already exists")
                self._insert_images(db, concept_id[0], p)

    def _write_edit(self, current: Concept, plan: EditPlan, faces: Mapping[int, Face]) -> Concept:
        changed = plan.changed
        self._ensure_indexes(k.vectors for k in changed.keyed)
        with self._write() as db:
            concept_id, _ = self._concept_id(current.name)
            try:
                db.execute(
                    "UPDATE rap.concepts SET name = %s, name_key = %s, info = %s, category = %s, attributes = %s, "
                    "updated_at = %s WHERE id = %s AND user_id = %s",
                    (
                        changed.name,
                        name_key(changed.name),
                        changed.info,
                        changed.category,
                        json.dumps(changed.attributes),
                        datetime.now(timezone.utc),
                        concept_id,
                        self._user_id,
                    ),
                )
            except psycopg.errors.UniqueViolation:
                raise ConceptExists(f"a concept named {changed.name!r} already exists") from None
            if plan.drop:
                db.execute(
                    "DELETE FROM rap.images WHERE user_id = %s AND concept_id = %s AND number = ANY(%s)",
                    (self._user_id, concept_id, sorted(plan.drop)),
                )
            if plan.refresh_faces:
                db.execute(
                    "DELETE FROM rap.vectors v USING rap.images i WHERE v.image_id = i.id AND v.user_id = %s "
                    "AND v.space = %s AND i.concept_id = %s",
                    (self._user_id, FACE_SPACE, concept_id),
                )
                for image_id, face in faces.items():
                    self._insert_vector(db, image_id, FACE_SPACE, face.vector, face.box)
            self._insert_images(db, concept_id, changed)
        return self.get(changed.name)

    def _row_ids(self, images: Sequence[ConceptImage]) -> list[int]:
        with self._session() as db:
            ids = dict(
                db.execute(
                    "SELECT number, id FROM rap.images WHERE user_id = %s AND number = ANY(%s)",
                    (self._user_id, [image.id for image in images]),
                ).fetchall()
            )
        return [ids[image.id] for image in images]

    def remove(self, name: str) -> None:
        with self._write() as db:
            concept_id, _ = self._concept_id(name)
            db.execute("DELETE FROM rap.concepts WHERE id = %s AND user_id = %s", (concept_id, self._user_id))

    def _image_categories(self) -> list[tuple[int, str]]:
        with self._session() as db:
            rows = db.execute(
                "SELECT i.id, c.category FROM rap.images i JOIN rap.concepts c ON c.id = i.concept_id "
                "WHERE i.user_id = %s ORDER BY i.id",
                (self._user_id,),
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def _reference_images(self, image_ids: Sequence[int]) -> list[Image.Image]:
        with self._session() as db:
            data = dict(
                db.execute(
                    "SELECT id, data FROM rap.images WHERE user_id = %s AND id = ANY(%s)", (self._user_id, list(image_ids))
                ).fetchall()
            )
        return [decode_image(data[image_id], shorter_side=self.image_side).image for image_id in image_ids]

    def _write_vectors(self, keyed: Sequence[tuple[int, list[SpaceVector]]], every: bool) -> None:
        self._ensure_indexes(vectors for _, vectors in keyed)
        with self._write() as db:
            if every:
                db.execute("DELETE FROM rap.vectors WHERE user_id = %s", (self._user_id,))
                self._record_models((self.embedder.encoder_id, self.embedder.faces_id))
            else:
                db.execute(
                    "DELETE FROM rap.vectors WHERE user_id = %s AND image_id = ANY(%s)",
                    (self._user_id, [image_id for image_id, _ in keyed]),
                )
            for image_id, vectors in keyed:
                for entry in vectors:
                    self._insert_vector(db, image_id, entry.space, entry.vector, entry.box)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._cache is not None:
                shutil.rmtree(self._cache, ignore_errors=True)
                self._cache = None

