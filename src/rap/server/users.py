"""The service's users and their API keys, in one small SQLite file under ``RAP_HOME``.

A key is shown once, when it is made, and only its SHA-256 is stored: whoever
reads the file (a backup, a stolen disk) cannot use it. A plain hash suffices,
unlike for passwords, because keys are 256 random bits, not guessable words;
a slow hash would only slow every request. SQLite because the users list is
small, changes rarely, must survive restarts and be shared by every worker
process on the machine: a transactional file, with no server to run.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from rap.concepts import validate_name
from rap.errors import ConceptExists, ConceptNotFound, StoreError

USERS_FILE = "users.sqlite"
KEY_PREFIX = "rap_"
LOCAL_USER = "local"
"""The one user ``rap serve --no-auth`` serves; its store is the command line's store."""


@dataclass(frozen=True)
class User:
    """A user of the service; ``id`` names their store's folder, so a name never becomes a path."""

    id: int
    name: str
    created_at: str


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class UserDB:
    """Users and key hashes; safe to open from several worker processes at once."""

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
        """Make a user and return it with its key, which is never shown again."""
        name = validate_name(name)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            cursor = self._db.execute(
                "INSERT INTO users (name, key_sha256, created_at) VALUES (?, ?, ?)", (name, _digest(key), created)
            )
        except sqlite3.IntegrityError:
            raise ConceptExists(f"a user named {name!r} exists (revoked users keep their name and store)") from None
        assert cursor.lastrowid is not None
        return User(cursor.lastrowid, name, created), key

    def list(self) -> list[tuple[User, bool]]:
        """Every user with whether their key is revoked, oldest first."""
        rows = self._db.execute("SELECT id, name, created_at, revoked FROM users ORDER BY id").fetchall()
        return [(User(row[0], row[1], row[2]), bool(row[3])) for row in rows]

    def revoke(self, name: str) -> None:
        """Refuse the user's key from now on; their concepts stay on disk."""
        if not self._db.execute("UPDATE users SET revoked = 1 WHERE name = ?", (validate_name(name),)).rowcount:
            raise ConceptNotFound(f"no user named {name!r}; 'rap users list' shows them")

    def authenticate(self, key: str) -> User | None:
        """The user holding ``key``, or None for an unknown or revoked key."""
        row = self._db.execute(
            "SELECT id, name, created_at FROM users WHERE key_sha256 = ? AND revoked = 0", (_digest(key),)
        ).fetchone()
        return User(row[0], row[1], row[2]) if row else None

    def close(self) -> None:
        self._db.close()
