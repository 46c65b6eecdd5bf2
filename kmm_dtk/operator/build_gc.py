"""Build garbage collection: completed Builds of kernels no node runs any more are deleted.

Every upgrade adds a Build per (Module, kernel), and nothing else deletes a completed one: the
module reconciler only replaces the Build of a kernel it still plans. Here, per (Module, kernel):

* **Out of use** (no node the Module selects runs the kernel, no release being rolled out brings
  it, the Module's status no longer lists it): every completed Build goes once the grace period
  has passed since the pair was first seen out of use and since the Build completed. The grace
  rides out a node that flaps between kernels, and leaves time to read a Build that just ended.
* **In use**: the last ``keep`` completed Builds stay whatever their age (the newest one is what
  the module reconciler reads to know a kernel was built, or failed and must not be retried);
  older ones go once they have been complete for the grace period.
* **Active** Builds (New, Pending, Running) are never touched: superseded active Builds are the
  module reconciler's to cancel, and a current one is the work in progress.

So a Module keeps at most ``keep`` completed Builds and one active Build for each kernel in use,
plus, for a grace period, those of kernels that just went out of use.

Pairs are read from each Build's annotations (namespace, Module, kernel), not from its owner, so
Builds owned by another kind of object are judged the same way. When a pair went out of use is
remembered by this replica only: a new leader starts the grace period again, which can only keep
a Build longer. Deletes go through the fenced client with a uid precondition, so a Build recreated
under the same name since the cache saw it is never the one deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kmm_dtk.kube.client import ApiError, KubeClient
from kmm_dtk.kube.controller import Controller, Result
from kmm_dtk.kube.frozen import EMPTY
from kmm_dtk.kube.manager import Manager
from kmm_dtk.kube.watch import enqueue_on
from kmm_dtk.kube.workqueue import RateLimitingQueue
from kmm_dtk.observability.metrics import ControllerMetrics
from kmm_dtk.operator.builds import MODULE_ANNOTATION, build_hash, build_kernel, build_phase
from kmm_dtk.operator.caches import (
    MODULE_NAME_INDEX,
    ClusterView,
    module_key,
    modulebuild_module_index,
    selector_of,
    selects,
)
from kmm_dtk.operator.resources import BUILDS

log = logging.getLogger(__name__)

COMPLETED_PHASES = frozenset({"Complete", "Failed", "Error", "Cancelled"})
MODULE_INDEX = "gc-module"  # Builds by the ``namespace/name`` of the Module their annotation names
DEFAULT_GRACE_PERIOD = 3600.0
DEFAULT_HISTORY_LIMIT = 2
RESYNC_MIN, RESYNC_MAX = 60.0, 600.0  # a Module with completed Builds is looked at again within this

Pair = tuple[str, str]  # (Module ``namespace/name``, kernel)


@dataclass(frozen=True)
class Doomed:
    """A Build to delete, and why."""

    namespace: str
    name: str
    uid: str | None
    module: str
    kernel: str
    reason: str


@dataclass(frozen=True)
class Collection:
    doomed: tuple[Doomed, ...]
    next_due: float | None  # when the first Build kept only by the grace period becomes due


def build_module_key(build: Mapping[str, Any]) -> str | None:
    """``namespace/name`` of the Module a Build was made for (its annotation, whoever owns it)."""
    meta = build.get("metadata") or EMPTY
    module = (meta.get("annotations") or EMPTY).get(MODULE_ANNOTATION)
    namespace = meta.get("namespace")
    return f"{namespace}/{module}" if isinstance(module, str) and module and namespace else None


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def finished_at(build: Mapping[str, Any]) -> float:
    """When a completed Build ended: ``completionTimestamp``, else its start, else its creation (0.0
    when none is readable, which makes it the oldest)."""
    status = build.get("status") or EMPTY
    meta = build.get("metadata") or EMPTY
    for value in (status.get("completionTimestamp"), status.get("startTimestamp"), meta.get("creationTimestamp")):
        found = _epoch(value)
        if found is not None:
            return found
    return 0.0


def select_garbage(builds: Iterable[Mapping[str, Any]], in_use: Set[Pair], unused_since: Mapping[Pair, float], *,
                   now: float, grace: float, keep: int,
                   current: Mapping[Pair, Set[str]] | None = None) -> Collection:
    """The completed Builds to delete at ``now`` (pure). ``in_use``: the pairs nodes run or a release
    brings; ``unused_since``: when each other pair was first seen out of use (``now`` if absent);
    ``current``: the plan hashes a status record names per pair, whose Builds are never deleted (the
    reconciler reads them: a Failed one is what keeps a failure from being retried)."""
    groups: dict[Pair, list[Mapping[str, Any]]] = {}
    for build in builds:
        meta = build.get("metadata") or EMPTY
        module, kernel = build_module_key(build), build_kernel(build)
        if module is None or not kernel or meta.get("deletionTimestamp") or build_phase(build) not in COMPLETED_PHASES:
            continue
        if current and build_hash(build) in current.get((module, kernel), ()):
            continue
        groups.setdefault((module, kernel), []).append(build)
    doomed: list[Doomed] = []
    next_due: float | None = None
    for pair, members in sorted(groups.items()):
        members.sort(key=lambda b: (finished_at(b), (b.get("metadata") or EMPTY).get("name", "")), reverse=True)
        if pair in in_use:
            candidates, since = members[keep:], 0.0
            reason = f"more than {keep} completed Builds for a kernel in use"
        else:
            candidates, since = members, unused_since.get(pair, now)
            reason = "no node runs its kernel and no release being rolled out brings it"
        for build in candidates:
            due = max(finished_at(build), since) + grace
            if due <= now:
                meta = build["metadata"]
                doomed.append(Doomed(meta["namespace"], meta["name"], meta.get("uid"), pair[0], pair[1], reason))
            else:
                next_due = due if next_due is None else min(next_due, due)
    return Collection(tuple(doomed), next_due)


class BuildGcReconciler:
    """Per Module: which of its kernels are in use, then :func:`select_garbage`, then the deletes."""

    def __init__(self, view: ClusterView, client: KubeClient, *, grace: float = DEFAULT_GRACE_PERIOD,
                 keep: int = DEFAULT_HISTORY_LIMIT, clock: Callable[[], float] = time.time,
                 dry_run: bool = False) -> None:
        if keep < 1:
            raise ValueError("the build history limit must be at least 1: the newest completed Build of a kernel "
                             "in use tells the module reconciler it was built")
        if grace < 0:
            raise ValueError("the build garbage collection grace period cannot be negative")
        self.view = view
        self.client = client
        self.grace = grace
        self.keep = keep
        self.clock = clock  # wall clock: Build timestamps are the API server's
        self.dry_run = dry_run
        self.resync = min(max(grace, RESYNC_MIN), RESYNC_MAX)
        self._lock = threading.Lock()
        self._unused_since: dict[str, dict[str, float]] = {}  # Module -> kernel -> first seen out of use

    def forget(self) -> None:
        """On takeover: every grace period starts again (never shorter than this replica could know)."""
        with self._lock:
            self._unused_since.clear()

    def kernels_in_use(self, key: str, kernels: Iterable[str]) -> set[str]:
        """Those of ``kernels`` the Module ``key`` needs: run by a node it selects, brought by the
        release being rolled out, or still listed in its status or its ModuleBuilds' (planned)."""
        module = self.view.modules.get(key)
        if module is None or (module.get("metadata") or EMPTY).get("deletionTimestamp"):
            return set()
        selector = selector_of(module)
        upcoming = {u.kernel for u in self.view.upcoming}
        planned = set(_planned_kernels(module))
        if self.view.modulebuilds is not None:
            for module_build in self.view.modulebuilds.by_index(MODULE_NAME_INDEX, key):
                planned |= _planned_kernels(module_build)
        return {k for k in kernels if k in upcoming or k in planned
                or any(selects(selector, labels) for labels in self.view.kernel_map.labels_running(k))}

    def _current_hashes(self, key: str) -> dict[Pair, set[str]]:
        """The hash of each kernel's status record, on the Module and on the ModuleBuilds naming it."""
        reports = [self.view.modules.get(key)]
        if self.view.modulebuilds is not None:
            reports += self.view.modulebuilds.by_index(MODULE_NAME_INDEX, key)
        found: dict[Pair, set[str]] = {}
        for report in reports:
            for record in ((report or EMPTY).get("status") or EMPTY).get("kernels") or ():
                if isinstance(record, Mapping) and isinstance(record.get("hash"), str):
                    found.setdefault((key, str(record.get("kernel"))), set()).add(record["hash"])
        return found

    def reconcile(self, key: str) -> Result | None:
        builds = self.view.builds.by_index(MODULE_INDEX, key)
        now = self.clock()
        kernels = {k for k in (build_kernel(b) for b in builds) if k}
        used = self.kernels_in_use(key, kernels)
        with self._lock:
            seen = {k: t for k, t in self._unused_since.get(key, {}).items() if k in kernels and k not in used}
            seen.update({k: now for k in kernels - used - set(seen)})
            if seen:
                self._unused_since[key] = seen
            else:
                self._unused_since.pop(key, None)
        collection = select_garbage(builds, {(key, k) for k in used}, {(key, k): t for k, t in seen.items()},
                                    now=now, grace=self.grace, keep=self.keep, current=self._current_hashes(key))
        for doomed in collection.doomed:
            self._delete(doomed)
        waits = [max(collection.next_due - now, 0.05)] if collection.next_due is not None else []
        if any(build_phase(b) in COMPLETED_PHASES for b in builds):
            waits.append(self.resync)  # a kernel can go out of use without any event of this Module's
        return Result(requeue_after=min(waits)) if waits else None

    def _delete(self, doomed: Doomed) -> None:
        fields = {"module_": doomed.module, "kernel": doomed.kernel, "build": doomed.name, "reason": doomed.reason}
        if self.dry_run:
            log.info("dry run: would delete completed Build", extra=fields)
            return
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if doomed.uid:
            body["preconditions"] = {"uid": doomed.uid}
        try:
            self.client.delete(BUILDS, doomed.name, doomed.namespace, body=body)
        except ApiError as err:
            if err.status in (404, 409):  # gone already, or replaced by another Build of that name
                return
            raise
        log.info("completed Build deleted", extra=fields)


def _module_keys_of_build(build: Mapping[str, Any]) -> tuple[str, ...]:
    key = build_module_key(build)
    return (key,) if key else ()


def _phase_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return build_phase(old) != build_phase(new)


def _planned_kernels(obj: Mapping[str, Any]) -> frozenset[Any]:
    """The kernels a Module's (or ModuleBuild's) status has a record for."""
    return frozenset(r.get("kernel") for r in (obj.get("status") or EMPTY).get("kernels") or ()
                     if isinstance(r, Mapping))


def _module_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Its spec (selector), identity, deletion, or the kernels its status lists: the module reconciler
    rewrites those when a kernel leaves its nodes or a release brings one. Also for ModuleBuilds."""
    o, n = old.get("metadata") or EMPTY, new.get("metadata") or EMPTY
    return ((o.get("generation"), o.get("uid"), o.get("deletionTimestamp"), _planned_kernels(old))
            != (n.get("generation"), n.get("uid"), n.get("deletionTimestamp"), _planned_kernels(new)))


def setup_build_gc_controller(manager: Manager, view: ClusterView, reconciler: BuildGcReconciler, *,
                              metrics: ControllerMetrics | None = None) -> Controller[str]:
    """What enqueues a Module here: one of its Builds appearing or changing phase (a completed one
    may push an older one past the history limit), and the Module itself (or a ModuleBuild naming it)
    appearing, going, changing spec or changing the kernels its status lists. A Module with completed
    Builds also comes back when the first of them is due, and at least every ``resync`` seconds."""
    for informer in view.builds.informers:
        informer.store.add_indexer(MODULE_INDEX, lambda b: list(_module_keys_of_build(b)))
    queue = RateLimitingQueue("build-gc", metrics=metrics)
    enqueue_on(view.builds.informers, queue, _module_keys_of_build, update=_phase_changed, delete=False)
    enqueue_on(view.modules.informers, queue, lambda m: (module_key(m),), update=_module_changed)
    if view.modulebuilds is not None:
        enqueue_on(view.modulebuilds.informers, queue, modulebuild_module_index, update=_module_changed)
    manager.add_prestart_hook(reconciler.forget)
    return manager.add_controller(Controller("build-gc", queue, reconciler.reconcile, workers=1, metrics=metrics))
