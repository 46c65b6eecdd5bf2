"""An informer: one thread that LISTs then WATCHes one resource into a Store and tells handlers.

Behaviour follows client-go's Reflector:

- LIST in pages of ``page_size`` (``resourceVersion=""``), then WATCH from the list's
  resourceVersion with bookmarks and a random server timeout in [300, 600] s. client-go's first
  LIST uses ``resourceVersion=0`` (served from the watch cache), but the apiserver ignores
  ``limit`` there: 5,000 Nodes arrive as one ~100 MB body and the process peaks at ~240 MB
  (``make bench``). Pages keep the peak near the cache's own size.
- A clean end of a watch re-watches from the last resourceVersion seen at once, with no relist;
  but a watch that ends within a second with no event (a server or proxy closing watches at
  once) counts as a failure and backs off, as client-go does.
- 410 Gone / Expired / "too large resource version" relists, after the backoff, and diffs the
  result against the cache, so objects deleted while the watch was down produce delete events.
- The client read timeout is the inactivity watchdog: with bookmarks every minute, ~90 s of
  silence means a dead or half-open connection, and the watch is reopened.
- Every other way back to the server backs off too: errors, 410s and very short watches wait
  0.8 s doubling to 30 s with jitter; a 429's Retry-After is honoured; the backoff resets after a
  list+watch that stayed healthy for ``backoff_reset`` seconds. So however the server misbehaves,
  one informer makes at most about two requests per backoff step.
- A delete and re-create under one name (a new UID) is delivered as delete + add.
- Handlers run on the informer's thread and must only enqueue.
- ``accept`` changes what the server sends for the LIST and the WATCH, e.g. ``METADATA_ONLY``
  (PartialObjectMetadata, with a ``MetadataDecoder``) for a resource whose objects are read on
  demand: the cache then holds their metadata only.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
import tenacity

from kmm_dtk.kube.client import ApiError, KubeClient, Resource, WatchStream
from kmm_dtk.kube.decode import Accept, Decoder, JsonDecoder, decode_event
from kmm_dtk.kube.store import IndexFunc, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

SHORT_WATCH = 1.0  # seconds: a watch that ends sooner with no event counts as a failure (client-go's rule)


@dataclass(frozen=True)
class EventHandler(Generic[T]):
    on_add: Callable[[T], None] | None = None
    on_update: Callable[[T, T], None] | None = None
    on_delete: Callable[[T], None] | None = None


class _Backoff:
    """0.8 s doubling to 30 s with jitter (tenacity's wait strategy), reset on sustained health."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._wait = (tenacity.wait_exponential(multiplier=initial, max=maximum, exp_base=2)
                      + tenacity.wait_random(0, initial))
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        # tenacity types retry_object as a Retrying; the wait strategy reads only attempt_number
        state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = self.failures
        return float(self._wait(state))

    def reset(self) -> None:
        self.failures = 0


def retry_delay(err: ApiError, backoff: float) -> float:
    """The backoff, or longer if the server said when to come back (429 Retry-After)."""
    if err.status == 429 and err.retry_after:
        return max(backoff, err.retry_after)
    return backoff


class Informer(Generic[T]):
    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        *,
        decoder: Decoder[T] | None = None,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        indexers: dict[str, IndexFunc[T]] | None = None,
        watchdog: float = 90.0,
        watch_timeout: tuple[int, int] = (300, 600),
        page_size: int = 500,
        backoff_initial: float = 0.8,
        backoff_max: float = 30.0,
        backoff_reset: float = 120.0,
        metrics: Any = None,
        name: str | None = None,
        accept: Accept | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        # without a decoder T is FrozenDict, which the signature cannot say without overloads
        self.decoder: Decoder[T] = decoder or JsonDecoder(resource.kind)  # type: ignore[assignment]
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.accept = accept
        self.store: Store[T] = Store(indexers)
        self.watchdog = watchdog
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        self.backoff_reset = backoff_reset
        self.metrics = metrics
        self.name = name or str(resource)
        self._backoff = _Backoff(backoff_initial, backoff_max)
        self._handlers: list[EventHandler[T]] = []
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: WatchStream | None = None
        self._watch_lock = threading.Lock()
        self.last_resource_version = ""
        self.relists = 0
        self.watch_restarts = 0

    # -- public ------------------------------------------------------------------------------------

    def add_handler(self, handler: EventHandler[T]) -> None:
        """Register before start(); handlers see every object from the first LIST on."""
        self._handlers.append(handler)

    def start(self) -> Informer[T]:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._watch_lock:
            if self._watch is not None:
                self._watch.abort()
        if self._thread is not None:
            self._thread.join(timeout)

    def has_synced(self) -> bool:
        return self._synced.is_set()

    def wait_for_sync(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        need_list = True
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if need_list:
                    self._list()
                    need_list = False
                watch_started = time.monotonic()
                events = self._watch_once()
                if self._stop.is_set():
                    break
                if time.monotonic() - started >= self.backoff_reset:
                    self._backoff.reset()
                if events == 0 and time.monotonic() - watch_started < SHORT_WATCH:
                    # A server (or proxy) ending watches at once must not be asked again at once.
                    delay = self._backoff.next_delay()
                    self._restarted("short_watch")
                    log.warning("very short watch, retrying", extra={
                        "informer": self.name, "retry_in": round(delay, 2)})
                    self._stop.wait(delay)
                    continue
                self._restarted("closed")
                continue
            except ApiError as err:
                if self._stop.is_set():
                    break
                if time.monotonic() - started >= self.backoff_reset:
                    self._backoff.reset()
                delay = retry_delay(err, self._backoff.next_delay())
                if err.expired:
                    log.info("resourceVersion expired, relisting", extra={
                        "informer": self.name, "reason": err.reason, "error": err.message, "retry_in": round(delay, 2)})
                    need_list = True
                    self._restarted("expired")
                    self._stop.wait(delay)
                    continue
                reason = "throttled" if err.status == 429 else "error"
                self._restarted(reason)
                log.warning("list/watch failed, retrying", extra={
                    "informer": self.name, "status": err.status, "error": str(err), "retry_in": round(delay, 2)})
                self._stop.wait(delay)
            except (msgspec.DecodeError, msgspec.ValidationError) as err:
                delay = self._backoff.next_delay()
                self._restarted("decode_error")
                log.error("undecodable response, relisting", extra={"informer": self.name, "error": str(err)})
                need_list = True
                self._stop.wait(delay)
            except Exception:  # a handler bug must not kill the informer (logged with its traceback)
                delay = self._backoff.next_delay()
                self._restarted("exception")
                log.exception("informer loop failed, relisting", extra={"informer": self.name})
                need_list = True
                self._stop.wait(delay)

    def _query(self) -> dict[str, Any]:
        return {"labelSelector": self.label_selector, "fieldSelector": self.field_selector}

    def _list(self) -> None:
        """LIST in pages and reconcile the store with it."""
        path = self.resource.path(self.namespace)
        items: list[T] = []
        token = ""
        rv = ""
        while True:
            query = self._query()
            query.update({"limit": self.page_size, "continue": token or None})
            page = self.decoder.decode_list(self.client.request_raw(
                "GET", path, query, timeout=(5.0, 120.0), accept=self.accept.list if self.accept else None))
            items.extend(page.items)
            rv = page.resource_version or rv
            token = page.continue_token
            if not token:
                break
        self._replace(items)
        self.last_resource_version = rv
        self.relists += 1
        if self.metrics is not None:
            self.metrics.relisted(self.name, len(items))
        self._synced.set()
        log.debug("listed", extra={"informer": self.name, "objects": len(items), "resourceVersion": rv})

    def _watch_once(self) -> int:
        """Watch until the stream ends; returns how many events (bookmarks included) it carried."""
        query = self._query()
        query.update({
            "resourceVersion": self.last_resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": random.randint(*self.watch_timeout),
        })
        stream = self.client.watch(self.resource.path(self.namespace), query, timeout=(5.0, self.watchdog),
                                   accept=self.accept.watch if self.accept else None)
        with self._watch_lock:
            if self._stop.is_set():
                stream.close()
                return 0
            self._watch = stream
        events = 0
        try:
            for line in stream.lines():
                if self._stop.is_set():
                    return events
                events += 1
                event = decode_event(line, self.decoder)
                if event.type == "ERROR":
                    raise ApiError.from_status(event.status or {})
                if event.resource_version:
                    self.last_resource_version = event.resource_version
                if event.type == "BOOKMARK":
                    continue
                self._apply(event.type, event.obj)
        finally:
            with self._watch_lock:
                self._watch = None
        return events

    # -- store updates and notifications ---------------------------------------------------------

    def _apply(self, kind: str, obj: T | None) -> None:
        if obj is None:
            return
        key = self.decoder.key(obj)
        if kind == "DELETED":
            old = self.store.delete(key)
            self._notify_delete(old if old is not None else obj)
        elif kind in ("ADDED", "MODIFIED"):
            self._upsert(key, obj)
        if self.metrics is not None:
            self.metrics.event(self.name, kind, len(self.store))

    def _upsert(self, key: str, obj: T) -> None:
        old = self.store.put(key, obj)
        if old is None:
            self._notify_add(obj)
        elif self.decoder.uid(old) != self.decoder.uid(obj):
            self._notify_delete(old)  # deleted and re-created under the same name
            self._notify_add(obj)
        else:
            self._notify_update(old, obj)

    def _replace(self, items: list[T]) -> None:
        fresh = {self.decoder.key(obj): obj for obj in items}
        for key in set(self.store.keys()) - set(fresh):
            old = self.store.delete(key)
            if old is not None:
                self._notify_delete(old)  # vanished while we were not watching
        for key, obj in fresh.items():
            old = self.store.get(key)
            if old is not None and self.decoder.resource_version(old) == self.decoder.resource_version(obj) \
                    and self.decoder.uid(old) == self.decoder.uid(obj):
                continue  # unchanged: no event, so a relist of a steady cluster does no work
            self._upsert(key, obj)

    def _call(self, func: Callable[..., None] | None, *args: T) -> None:
        if func is None:
            return
        try:
            func(*args)
        except Exception:  # one bad handler must not stop the cache or the others
            log.exception("event handler failed", extra={"informer": self.name})

    def _notify_add(self, obj: T) -> None:
        for handler in self._handlers:
            self._call(handler.on_add, obj)

    def _notify_update(self, old: T, new: T) -> None:
        for handler in self._handlers:
            self._call(handler.on_update, old, new)

    def _notify_delete(self, obj: T) -> None:
        for handler in self._handlers:
            self._call(handler.on_delete, obj)

    def _restarted(self, reason: str) -> None:
        self.watch_restarts += 1
        if self.metrics is not None:
            self.metrics.watch_restarted(self.name, reason)
