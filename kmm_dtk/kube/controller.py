"""The reconcile loop: N worker threads that take keys from a rate-limiting queue.

After controller-runtime's ``pkg/internal/controller``: a key is reconciled by one worker at a
time (the queue guarantees it); an exception requeues the key with backoff; success forgets its
failures; ``Result(requeue_after=d)`` forgets and comes back after ``d``; a ``TerminalError`` is
logged and not retried; a write refused by the fence (this replica no longer leads) abandons
the reconcile without a retry. Nothing a reconcile raises (``Exception``) stops a worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from kmm_dtk.kube.client import FencedWrite
from kmm_dtk.kube.workqueue import RateLimitingQueue

if TYPE_CHECKING:
    from kmm_dtk.observability.metrics import ControllerMetrics, ReconcileMetrics

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class Result:
    """What a reconcile asks for next. ``Result()`` (or returning None) means done.

    ``requeue_after``: seconds until the key is reconciled again (its failures are forgotten).
    ``requeue``: come back after the rate limiter's backoff, without counting as an error.
    """

    requeue_after: float | None = None
    requeue: bool = False


class TerminalError(Exception):
    """A reconcile failure that retrying cannot fix (e.g. an invalid spec): logged, not requeued.

    The key is requeued only when something adds it again (a watch event).
    """


K = TypeVar("K", bound=Hashable)
Reconcile = Callable[[K], "Result | None"]


class Controller(Generic[K]):
    """Runs ``reconcile`` on keys from ``queue`` in ``workers`` threads."""

    def __init__(
        self,
        name: str,
        queue: RateLimitingQueue,
        reconcile: Reconcile[K],
        *,
        workers: int = 1,
        metrics: ControllerMetrics | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.name = name
        self.queue = queue
        self._reconcile = reconcile
        self._workers = workers
        self._clock = clock
        self._metrics: ReconcileMetrics | None = metrics.controller(name, workers) if metrics is not None else None
        self._threads: list[threading.Thread] = []
        self._abandon = threading.Event()  # set by stop(drain=False): skip keys still queued
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker threads (once)."""
        with self._lock:
            if self._threads:
                raise RuntimeError(f"controller {self.name} already started")
            self._threads = [
                threading.Thread(target=self._run_worker, name=f"{self.name}-worker-{i}", daemon=True)
                for i in range(self._workers)
            ]
            for thread in self._threads:
                thread.start()
        log.info("Starting workers", extra={"controller": self.name, "workers": self._workers})

    def stop_taking_keys(self) -> None:
        """The first half of ``stop(drain=False)``, at once: workers finish their current key only.
        A manager calls it on every controller before waiting for any (``stop``)."""
        self._stopped.set()
        self._abandon.set()
        self.queue.shutdown()

    def stop(self, drain: bool = True, timeout: float | None = 30.0) -> bool:
        """Shut the queue down and join the workers; True if every worker exited in time.

        ``drain=True`` lets the workers finish every key already queued or in process (keys
        waiting for a delay are dropped); ``drain=False`` lets each finish only its current key.
        If ``timeout`` passes first, workers are told to stop after their current key and are
        left running as daemon threads.
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        self._stopped.set()
        if drain:
            self.queue.shutdown_with_drain(timeout=remaining())
        else:
            self._abandon.set()
            self.queue.shutdown()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(remaining())
        finished = not any(thread.is_alive() for thread in threads)
        if not finished:
            self._abandon.set()
            self.queue.shutdown()  # releases a drain still waiting
            log.warning("Workers did not finish in time", extra={"controller": self.name, "timeout": timeout})
        else:
            log.info("All workers finished", extra={"controller": self.name})
        return finished

    def alive(self) -> bool:
        """True while started, not stopped, and every worker thread is running (for /healthz)."""
        with self._lock:
            threads = list(self._threads)
        return bool(threads) and not self._stopped.is_set() and all(thread.is_alive() for thread in threads)

    # -- workers ---------------------------------------------------------------------------

    def _run_worker(self) -> None:
        while True:
            key, shutdown = self.queue.get()
            if shutdown:
                return
            try:
                if not self._abandon.is_set():
                    self._process(key)
            except Exception:  # only reached if logging/metrics/queue fail; keep the worker alive
                log.exception("Worker error", extra={"controller": self.name, "key": key})
            except BaseException:  # SystemExit and the like end the thread; alive() turns False
                log.critical("Worker exiting", exc_info=True, extra={"controller": self.name, "key": key})
                raise
            finally:
                self.queue.done(key)

    def _process(self, key: Hashable) -> None:
        metrics = self._metrics
        if metrics is not None:
            metrics.worker_busy()
        started = self._clock()
        outcome = "error"  # if a BaseException escapes the reconcile
        try:
            outcome = self._reconcile_one(key)
        finally:
            if metrics is not None:
                metrics.observe(outcome, self._clock() - started)
                metrics.worker_idle()

    def _reconcile_one(self, key: Hashable) -> str:
        """Run the reconcile, act on its outcome, and return the metrics result label."""
        fields = {"controller": self.name, "key": key}
        try:
            result = self._reconcile(cast(K, key))  # the queue holds what the watches put in: K
        except FencedWrite as err:
            # This replica stopped leading (or is stopping) mid-reconcile: the leader does the work.
            log.info("Reconcile abandoned: writes are fenced", extra={**fields, "error": str(err)})
            return "error"
        except TerminalError:
            self.queue.forget(key)
            if self._metrics is not None:
                self._metrics.error(terminal=True)
            log.error("Reconciler error (terminal, not requeued)", exc_info=True, extra=fields)
            return "error"
        except Exception:
            self.queue.add_rate_limited(key)
            if self._metrics is not None:
                self._metrics.error()
            log.error("Reconciler error", exc_info=True, extra={**fields, "requeues": self.queue.num_requeues(key)})
            return "error"
        if result is not None and result.requeue_after is not None and result.requeue_after > 0:
            self.queue.forget(key)
            self.queue.add_after(key, result.requeue_after)
            log.debug("Reconcile done, requeueing after", extra={**fields, "requeue_after": result.requeue_after})
            return "requeue_after"
        if result is not None and result.requeue:
            self.queue.add_rate_limited(key)
            log.debug("Reconcile done, requeueing", extra=fields)
            return "requeue"
        self.queue.forget(key)
        log.debug("Reconcile successful", extra=fields)
        return "success"
