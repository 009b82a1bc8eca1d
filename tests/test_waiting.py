"""The tests' waiting helpers fail fast and say what they waited for, instead of hanging."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from test_server_support import free_port
from waiting import end_process, join_all, read_line, wait_for_readyz, wait_until


def test_a_wait_returns_what_the_predicate_found() -> None:
    calls = iter([0, None, "found"])
    assert wait_until(lambda: next(calls), "the third call", interval_s=0) == "found"


def test_a_wait_that_runs_out_names_what_it_waited_for_and_the_last_thing_seen() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError("nobody there")

    with pytest.raises(AssertionError, match=r"waited 0.2 s for the door to open; last seen: ConnectionRefusedError\('nobody there'\)"):
        wait_until(refused, "the door to open", deadline_s=0.2, interval_s=0.01, ignore=(ConnectionRefusedError,))


def test_a_server_that_exits_fails_the_wait_at_once_with_its_exit_code() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(AssertionError, match="the server exited with code 3 before"):
        wait_for_readyz(f"http://127.0.0.1:{free_port()}", process, deadline_s=3600)


def test_a_silent_child_and_a_stuck_thread_fail_their_waits() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"], stdout=subprocess.PIPE)
    try:
        with pytest.raises(AssertionError, match="waited 0.2 s for the child to say hello; the process wrote nothing"):
            read_line(child.stdout, "the child to say hello", deadline_s=0.2)
    finally:
        child.kill()
        end_process(child, "the silent child, killed")
        child.stdout.close()
    release = threading.Event()
    stuck = threading.Thread(target=release.wait, name="stuck", daemon=True)
    stuck.start()
    with pytest.raises(AssertionError, match=r"still running: \['stuck'\]"):
        join_all([stuck], "the stuck thread", deadline_s=0.2)
    release.set()
    join_all([stuck], "the released thread")
