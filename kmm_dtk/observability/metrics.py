"""Prometheus metrics of the work queues and the reconcile loops.

Names, labels, help texts and buckets follow client-go's ``util/workqueue`` metrics (as exported by
component-base / controller-runtime) and controller-runtime's ``pkg/internal/controller/metrics``,
so existing dashboards and alerts work unchanged.

Every ``workqueue_*`` series carries ``controller`` and ``name``, both the controller's name (the
operator names each queue after its controller), as controller-runtime labels them. No ``*_created``
series are exported (``disable_created_metrics``): controller-runtime has none, and they double the
series of every counter and histogram.

Nothing here is a module-level global: ``ControllerMetrics`` creates its collectors on the
``CollectorRegistry`` it is given (the operator makes one per process, each test its own). Code
that is instrumented asks it for a small per-name handle (``queue(name)``, ``controller(name)``)
and calls plain methods on it. Informer and leader-election metrics belong in their own classes
(their own modules), registered on the same registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric

Clock = Callable[[], float]

# controller-runtime: prometheus.ExponentialBuckets(10e-9, 10, 12) = 1e-8 s .. 1e3 s.
WORKQUEUE_BUCKETS: tuple[float, ...] = tuple(float(f"1e{exp}") for exp in range(-8, 4))
# controller-runtime's controller_runtime_reconcile_time_seconds buckets.
RECONCILE_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60,
)  # fmt: skip

RESULT_SUCCESS = "success"
RESULT_ERROR = "error"
RESULT_REQUEUE = "requeue"
RESULT_REQUEUE_AFTER = "requeue_after"
RESULTS = (RESULT_SUCCESS, RESULT_ERROR, RESULT_REQUEUE, RESULT_REQUEUE_AFTER)
QUEUE_LABELS = ["controller", "name"]  # controller-runtime's: both the controller's name

_UNFINISHED_HELP = (
    "How many seconds of work has been done that is in progress and hasn't been observed by "
    "work_duration. Large values indicate stuck threads. One can deduce the number of stuck "
    "threads by observing the rate at which this increases."
)
_LONGEST_HELP = "How many seconds has the longest running processor for workqueue been running."


class QueueMetrics:
    """The metrics of one named work queue. The queue calls these under its own lock.

    ``add`` is called only when a key becomes dirty (a deduplicated add is not counted), ``get``
    when a worker takes it, ``done`` when the worker finishes, ``retry`` for each ``add_after``.
    Like client-go, a key's queue time runs from its first add since it was last taken.
    """

    def __init__(self, parent: ControllerMetrics, name: str, clock: Clock) -> None:
        self.name = name
        self._clock = clock
        self._depth = parent.depth.labels(name, name)
        self._adds = parent.adds.labels(name, name)
        self._queue_duration = parent.queue_duration.labels(name, name)
        self._work_duration = parent.work_duration.labels(name, name)
        self._retries = parent.retries.labels(name, name)
        self._lock = threading.Lock()  # the scrape reads _processing_since without the queue's lock
        self._added_at: dict[Hashable, float] = {}
        self._processing_since: dict[Hashable, float] = {}

    def add(self, key: Hashable) -> None:
        self._adds.inc()
        self._depth.inc()
        with self._lock:
            self._added_at.setdefault(key, self._clock())

    def get(self, key: Hashable) -> None:
        self._depth.dec()
        now = self._clock()
        with self._lock:
            added = self._added_at.pop(key, None)
            self._processing_since[key] = now
        if added is not None:
            self._queue_duration.observe(max(0.0, now - added))

    def done(self, key: Hashable) -> None:
        now = self._clock()
        with self._lock:
            started = self._processing_since.pop(key, None)
        if started is not None:
            self._work_duration.observe(max(0.0, now - started))

    def retry(self) -> None:
        self._retries.inc()

    def unfinished(self) -> tuple[float, float]:
        """(total seconds of in-progress work, seconds of the longest-running item), as of now."""
        now = self._clock()
        with self._lock:
            ages = [max(0.0, now - started) for started in self._processing_since.values()]
        return sum(ages), max(ages, default=0.0)


class ReconcileMetrics:
    """The metrics of one named controller's reconcile loop."""

    def __init__(self, parent: ControllerMetrics, name: str, max_concurrent_reconciles: int) -> None:
        self.name = name
        # Pre-create every series at 0, as controller-runtime does, so rate() works from the start.
        self._totals = {result: parent.reconcile_total.labels(name, result) for result in RESULTS}
        self._errors = parent.reconcile_errors.labels(name)
        self._terminal_errors = parent.terminal_reconcile_errors.labels(name)
        self._time = parent.reconcile_time.labels(name)
        self._active = parent.active_workers.labels(name)
        parent.max_concurrent_reconciles.labels(name).set(max_concurrent_reconciles)
        self._active.set(0)

    def worker_busy(self) -> None:
        self._active.inc()

    def worker_idle(self) -> None:
        self._active.dec()

    def observe(self, result: str, seconds: float) -> None:
        """One finished reconcile: ``result`` is one of ``RESULTS``."""
        self._totals[result].inc()
        self._time.observe(max(0.0, seconds))

    def error(self, terminal: bool = False) -> None:
        """A reconcile error; terminal ones are counted in both error counters, as upstream."""
        self._errors.inc()
        if terminal:
            self._terminal_errors.inc()


class _UnfinishedWorkCollector:
    """Computes ``workqueue_unfinished_work_seconds`` and ``..._longest_running_processor_seconds``
    when scraped.

    client-go refreshes these gauges from a goroutine every 500 ms; computing them at scrape time
    instead needs no thread to start and stop, is never stale, and costs O(items in progress),
    which is at most the number of workers.
    """

    def __init__(self, owner: ControllerMetrics) -> None:
        self._owner = owner

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("workqueue_unfinished_work_seconds", _UNFINISHED_HELP, labels=QUEUE_LABELS)
        yield GaugeMetricFamily("workqueue_longest_running_processor_seconds", _LONGEST_HELP, labels=QUEUE_LABELS)

    def collect(self) -> Iterator[Metric]:
        unfinished = GaugeMetricFamily("workqueue_unfinished_work_seconds", _UNFINISHED_HELP, labels=QUEUE_LABELS)
        longest = GaugeMetricFamily("workqueue_longest_running_processor_seconds", _LONGEST_HELP,
                                    labels=QUEUE_LABELS)
        for queue in self._owner.queues():
            total, oldest = queue.unfinished()
            unfinished.add_metric([queue.name, queue.name], total)
            longest.add_metric([queue.name, queue.name], oldest)
        yield unfinished
        yield longest


class ControllerMetrics:
    """All work-queue and reconcile collectors, registered on ``registry``.

    ``clock`` times queue waits and work durations (inject a fake one in tests). Create one per
    registry: registering the same names twice on one registry raises ``ValueError``.
    """

    def __init__(self, registry: CollectorRegistry, clock: Clock = time.monotonic) -> None:
        disable_created_metrics()  # process-wide: no *_created series, as controller-runtime exports none
        self._clock = clock
        self._lock = threading.Lock()
        self._queues: dict[str, QueueMetrics] = {}
        self._controllers: dict[str, ReconcileMetrics] = {}
        reg = registry

        self.depth = Gauge("workqueue_depth", "Current depth of workqueue", QUEUE_LABELS, registry=reg)
        self.adds = Counter("workqueue_adds_total", "Total number of adds handled by workqueue", QUEUE_LABELS,
                            registry=reg)
        self.queue_duration = Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            QUEUE_LABELS,
            buckets=WORKQUEUE_BUCKETS,
            registry=reg,
        )
        self.work_duration = Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            QUEUE_LABELS,
            buckets=WORKQUEUE_BUCKETS,
            registry=reg,
        )
        self.retries = Counter(
            "workqueue_retries_total", "Total number of retries handled by workqueue", QUEUE_LABELS, registry=reg
        )
        reg.register(_UnfinishedWorkCollector(self))

        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            ["controller", "result"],
            registry=reg,
        )
        self.reconcile_errors = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            ["controller"],
            registry=reg,
        )
        self.terminal_reconcile_errors = Counter(
            "controller_runtime_terminal_reconcile_errors_total",
            "Total number of terminal reconciliation errors per controller",
            ["controller"],
            registry=reg,
        )
        self.reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"],
            buckets=RECONCILE_BUCKETS,
            registry=reg,
        )
        self.active_workers = Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            ["controller"],
            registry=reg,
        )
        self.max_concurrent_reconciles = Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            ["controller"],
            registry=reg,
        )

    def queue(self, name: str) -> QueueMetrics:
        """The handle for the queue ``name``; queue names must be unique within a process
        (two queues with one name would share, and mix up, their in-progress bookkeeping)."""
        with self._lock:
            handle = self._queues.get(name)
            if handle is None:
                handle = self._queues[name] = QueueMetrics(self, name, self._clock)
            return handle

    def queues(self) -> list[QueueMetrics]:
        with self._lock:
            return list(self._queues.values())

    def controller(self, name: str, max_concurrent_reconciles: int = 1) -> ReconcileMetrics:
        """The handle for the controller ``name``; sets its max_concurrent_reconciles gauge."""
        with self._lock:
            handle = self._controllers.get(name)
            if handle is None:
                handle = self._controllers[name] = ReconcileMetrics(self, name, max_concurrent_reconciles)
            else:
                self.max_concurrent_reconciles.labels(name).set(max_concurrent_reconciles)
            return handle
