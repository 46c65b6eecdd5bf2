"""The reconcile loop: what happens to a key after success, error, requeue and terminal error;
workers survive exceptions; stop with and without drain; alive()."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator

import pytest

from kmm_dtk.kube.controller import Controller, Result, TerminalError
from kmm_dtk.kube.ratelimit import ItemExponentialRateLimiter
from kmm_dtk.kube.workqueue import RateLimitingQueue
from tests.support.controlplane import wait_until

DEADLINE = 5.0


def make_queue(base_delay: float = 0.01) -> RateLimitingQueue:
    return RateLimitingQueue("test", rate_limiter=ItemExponentialRateLimiter(base_delay=base_delay, max_delay=10.0))


@pytest.fixture
def controllers() -> Iterator[list[Controller]]:
    """Controllers a test starts; stopped (without drain) afterwards so no thread outlives it."""
    made: list[Controller] = []
    yield made
    for controller in made:
        controller.stop(drain=False, timeout=DEADLINE)


def run(
    controllers: list[Controller],
    reconcile: Callable[[Hashable], Result | None],
    queue: RateLimitingQueue | None = None,
    workers: int = 1,
) -> Controller:
    controller = Controller("test", queue if queue is not None else make_queue(), reconcile, workers=workers)
    controllers.append(controller)
    controller.start()
    return controller


def test_success_forgets_the_keys_failures(controllers: list[Controller]) -> None:
    queue = make_queue()
    queue.rate_limiter.when("ns/a")
    queue.rate_limiter.when("ns/a")
    assert queue.num_requeues("ns/a") == 2
    calls: list[Hashable] = []
    controller = run(controllers, lambda key: calls.append(key), queue)  # returns None: success
    queue.add("ns/a")
    assert controller.stop(drain=True, timeout=DEADLINE)
    assert calls == ["ns/a"]
    assert queue.num_requeues("ns/a") == 0
    assert queue.num_waiting() == 0


def test_error_requeues_with_backoff_until_success(controllers: list[Controller]) -> None:
    queue = make_queue(base_delay=0.01)
    seen: list[tuple[float, int]] = []
    succeeded = threading.Event()

    def reconcile(key: Hashable) -> None:
        seen.append((time.monotonic(), queue.num_requeues(key)))
        if len(seen) <= 3:
            raise RuntimeError("apiserver said no")
        succeeded.set()

    controller = run(controllers, reconcile, queue)
    queue.add(("ns", "a"))
    assert succeeded.wait(DEADLINE)
    assert controller.stop(drain=True, timeout=DEADLINE)
    assert [requeues for _, requeues in seen] == [0, 1, 2, 3]
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(seen)]
    for gap, backoff in zip(gaps, [0.01, 0.02, 0.04], strict=True):
        assert gap >= backoff
    assert queue.num_requeues(("ns", "a")) == 0  # the success forgot the failures


def test_error_is_logged_with_controller_and_key(controllers: list[Controller],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    queue = make_queue(base_delay=600.0)  # never retried within the test
    failed = threading.Event()

    def reconcile(key: Hashable) -> None:
        failed.set()
        raise RuntimeError("boom")

    controller = run(controllers, reconcile, queue)
    with caplog.at_level(logging.ERROR, logger="kmm_dtk.kube.controller"):
        queue.add("ns/a")
        assert failed.wait(DEADLINE)
        assert controller.stop(drain=True, timeout=DEADLINE)
    records = [r for r in caplog.records if r.getMessage() == "Reconciler error"]
    assert len(records) == 1
    assert records[0].controller == "test"
    assert records[0].key == "ns/a"
    assert records[0].exc_info is not None and "boom" in str(records[0].exc_info[1])


def test_an_exception_does_not_kill_the_worker(controllers: list[Controller]) -> None:
    queue = make_queue(base_delay=600.0)
    done = threading.Event()

    def reconcile(key: Hashable) -> None:
        if key == "ns/bad":
            raise ValueError("unexpected")
        done.set()

    controller = run(controllers, reconcile, queue, workers=1)
    queue.add("ns/bad")
    queue.add("ns/good")
    assert done.wait(DEADLINE)  # the single worker went on to the next key
    assert controller.alive()
    assert queue.num_requeues("ns/bad") == 1
    assert queue.num_waiting() == 1  # ns/bad, waiting for its backoff


def test_requeue_after_forgets_and_comes_back_later(controllers: list[Controller]) -> None:
    queue = make_queue()
    queue.rate_limiter.when("ns/a")  # an earlier failure that requeue_after must forget
    seen: list[tuple[float, int]] = []
    second = threading.Event()

    def reconcile(key: Hashable) -> Result | None:
        seen.append((time.monotonic(), queue.num_requeues(key)))
        if len(seen) == 1:
            return Result(requeue_after=0.1)
        second.set()
        return None

    controller = run(controllers, reconcile, queue)
    queue.add("ns/a")
    assert second.wait(DEADLINE)
    assert controller.stop(drain=True, timeout=DEADLINE)
    assert [requeues for _, requeues in seen] == [1, 0]
    assert seen[1][0] - seen[0][0] >= 0.1


def test_requeue_is_rate_limited_without_an_error(controllers: list[Controller]) -> None:
    queue = make_queue(base_delay=0.01)
    seen: list[int] = []
    second = threading.Event()

    def reconcile(key: Hashable) -> Result | None:
        seen.append(queue.num_requeues(key))
        if len(seen) == 1:
            return Result(requeue=True)
        second.set()
        return Result()

    controller = run(controllers, reconcile, queue)
    queue.add("ns/a")
    assert second.wait(DEADLINE)
    assert controller.stop(drain=True, timeout=DEADLINE)
    assert seen == [0, 1]
    assert queue.num_requeues("ns/a") == 0


def test_terminal_error_is_not_retried(controllers: list[Controller], caplog: pytest.LogCaptureFixture) -> None:
    queue = make_queue(base_delay=0.001)
    queue.rate_limiter.when("ns/bad")
    calls: Counter[Hashable] = Counter()
    done = threading.Event()

    def reconcile(key: Hashable) -> None:
        calls[key] += 1
        if key == "ns/bad":
            raise TerminalError("spec.kernelMappings is empty")
        done.set()

    controller = run(controllers, reconcile, queue, workers=1)
    with caplog.at_level(logging.ERROR, logger="kmm_dtk.kube.controller"):
        queue.add("ns/bad")
        queue.add("ns/next")  # one worker, FIFO: ns/bad is fully handled before this starts
        assert done.wait(DEADLINE)
        assert controller.stop(drain=True, timeout=DEADLINE)
    assert calls == {"ns/bad": 1, "ns/next": 1}
    assert queue.num_requeues("ns/bad") == 0  # forgotten
    assert queue.num_waiting() == 0  # and not waiting for a retry
    terminal = [r for r in caplog.records if getattr(r, "key", None) == "ns/bad"]
    assert len(terminal) == 1 and terminal[0].controller == "test"


def test_never_two_workers_on_one_key(controllers: list[Controller]) -> None:
    queue = make_queue(base_delay=0.001)
    lock = threading.Lock()
    in_flight: Counter[Hashable] = Counter()
    worst = [0]
    processed: defaultdict[Hashable, int] = defaultdict(int)

    def reconcile(key: Hashable) -> Result | None:
        with lock:
            in_flight[key] += 1
            worst[0] = max(worst[0], in_flight[key])
            processed[key] += 1
        time.sleep(0)  # yield the GIL so other workers interleave; not synchronisation
        with lock:
            in_flight[key] -= 1
        if processed[key] % 7 == 0:
            raise RuntimeError("every 7th try fails")
        return None

    controller = run(controllers, reconcile, queue, workers=6)
    keys = [f"ns/k{i}" for i in range(12)]
    for round_ in range(300):
        for key in keys[round_ % 3 :: 3]:
            queue.add(key)
    assert controller.stop(drain=True, timeout=DEADLINE)
    assert worst[0] == 1
    assert set(processed) == set(keys)


def _busy_on_slow_key(controllers: list[Controller]) -> tuple[Controller, threading.Event, list[str]]:
    """A one-worker controller whose worker is inside reconcile("slow") until ``release`` is set."""
    entered = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def reconcile(key: Hashable) -> None:
        if key == "slow":
            entered.set()
            assert release.wait(DEADLINE)
        order.append(key)

    controller = run(controllers, reconcile, workers=1)
    controller.queue.add("slow")
    assert entered.wait(DEADLINE)
    return controller, release, order


def test_stop_with_drain_finishes_in_flight_and_queued_keys(controllers: list[Controller]) -> None:
    controller, release, order = _busy_on_slow_key(controllers)
    controller.queue.add("queued-1")
    controller.queue.add("queued-2")
    stopped: list[bool] = []
    stopper = threading.Thread(target=lambda: stopped.append(controller.stop(drain=True, timeout=DEADLINE)),
                               daemon=True)
    stopper.start()
    assert wait_for_shutdown(controller)
    controller.queue.add("after-stop")  # ignored
    release.set()
    stopper.join(DEADLINE)
    assert stopped == [True]
    assert order == ["slow", "queued-1", "queued-2"]
    assert not controller.alive()


def test_stop_without_drain_skips_queued_keys(controllers: list[Controller]) -> None:
    controller, release, order = _busy_on_slow_key(controllers)
    controller.queue.add("queued-1")
    stopped: list[bool] = []
    stopper = threading.Thread(target=lambda: stopped.append(controller.stop(drain=False, timeout=DEADLINE)),
                               daemon=True)
    stopper.start()
    assert wait_for_shutdown(controller)
    release.set()
    stopper.join(DEADLINE)
    assert stopped == [True]
    assert order == ["slow"]  # the in-flight key finished, the queued one was dropped


def test_stop_times_out_on_a_stuck_reconcile(controllers: list[Controller]) -> None:
    entered = threading.Event()
    release = threading.Event()

    def reconcile(key: Hashable) -> None:
        entered.set()
        release.wait(DEADLINE)

    controller = run(controllers, reconcile)
    controller.queue.add("stuck")
    assert entered.wait(DEADLINE)
    try:
        assert controller.stop(drain=True, timeout=0.05) is False
    finally:
        release.set()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_alive_reflects_the_worker_threads(controllers: list[Controller]) -> None:
    queue = make_queue()
    exited = threading.Event()

    def reconcile(key: Hashable) -> None:
        if key == "exit":
            exited.set()
            raise SystemExit  # a BaseException: nothing should swallow it, and health must see it

    controller = Controller("test", queue, reconcile, workers=2)
    controllers.append(controller)
    assert not controller.alive()  # not started
    controller.start()
    assert controller.alive()
    with pytest.raises(RuntimeError):
        controller.start()
    queue.add("exit")
    assert exited.wait(DEADLINE)
    assert wait_until(lambda: not controller.alive())
    assert queue.num_processing() == 0  # done() ran even though the thread died
    assert controller.stop(drain=True, timeout=DEADLINE)


def test_controller_arguments_and_result_are_validated() -> None:
    with pytest.raises(ValueError):
        Controller("x", make_queue(), lambda key: None, workers=0)
    assert Result() == Result(requeue_after=None, requeue=False)
    with pytest.raises(AttributeError):
        Result().requeue_after = 1.0  # type: ignore[misc]




def wait_for_shutdown(controller: Controller) -> bool:
    return wait_until(controller.queue.shutting_down)
