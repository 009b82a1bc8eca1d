"""The service's users and their API keys: in a SQLite file, or in the server's PostgreSQL database.

A key is shown once, when it is made, and only its SHA-256 is stored: whoever
reads the database (a backup, a stolen disk) cannot use it. A plain hash
suffices, unlike for passwords, because keys are 256 random bits, not guessable
words; a slow hash would only slow every request.

Where the users live follows the store (:func:`open_users`). With the embedded
store, a small SQLite file under ``RAP_HOME``: the list is small, changes
rarely, must survive restarts and be shared by every worker process on the
machine: a transactional file, with no server to run. With a PostgreSQL store,
the ``rap.api_users`` table of that same database, so every worker on every
machine knows the same users and keys, and a server needs no shared files.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rap.concepts import validate_name
from rap.errors import ConceptExists, ConceptNotFound, RapError, StoreError
from rap.settings import Settings

if TYPE_CHECKING:
    import psycopg

USERS_FILE = "users.sqlite"
KEY_PREFIX = "rap_"
LOCAL_USER = "local"
"""The one user ``rap serve --no-auth`` serves; its store is the command line's store."""


@dataclass(frozen=True)
class User:
    """A user of the service; ``id`` names their store (folder or database user), so a name never becomes a path."""

    id: int
    name: str
    created_at: str


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _user_name(name: str) -> str:
    """A user's name, by the rule of concept names (one word: it appears in logs and commands), called a user name."""
    return validate_name(name, "user name")


def _exists(name: str) -> ConceptExists:
    return ConceptExists(f"a user named {name!r} exists (revoked users keep their name and store)")


def _unknown(name: str) -> ConceptNotFound:
    return ConceptNotFound(f"no user named {name!r}; 'rap users list' shows them")


class Users(ABC):
    """Users and key hashes; safe to use from several threads and worker processes at once."""

    @abstractmethod
    def add(self, name: str) -> tuple[User, str]:
        """Make a user and return it with its key, which is never shown again."""

    @abstractmethod
    def list(self) -> list[tuple[User, bool]]:
        """Every user with whether their key is revoked, oldest first."""

    @abstractmethod
    def revoke(self, name: str) -> None:
        """Refuse the user's key from now on; their concepts stay in the store."""

    @abstractmethod
    def rotate(self, name: str) -> tuple[User, str]:
        """Give the user a new key, shown this once; the old one (revoked or not) is refused from now on."""

    @abstractmethod
    def authenticate(self, key: str) -> User | None:
        """The user holding ``key``, or None for an unknown or revoked key."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Users:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_users(settings: Settings) -> Users:
    """The users of a server with these settings: in its PostgreSQL store's database, else in ``RAP_HOME``."""
    from rap.store.registry import POSTGRES_SCHEMES

    if settings.store_spec.partition(":")[0] in POSTGRES_SCHEMES:
        from rap._imports import require

        require("psycopg", "postgres")
        return PostgresUsers(settings.store_spec)
    return UserDB.at_home(settings.home)


class UserDB(Users):
    """The users in one SQLite file (WAL, so every worker process on the machine reads it at once)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, "
                "key_sha256 TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)"
            )
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(f"{self.path}: cannot open the users database ({exc})") from None

    @classmethod
    def at_home(cls, home: Path) -> UserDB:
        return cls(Path(home) / USERS_FILE)

    def add(self, name: str) -> tuple[User, str]:
        name, key = _user_name(name), _new_key()
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            cursor = self._db.execute(
                "INSERT INTO users (name, key_sha256, created_at) VALUES (?, ?, ?)", (name, _digest(key), created)
            )
        except sqlite3.IntegrityError:
            raise _exists(name) from None
        assert cursor.lastrowid is not None
        return User(cursor.lastrowid, name, created), key

    def list(self) -> list[tuple[User, bool]]:
        rows = self._db.execute("SELECT id, name, created_at, revoked FROM users ORDER BY id").fetchall()
        return [(User(row[0], row[1], row[2]), bool(row[3])) for row in rows]

    def revoke(self, name: str) -> None:
        if not self._db.execute("UPDATE users SET revoked = 1 WHERE name = ?", (_user_name(name),)).rowcount:
            raise _unknown(name)

    def rotate(self, name: str) -> tuple[User, str]:
        name, key = _user_name(name), _new_key()
        row = self._db.execute(
            "UPDATE users SET key_sha256 = ?, revoked = 0 WHERE name = ? RETURNING id, name, created_at", (_digest(key), name)
        ).fetchone()
        if row is None:
            raise _unknown(name)
        return User(row[0], row[1], row[2]), key

    def authenticate(self, key: str) -> User | None:
        row = self._db.execute(
            "SELECT id, name, created_at FROM users WHERE key_sha256 = ? AND revoked = 0", (_digest(key),)
        ).fetchone()
        return User(row[0], row[1], row[2]) if row else None

    def close(self) -> None:
        self._db.close()


def _timestamp(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")


class PostgresUsers(Users):
    """The users in the ``rap.api_users`` table of the store's PostgreSQL database.

    One connection per worker, used by one thread at a time: a key lookup is a
    single indexed read. A connection the server dropped is replaced on next use.
    """

    def __init__(self, url: str) -> None:
        from rap.store.postgres_schema import migrate

        self.url = url
        self._lock = threading.Lock()
        self._db: psycopg.Connection | None = None
        try:
            with self._session() as db:
                migrate(db)
        except BaseException:
            self.close()
            raise

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection]:
        import psycopg

        from rap.redact import redact
        from rap.store.postgres import _one_line

        with self._lock:
            try:
                if self._db is None or self._db.broken:
                    self._db = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
                yield self._db
            except RapError:
                raise
            except psycopg.Error as exc:
                raise StoreError(f"the users database, PostgreSQL at {redact(self.url)}: {_one_line(exc)}") from None

    def _rows(self, statement: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._session() as db:
            return db.execute(statement, parameters).fetchall()  # type: ignore[arg-type]

    def add(self, name: str) -> tuple[User, str]:
        import psycopg

        name, key = _user_name(name), _new_key()
        with self._session() as db:
            try:
                number, created = db.execute(
                    "INSERT INTO rap.api_users (name, key_sha256) VALUES (%s, %s) RETURNING id, created_at",
                    (name, _digest(key)),
                ).fetchone()  # type: ignore[misc]
            except psycopg.errors.UniqueViolation:
                raise _exists(name) from None
        return User(number, name, _timestamp(created)), key

    def list(self) -> list[tuple[User, bool]]:
        rows = self._rows("SELECT id, name, created_at, revoked FROM rap.api_users ORDER BY id", ())
        return [(User(row[0], row[1], _timestamp(row[2])), row[3]) for row in rows]

    def revoke(self, name: str) -> None:
        name = _user_name(name)
        with self._session() as db:
            if not db.execute("UPDATE rap.api_users SET revoked = true WHERE name = %s", (name,)).rowcount:
                raise _unknown(name)

    def rotate(self, name: str) -> tuple[User, str]:
        name, key = _user_name(name), _new_key()
        rows = self._rows(
            "UPDATE rap.api_users SET key_sha256 = %s, revoked = false WHERE name = %s RETURNING id, name, created_at",
            (_digest(key), name),
        )
        if not rows:
            raise _unknown(name)
        return User(rows[0][0], rows[0][1], _timestamp(rows[0][2])), key

    def authenticate(self, key: str) -> User | None:
        rows = self._rows(
            "SELECT id, name, created_at FROM rap.api_users WHERE key_sha256 = %s AND NOT revoked", (_digest(key),)
        )
        return User(rows[0][0], rows[0][1], _timestamp(rows[0][2])) if rows else None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()

