"""Kubernetes Events on Modules (and on the cluster-scoped mirror sets, recorded in ``default``).
Best effort: a failed Event is logged, never a failed reconcile."""

from __future__ import annotations

import logging
import re
import secrets
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
    def __init__(self, client: KubeClient, instance: str, dry_run: bool = False) -> None:
        self.client = client
        self.instance = instance
        self.dry_run = dry_run

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
        try:
            self.client.create(EVENTS, body, namespace)
        except ApiError as err:
            log.warning("could not record event", extra={**fields, "error": str(err)})
