"""The cluster's mirror policy, kept current from the ICSP/IDMS/ITMS informers.

Recomputed only when one of those objects changed (their frozen cache objects are replaced on every
update), so a reconcile asking for the policy costs a tuple comparison. Malformed entries are
skipped and logged once per change; the valid ones still apply, as on the nodes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

from kmm_dtk.operator.caches import Cache
from kmm_dtk.registry.mirrors import MirrorPolicy

log = logging.getLogger(__name__)


class MirrorWatch:
    def __init__(self, caches: Sequence[Cache]) -> None:
        self.caches = tuple(caches)
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._policy = MirrorPolicy.EMPTY

    def policy(self) -> MirrorPolicy:
        objects = [obj for cache in self.caches for obj in cache.list()]
        key = tuple(sorted(((o.get("kind"), o["metadata"]["name"], o["metadata"].get("resourceVersion"))
                            for o in objects), key=str))
        with self._lock:
            if key != self._key:
                self._policy, problems = MirrorPolicy.from_objects(objects)
                self._key = key
                for problem in problems:
                    log.warning("mirror policy entry skipped", extra={"problem": problem})
                log.info("mirror policy updated", extra={"rules": self._policy.describe()})
            return self._policy
