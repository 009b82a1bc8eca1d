"""kill -9 at any point of an add, edit or remove leaves a store that reopens consistent.

Each test runs on every store backend (ids ``local`` and ``postgres``).

A child process works on the store in a loop and is killed with SIGKILL after
a random delay, several times over; after each kill the store is reopened and
checked: every concept is retrievable by its own image, no vector points at
nothing, every referenced image file exists.
"""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import StoreTarget
from rap import LocalConceptStore
from test_store import assert_consistent
from waiting import DEADLINE_S, end_process, read_line, wait_until

TESTS = Path(__file__).parent

WORKER = textwrap.dedent(
    """
    import random, sys
    sys.path.insert(0, {tests!r})
    import conftest  # registers the tiny encoder
    photos = sorted((conftest.PHOTOS).glob("*.jpg"))
    store = conftest.StoreTarget({spec!r}, {user!r}).open()
    rng = random.Random({seed})
    print("ready", flush=True)
    n = 0
    while True:
        names = [c.name for c in store.list()]
        op = rng.random()
        if op < 0.5 or len(names) < 2:
            n += 1
            store.add(f"c{{{seed}}}_{{n}}", rng.sample(photos, 2), info="x", category=rng.choice(["dog", "cat"]))
        elif op < 0.8:
            store.edit(rng.choice(names), info=str(n), add_images=[rng.choice(photos)])
        else:
            store.remove(rng.choice(names))
    """
)


def start_worker(target: StoreTarget, seed: int, tests: Path = TESTS) -> subprocess.Popen:
    code = WORKER.format(tests=str(tests), spec=target.spec, user=target.user, seed=seed)
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert read_line(worker.stdout, "the worker to open its store").strip() == b"ready", "the worker did not say ready"
    except AssertionError as failed:
        worker.kill()
        _, errors = worker.communicate(timeout=DEADLINE_S)
        raise AssertionError(f"{failed}; its stderr: {errors.decode()[-3000:]}") from None
    return worker


@pytest.mark.slow
def test_kill_9_during_writes_never_breaks_the_store(store_target):
    rng = random.Random(7)
    for round_ in range(6):
        worker = start_worker(store_target, round_)
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(worker.pid, signal.SIGKILL)
        end_process(worker, "the killed worker")
        with store_target.open() as store:
            assert_consistent(store)
            if store_target.folder is not None:  # a checkpoint or image cut short leaves no temp file
                assert not list(store_target.folder.glob("*/**/.*.tmp"))


def dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    end_process(gone, "a process that does nothing")
    return gone.pid


@pytest.mark.parametrize("folder", ["index", "images/ab"])
def test_temp_files_of_a_killed_writer_are_removed_on_open(tmp_path, photos, folder):
    """A kill during an index checkpoint (or an image write) leaves ``.<name>.<pid>.tmp``; the next open removes it."""
    path = tmp_path / "store"
    with LocalConceptStore(path, encoder="tiny") as store:
        store.add("bo", [photos / "dog_00.jpg"])
    (path / folder).mkdir(parents=True, exist_ok=True)
    stale = path / folder / f".image.faiss.{dead_pid()}.tmp"
    live = path / folder / f".image.faiss.{os.getpid()}.tmp"  # a write in progress in a live process
    stale.write_bytes(b"half an index")
    live.write_bytes(b"being written")
    with LocalConceptStore(path, encoder="tiny") as store:
        assert_consistent(store)
    assert not stale.exists() and live.exists()


@pytest.mark.slow
def test_readers_work_while_another_process_writes(store_target, photos):
    with store_target.open() as store:
        store.add("seed", [photos / "dog_00.jpg"])
    worker = start_worker(store_target, 99)
    try:
        reader = store_target.open()
        query = reader.embedder.embed([__import__("PIL.Image").Image.open(photos / "dog_00.jpg")])
        seen = set()

        def sees_new_concepts() -> bool:
            hits = reader.search("image", query, 50)[0]
            seen.update(hit.concept for hit in hits)
            reader.list()
            return len(seen) > 1

        wait_until(sees_new_concepts, "the reader to find a concept the writer added")
        reader.close()
    finally:
        worker.kill()
        end_process(worker, "the killed writer")
    with store_target.open() as store:
        assert_consistent(store)
