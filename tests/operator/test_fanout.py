"""FanOut: one reconcile's kernels side by side, bounded across the process, nothing left half-done."""

from __future__ import annotations

import threading

import pytest

from kmm_dtk.operator.fanout import FanOut


def test_results_come_back_in_the_order_of_the_items():
    fanout = FanOut(4)
    try:
        assert fanout.map(lambda x: x * 10, list(range(20))) == [x * 10 for x in range(20)]
    finally:
        fanout.shutdown()


def test_steps_run_side_by_side_up_to_the_limit_and_never_beyond():
    limit = 4
    fanout = FanOut(limit)
    barrier = threading.Barrier(limit, timeout=10)  # breaks (and fails the test) unless 4 run at once
    lock = threading.Lock()
    in_flight, most = 0, 0

    def step(_: int) -> None:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        try:
            barrier.wait()
        finally:
            with lock:
                in_flight -= 1

    try:
        fanout.map(step, list(range(3 * limit)))
    finally:
        fanout.shutdown()
    assert most == limit


def test_a_failure_is_raised_only_after_every_other_step_ended():
    fanout = FanOut(3)
    done = []
    lock = threading.Lock()

    def step(x: int) -> int:
        if x == 0:
            raise RuntimeError("first kernel failed")
        with lock:
            done.append(x)
        return x

    try:
        with pytest.raises(RuntimeError, match="first kernel failed"):
            fanout.map(step, list(range(10)))
    finally:
        fanout.shutdown()
    assert sorted(done) == list(range(1, 10))


def test_a_limit_of_one_runs_inline_on_the_callers_thread():
    fanout = FanOut(1)
    threads = fanout.map(lambda _: threading.get_ident(), [1, 2, 3])
    assert set(threads) == {threading.get_ident()}


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        FanOut(0)
