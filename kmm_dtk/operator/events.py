"""Kubernetes Events on Modules (and on the cluster-scoped mirror sets, recorded in ``default``).
Best effort: a failed Event is logged, never a failed reconcile.

With ``senders``, Events are posted by background threads from a bounded backlog, as client-go's
broadcaster does: a reconcile's write path is its Builds and its status, not its Events (a new
kernel on a cluster with 200 Modules is 200 Builds, 200 status writes and 200 Events; the workers
wait for the first two only). A full backlog drops the Event with a log line.
"""

from __future__ import annotations

import logging
import queue
import re
import secrets
import threading
from collections.abc import Mapping
from typing import Any

from kmm_dtk.kube.client import ApiError, KubeClient
from kmm_dtk.operator.resources import EVENTS
from kmm_dtk.operator.status import EventSpec, EventType, now_rfc3339

log = logging.getLogger(__name__)

COMPONENT = "kmm-dtk"
NAME_MAX = 253  # an Event's name is a DNS subdomain
_SUFFIX_HEX = 16  # random hex characters after the object's name, as client-go's recorder does
_NOT_DNS = re.compile(r"[^a-z0-9.-]+")


def event_name(object_name: str) -> str:
    """``<object name>.<random hex>``, always a valid DNS subdomain of at most 253 characters: a
    253-character Module name leaves no room for the suffix, and an invalid name loses the Event
    (the API refuses it), so the prefix is truncated and made lowercase-safe."""
    labels = (label.strip("-") for label in _NOT_DNS.sub("-", object_name.lower()).split("."))
    prefix = ".".join(label for label in labels if label)[: NAME_MAX - _SUFFIX_HEX - 1].rstrip(".-")
    return f"{prefix or COMPONENT}.{secrets.token_hex(_SUFFIX_HEX // 2)}"


class EventRecorder:
    def __init__(self, client: KubeClient, instance: str, dry_run: bool = False, senders: int = 0,
                 backlog: int = 1000) -> None:
        self.client = client
        self.instance = instance
        self.dry_run = dry_run
        # None: emit() posts the Event itself (tests, one-shot tools)
        self._backlog: queue.Queue[tuple[dict[str, Any], dict[str, Any]]] | None = (
            queue.Queue(backlog) if senders > 0 else None)
        for i in range(senders):
            threading.Thread(target=self._send_forever, name=f"events-{i}", daemon=True).start()

    def emit(self, obj: Mapping[str, Any], event: EventSpec) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"  # where Events about cluster-scoped objects go
        if obj.get("kind", "Module") == "Module":
            fields = {"module_": f"{namespace}/{meta['name']}", "reason": event.reason, "type": event.type}
        else:
            fields = {"object": f"{obj.get('kind')}/{meta['name']}", "reason": event.reason, "type": event.type}
        kind = EventType(event.type)
        fields["type"] = kind.value
        log.log(logging.WARNING if kind is EventType.WARNING else logging.INFO, event.message,
                extra={**fields, "event": True})
        if self.dry_run:
            return
        now = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name(meta["name"]), "namespace": namespace},
            "involvedObject": {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", "Module"),
                               "name": meta["name"], "uid": meta.get("uid", ""),
                               "resourceVersion": meta.get("resourceVersion", ""),
                               **({"namespace": meta["namespace"]} if meta.get("namespace") else {})},
            "reason": event.reason,
            "message": event.message[:1024],
            "type": kind.value,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        if self._backlog is None:
            self._send(body, fields)
            return
        try:
            self._backlog.put_nowait((body, fields))
        except queue.Full:
            log.warning("event dropped: too many waiting to be sent", extra=fields)

    def flush(self, timeout: float) -> bool:
        """Wait until every Event emitted so far was sent (or given up); False if ``timeout`` passed."""
        if self._backlog is None:
            return True
        done = threading.Event()

        def wait() -> None:
            assert self._backlog is not None
            self._backlog.join()
            done.set()

        threading.Thread(target=wait, name="events-flush", daemon=True).start()
        return done.wait(timeout)

    def _send_forever(self) -> None:
        assert self._backlog is not None
        while True:
            body, fields = self._backlog.get()
            try:
                self._send(body, fields)
            finally:
                self._backlog.task_done()

    def _send(self, body: dict[str, Any], fields: dict[str, Any]) -> None:
        try:
            self.client.create(EVENTS, body, body["metadata"]["namespace"])
        except ApiError as err:  # FencedWrite included: a follower's Events are not sent
            log.warning("could not record event", extra={**fields, "error": str(err)})
        except Exception:  # a sender thread outlives any one Event
            log.exception("could not record event", extra=fields)
