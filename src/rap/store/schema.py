"""The store's SQLite schema, changed only through numbered migrations.

``PRAGMA user_version`` holds the number of migrations applied. A store written
by a newer rap (a higher number than this module knows) is refused rather than
misread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from rap.errors import StoreError
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
    if isinstance(exc, sqlite3.OperationalError) and "malformed" not in lowered:
        return StoreError(f"{db_file}: {message}")
    return StoreError(
        f"{db_file} is damaged ({message}); 'rap check' says what is wrong and 'rap check --repair' fixes what it can, "
        "else restore the store from a backup"
    )
