"""A work queue with client-go's ``util/workqueue`` semantics, in three small layers.

``WorkQueue``
    A FIFO of *keys*, not events: a key already waiting is not queued twice, and a key being
    processed is only marked dirty; ``done`` queues it again. So one key is never processed by
    two workers at once, and a change that arrives during processing is never lost.
``DelayingQueue``
    Adds ``add_after``: keys wait in a heap by ready time, moved to the FIFO by one waiter thread.
    A key waiting twice keeps the earlier ready time.
``RateLimitingQueue``
    Adds ``add_rate_limited`` / ``forget`` / ``num_requeues`` on top of a rate limiter.

All layers share one lock, so every state change is atomic with respect to the others.
Shutting down (as in client-go): ``add`` and ``add_after`` become no-ops, keys still waiting for
their delay are dropped, ``get`` keeps handing out keys already queued and then returns
``(None, True)``; ``done`` still re-queues a dirty key so nothing handed out is lost mid-drain.

Delays are measured on an injectable clock (``time.monotonic`` by default); the waiter sleeps on a
``threading.Condition`` for the seconds that clock says are left. A clock that jumps (a test's
fake one) calls ``release_due`` to hand out what has become due at once. ``get`` and
``shutdown_with_drain`` timeouts are real time. The metrics handle has its own injectable clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING

from kmm_dtk.kube.ratelimit import Clock, RateLimiter, default_controller_rate_limiter

if TYPE_CHECKING:
    from kmm_dtk.observability.metrics import ControllerMetrics, QueueMetrics

log = logging.getLogger(__name__)


class WorkQueue:
    """Deduplicating FIFO of hashable keys with processing/dirty tracking (client-go ``Type``)."""

    def __init__(self, name: str = "", *, metrics: ControllerMetrics | None = None) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._has_items = threading.Condition(self._lock)  # get() waits here
        self._idle = threading.Condition(self._lock)  # shutdown_with_drain() waits here
        self._queue: deque[Hashable] = deque()  # order of work; every key here is dirty, not processing
        self._dirty: set[Hashable] = set()  # keys that need processing
        self._processing: set[Hashable] = set()  # keys handed out by get() and not yet done()
        self._shutting_down = False
        self._drain = False
        self._metrics: QueueMetrics | None = metrics.queue(name) if metrics is not None else None

    # -- producers -------------------------------------------------------------------------

    def add(self, key: Hashable) -> None:
        """Mark ``key`` as needing processing; a no-op when shutting down or already queued."""
        if key is None:
            raise ValueError("None is not a valid key (get() returns it on timeout/shutdown)")
        with self._lock:
            self._add_locked(key)

    def _add_locked(self, key: Hashable) -> None:
        if self._shutting_down or key in self._dirty:
            return
        if self._metrics is not None:
            self._metrics.add(key)
        self._dirty.add(key)
        if key in self._processing:
            return  # done() will queue it again
        self._queue.append(key)
        self._has_items.notify()

    # -- consumers -------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> tuple[Hashable | None, bool]:
        """Block until a key is available; return ``(key, False)``.

        Returns ``(None, True)`` once the queue is shut down and empty (the worker should exit),
        and ``(None, False)`` if ``timeout`` seconds pass first. The caller must call
        ``done(key)`` for every key it gets.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._queue and not self._shutting_down:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None, False
                self._has_items.wait(remaining)
            if not self._queue:
                return None, True
            key = self._queue.popleft()
            if self._metrics is not None:
                self._metrics.get(key)
            self._processing.add(key)
            self._dirty.discard(key)
            return key, False

    def done(self, key: Hashable) -> None:
        """Finish processing ``key``; queue it again if it was added meanwhile."""
        with self._lock:
            if key not in self._processing:
                log.warning("done() for a key that is not being processed", extra={"queue": self.name, "key": key})
                return
            if self._metrics is not None:
                self._metrics.done(key)
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._has_items.notify()
            elif not self._processing:
                self._idle.notify_all()

    # -- introspection ---------------------------------------------------------------------

    def len(self) -> int:
        """Keys waiting to be handed out (not those in process or waiting for a delay)."""
        with self._lock:
            return len(self._queue)

    def __len__(self) -> int:
        return self.len()

    def num_processing(self) -> int:
        with self._lock:
            return len(self._processing)

    def shutting_down(self) -> bool:
        with self._lock:
            return self._shutting_down

    # -- shutdown --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Ignore new keys and wake every waiter; also releases a pending ``shutdown_with_drain``."""
        with self._lock:
            self._drain = False
            self._shutdown_locked()

    def shutdown_with_drain(self, timeout: float | None = None) -> bool:
        """Shut down, then wait until no key is being processed (every ``get`` got its ``done``).

        Returns False if ``timeout`` passed first, or if ``shutdown()`` was called meanwhile
        while keys were still in process.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._drain = True
            self._shutdown_locked()
            while self._processing and self._drain:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._idle.wait(remaining)
            return not self._processing

    def _shutdown_locked(self) -> None:
        self._shutting_down = True
        self._has_items.notify_all()
        self._idle.notify_all()


class DelayingQueue(WorkQueue):
    """A ``WorkQueue`` with ``add_after``: a heap of (ready time, key) and one waiter thread.

    The heap is lazily cleaned: making a key's time earlier pushes a new entry and the old one is
    skipped when it surfaces (``_waiting`` holds each key's live entry).
    """

    def __init__(self, name: str = "", *, metrics: ControllerMetrics | None = None,
                 clock: Clock = time.monotonic) -> None:
        super().__init__(name, metrics=metrics)
        self._clock = clock
        self._wake_waiter = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Hashable]] = []  # (ready_at, seq, key): seq breaks ties, keys need no order
        self._waiting: dict[Hashable, tuple[float, int]] = {}  # key -> (ready_at, seq) of its live entry
        self._seq = itertools.count()
        self._waiter: threading.Thread | None = None

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add ``key`` once ``delay`` seconds have passed (at once if ``delay <= 0``).

        If the key is already waiting, the earlier of the two ready times wins.
        """
        if key is None:
            raise ValueError("None is not a valid key (get() returns it on timeout/shutdown)")
        with self._lock:
            if self._shutting_down:
                return
            if self._metrics is not None:
                self._metrics.retry()
            if delay <= 0:
                self._add_locked(key)
                return
            ready_at = self._clock() + delay
            current = self._waiting.get(key)
            if current is not None and current[0] <= ready_at:
                return
            seq = next(self._seq)
            self._waiting[key] = (ready_at, seq)
            heapq.heappush(self._heap, (ready_at, seq, key))
            if self._waiter is None:
                self._waiter = threading.Thread(target=self._wait_loop, name=f"workqueue-{self.name}-delay",
                                                daemon=True)
                self._waiter.start()
            elif self._heap[0][1] == seq:
                self._wake_waiter.notify()  # the new key is due before whatever the waiter sleeps for

    def num_waiting(self) -> int:
        """Keys waiting for their delay to pass."""
        with self._lock:
            return len(self._waiting)

    def release_due(self) -> None:
        """Queue the keys that are due by the clock now, in this thread, rather than when the waiter
        next wakes. Only a clock that jumps needs it (a test's fake clock, after stepping it): on
        ``time.monotonic`` the waiter wakes on time by itself."""
        with self._lock:
            if self._shutting_down:
                return
            self._release_due_locked(self._clock())
            self._wake_waiter.notify()  # the next ready time may have changed: let the waiter look again

    def _release_due_locked(self, now: float) -> float | None:
        """Move every key ready by ``now`` to the FIFO; the ready time of the next one still waiting."""
        while self._heap:
            ready_at, seq, key = self._heap[0]
            live = self._waiting.get(key)
            if live is None or live[1] != seq:
                heapq.heappop(self._heap)  # superseded by an earlier time, or already added
                continue
            if ready_at > now:
                return ready_at
            heapq.heappop(self._heap)
            del self._waiting[key]
            try:
                self._add_locked(key)
            except Exception:  # e.g. a failing metrics backend: never kill the only waiter
                log.exception("Adding a delayed key failed", extra={"queue": self.name, "key": key})
        return None

    def _wait_loop(self) -> None:
        with self._lock:
            while not self._shutting_down:
                now = self._clock()
                next_at = self._release_due_locked(now)
                self._wake_waiter.wait(None if next_at is None else next_at - now)
            self._heap.clear()
            self._waiting.clear()

    def _shutdown_locked(self) -> None:
        super()._shutdown_locked()
        self._wake_waiter.notify_all()


class RateLimitingQueue(DelayingQueue):
    """A ``DelayingQueue`` whose retries are spaced by a rate limiter (default: client-go's, on the
    queue's clock)."""

    def __init__(
        self,
        name: str = "",
        rate_limiter: RateLimiter | None = None,
        *,
        metrics: ControllerMetrics | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(name, metrics=metrics, clock=clock)
        self.rate_limiter: RateLimiter = (rate_limiter if rate_limiter is not None
                                          else default_controller_rate_limiter(clock))

    def add_rate_limited(self, key: Hashable) -> None:
        """Add ``key`` after the delay the rate limiter gives it (counting one more failure)."""
        if self.shutting_down():
            return  # do not spend a token or a failure on a key that would be dropped anyway
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: Hashable) -> None:
        """The key succeeded: reset its failure count (it does not remove a queued key)."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: Hashable) -> int:
        return self.rate_limiter.num_requeues(key)
