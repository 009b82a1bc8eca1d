"""rap.threads: CPU work spread over cores keeps its order, its errors and its results."""

from __future__ import annotations

import threading

import pytest

from rap.threads import cores, thread_map


def test_results_come_in_order_from_several_threads() -> None:
    seen: set[str] = set()

    def square(n: int) -> int:
        seen.add(threading.current_thread().name)
        return n * n

    assert thread_map(square, range(40), 2) == [n * n for n in range(40)]
    assert thread_map(square, [], 2) == []
    assert all(name.startswith("rap") for name in seen)


def test_one_thread_runs_in_line() -> None:
    assert thread_map(lambda _: threading.current_thread(), [1, 2], 1) == [threading.current_thread()] * 2


def test_the_first_error_reaches_the_caller() -> None:
    def fail_on_three(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return n

    with pytest.raises(ValueError, match="three"):
        thread_map(fail_on_three, range(6), 2)


def test_mapping_from_a_pool_thread_runs_in_line_instead_of_waiting_on_the_pool() -> None:
    """Every pool thread mapping again would otherwise wait for threads that are all busy."""
    outer = thread_map(lambda n: thread_map(lambda m: n * 10 + m, range(3), 2), range(4), 2)
    assert outer == [[n * 10 + m for m in range(3)] for n in range(4)]


def test_zero_means_every_core() -> None:
    assert cores(0) >= 1 and cores(3) == 3
