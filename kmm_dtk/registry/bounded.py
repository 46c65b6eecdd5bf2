"""A mapping that keeps at most ``max_entries`` entries, the least recently used going first.

For the caches keyed by what tenants write (image names, registry hosts, repositories, namespaces):
a Module can name any number of them, and a long-running operator must not keep every one it ever
saw. Not thread-safe: each owner already holds a lock around its cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None when absent."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V, stale: Callable[[K, V], bool] | None = None) -> list[tuple[K, V]]:
        """Store ``key`` as the most recently used. When that makes one too many, the entries ``stale``
        says are worthless (expired) are dropped first, then the least recently used; the entries
        dropped are returned (an owner may have to close them)."""
        self._items[key] = value
        self._items.move_to_end(key)
        dropped: list[tuple[K, V]] = []
        if len(self._items) > self.max_entries and stale is not None:
            dropped = self.drop(lambda k, v: k != key and stale(k, v))
        while len(self._items) > self.max_entries:
            dropped.append(self._items.popitem(last=False))
        return dropped

    def pop(self, key: K) -> V | None:
        return self._items.pop(key, None)

    def drop(self, predicate: Callable[[K, V], bool]) -> list[tuple[K, V]]:
        """Remove every entry ``predicate`` selects; the entries removed."""
        doomed = [(k, v) for k, v in self._items.items() if predicate(k, v)]
        for key, _ in doomed:
            del self._items[key]
        return doomed

    def clear(self) -> None:
        self._items.clear()

    def keys(self) -> list[K]:
        """Least recently used first."""
        return list(self._items)

    def values(self) -> list[V]:
        return list(self._items.values())

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._items))
