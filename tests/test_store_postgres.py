"""The PostgreSQL store's own promises: users never see each other, the HNSW path, schema, errors, CLI.

The operations, bad-input, crash and concurrency tests run on this store too
(tests/test_store.py and tests/test_crash_and_concurrency.py, id ``postgres``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import threading
import time
from uuid import uuid4

import numpy as np
import psycopg
import pytest
from PIL import Image

from conftest import StoreTarget
from rap.store.postgres_server import new_database, throwaway_server
from rap import open_store
from rap.cli import run
from rap.errors import ConceptExists, ConceptNotFound, InvalidInput, StoreError, UnknownBackend
from rap.settings import resolve
from waiting import join_all


def postgres_user() -> str:
    return f"test-{uuid4().hex[:12]}"


def test_postgres_users_share_a_database_and_never_see_each_other(postgres_url, photos):
    alice, bob = StoreTarget(postgres_url, postgres_user()), StoreTarget(postgres_url, postgres_user())
    with alice.open() as a, bob.open() as b:
        mine = a.add("bo", [photos / "dog_00.jpg"], info="alice's dog", category="dog")
        a.add("kit", [photos / "cat_00.jpg"], category="cat")
        theirs = b.add("bo", [photos / "dog_01.jpg"], info="bob's dog", category="dog")
        assert [c.info for c in b.list()] == ["bob's dog"] and len(b) == 1
        assert b.lookup(["kit", "bo"]) == [theirs] and "kit" not in b and b.categories() == ["dog"]
        assert mine.images[0].id == theirs.images[0].id == 1  # numbered per user: nothing leaks through ids
        with pytest.raises(ConceptNotFound):
            b.get("kit")
        with pytest.raises(ConceptNotFound):
            b.edit("kit", info="mine now")
        with pytest.raises(ConceptNotFound):
            b.remove("kit")
        with pytest.raises(ConceptNotFound):
            b.image_path(mine.images[0].file)  # alice's photo, asked for by its content address
        query = b.embedder.embed([Image.open(photos / "cat_00.jpg")])
        assert {hit.concept for hit in b.search("image", query, 10)[0]} == {"bo"}
        assert b.search("image", query, 10)[0][0].image_id == theirs.images[0].id
        b.remove("bo")
        assert [c.info for c in a.list()] == ["alice's dog", ""]


def test_postgres_hnsw_search_filters_by_user_and_agrees_with_exact(postgres_url, photos, monkeypatch):
    """Past the cutoff the HNSW index answers; among other users' vectors it finds what exact search finds."""
    owner, crowd = StoreTarget(postgres_url, postgres_user()), StoreTarget(postgres_url, postgres_user())
    pictures = sorted(photos.glob("*.jpg"))
    with crowd.open() as other:
        other.add_many([_concept(f"x{n}", p) for n, p in enumerate(pictures)])
    with owner.open() as exact:
        exact.add_many([_concept(f"c{n}", p) for n, p in enumerate(pictures)])
        queries = exact.embedder.embed([Image.open(p).rotate(7) for p in pictures])
        expected = exact.search("image", queries, 3)
        assert exact.index_info()["image"]["factory"] == "pgvector exact"
    monkeypatch.setenv("RAP_PGVECTOR_EXACT_BELOW", "2")
    with owner.open() as approximate:
        assert approximate.index_info()["image"]["factory"] == "pgvector hnsw"
        found = approximate.search("image", queries, 3)
    assert [[h.concept for h in row] for row in found] == [[h.concept for h in row] for row in expected]
    assert np.allclose([[h.distance for h in row] for row in found], [[h.distance for h in row] for row in expected], atol=1e-5)


def _concept(name, photo):
    from rap import NewConcept

    return NewConcept(name, [photo], category="dog")


def test_postgres_users_may_use_different_encoders(postgres_url, photos):
    """Each user records their own encoder; vectors of several dimensions share the table."""
    from rap.encoders import ENCODERS

    from conftest import TinyEncoder

    class Small(TinyEncoder):
        dim = 27

        def __init__(self, argument, settings):
            self.id = "small"

        def embed(self, images):
            return super().embed([image.resize((3, 3)) for image in images])[:, :27] + 0.0

    ENCODERS.register("small", help="test")(Small)
    tiny, small = StoreTarget(postgres_url, postgres_user()), StoreTarget(postgres_url, postgres_user())
    with tiny.open(encoder="tiny") as a, small.open(encoder="small") as b:
        a.add("bo", [photos / "dog_00.jpg"])
        b.add("bo", [photos / "dog_00.jpg"])
        assert (a.index_info()["image"]["dim"], b.index_info()["image"]["dim"]) == (108, 27)
        assert b.search("image", b.embedder.embed([Image.open(photos / "dog_00.jpg")]), 1)[0][0].concept == "bo"


def test_postgres_concurrent_adds_of_one_name_let_exactly_one_win(postgres_url, photos):
    import threading

    target = StoreTarget(postgres_url, postgres_user())
    stores = [target.open() for _ in range(4)]
    outcomes: list[str] = []

    def add(store):
        try:
            store.add("bo", [photos / "dog_00.jpg"])
            outcomes.append("added")
        except ConceptExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=add, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    join_all(threads, "four stores adding one name at once")
    assert sorted(outcomes) == ["added", "exists", "exists", "exists"]
    assert [len(c.images) for c in stores[0].list()] == [1]
    for store in stores:
        store.close()


def test_postgres_newer_schema_is_refused(postgres_url):
    url = new_database(postgres_url)
    StoreTarget(url, "me").open().close()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE rap.schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        StoreTarget(url, "me").open()


def test_postgres_unreachable_server_or_bad_user_is_one_line(postgres_url, tmp_path):
    with pytest.raises(StoreError, match="cannot connect") as caught:
        StoreTarget(f"postgresql://nobody@/nothing?host={tmp_path}", "me").open()
    assert "\n" not in str(caught.value)
    with pytest.raises(StoreError) as caught:
        StoreTarget(f"postgresql://nobody:secret@/nothing?host={tmp_path}", "me").open()
    assert "secret" not in str(caught.value)  # a password never reaches a message
    with pytest.raises(InvalidInput, match="bad user name"):
        StoreTarget(postgres_url, "../etc").open()
    with pytest.raises(UnknownBackend, match="postgresql"):
        StoreTarget("mysql://me@host/db", None).open()


def test_postgres_cli_uses_the_store_for_every_command(postgres_url, photos, monkeypatch, capsys):
    monkeypatch.setenv("RAP_STORE_USER", postgres_user())
    store = ["--store", postgres_url, "--encoder", "tiny", "--faces", "none"]
    assert run([*store, "concept", "add", "bo", "-i", str(photos / "dog_00.jpg"), "-c", "dog"]) == 0
    assert run([*store, "concept", "list", "--json"]) == 0
    assert run([*store, "info", "--json"]) == 0
    assert run([*store, "retrieve", str(photos / "dog_00.jpg"), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith(("{", "["))]
    assert [c["name"] for c in lines[0]] == ["bo"]
    assert lines[1]["concepts"] == 1 and "postgresql://" in lines[1]["path"]
    assert "bo" in json.dumps(lines[2])
    monkeypatch.setenv("RAP_STORE_USER", postgres_user())  # someone else: an empty store
    assert run([*store, "concept", "show", "bo"]) == 3


def test_open_store_binds_a_user_on_either_backend(postgres_url, photos, rap_home):
    with open_store(resolve({"store_url": postgres_url}).settings, user="ann", encoder="tiny", faces="none") as shared:
        assert shared.location.endswith("(user ann)")
    with open_store(encoder="tiny", faces="none", user="ann") as local:
        assert local.location == str(rap_home / "store" / "users" / "ann")


def test_postgres_store_reconnects_after_the_server_drops_it(postgres_url, photos):
    with StoreTarget(postgres_url, postgres_user()).open() as store:
        store.add("bo", [photos / "dog_00.jpg"])
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (store._db.info.backend_pid,))
        with pytest.raises(StoreError) as caught:  # the call in flight fails, in one line
            store.list()
        assert "\n" not in str(caught.value)
        assert "administrator command" in str(caught.value) and "AVX-512" not in str(caught.value)  # the server said why
        assert [c.name for c in store.list()] == ["bo"]  # the next one has a new connection


@pytest.mark.slow
def test_postgres_backend_dying_of_sigill_is_one_line_naming_avx512(photos, capsys):
    """What a pgvector built for AVX-512 does on a CPU without it: the backend serving rap dies of SIGILL mid-statement.

    The statement is held on a lock so that the signal lands while it runs; on
    a server of its own, since the crash restarts every session of that server.
    """
    with throwaway_server() as url:
        store = ["--store", url, "--encoder", "tiny", "--faces", "none"]
        assert run([*store, "concept", "add", "bo", "-i", str(photos / "dog_00.jpg"), "-c", "dog"]) == 0
        capsys.readouterr()
        holder, watcher = psycopg.connect(url, autocommit=True), psycopg.connect(url, autocommit=True)
        try:
            holder.execute("BEGIN")
            holder.execute("LOCK TABLE rap.vectors IN ACCESS EXCLUSIVE MODE")  # the search's statements wait on it
            exit_code: list[int] = []
            search = threading.Thread(target=lambda: exit_code.append(run([*store, "retrieve", str(photos / "dog_01.jpg")])))
            search.start()
            deadline = time.monotonic() + 120
            waiting = None
            while waiting is None:
                assert time.monotonic() < deadline, "rap retrieve never reached the locked vectors table"
                waiting = watcher.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchone()
                time.sleep(0.05)
            os.kill(waiting[0], signal.SIGILL)
            search.join(120)
            assert not search.is_alive(), "rap retrieve did not return after its server process died"
        finally:
            holder.close()
            watcher.close()
        _wait_until_recovered(url)  # a shutdown asked for in the middle of crash recovery can hang PostgreSQL 18
    err = capsys.readouterr().err
    assert exit_code == [5] and len(err.strip().splitlines()) == 1, err
    assert "AVX-512" in err and "Illegal instruction" in err and "Traceback" not in err


def _wait_until_recovered(url: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            psycopg.connect(url, connect_timeout=10).close()
            return
        except psycopg.OperationalError as exc:
            assert time.monotonic() < deadline, f"PostgreSQL did not recover from the crash: {exc}"
            time.sleep(0.2)


def test_postgres_store_serves_the_assistant(postgres_url, photos):
    """Retrieval and the prompt's reference images come out of the database."""
    from rap import Retriever
    from rap.assistant import Assistant
    from rap.generation import create_generator

    with StoreTarget(postgres_url, postgres_user()).open() as store:
        store.add("bo", [photos / "dog_00.jpg"], info="<bo> is my corgi.", category="dog")
        store.add("kit", [photos / "cat_00.jpg"], info="<kit> is a ginger cat.", category="cat")
        bot = Assistant(store, Retriever(store, "none", top_k=1, threshold=float("inf")), create_generator("echo"))
        answer = bot.ask("Who is this?", photos / "cat_00.jpg")
        [conversation] = bot.generator.seen
        assert [c.concept.name for c in answer.concepts] == ["kit"]
        assert "<kit> is a ginger cat." in conversation[-1].text()
        assert conversation[-1].image_keys[1:] == [store.get("kit").images[0].sha256]


def test_postgres_password_is_never_shown(postgres_url, capsys):
    for url in ("postgresql://me:s3cret@db.example.com/rap", "postgresql://me@db.example.com/rap?password=s3cret&sslmode=require"):
        assert run(["--store", url, "config", "show"]) == 0
        assert run(["--store", url, "config", "show", "--json"]) == 0
        out = capsys.readouterr().out
        assert "s3cret" not in out and "***" in out


@pytest.mark.slow  # dlib's real face models
def test_faces_follow_the_category_on_every_backend(store_target, photos):
    with store_target.open(faces="dlib") as store:
        person = store.add("ann", [photos / "astronaut.jpg"], category="person")
        assert person.images[0].face_box is not None and store.spaces() == ["image", "face"]
        assert store.edit("ann", category="object").images[0].face_box is None
        assert store.spaces() == ["image"] and len(store.concept_vectors("ann", "face")) == 0
        again = store.edit("ann", category="woman")
        assert again.images[0].face_box == person.images[0].face_box
        assert store.search("face", store.concept_vectors("ann", "face"), 1)[0][0].concept == "ann"


def test_postgres_encoder_mismatch_suggests_a_command_that_runs(postgres_url, photos, capsys, monkeypatch):
    """The re-embed command the mismatch error prints works as printed, user and store included."""
    monkeypatch.setenv("RAP_STORE_USER", postgres_user())
    store = ["--store", postgres_url, "--faces", "none"]
    assert run([*store, "--encoder", "tiny", "concept", "add", "bo", "-i", str(photos / "dog_00.jpg")]) == 0
    capsys.readouterr()
    assert run([*store, "--encoder", "tiny:other", "concept", "list"]) == 5
    [suggested] = re.findall(r"'((?:RAP_STORE_USER=\S+ )?rap [^']+)'", capsys.readouterr().err)
    words = shlex.split(suggested)
    if words[0].startswith("RAP_STORE_USER="):
        monkeypatch.setenv("RAP_STORE_USER", words.pop(0).partition("=")[2])
    assert run(words[1:]) == 0
    assert run([*store, "--encoder", "tiny:other", "concept", "list"]) == 0
