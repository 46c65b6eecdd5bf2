"""The product metrics' snapshot, read from the operator's caches: Module and ModuleBuild status as
kmm-dtk writes it (``status.py``), the kernel map with the DTK index, and the Builds' times.

Status written by someone else, or malformed, is counted only as far as it matches what kmm-dtk
writes: unknown condition types, statuses and phases are left out, so a tenant cannot mint series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from kmm_dtk.observability.product_metrics import FinishedBuild, ProductSnapshot
from kmm_dtk.operator.builds import ACTIVE_PHASES
from kmm_dtk.operator.caches import ClusterView
from kmm_dtk.operator.status import Phase

CONDITION_TYPES = ("Ready", "Progressing", "Degraded")
CONDITION_STATUSES = ("True", "False", "Unknown")
PHASES = tuple(p.value for p in Phase)
KINDS = ("Module", "ModuleBuild")


def _status(obj: Any) -> Mapping[str, Any]:
    status = obj.get("status") if isinstance(obj, Mapping) else None
    return status if isinstance(status, Mapping) else {}


def _items(value: Any) -> Iterable[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, (list, tuple)) else []


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def finished_build(build: Mapping[str, Any], known: Callable[[str], bool]) -> FinishedBuild | None:
    """A completed Build's duration; None while it runs, without times, or already ``known`` by uid."""
    meta = build.get("metadata") if isinstance(build.get("metadata"), Mapping) else {}
    uid = meta.get("uid") if isinstance(meta, Mapping) else None
    if not isinstance(uid, str) or not uid:
        return None
    status = _status(build)
    phase = status.get("phase")
    if not isinstance(phase, str) or phase in ACTIVE_PHASES:
        return None
    if known(uid):
        return FinishedBuild(uid, phase, 0.0)  # already observed: only its uid matters
    started, completed = _time(status.get("startTimestamp")), _time(status.get("completionTimestamp"))
    if started is None or completed is None or started.tzinfo is None or completed.tzinfo is None:
        return None
    return FinishedBuild(uid, phase, max(0.0, (completed - started).total_seconds()))


def product_snapshot(view: ClusterView, synced: Callable[[], bool],
                     known: Callable[[str], bool] = lambda uid: False) -> ProductSnapshot | None:
    """Everything the product metrics show, or None before the caches have synced."""
    if not synced():
        return None
    conditions = {(k, t, s): 0 for k in KINDS for t in CONDITION_TYPES for s in CONDITION_STATUSES[:2]}
    records = {(k, p): 0 for k in KINDS for p in PHASES}
    waiting = 0
    sources = [("Module", view.modules.list())]
    if view.modulebuilds is not None:
        sources.append(("ModuleBuild", view.modulebuilds.list()))
    for kind, objects in sources:
        for obj in objects:
            status = _status(obj)
            for condition in _items(status.get("conditions")):
                kind_type, value = condition.get("type"), condition.get("status")
                if kind_type in CONDITION_TYPES and value in CONDITION_STATUSES:
                    key = (kind, str(kind_type), str(value))
                    conditions[key] = conditions.get(key, 0) + 1
            for record in _items(status.get("kernels")):
                phase = record.get("phase")
                if phase in PHASES:
                    records[(kind, phase)] += 1
                    waiting += phase == Phase.WAITING.value
    entries = view.kernel_map.entries()
    dtk = view.dtk()
    without = [(kernel, str(entry.rhcos)) for kernel, entry in entries.items()
               if entry.rhcos is not None
               and (dtk is None or not any(str(c) in dtk.images for c in entry.candidates or (entry.rhcos,)))]
    builds = [b for b in (finished_build(build, known) for build in view.builds.list()) if b is not None]
    return ProductSnapshot(conditions=conditions, records=records, kernels_running=len(entries),
                           kernels_without_dtk=without, registry_waiting=waiting, finished_builds=builds)
