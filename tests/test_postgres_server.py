"""``rap db``: the bundled PostgreSQL on one machine, started, used by ``rap serve`` over its Unix socket, stopped, restarted.

Also the other two recipes of docs/deploy.md as far as this machine can go:
compose.yaml is read and checked for what rap needs (no Docker engine runs
here), and the bundled server stays off rap's normal import path.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from fastapi.testclient import TestClient
from test_server_support import add_concept, add_user, photo, settings, wait_ready

from rap.cli import run
from rap.server import create_app
from rap.store import postgres_server

ROOT = Path(__file__).parent.parent


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def _retrieved(url: str, home: Path, headers: dict[str, str]) -> list[str]:
    with TestClient(create_app(settings(home=home, store_url=url))) as api:
        wait_ready(api)
        found = api.post("/v1/retrieve", data={"k": "1"}, files=[("image", photo("dog_00.jpg"))], headers=headers)
        assert found.status_code == 200, found.text
        return [c["name"] for c in found.json()["concepts"]]


@pytest.fixture
def db_parent() -> Iterator[Path]:
    """A folder for a server's data, outside pytest's temporary root, which another pytest session starting
    resets to mode 0700: under root that would shut the ``pgserver`` user out of a server being made or run."""
    parent = Path(tempfile.mkdtemp(prefix="rap-db-test-"))
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.slow
def test_rap_db_serves_rap_serve_over_a_unix_socket_and_keeps_data_across_restarts(db_parent, rap_home, capsys):
    folder = db_parent / "db"
    code, url, err = _run(capsys, "db", "start", str(folder))
    try:
        assert code == 0 and f"rap db stop {folder}" in err
        parts = urlsplit(url)
        assert parts.scheme == "postgresql" and parts.hostname is None and parts.path == "/rap"  # no TCP
        socket_dir = Path(parse_qs(parts.query)["host"][0])
        socket = socket_dir / ".s.PGSQL.5432"
        assert socket.is_socket() and stat.S_IMODE(socket.stat().st_mode) == 0o700  # trust auth: the owner alone
        assert _run(capsys, "db", "start", str(folder))[:2] == (0, url)  # running already: the same URL

        headers = add_user(rap_home, "alice", url)
        with TestClient(create_app(settings(store_url=url))) as api:
            wait_ready(api)
            add_concept(api, headers, "bo", "dog_00.jpg", info="<bo> is alice's dog", category="dog")
        assert _retrieved(url, rap_home, headers) == ["bo"]

        code, out, _ = _run(capsys, "db", "stop", str(folder))
        assert code == 0 and out == f"stopped the server in {folder}"
        assert not socket.exists() and _run(capsys, "db", "status", str(folder))[1].startswith("stopped")
        controldata = subprocess.run(
            [str(postgres_server.bin_dir() / "pg_controldata"), str(folder)], capture_output=True, text=True,
            env={"LC_ALL": "C"}, check=True,
        ).stdout  # fmt: skip
        assert "Database cluster state:               shut down" in controldata  # a clean stop, not a crash

        assert _run(capsys, "db", "start", str(folder))[:2] == (0, url)
        assert _retrieved(url, rap_home, headers) == ["bo"]  # kept across the restart
        code, out, _ = _run(capsys, "db", "status", str(folder), "--json")
        assert code == 0 and f'"url": "{url}"' in out and '"running": true' in out
    finally:
        postgres_server.stop(folder)
    assert _run(capsys, "db", "stop", str(folder))[:2] == (0, f"the server in {folder} was not running")


def test_rap_db_refuses_a_folder_it_did_not_make_in_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = _run(capsys, "db", "start", str(tmp_path))
    assert code == 2 and "not empty" in err and len(err.splitlines()) == 1
    for command in ("stop", "status"):
        code, _, err = _run(capsys, "db", command, str(tmp_path / "nothing"))
        assert code == 2 and "not a database folder" in err and len(err.splitlines()) == 1
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "PG_VERSION").write_text("16\n")
    code, _, err = _run(capsys, "db", "start", str(tmp_path / "old"))
    assert code == 5 and "PostgreSQL 16" in err and "pg_dump" in err


def test_the_bundled_server_is_off_the_normal_import_path():
    code = "import sys, rap, rap.cli, rap.store; print(sorted(m for m in sys.modules if 'pgserver' in m or m.endswith('postgres_server')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_compose_file_runs_pgvector_as_rap_needs():
    """compose.yaml beside ``rap serve``: pgvector >= 0.8 (iterative scans), a database and role, kept data, loopback only."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    db = compose["services"]["db"]
    image, tag = db["image"].split(":")
    assert image == "pgvector/pgvector"
    pgvector, pg = tag.split("-pg")
    assert tuple(map(int, pgvector.split("."))) >= (0, 8, 0) and int(pg) >= 13
    env = db["environment"]
    assert env["POSTGRES_DB"] == env["POSTGRES_USER"] == "rap" and "${" in env["POSTGRES_PASSWORD"]  # no password in the file
    assert any(v.startswith("rap-db:/var/lib/postgresql") for v in db["volumes"]) and "rap-db" in compose["volumes"]
    assert db["ports"] == ["127.0.0.1:5432:5432"]  # rap serve on this machine; nothing else reaches it
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    documented = (ROOT / "docs" / "deploy.md").read_text()
    assert "postgresql://rap:" in documented and "@127.0.0.1:5432/rap" in documented
