"""Queue and reconcile metrics, scraped from a private registry after known operations."""

from __future__ import annotations

import threading
from collections.abc import Hashable

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from kmm_dtk.kube.controller import Controller, Result, TerminalError
from kmm_dtk.kube.ratelimit import ItemExponentialRateLimiter
from kmm_dtk.kube.workqueue import RateLimitingQueue, WorkQueue
from kmm_dtk.observability.metrics import RECONCILE_BUCKETS, WORKQUEUE_BUCKETS, ControllerMetrics
from tests.support.clock import FakeClock

DEADLINE = 5.0


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(100.0)


def sample(registry: CollectorRegistry, metric: str, /, **labels: str) -> float | None:
    """A sample; a ``workqueue_*`` one by its queue ``name``, which is also its ``controller`` label."""
    if metric.startswith("workqueue_") and "name" in labels:
        labels = {"controller": labels["name"], **labels}
    return registry.get_sample_value(metric, labels)


def test_queue_adds_depth_and_durations(registry: CollectorRegistry, clock: FakeClock) -> None:
    q = WorkQueue("q", metrics=ControllerMetrics(registry, clock=clock))
    q.add("a")
    clock.advance(1.0)
    q.add("b")
    q.add("a")  # deduplicated: not an add
    assert sample(registry, "workqueue_adds_total", name="q") == 2
    assert sample(registry, "workqueue_depth", name="q") == 2

    clock.advance(2.0)
    assert q.get(timeout=0) == ("a", False)  # waited 3 s
    assert sample(registry, "workqueue_depth", name="q") == 1
    assert sample(registry, "workqueue_queue_duration_seconds_count", name="q") == 1
    assert sample(registry, "workqueue_queue_duration_seconds_sum", name="q") == pytest.approx(3.0)
    assert sample(registry, "workqueue_queue_duration_seconds_bucket", name="q", le="1.0") == 0
    assert sample(registry, "workqueue_queue_duration_seconds_bucket", name="q", le="10.0") == 1

    clock.advance(0.5)
    q.done("a")
    assert sample(registry, "workqueue_work_duration_seconds_count", name="q") == 1
    assert sample(registry, "workqueue_work_duration_seconds_sum", name="q") == pytest.approx(0.5)

    assert q.get(timeout=0) == ("b", False)  # waited 2.5 s
    assert sample(registry, "workqueue_queue_duration_seconds_sum", name="q") == pytest.approx(5.5)
    assert sample(registry, "workqueue_depth", name="q") == 0


def test_add_while_processing_counts_once_and_times_from_that_add(registry: CollectorRegistry,
                                                                  clock: FakeClock) -> None:
    q = WorkQueue("q", metrics=ControllerMetrics(registry, clock=clock))
    q.add("a")
    q.get(timeout=0)
    clock.advance(1.0)
    q.add("a")
    q.add("a")
    assert sample(registry, "workqueue_adds_total", name="q") == 2
    assert sample(registry, "workqueue_depth", name="q") == 1  # client-go counts dirty keys
    clock.advance(4.0)
    q.done("a")
    q.get(timeout=0)
    assert sample(registry, "workqueue_queue_duration_seconds_sum", name="q") == pytest.approx(0.0 + 4.0)
    assert sample(registry, "workqueue_depth", name="q") == 0


def test_unfinished_work_and_longest_running_are_computed_when_scraped(
    registry: CollectorRegistry, clock: FakeClock
) -> None:
    q = WorkQueue("q", metrics=ControllerMetrics(registry, clock=clock))
    assert sample(registry, "workqueue_unfinished_work_seconds", name="q") == 0
    assert sample(registry, "workqueue_longest_running_processor_seconds", name="q") == 0
    q.add("a")
    q.add("b")
    q.get(timeout=0)
    clock.advance(3.0)
    q.get(timeout=0)
    clock.advance(1.0)  # a has run 4 s, b 1 s
    assert sample(registry, "workqueue_unfinished_work_seconds", name="q") == pytest.approx(5.0)
    assert sample(registry, "workqueue_longest_running_processor_seconds", name="q") == pytest.approx(4.0)
    clock.advance(1.0)  # no update call in between: the scrape itself computes it
    assert sample(registry, "workqueue_longest_running_processor_seconds", name="q") == pytest.approx(5.0)
    q.done("a")
    q.done("b")
    assert sample(registry, "workqueue_unfinished_work_seconds", name="q") == 0
    assert sample(registry, "workqueue_longest_running_processor_seconds", name="q") == 0


def test_retries_count_every_add_after_and_rate_limited_add(registry: CollectorRegistry) -> None:
    q = RateLimitingQueue(
        "q", rate_limiter=ItemExponentialRateLimiter(base_delay=600.0), metrics=ControllerMetrics(registry)
    )
    q.add_after("a", 0)
    q.add_after("b", 600.0)
    q.add_rate_limited("c")
    assert sample(registry, "workqueue_retries_total", name="q") == 3
    assert sample(registry, "workqueue_adds_total", name="q") == 1  # only "a" is in the queue yet
    q.shutdown()
    q.add_after("d", 0)
    assert sample(registry, "workqueue_retries_total", name="q") == 3


def test_queues_are_labelled_by_name(registry: CollectorRegistry) -> None:
    metrics = ControllerMetrics(registry)
    first, second = WorkQueue("nodes", metrics=metrics), WorkQueue("modules", metrics=metrics)
    first.add("a")
    second.add("a")
    second.add("b")
    assert sample(registry, "workqueue_adds_total", name="nodes") == 1
    assert sample(registry, "workqueue_adds_total", name="modules") == 2
    text = generate_latest(registry).decode()
    assert 'workqueue_unfinished_work_seconds{controller="nodes",name="nodes"} 0.0' in text
    assert 'workqueue_longest_running_processor_seconds{controller="modules",name="modules"} 0.0' in text
    assert "# TYPE workqueue_queue_duration_seconds histogram" in text


def test_buckets_match_upstream() -> None:
    assert WORKQUEUE_BUCKETS[0] == pytest.approx(1e-8) and WORKQUEUE_BUCKETS[-1] == pytest.approx(1e3)
    assert len(WORKQUEUE_BUCKETS) == 12
    assert RECONCILE_BUCKETS[0] == 0.005 and RECONCILE_BUCKETS[-1] == 60 and len(RECONCILE_BUCKETS) == 40


def test_one_set_per_registry_and_registries_are_independent() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    WorkQueue("q", metrics=ControllerMetrics(first)).add("a")
    ControllerMetrics(second)
    assert sample(first, "workqueue_adds_total", name="q") == 1
    assert sample(second, "workqueue_adds_total", name="q") is None
    with pytest.raises(ValueError):
        ControllerMetrics(first)  # the same names twice on one registry


def test_controller_series_exist_at_zero_before_any_reconcile(registry: CollectorRegistry) -> None:
    metrics = ControllerMetrics(registry)
    Controller("nodes", RateLimitingQueue("nodes", metrics=metrics), lambda key: None, workers=3, metrics=metrics)
    for result in ("success", "error", "requeue", "requeue_after"):
        assert sample(registry, "controller_runtime_reconcile_total", controller="nodes", result=result) == 0
    assert sample(registry, "controller_runtime_reconcile_errors_total", controller="nodes") == 0
    assert sample(registry, "controller_runtime_terminal_reconcile_errors_total", controller="nodes") == 0
    assert sample(registry, "controller_runtime_active_workers", controller="nodes") == 0
    assert sample(registry, "controller_runtime_max_concurrent_reconciles", controller="nodes") == 3


def test_reconcile_results_errors_and_time(registry: CollectorRegistry) -> None:
    metrics = ControllerMetrics(registry)
    queue = RateLimitingQueue("mods", rate_limiter=ItemExponentialRateLimiter(base_delay=600.0), metrics=metrics)

    def reconcile(key: Hashable) -> Result | None:
        if key == "error":
            raise RuntimeError("boom")
        if key == "terminal":
            raise TerminalError("bad spec")
        if key == "later":
            return Result(requeue_after=600.0)
        if key == "again":
            return Result(requeue=True)
        return None

    controller = Controller("mods", queue, reconcile, workers=2, metrics=metrics)
    for key in ("ok-1", "ok-2", "error", "terminal", "later", "again"):
        queue.add(key)
    controller.start()
    assert controller.stop(drain=True, timeout=DEADLINE)  # drains the six keys, then joins

    def total(result: str) -> float | None:
        return sample(registry, "controller_runtime_reconcile_total", controller="mods", result=result)

    assert [total(r) for r in ("success", "error", "requeue", "requeue_after")] == [2, 2, 1, 1]
    assert sample(registry, "controller_runtime_reconcile_errors_total", controller="mods") == 2
    assert sample(registry, "controller_runtime_terminal_reconcile_errors_total", controller="mods") == 1
    assert sample(registry, "controller_runtime_reconcile_time_seconds_count", controller="mods") == 6
    assert sample(registry, "controller_runtime_active_workers", controller="mods") == 0
    assert sample(registry, "workqueue_adds_total", name="mods") == 6
    assert sample(registry, "workqueue_work_duration_seconds_count", name="mods") == 6


def test_active_workers_while_reconciling(registry: CollectorRegistry, clock: FakeClock) -> None:
    metrics = ControllerMetrics(registry)
    entered = threading.Event()
    release = threading.Event()

    def reconcile(key: Hashable) -> None:
        entered.set()
        assert release.wait(DEADLINE)
        clock.advance(0.25)

    queue = RateLimitingQueue("q", metrics=metrics)
    controller = Controller("c", queue, reconcile, workers=2, metrics=metrics, clock=clock)
    controller.start()
    try:
        queue.add("a")
        assert entered.wait(DEADLINE)
        assert sample(registry, "controller_runtime_active_workers", controller="c") == 1
        release.set()
    finally:
        release.set()
        assert controller.stop(drain=True, timeout=DEADLINE)
    assert sample(registry, "controller_runtime_active_workers", controller="c") == 0
    assert sample(registry, "controller_runtime_reconcile_time_seconds_sum", controller="c") == pytest.approx(0.25)
    assert sample(registry, "controller_runtime_reconcile_time_seconds_bucket", controller="c", le="0.25") == 1
    assert sample(registry, "controller_runtime_reconcile_time_seconds_bucket", controller="c", le="0.2") == 0


def test_requeues_while_running_count_as_retries(registry: CollectorRegistry) -> None:
    metrics = ControllerMetrics(registry)
    queue = RateLimitingQueue("q", rate_limiter=ItemExponentialRateLimiter(base_delay=600.0), metrics=metrics)
    handled = threading.Event()

    def reconcile(key: Hashable) -> None:
        if key == "fail":
            raise RuntimeError("boom")
        handled.set()

    controller = Controller("c", queue, reconcile, workers=1, metrics=metrics)
    controller.start()
    queue.add("fail")
    queue.add("next")  # FIFO with one worker: "fail" was requeued before this one ran
    assert handled.wait(DEADLINE)
    assert controller.stop(drain=True, timeout=DEADLINE)
    assert sample(registry, "workqueue_retries_total", name="q") == 1
    assert sample(registry, "controller_runtime_reconcile_total", controller="c", result="error") == 1


def test_no_metrics_object_records_nothing_anywhere() -> None:
    q = RateLimitingQueue("q-without-metrics")
    q.add("a")
    q.add_after("b", 0)
    assert q.get(timeout=0) == ("a", False)
    q.done("a")
    # Nothing falls back to prometheus_client's process-wide default registry.
    assert REGISTRY.get_sample_value("workqueue_adds_total", {"name": "q-without-metrics"}) is None
    assert REGISTRY.get_sample_value("workqueue_depth", {"name": "q-without-metrics"}) is None


def test_no_created_series_and_queues_labelled_like_controller_runtime(registry: CollectorRegistry) -> None:
    metrics = ControllerMetrics(registry)
    queue = RateLimitingQueue("module", metrics=metrics)
    Controller("module", queue, lambda key: None, workers=2, metrics=metrics)
    queue.add("ns/m")
    text = generate_latest(registry).decode()
    assert 'workqueue_adds_total{controller="module",name="module"} 1.0' in text
    assert 'controller_runtime_max_concurrent_reconciles{controller="module"} 2.0' in text
    assert "_created" not in text
