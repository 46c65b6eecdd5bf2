"""A thread-safe cache of objects by key, with secondary indexes (client-go's ThreadSafeStore).

Objects are immutable (frozen dicts or frozen structs), so reads hand out the cached instances
themselves: no copy per read, and no reader can change what another sees.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

IndexFunc = Callable[[T], Iterable[str]]


class Store(Generic[T]):
    def __init__(self, indexers: dict[str, IndexFunc[T]] | None = None) -> None:
        self._lock = threading.RLock()
        self._items: dict[str, T] = {}
        self._indexers: dict[str, IndexFunc[T]] = dict(indexers or {})
        self._indexes: dict[str, dict[str, set[str]]] = {name: {} for name in self._indexers}

    def add_indexer(self, name: str, func: IndexFunc[T]) -> None:
        with self._lock:
            self._indexers[name] = func
            self._indexes[name] = {}
            for key, obj in self._items.items():
                self._index_locked(name, key, obj)

    # -- writes (the informer's thread) ---------------------------------------------------------

    def put(self, key: str, obj: T) -> T | None:
        """Insert or replace; returns the previous object."""
        with self._lock:
            old = self._items.get(key)
            if old is not None:
                self._unindex_locked(key, old)
            self._items[key] = obj
            for name in self._indexers:
                self._index_locked(name, key, obj)
            return old

    def delete(self, key: str) -> T | None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._unindex_locked(key, old)
            return old

    # -- reads (any thread) ------------------------------------------------------------------------

    def get(self, key: str) -> T | None:
        with self._lock:
            return self._items.get(key)

    def list(self) -> list[T]:
        with self._lock:
            return list(self._items.values())

    def keys(self) -> builtins.list[str]:
        with self._lock:
            return list(self._items)

    def items(self) -> builtins.list[tuple[str, T]]:
        with self._lock:
            return list(self._items.items())

    def by_index(self, name: str, value: str) -> builtins.list[T]:
        with self._lock:
            return [self._items[k] for k in self._indexes[name].get(value, ())]

    def any_by_index(self, name: str, value: str) -> T | None:
        """One object of the index value (which one is unspecified), without listing them all."""
        with self._lock:
            for key in self._indexes[name].get(value, ()):
                return self._items[key]
            return None

    def index_values(self, name: str) -> builtins.list[str]:
        with self._lock:
            return [v for v, keys in self._indexes[name].items() if keys]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    # -- internals ---------------------------------------------------------------------------------

    def _index_locked(self, name: str, key: str, obj: T) -> None:
        index = self._indexes[name]
        for value in self._indexers[name](obj):
            index.setdefault(value, set()).add(key)

    def _unindex_locked(self, key: str, obj: T) -> None:
        for name, func in self._indexers.items():
            index = self._indexes[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
