"""Work queue semantics (client-go util/workqueue): dedup, dirty/processing, delays, rate limits,
shutdown and drain, and a concurrency stress test."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable

import pytest

from kmm_dtk.kube.ratelimit import ItemExponentialRateLimiter
from kmm_dtk.kube.workqueue import DelayingQueue, RateLimitingQueue, WorkQueue
from tests.support.controlplane import wait_until

DEADLINE = 5.0  # seconds: generous upper bound for anything that should happen "soon"
TICK = 2.0 ** -10  # about a millisecond, and exact in binary floating point (so are the delays below)


class FakeClock:
    """Time that moves only when a test steps it. ``read_elsewhere`` is set once a thread other than
    the test's reads it (the delaying queue's waiter, which reads it under the queue's lock)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.owner = threading.get_ident()
        self.read_elsewhere = threading.Event()

    def __call__(self) -> float:
        if threading.get_ident() != self.owner:
            self.read_elsewhere.set()
        return self.now

    def step(self, queue: DelayingQueue, seconds: float) -> None:
        """Move time on and let ``queue`` hand out what became due, before returning."""
        self.now += seconds
        queue.release_due()


def get_now(q: WorkQueue) -> Hashable | None:
    """The next queued key without blocking, or None."""
    key, shutdown = q.get(timeout=0)
    assert not shutdown
    return key


class FixedLimiter:
    """A rate limiter that answers a fixed delay and records what it was asked."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.asked: list[Hashable] = []
        self.forgotten: list[Hashable] = []

    def when(self, item: Hashable) -> float:
        self.asked.append(item)
        return self.delay

    def forget(self, item: Hashable) -> None:
        self.forgotten.append(item)

    def num_requeues(self, item: Hashable) -> int:
        return self.asked.count(item)


# -- basic queue --------------------------------------------------------------------------------


def test_fifo_and_dedup_of_queued_keys() -> None:
    q = WorkQueue("q")
    for key in ["ns/a", "ns/b", "ns/a", ("ns", "c"), "ns/b"]:
        q.add(key)
    assert q.len() == 3 and len(q) == 3
    assert [get_now(q), get_now(q), get_now(q)] == ["ns/a", "ns/b", ("ns", "c")]
    assert get_now(q) is None


def test_key_added_while_processing_is_requeued_only_by_done() -> None:
    q = WorkQueue("q")
    q.add("a")
    assert get_now(q) == "a"
    q.add("a")
    q.add("a")
    assert q.len() == 0  # not handed out again while a worker holds it
    assert get_now(q) is None
    q.done("a")
    assert q.len() == 1  # once, however often it was added
    assert get_now(q) == "a"
    q.done("a")
    assert q.len() == 0 and q.num_processing() == 0


def test_done_without_new_add_does_not_requeue() -> None:
    q = WorkQueue("q")
    q.add("a")
    assert get_now(q) == "a"
    assert q.num_processing() == 1
    q.done("a")
    assert q.len() == 0 and q.num_processing() == 0


def test_done_for_unknown_key_is_harmless() -> None:
    q = WorkQueue("q")
    q.done("never-got")
    q.add("a")
    assert get_now(q) == "a"


def test_none_is_not_a_key() -> None:
    with pytest.raises(ValueError):
        WorkQueue().add(None)
    with pytest.raises(ValueError):
        DelayingQueue().add_after(None, 1.0)


def test_get_blocks_until_a_key_is_added() -> None:
    q = WorkQueue("q")
    got: list[tuple[Hashable | None, bool]] = []
    waiting = threading.Event()
    returned = threading.Event()

    def consumer() -> None:
        waiting.set()
        got.append(q.get(timeout=DEADLINE))
        returned.set()

    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    assert waiting.wait(DEADLINE)
    q.add("ns/x")
    assert returned.wait(DEADLINE)
    thread.join(DEADLINE)
    assert got == [("ns/x", False)]


def test_get_times_out_with_no_key_and_no_shutdown() -> None:
    q = WorkQueue("q")
    started = time.monotonic()
    assert q.get(timeout=0.05) == (None, False)
    assert time.monotonic() - started >= 0.05


# -- shutdown -----------------------------------------------------------------------------------


def test_shutdown_ignores_adds_and_get_reports_shutdown() -> None:
    q = RateLimitingQueue("q", rate_limiter=FixedLimiter(0.0))
    assert not q.shutting_down()
    q.shutdown()
    assert q.shutting_down()
    q.add("a")
    q.add_after("b", 0)
    q.add_after("c", 0.01)
    q.add_rate_limited("d")
    assert q.len() == 0 and q.num_waiting() == 0
    assert q.rate_limiter.asked == []  # no failure recorded for a key that would be dropped
    assert q.get() == (None, True)
    assert q.get(timeout=0) == (None, True)


def test_shutdown_wakes_a_blocked_get() -> None:
    q = WorkQueue("q")
    got: list[tuple[Hashable | None, bool]] = []
    waiting = threading.Event()

    def consumer() -> None:
        waiting.set()
        got.append(q.get())  # no timeout: only shutdown can end this

    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    assert waiting.wait(DEADLINE)
    q.shutdown()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert got == [(None, True)]


def test_keys_queued_before_shutdown_are_still_handed_out() -> None:
    q = WorkQueue("q")
    q.add("a")
    q.add("b")
    q.shutdown()
    assert q.get() == ("a", False)
    assert q.get() == ("b", False)
    assert q.get() == (None, True)


def test_dirty_key_is_requeued_by_done_even_after_shutdown() -> None:
    q = WorkQueue("q")
    q.add("a")
    assert get_now(q) == "a"
    q.add("a")  # the change arrived before the shutdown: it must not be lost
    q.shutdown()
    q.done("a")
    assert q.get() == ("a", False)
    q.done("a")
    assert q.get() == (None, True)


def test_shutdown_with_drain_waits_for_in_flight_keys() -> None:
    q = WorkQueue("q")
    q.add("a")
    assert get_now(q) == "a"
    order: list[str] = []
    drained = threading.Event()
    result: list[bool] = []

    def drain() -> None:
        result.append(q.shutdown_with_drain(timeout=DEADLINE))
        order.append("drained")
        drained.set()

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    assert wait_until(q.shutting_down)
    q.add("late")
    assert q.len() == 0  # shutting down: ignored
    assert not drained.wait(0.05)  # "a" is still in process
    order.append("done")
    q.done("a")
    assert drained.wait(DEADLINE)
    thread.join(DEADLINE)
    assert order == ["done", "drained"]
    assert result == [True]
    assert q.get() == (None, True)


def test_shutdown_with_drain_returns_at_once_when_idle() -> None:
    q = WorkQueue("q")
    assert q.shutdown_with_drain(timeout=DEADLINE) is True
    assert q.shutting_down()


def test_shutdown_with_drain_times_out() -> None:
    q = WorkQueue("q")
    q.add("stuck")
    assert get_now(q) == "stuck"
    started = time.monotonic()
    assert q.shutdown_with_drain(timeout=0.02) is False
    assert time.monotonic() - started >= 0.02
    q.done("stuck")
    assert q.shutdown_with_drain(timeout=0) is True


def test_shutdown_releases_a_waiting_drain() -> None:
    q = WorkQueue("q")
    q.add("stuck")
    assert get_now(q) == "stuck"
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(q.shutdown_with_drain()), daemon=True)
    thread.start()
    # shutdown_with_drain marks the queue shutting down and starts waiting in one locked step,
    # so once we can see the flag the drain is waiting.
    assert wait_until(q.shutting_down)
    q.shutdown()  # an impatient caller gives up on draining
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert result == [False]  # "stuck" was never done


# -- delays -------------------------------------------------------------------------------------


def test_add_after_zero_or_negative_adds_at_once() -> None:
    q = DelayingQueue("q")
    q.add_after("a", 0)
    q.add_after("b", -1.0)
    assert q.num_waiting() == 0
    assert [get_now(q), get_now(q)] == ["a", "b"]


def test_add_after_hands_keys_out_in_ready_order_and_not_early() -> None:
    clock = FakeClock()
    q = DelayingQueue("q", clock=clock)
    q.add_after("late", 1.5)
    q.add_after("early", 0.5)
    q.add_after(("ns", "middle"), 1.0)
    assert q.len() == 0 and q.num_waiting() == 3
    got = []
    for _ in range(8):  # steps of 0.25 s, exact in binary floating point
        clock.step(q, 0.25)
        while (key := get_now(q)) is not None:
            got.append((key, clock.now - 1000.0))
            q.done(key)
    assert got == [("early", 0.5), (("ns", "middle"), 1.0), ("late", 1.5)]  # each at its time, not before
    assert q.num_waiting() == 0


def test_add_after_on_the_real_clock() -> None:
    """The waiter wakes by itself on ``time.monotonic``: no ``release_due`` needed."""
    q = DelayingQueue("q")
    sent = time.monotonic()
    q.add_after("a", 0.02)
    assert q.get(timeout=DEADLINE) == ("a", False)
    assert time.monotonic() - sent >= 0.02


def test_waiting_twice_keeps_the_earlier_time_when_the_second_is_earlier() -> None:
    clock = FakeClock()
    q = DelayingQueue("q", clock=clock)
    q.add_after("a", 600.0)
    q.add_after("a", 0.5)
    assert q.num_waiting() == 1
    clock.step(q, 0.5 - TICK)
    assert get_now(q) is None
    clock.step(q, TICK)
    assert get_now(q) == "a"
    q.done("a")
    assert q.num_waiting() == 0  # the 600 s entry is gone too
    clock.step(q, 600.0)
    assert get_now(q) is None


def test_waiting_twice_keeps_the_earlier_time_when_the_second_is_later() -> None:
    clock = FakeClock()
    q = DelayingQueue("q", clock=clock)
    q.add_after("a", 0.5)
    q.add_after("a", 600.0)
    assert q.num_waiting() == 1
    clock.step(q, 0.5 - TICK)
    assert get_now(q) is None
    clock.step(q, TICK)
    assert get_now(q) == "a"
    q.done("a")
    assert q.num_waiting() == 0


def test_a_new_earlier_key_wakes_the_waiter() -> None:
    clock = FakeClock()
    q = DelayingQueue("q", clock=clock)
    q.add_after("far", 600.0)
    # The waiter reads the clock and starts its 600 s wait in one locked step: once it has read the
    # clock, the next add_after (which takes the lock) finds it waiting.
    assert clock.read_elsewhere.wait(DEADLINE)
    q.add_after("near", 0.02)  # it must wake to wait 0.02 s instead
    clock.now += 0.02  # no release_due: the waiter itself hands "near" out
    assert q.get(timeout=DEADLINE) == ("near", False)
    assert q.num_waiting() == 1


def test_release_due_before_any_add_after_and_after_shutdown_is_harmless() -> None:
    clock = FakeClock()
    q = DelayingQueue("q", clock=clock)
    clock.step(q, 1.0)
    assert q.len() == 0 and q.num_waiting() == 0
    q.add_after("a", 1.0)
    q.shutdown()
    clock.step(q, 1.0)
    assert q.get(timeout=0) == (None, True)


def test_delayed_key_already_queued_is_not_duplicated() -> None:
    clock = FakeClock()
    q = DelayingQueue("q", clock=clock)
    q.add("a")
    q.add_after("a", 0.01)
    assert q.num_waiting() == 1
    clock.step(q, 0.01)
    assert q.num_waiting() == 0
    assert q.len() == 1
    assert get_now(q) == "a"
    assert get_now(q) is None


def test_shutdown_drops_waiting_keys() -> None:
    clock = FakeClock()
    q = DelayingQueue("q", clock=clock)
    q.add_after("a", 0.05)
    q.shutdown()
    clock.step(q, 0.05)
    assert q.get(timeout=DEADLINE) == (None, True)
    assert wait_until(lambda: q.num_waiting() == 0)  # the waiter drops them as it ends


# -- rate limiting ------------------------------------------------------------------------------


def test_add_rate_limited_waits_the_limiters_delay() -> None:
    limiter = FixedLimiter(600.0)
    q = RateLimitingQueue("q", rate_limiter=limiter)
    q.add_rate_limited("ns/a")
    assert limiter.asked == ["ns/a"]
    assert q.len() == 0 and q.num_waiting() == 1
    assert q.num_requeues("ns/a") == 1
    q.forget("ns/a")
    assert limiter.forgotten == ["ns/a"]


def test_add_rate_limited_backs_off_and_forget_resets() -> None:
    clock = FakeClock()
    q = RateLimitingQueue("q", rate_limiter=ItemExponentialRateLimiter(base_delay=0.125, max_delay=1.0), clock=clock)
    for expected_requeues, backoff in [(1, 0.125), (2, 0.25), (3, 0.5)]:  # exact in binary floating point
        q.add_rate_limited("k")
        assert q.num_requeues("k") == expected_requeues
        clock.step(q, backoff - TICK)
        assert get_now(q) is None, f"handed out before its {backoff} s backoff"
        clock.step(q, TICK)
        assert get_now(q) == "k"
        q.done("k")
    q.forget("k")
    assert q.num_requeues("k") == 0
    assert q.rate_limiter.when("k") == pytest.approx(0.125)


def test_default_rate_limiter_is_client_gos() -> None:
    q = RateLimitingQueue("q")
    assert [q.rate_limiter.when("k") for _ in range(3)] == pytest.approx([0.005, 0.01, 0.02])


def test_the_default_rate_limiters_bucket_runs_on_the_queues_clock() -> None:
    clock = FakeClock()
    q = RateLimitingQueue("q", clock=clock)
    delays = [q.rate_limiter.when(f"k{i}") for i in range(101)]  # burst 100, then 10 qps
    assert delays[:100] == pytest.approx([0.005] * 100) and delays[100] == pytest.approx(0.1)
    clock.now += 1.0  # ten tokens back, on the queue's clock only
    assert q.rate_limiter.when("k200") == pytest.approx(0.005)


# -- concurrency --------------------------------------------------------------------------------


class StressRecorder:
    """Records, per key, how many workers hold it at once and which version of it they saw.

    Producers bump a key's version and then add it; a worker reads the version when it starts.
    A queue that never loses a change makes every key's last-seen version its final version.
    """

    def __init__(self, keys: list[Hashable]) -> None:
        self.lock = threading.Lock()
        self.version = {key: 0 for key in keys}
        self.seen = {key: 0 for key in keys}
        self.in_flight: Counter[Hashable] = Counter()
        self.max_in_flight = 0
        self.reconciles = 0

    def change(self, key: Hashable) -> None:
        with self.lock:
            self.version[key] += 1

    def work(self, key: Hashable) -> None:
        with self.lock:
            self.in_flight[key] += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight[key])
            self.seen[key] = max(self.seen[key], self.version[key])
            self.reconciles += 1
        time.sleep(0)  # give up the GIL so other workers interleave here; not synchronisation
        with self.lock:
            self.in_flight[key] -= 1


@pytest.fixture
def fast_thread_switching():
    """Switch threads ~500x more often than by default, to shake out races."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


Producer = Callable[[random.Random, StressRecorder, list[Hashable]], None]


def run_stress(q: WorkQueue, produce: Producer) -> StressRecorder:
    keys: list[Hashable] = [f"ns/k{i}" for i in range(40)] + [("ns", f"t{i}") for i in range(10)]
    rec = StressRecorder(keys)

    def worker() -> None:
        while True:
            key, shutdown = q.get()
            if shutdown:
                return
            try:
                rec.work(key)
            finally:
                q.done(key)

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
    producers = [
        threading.Thread(target=produce, args=(random.Random(seed), rec, keys), daemon=True) for seed in range(8)
    ]
    for thread in workers + producers:
        thread.start()
    for thread in producers:
        thread.join(DEADLINE)
        assert not thread.is_alive()
    if isinstance(q, DelayingQueue):
        assert wait_until(lambda: q.num_waiting() == 0)
    q.shutdown()  # workers still take everything queued, then exit
    for thread in workers:
        thread.join(DEADLINE)
        assert not thread.is_alive()
    assert q.len() == 0 and q.num_processing() == 0
    return rec


def test_stress_one_worker_per_key_and_no_change_lost(fast_thread_switching) -> None:
    q = WorkQueue("stress")

    def produce(rng: random.Random, rec: StressRecorder, keys: list[Hashable]) -> None:
        for _ in range(2000):
            key = rng.choice(keys)
            rec.change(key)
            q.add(key)

    rec = run_stress(q, produce)
    assert rec.max_in_flight == 1
    assert rec.seen == rec.version  # every key was processed after its last add
    assert sum(rec.version.values()) == 8 * 2000
    assert 50 <= rec.reconciles <= 8 * 2000  # every key at least once; dedup never adds work


def test_stress_with_delays_and_rate_limits(fast_thread_switching) -> None:
    q = RateLimitingQueue("stress", rate_limiter=ItemExponentialRateLimiter(base_delay=0.001, max_delay=0.01))

    def produce(rng: random.Random, rec: StressRecorder, keys: list[Hashable]) -> None:
        for i in range(600):
            key = rng.choice(keys)
            rec.change(key)
            choice = i % 3
            if choice == 0:
                q.add(key)
            elif choice == 1:
                q.add_after(key, rng.uniform(0, 0.02))
            else:
                q.add_rate_limited(key)
                if rng.random() < 0.3:
                    q.forget(key)

    rec = run_stress(q, produce)
    assert rec.max_in_flight == 1
    assert rec.seen == rec.version
