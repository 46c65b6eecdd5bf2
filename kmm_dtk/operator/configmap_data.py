"""ConfigMaps as the operator holds them: metadata from informers, data read on demand.

A cluster holds thousands of ConfigMaps (on OpenShift ~3,700 and ~22 MB: CA bundles in every
namespace, injected trusted-CA bundles of ~200 KB) and the operator reads only the Dockerfile
ConfigMaps its Modules and ModuleBuilds name. So the informers cache metadata only
(``METADATA_ONLY``), and the data of a named ConfigMap is read with a GET when a reconcile needs it,
kept by resourceVersion: a reconcile does not GET a ConfigMap that has not changed since the last.

What the reconciler sees is what a whole-object cache gave it: not in the metadata cache (never
created, deleted, or in a namespace not watched) reads as missing, without a request; a GET
answered 404 (deleted since the cache saw it) reads as missing too; any other failure raises
ApiError, so the reconcile fails and is retried with backoff instead of reporting the ConfigMap as
missing. Reads are never fenced, so the reconciler's client serves.

The data kept is bounded: an entry goes when its ConfigMap leaves the metadata cache or changes
(the informer's events), and the least recently read go first beyond ``max_entries`` or
``max_bytes``; a ConfigMap larger than ``max_bytes`` is read each time and not kept.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kmm_dtk.kube.client import ApiError, KubeClient
from kmm_dtk.kube.frozen import EMPTY, FrozenDict, freeze
from kmm_dtk.kube.informer import EventHandler, Informer
from kmm_dtk.operator.caches import Cache
from kmm_dtk.operator.resources import CONFIGMAPS

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 512
DEFAULT_MAX_BYTES = 16 * 2**20  # a ConfigMap holds at most 1 MiB; Dockerfiles are a few KB


@dataclass(frozen=True)
class _Entry:
    resource_version: str
    data: Mapping[str, str]
    size: int


def resource_version(obj: Mapping[str, Any]) -> str:
    found = (obj.get("metadata") or EMPTY).get("resourceVersion")
    return found if isinstance(found, str) else ""


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or EMPTY
    return f"{meta.get('namespace')}/{meta.get('name')}"


def _data_of(configmap: Any) -> tuple[Mapping[str, str], int]:
    """The ``data`` frozen (empty if absent or not a mapping), and its size in characters."""
    data = configmap.get("data") if isinstance(configmap, Mapping) else None
    if not isinstance(data, Mapping) or not data:
        return EMPTY, 0
    frozen: FrozenDict = freeze(dict(data))
    return frozen, sum(len(k) + (len(v) if isinstance(v, str) else 0) for k, v in frozen.items())


class ConfigMapCache(Cache):
    """The ConfigMap informers' metadata cache, plus ``data()``: a named ConfigMap's data, read on demand."""

    def __init__(self, informers: list[Informer[Any]], client: KubeClient, *,
                 max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(informers)
        self.client = client
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently read first
        self._bytes = 0
        self.fetches = 0  # GETs made, for tests and logs
        handler: EventHandler[Any] = EventHandler(on_update=self._changed, on_delete=self._gone)
        for informer in informers:
            informer.add_handler(handler)

    def data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The ConfigMap's ``data`` ({} when it has none), or None when it does not exist.
        Raises ApiError when the API cannot say."""
        key = f"{namespace}/{name}"
        meta = self.get(key)
        if meta is None:
            return None
        current = resource_version(meta)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit.resource_version == current:
                self._entries.move_to_end(key)
                return hit.data
        try:
            configmap = self.client.get(CONFIGMAPS, name, namespace)
        except ApiError as err:
            if err.status == 404:
                return None  # deleted since the cache saw it; its delete event follows
            log.warning("cannot read ConfigMap", extra={"configMap": key, "status": err.status, "error": str(err)})
            raise
        finally:
            with self._lock:
                self.fetches += 1
        data, size = _data_of(configmap)
        self._keep(key, _Entry(resource_version(configmap) if isinstance(configmap, Mapping) else "", data, size))
        if self.get(key) is None:  # deleted while we read: its delete event may have come before we kept it
            with self._lock:
                self._drop(key)
        return data

    def cached_keys(self) -> list[str]:
        """The ConfigMaps whose data is held, least recently read first."""
        with self._lock:
            return list(self._entries)

    @property
    def cached_bytes(self) -> int:
        with self._lock:
            return self._bytes

    def _keep(self, key: str, entry: _Entry) -> None:
        with self._lock:
            self._drop(key)
            if entry.size > self.max_bytes:
                return
            self._entries[key] = entry
            self._bytes += entry.size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                _, oldest = self._entries.popitem(last=False)
                self._bytes -= oldest.size

    def _drop(self, key: str) -> None:
        """Under the lock."""
        gone = self._entries.pop(key, None)
        if gone is not None:
            self._bytes -= gone.size

    # Informer handlers (on its thread): O(1) under the lock, nothing else.

    def _changed(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        key = _key(new)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit.resource_version != resource_version(new):
                self._drop(key)  # a GET may already hold the new version: that one stays

    def _gone(self, obj: Mapping[str, Any]) -> None:
        with self._lock:
            self._drop(_key(obj))
