"""Rate limiters for the work queue, after client-go's ``util/workqueue/default_rate_limiters.go``.

A limiter answers "how long should this key wait before it is retried?" (``when``), remembers
failures per key until told to ``forget`` it, and reports how often a key was requeued
(``num_requeues``). The controller's default combines a per-key exponential backoff (one
failing object slows down only itself) with an overall token bucket (a storm of failures across
many keys cannot hammer the apiserver).

All limiters are thread-safe; time comes from an injected clock so tests need not sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

Clock = Callable[[], float]

DEFAULT_BASE_DELAY = 0.005  # seconds: client-go's 5 ms
DEFAULT_MAX_DELAY = 1000.0  # seconds: client-go's 1000 s
DEFAULT_QPS = 10.0
DEFAULT_BURST = 100


class RateLimiter(Protocol):
    """What the rate-limiting queue needs from a limiter."""

    def when(self, item: Hashable) -> float:
        """Seconds the item should wait before being retried; records a failure for it."""
        ...

    def forget(self, item: Hashable) -> None:
        """Stop tracking the item (it succeeded): its backoff starts again from the base."""
        ...

    def num_requeues(self, item: Hashable) -> int:
        """How many failures are recorded for the item."""
        ...


class ItemExponentialRateLimiter:
    """Per-key backoff: ``base * 2**failures``, capped at ``max_delay``.

    The first ``when`` returns ``base`` (5 ms), then 10 ms, 20 ms, ... up to 1000 s. No clock is
    needed: the delay depends only on the failure count.
    """

    def __init__(self, base_delay: float = DEFAULT_BASE_DELAY, max_delay: float = DEFAULT_MAX_DELAY) -> None:
        if base_delay < 0 or max_delay < 0:
            raise ValueError("delays must be >= 0")
        self._base = base_delay
        self._max = max_delay
        self._failures: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def when(self, item: Hashable) -> float:
        with self._lock:
            exp = self._failures.get(item, 0)
            self._failures[item] = exp + 1
        # Clamp the exponent: 2.0**1024 overflows a float after a very long outage.
        return min(self._base * 2.0 ** min(exp, 1023), self._max)

    def forget(self, item: Hashable) -> None:
        with self._lock:
            self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        with self._lock:
            return self._failures.get(item, 0)


class BucketRateLimiter:
    """An overall token bucket with golang.org/x/time/rate ``Reserve`` semantics.

    The bucket starts full (``burst`` tokens) and refills at ``qps`` tokens a second. Every
    ``when`` reserves one token even if none is available yet: the token count goes negative
    and the returned delay is the time until that token exists. So with 10 qps and burst 100,
    100 calls return 0, the 101st returns 0.1 s, the 102nd 0.2 s, and so on. It tracks no keys,
    so ``forget`` does nothing and ``num_requeues`` is always 0.
    """

    def __init__(self, qps: float = DEFAULT_QPS, burst: int = DEFAULT_BURST, clock: Clock = time.monotonic) -> None:
        if qps <= 0:
            raise ValueError("qps must be > 0")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self._qps = float(qps)
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def when(self, item: Hashable) -> float:
        with self._lock:
            now = self._clock()
            if now > self._last:
                self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
                self._last = now
            self._tokens -= 1.0
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self._qps

    def forget(self, item: Hashable) -> None:
        return None

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The worst (longest) answer of several limiters; every limiter sees every call.

    Every limiter's ``when`` is called, so the bucket spends a token even when the per-key
    backoff dominates, as in client-go.
    """

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self._limiters: Sequence[RateLimiter] = tuple(limiters)

    def when(self, item: Hashable) -> float:
        return max(limiter.when(item) for limiter in self._limiters)

    def forget(self, item: Hashable) -> None:
        for limiter in self._limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self._limiters)


def default_controller_rate_limiter(clock: Clock = time.monotonic) -> MaxOfRateLimiter:
    """client-go's ``DefaultControllerRateLimiter``: per-key 5 ms..1000 s, overall 10 qps burst 100."""
    return MaxOfRateLimiter(
        ItemExponentialRateLimiter(DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY),
        BucketRateLimiter(DEFAULT_QPS, DEFAULT_BURST, clock=clock),
    )
