"""Bounded fan-out of one reconcile's independent steps (one Build per kernel).

A new Module on a cluster with 20 kernels needs 20 Builds. Created one after another, the
reconcile takes 20 round trips and the API server idles between them; created side by side it
takes about one. The bound is shared by every reconcile of the process, so the API server sees at
most ``limit`` of these requests at once however many workers there are (``--max-concurrent-writes``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class FanOut:
    """``map`` runs ``fn`` over items on a shared pool and returns the results in order. Every step
    runs to its end even when one fails (nothing is left half-done behind the reconcile), then the
    first failure is raised, so the reconcile is retried like a sequential one would be."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"fan-out limit must be at least 1, not {limit}")
        self.limit = limit
        self._pool = ThreadPoolExecutor(limit, thread_name_prefix="write") if limit > 1 else None

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if self._pool is None or len(items) <= 1:
            return [fn(item) for item in items]
        futures: list[Future[R]] = [self._pool.submit(fn, item) for item in items]
        results: list[R] = []
        failure: BaseException | None = None
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as err:  # noqa: BLE001 - re-raised below, after every step ended
                failure = failure or err
        if failure is not None:
            raise failure
        return results

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
