"""Informer metrics: cache size, relists, watch restarts and the time of the last event.

client-go no longer exports reflector metrics, so these carry the project's prefix.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge


class InformerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.relists = Counter("kmm_dtk_informer_relists_total", "LISTs that (re)filled an informer's cache",
                               ["informer"], registry=registry)
        self.watch_restarts = Counter("kmm_dtk_informer_watch_restarts_total",
                                      "Watches reopened, by why the previous one ended",
                                      ["informer", "reason"], registry=registry)
        self.events = Counter("kmm_dtk_informer_events_total", "Watch events applied to the cache",
                              ["informer", "type"], registry=registry)
        self.last_event = Gauge("kmm_dtk_informer_last_event_timestamp_seconds",
                                "Unix time of the last watch event or list", ["informer"], registry=registry)
        self.objects = Gauge("kmm_dtk_informer_objects", "Objects in the informer's cache", ["informer"],
                             registry=registry)

    def relisted(self, informer: str, objects: int) -> None:
        self.relists.labels(informer).inc()
        self.objects.labels(informer).set(objects)
        self.last_event.labels(informer).set(time.time())

    def watch_restarted(self, informer: str, reason: str) -> None:
        self.watch_restarts.labels(informer, reason).inc()

    def event(self, informer: str, event_type: str, objects: int) -> None:
        self.events.labels(informer, event_type).inc()
        self.objects.labels(informer).set(objects)
        self.last_event.labels(informer).set(time.time())
