"""The cluster's mirror policy, kept current from the ICSP/IDMS/ITMS informers.

Recomputed only when one of those objects changed (their frozen cache objects are replaced on every
update), so a reconcile asking for the policy costs a tuple comparison. Malformed entries are
skipped, logged, and reported once by a Warning Event on their object (``InvalidMirrorSet``, naming
the field); the valid ones still apply, as on the nodes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kmm_dtk.kube.controller import Controller
from kmm_dtk.kube.manager import Manager
from kmm_dtk.kube.watch import constant, enqueue_on
from kmm_dtk.kube.workqueue import RateLimitingQueue
from kmm_dtk.observability.metrics import ControllerMetrics
from kmm_dtk.operator.caches import Cache
from kmm_dtk.operator.status import EventSpec, EventType
from kmm_dtk.registry.mirrors import MirrorPolicy

log = logging.getLogger(__name__)

KEY = "mirror-sets"


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
            self.recorder.emit(obj, EventSpec(EventType.WARNING, "InvalidMirrorSet",
                                              f"entries skipped, the others apply: {text}"))
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


class MirrorReconciler:
    """A mirror set added, changed or removed changes where nodes pull from: every answer the
    registry checker cached may be wrong, and every Module is planned again. The baseline is taken
    when this replica starts leading: every Module is queued then anyway."""

    def __init__(self, watch: MirrorWatch, forget_answers: Callable[[], None],
                 module_keys: Callable[[], list[str]], enqueue_module: Callable[[str], None]) -> None:
        self.watch = watch
        self.forget_answers = forget_answers
        self.module_keys = module_keys
        self.enqueue_module = enqueue_module
        self._seen: frozenset[tuple[str, str, str]] | None = None  # (kind, name, resourceVersion)

    def _current(self) -> frozenset[tuple[str, str, str]]:
        return frozenset((str(o.get("kind")), o["metadata"]["name"], str(o["metadata"].get("resourceVersion")))
                         for cache in self.watch.caches for o in cache.list())

    def reconcile(self, key: str) -> None:
        current = self._current()
        before, self._seen = self._seen, current
        if before is None or before == current:
            return
        self.watch.policy()  # recompute now: its Events about unusable entries go out once, from here
        self.forget_answers()
        keys = self.module_keys()
        log.info("mirror sets changed; registry answers forgotten", extra={"modules": len(keys)})
        for module in keys:
            self.enqueue_module(module)

    def forget(self) -> None:
        """On takeover, before any worker: the mirror sets as they are now are the baseline."""
        self._seen = self._current()


def setup_mirror_controller(manager: Manager, watch: MirrorWatch, forget_answers: Callable[[], None],
                            module_keys: Callable[[], list[str]], enqueue_module: Callable[[str], None], *,
                            metrics: ControllerMetrics | None = None) -> Controller:
    """What enqueues it: any event of an ICSP, IDMS or ITMS (one key for all of them)."""
    reconciler = MirrorReconciler(watch, forget_answers, module_keys, enqueue_module)
    queue = RateLimitingQueue("mirrors", metrics=metrics)
    for cache in watch.caches:
        enqueue_on(cache.informers, queue, constant(KEY))
    manager.add_prestart_hook(reconciler.forget)
    return manager.add_controller(Controller("mirrors", queue, reconciler.reconcile, workers=1, metrics=metrics))
