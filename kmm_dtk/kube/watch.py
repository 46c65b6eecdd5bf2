"""What triggers a controller: informers whose events become keys in its queue.

After controller-runtime's ``Watches(source, handler, predicates)``: each event is mapped to the
keys it concerns and added to the queue, and an update counts only when ``update`` says it
matters. The handler does nothing else (no cache clearing, no reading of state a reconciler
owns): the reconcile that takes the key does the work, with retries, metrics and the write fence.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

from kmm_dtk.kube.informer import EventHandler, Informer
from kmm_dtk.kube.workqueue import WorkQueue

T = TypeVar("T")

KeysOf = Callable[[T], Iterable[Hashable]]
Changed = Callable[[T, T], bool]


def enqueue_on(informers: Iterable[Informer[T]], queue: WorkQueue, keys: KeysOf[T], *,
               update: Changed[T] | None = None, delete: bool = True) -> None:
    """Add ``keys(obj)`` to ``queue`` on every add, on updates that ``update`` accepts (all of them
    when it is None) and, with ``delete``, on deletes."""

    def add(obj: T) -> None:
        for key in keys(obj):
            queue.add(key)

    def updated(old: T, new: T) -> None:
        if update is None or update(old, new):
            add(new)

    handler: EventHandler[T] = EventHandler(on_add=add, on_update=updated, on_delete=add if delete else None)
    for informer in informers:
        informer.add_handler(handler)


def constant(key: Hashable) -> KeysOf[object]:
    """Every event means the same key: for a reconciler that looks at the whole resource."""
    return lambda _obj: (key,)
