"""``rap serve`` on PostgreSQL: workers and machines that share one database share its users and concepts."""

from __future__ import annotations

import json

import psycopg
import pytest
from fastapi.testclient import TestClient
from rap.store.postgres_server import new_database
from test_server_support import add_concept, photo, settings, wait_ready

from rap.cli import run
from rap.server import create_app
from rap.server.users import open_users


@pytest.fixture
def database(postgres_url, rap_home) -> str:
    return new_database(postgres_url)


def test_postgres_workers_share_users_and_concepts(database):
    """Two apps on one database, as two workers or two machines: what one writes, the other serves at once."""
    one, two = (TestClient(create_app(settings(store_url=database))) for _ in range(2))
    with one, two:
        wait_ready(one)
        wait_ready(two)
        assert run(["--store", database, "users", "add", "alice"]) == 0  # neither worker made her
        with psycopg.connect(database) as db:
            [(key_hash,)] = db.execute("SELECT key_sha256 FROM rap.api_users WHERE name = 'alice'").fetchall()
        assert len(key_hash) == 64
        with open_users(settings(store_url=database)) as users:
            _, key = users.add("bob")
        bob = {"Authorization": f"Bearer {key}"}
        assert one.get("/v1/me", headers=bob).json() == two.get("/v1/me", headers=bob).json() == {"user": "bob"}

        add_concept(one, bob, "bo", "dog_00.jpg", info="<bo> is bob's dog", category="dog")
        assert two.get("/v1/concepts/bo", headers=bob).json()["info"] == "<bo> is bob's dog"
        found = two.post("/v1/retrieve", data={"k": "1"}, files=[("image", photo("dog_00.jpg"))], headers=bob).json()
        assert [c["name"] for c in found["concepts"]] == ["bo"]
        assert two.delete("/v1/concepts/bo", headers=bob).status_code == 204
        assert one.get("/v1/concepts/bo", headers=bob).status_code == 404

        with open_users(settings(store_url=database)) as users:
            users.revoke("bob")
        assert one.get("/v1/me", headers=bob).status_code == two.get("/v1/me", headers=bob).status_code == 401


def test_postgres_users_command(database, capsys):
    assert run(["--store", database, "users", "add", "dan", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["user"] == "dan" and made["key"].startswith("rap_")
    assert run(["--store", database, "users", "list", "--json"]) == 0
    listed = capsys.readouterr().out
    assert made["key"] not in listed and [u["user"] for u in json.loads(listed)] == ["dan"]
    with psycopg.connect(database) as db:
        stored = db.execute("SELECT name, key_sha256 FROM rap.api_users").fetchall()
    assert stored and all(made["key"] not in str(row) for row in stored)  # only its hash
    assert run(["--store", database, "users", "add", "dan"]) == 4
    assert run(["--store", database, "users", "revoke", "dan"]) == 0
    assert run(["--store", database, "users", "revoke", "eve"]) == 3
    capsys.readouterr()
    assert run(["users", "list", "--json"]) == 0 and json.loads(capsys.readouterr().out) == []  # none in RAP_HOME


def test_postgres_users_unreachable_is_one_line(rap_home, capsys):
    assert run(["--store", "postgresql://nobody@127.0.0.1:1/none", "users", "list"]) != 0
    err = capsys.readouterr().err
    assert "PostgreSQL" in err and "Traceback" not in err
