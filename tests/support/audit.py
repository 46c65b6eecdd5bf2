"""The API server's audit log as evidence: who wrote what, and when, as the server saw it.

The test control plane logs every write made with a ServiceAccount token (the replicas of the
reliability tests each run as their own ServiceAccount) at the Metadata level, once the response
is complete. The reliability tests read it to prove ordering claims from the server's own clock,
rather than from what the clients believe they did.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")

POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"], "verbs": list(WRITE_VERBS)},
        {"level": "None"},
    ],
}


def _time(text: str) -> float:
    """RFC 3339 with microseconds (``2026-11-30T14:01:02.123456Z``) -> epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class Write:
    user: str
    verb: str
    resource: str  # plural, with "/subresource" when there is one
    namespace: str
    name: str
    code: int
    received: float  # epoch seconds the server received the request
    completed: float  # epoch seconds the server completed the response

    @property
    def succeeded(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_lease(self) -> bool:
        return self.resource == "leases"


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def read_writes(path: Path, users: Iterable[str] | None = None) -> list[Write]:
    """Every audited write (optionally by ``users``), in the order the server completed them."""
    wanted = set(users) if users is not None else None
    found = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written at this very moment
        user = (event.get("user") or {}).get("username", "")
        if wanted is not None and user not in wanted:
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        found.append(Write(user, event.get("verb", ""), resource, ref.get("namespace", ""), ref.get("name", ""),
                           int((event.get("responseStatus") or {}).get("code") or 0),
                           _time(event["requestReceivedTimestamp"]), _time(event["stageTimestamp"])))
    return sorted(found, key=lambda w: w.completed)


def successful(writes: Iterable[Write], user: str, leases: bool = True) -> list[Write]:
    return [w for w in writes if w.user == user and w.succeeded and (leases or not w.is_lease)]
