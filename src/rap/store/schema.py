"""The store's SQLite schema, changed only through numbered migrations, and its row digests.

``PRAGMA user_version`` holds the number of migrations applied. A store written
by a newer rap (a higher number than this module knows) is refused rather than
misread.

SQLite checks its own structure (``PRAGMA integrity_check``) but not the content
of a row: bytes overwritten inside a vector blob or a description, by a disk or a
sync tool, read back as valid data. So every row of the content tables carries a
digest (:data:`DIGESTED` says of which columns; 8 bytes of BLAKE2b, computed by
one SQL function, :data:`DIGEST_FUNCTION`, that every connection registers), written
in the transaction that writes the row and compared whenever the row is read for
use. A store is verified in full when it is opened, so a damaged store is
refused, with one :class:`~rap.errors.StoreDamaged` line naming the file and
``rap check``, before anything is written to it. That pass is linear in the
rows: about 50 ms for 3,000 concepts, images and vectors of 1,280 floats on a
2-core VM, 31 ms of it the vectors (``benchmarks/store_digests.py``). A
read-only store from before digests (schema 1) cannot be migrated: it is read
unverified. The PostgreSQL store (``postgres_schema.py``) has no such digests:
PostgreSQL has its own data-page checksums (``initdb --data-checksums``) and
``amcheck``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from rap.errors import StoreDamaged, StoreError
from rap.store.files import writable

STORE_FORMAT = "rap-concept-store"
DB_FILE = "rap.sqlite"

MIGRATIONS: tuple[str, ...] = (
    # 1: concepts, their reference images, and one vector per image and space.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE concepts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        name_key TEXT NOT NULL UNIQUE,
        info TEXT NOT NULL DEFAULT '',
        category TEXT NOT NULL,
        attributes TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX concepts_category ON concepts (category);
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        concept_id INTEGER NOT NULL REFERENCES concepts (id) ON DELETE CASCADE,
        file TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL
    );
    CREATE INDEX images_concept ON images (concept_id);
    CREATE INDEX images_file ON images (file);
    CREATE TABLE vectors (
        id INTEGER PRIMARY KEY,
        image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
        space TEXT NOT NULL,
        box TEXT,
        vector BLOB NOT NULL
    );
    CREATE INDEX vectors_space ON vectors (space, id);
    CREATE INDEX vectors_image ON vectors (image_id);
    """,
    # 2: a digest of each content row (filled for the rows already there by migrate()).
    """
    ALTER TABLE concepts ADD COLUMN digest BLOB;
    ALTER TABLE images ADD COLUMN digest BLOB;
    ALTER TABLE vectors ADD COLUMN digest BLOB;
    """,
)

READABLE_FROM = 1
"""The oldest schema a store is read at without migrating it (a read-only store
cannot be migrated); what the migrations after it add, row digests, goes unchecked."""

DIGESTED: dict[str, tuple[str, ...]] = {
    "concepts": ("id", "name", "name_key", "info", "category", "attributes", "created_at", "updated_at"),
    "images": ("id", "concept_id", "file", "sha256", "width", "height"),
    "vectors": ("id", "image_id", "space", "box", "vector"),
}
"""The tables whose rows carry a digest, and the columns it covers (in this order); a
migration that changes them must write every digest afresh, as migration 2 does."""

DIGESTS_SINCE = 2
"""The schema version that added the digests."""

DIGEST_FUNCTION = "rap_digest"
"""The SQL name of :func:`row_digest` on every connection :func:`connect` opens."""

_KIND = {"concepts": "concept", "images": "image", "vectors": "vector"}


def row_digest(*values: bytes | None) -> bytes:
    """8 bytes of BLAKE2b over a row's columns as bytes (SQL passes each ``CAST(column AS BLOB)``, so
    text that is no longer UTF-8 is hashed too), each length-prefixed, NULL apart from empty."""
    parts = []
    for value in values:
        parts += (b"n",) if value is None else (b"%d:" % len(value), value)
    return hashlib.blake2b(b"".join(parts), digest_size=8, person=b"rap-row").digest()


def keeps_digests(db: sqlite3.Connection) -> bool:
    """Whether the database's rows carry digests (a store from before them, read-only, does not)."""
    return db.execute("PRAGMA user_version").fetchone()[0] >= DIGESTS_SINCE


def _digest_call(table: str, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return f"{DIGEST_FUNCTION}({', '.join(f'CAST({prefix}{column} AS BLOB)' for column in DIGESTED[table])})"


def digest_matches(db: sqlite3.Connection, table: str, alias: str = "") -> str:
    """An SQL expression, true for a row of ``table`` (as ``alias``) whose content matches its digest."""
    if not keeps_digests(db):
        return "1"
    return f"({alias + '.' if alias else ''}digest IS {_digest_call(table, alias)})"


def seal(db: sqlite3.Connection, table: str, row_id: int | None) -> None:
    """Write the digest of a row just inserted or changed, inside the same transaction."""
    db.execute(f"UPDATE {table} SET digest = {_digest_call(table)} WHERE id = ?", (row_id,))


def changed_rows(db: sqlite3.Connection, table: str) -> list[int]:
    """Ids of the rows of ``table`` whose content no longer matches their digest, in one pass."""
    return [row[0] for row in db.execute(f"SELECT id FROM {table} WHERE NOT {digest_matches(db, table)} ORDER BY id")]


def verify(db: sqlite3.Connection, db_file: Path) -> None:
    """Every content row against its digest; raise :class:`StoreDamaged` naming what changed."""
    for table in DIGESTED:
        changed = changed_rows(db, table)
        if changed:
            raise changed_error(db_file, table, changed)


def changed_error(db_file: Path, table: str, ids: Iterable[int]) -> StoreDamaged:
    """The one-line error for rows found changed since they were written."""
    ids = list(ids)
    more = f" and {len(ids) - 1} other(s)" if len(ids) > 1 else ""
    return damage_error(db_file, f"{_KIND[table]} {ids[0]}{more} changed since written: the row does not match its digest")


def damage_error(db_file: Path, what: str) -> StoreDamaged:
    """The error for a damaged database: the file, what is wrong, and what to do."""
    return StoreDamaged(
        f"{db_file} is damaged ({what}); 'rap check' says what is wrong and 'rap check --repair' fixes what it can, "
        "else restore the store from a backup"
    )


def connect(db_file: Path, read_only: bool) -> sqlite3.Connection:
    """Open the store's database: read-write in WAL mode, or read-only, creating nothing beside it.

    Read-only in a folder that cannot be written, the file is opened
    ``immutable`` (no -shm can be made there) unless a -wal file holds changes
    not yet in it.
    """
    if read_only:
        wal = db_file.with_name(db_file.name + "-wal")
        frozen = not writable(db_file.parent) and not (wal.exists() and wal.stat().st_size)
        immutable = "&immutable=1" if frozen else ""
        uri = f"{db_file.resolve().as_uri()}?mode=ro{immutable}"
        connection = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
    else:
        connection = sqlite3.connect(db_file, timeout=30, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.create_function(DIGEST_FUNCTION, -1, row_digest, deterministic=True)
    connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return connection


def migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema up to date, each migration in its own transaction."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(
            f"this store has schema version {version}, newer than this rap knows "
            f"({len(MIGRATIONS)}); upgrade rap-mllm"
        )
    for number in range(version, len(MIGRATIONS)):
        connection.execute("BEGIN IMMEDIATE")
        try:
            # executescript() would commit early; run statement by statement instead.
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    connection.execute(statement)
            if number == 0:
                connection.execute("INSERT INTO meta VALUES ('format', ?), ('generation', '0')", (STORE_FORMAT,))
            if number + 1 == DIGESTS_SINCE:  # the rows already there are trusted as they are
                for table in DIGESTED:
                    connection.execute(f"UPDATE {table} SET digest = {_digest_call(table)}")
            connection.execute(f"PRAGMA user_version = {number + 1}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise


def sqlite_error(db_file: Path, exc: sqlite3.DatabaseError) -> StoreError:
    """The one-line error, naming the file and what to do, for a failure SQLite reported."""
    message = str(exc)
    lowered = message.lower()
    if "readonly" in lowered or "read-only" in lowered:
        return StoreError(f"{db_file.parent} is read-only: rap can list and retrieve from this store but not change it")
    if "locked" in lowered or "busy" in lowered:
        return StoreError(f"{db_file} is locked by another process; try again when it has finished")
    if isinstance(exc, sqlite3.OperationalError) and "malformed" not in lowered and "decode" not in lowered:
        return StoreError(f"{db_file}: {message}")
    return damage_error(db_file, message)
