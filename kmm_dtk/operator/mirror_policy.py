"""The cluster's mirror policy, kept current from the ICSP/IDMS/ITMS informers.

Recomputed only when one of those objects changed (their frozen cache objects are replaced on every
update), so a reconcile asking for the policy costs a tuple comparison. Malformed entries are
skipped, logged, and reported once by a Warning Event on their object (``InvalidMirrorSet``, naming
the field); the valid ones still apply, as on the nodes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

from kmm_dtk.operator.caches import Cache
from kmm_dtk.operator.status import EventSpec, EventType
from kmm_dtk.registry.mirrors import MirrorPolicy

log = logging.getLogger(__name__)


class MirrorWatch:
    def __init__(self, caches: Sequence[Cache], recorder: Any = None) -> None:
        self.caches = tuple(caches)
        self.recorder = recorder  # EventRecorder, or None
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._policy = MirrorPolicy.EMPTY
        self._reported: dict[tuple[str, str], str] = {}  # (kind, name) -> the problems last reported

    def policy(self) -> MirrorPolicy:
        objects = [obj for cache in self.caches for obj in cache.list()]
        key = tuple(sorted(((o.get("kind"), o["metadata"]["name"], o["metadata"].get("resourceVersion"))
                            for o in objects), key=str))
        with self._lock:
            if key == self._key:
                return self._policy
            self._policy, problems = MirrorPolicy.from_objects(objects)
            self._key = key
            policy = self._policy
            for problem in problems:
                log.warning("mirror policy entry skipped", extra={"problem": problem})
            log.info("mirror policy updated", extra={"rules": policy.describe()})
            reports = self._new_reports(objects, problems)
        for obj, text in reports:  # API calls outside the lock that every check takes
            self.recorder.emit(obj, EventSpec(EventType.WARNING, "InvalidMirrorSet", f"entries skipped, the others apply: {text}"))
        return policy

    def _new_reports(self, objects: list[Any], problems: list[str]) -> list[tuple[Any, str]]:
        """The objects whose problems changed since last reported (problems start with ``Kind/name:``)."""
        current: dict[tuple[str, str], str] = {}
        reports = []
        for obj in objects:
            kind, name = obj.get("kind", ""), obj["metadata"]["name"]
            mine = [p for p in problems if p.startswith(f"{kind}/{name}:")]
            if mine:
                current[(kind, name)] = "; ".join(mine)
                if self.recorder is not None and self._reported.get((kind, name)) != current[(kind, name)]:
                    reports.append((obj, current[(kind, name)]))
        self._reported = current
        return reports
