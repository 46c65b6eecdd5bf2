"""The module reconciler: plan from the caches, make the Builds match the plan, report status.

For each planned kernel: a Build for the current plan hash that already exists is only
reflected; one known built for this hash (status says so) is left alone; otherwise the image
checker is asked and, if the image is missing, the Build is created. A Build for a superseded
hash of the same kernel is deleted first, so at most one Build per (Module, kernel) is active. A
Failed Build is not retried until its hash changes, which includes
``spec.imageRebuildTriggerGeneration``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from kmm_dtk.core.plan import Action, PlanEntry, plan_module
from kmm_dtk.kube.client import ApiError, KubeClient
from kmm_dtk.kube.frozen import EMPTY, thaw
from kmm_dtk.operator.builds import (
    ACTIVE_PHASES,
    build_hash,
    build_kernel,
    build_name,
    build_object,
    build_phase,
)
from kmm_dtk.operator.caches import OWNER_INDEX, ClusterView
from kmm_dtk.operator.events import EventRecorder
from kmm_dtk.operator.resources import BUILDS, MODULES
from kmm_dtk.operator.status import (
    DONE_PHASES,
    ERROR,
    EXISTS,
    FAILED,
    NORMAL,
    PENDING,
    WARNING,
    EventSpec,
    conditions,
    error_entries,
    kernel_record,
    phase_of_build,
    status_body,
    transition_events,
)

log = logging.getLogger(__name__)


class ImageChecker(Protocol):
    """Whether a plan entry's image already exists, built from the same inputs."""

    def exists(self, entry: PlanEntry) -> bool: ...


class AssumeMissing:
    """Every image is missing: build whatever has no Build yet. (The registry check comes later.)"""

    def exists(self, entry: PlanEntry) -> bool:
        return False


@dataclass(frozen=True)
class _Outcome:
    record: dict[str, Any]
    events: tuple[EventSpec, ...] = ()


_MERGED_REASONS = ("BuildimageCreated", "BuildimageCancelled")


def merge_events(events: list[EventSpec]) -> list[EventSpec]:
    """One Event per reason for the Builds created (or cancelled) by one reconcile: a new Module on
    a cluster with 20 kernels records 1 Event, not 20 (client-go's recorder aggregates likewise)."""
    merged: list[EventSpec] = []
    groups: dict[str, list[EventSpec]] = {}
    for event in events:
        if event.reason in _MERGED_REASONS:
            groups.setdefault(event.reason, []).append(event)
        else:
            merged.append(event)
    for reason, group in groups.items():
        if len(group) == 1:
            merged.append(group[0])
        else:
            text = f"{len(group)} Builds: " + "; ".join(e.message for e in group)
            merged.append(EventSpec(group[0].type, reason, text))
    return merged


def _phase_message(name: str, phase: str) -> str:
    """The same words whether the Build was just created or seen in the cache: no status churn."""
    if phase in ("New", "Pending"):
        return f"Build {name} created, waiting to run"
    return f"Build {name} is {phase}"


class ModuleReconciler:
    def __init__(self, view: ClusterView, client: KubeClient, recorder: EventRecorder,
                 checker: ImageChecker | None = None, dry_run: bool = False) -> None:
        self.view = view
        self.client = client
        self.recorder = recorder
        self.checker = checker or AssumeMissing()
        self.dry_run = dry_run

    def reconcile(self, key: str) -> None:
        module = self.view.modules.get(key)
        if module is None or (module.get("metadata") or EMPTY).get("deletionTimestamp"):
            return  # its Builds are owned by it and go with it
        entries = plan_module(module, self.view.snapshot())
        status = module.get("status") or EMPTY
        previous = {r.get("kernel"): r for r in status.get("kernels") or () if isinstance(r, Mapping)}
        builds = self.view.builds.by_index(OWNER_INDEX, key)

        records, events = [], []
        for entry in entries:
            if entry.action is Action.BUILD:
                outcome = self._ensure_build(module, entry, previous.get(entry.kernel), builds)
            elif entry.action is Action.ERROR and entry.kernel is not None:
                outcome = _Outcome(kernel_record(entry, ERROR, entry.reason, previous=previous.get(entry.kernel)))
            else:
                continue  # skips (no mapping, no build section) and Module-wide errors have no kernel record
            records.append(outcome.record)
            events.extend(outcome.events)

        errors = error_entries(entries)
        generation = (module.get("metadata") or EMPTY).get("generation")
        conds = conditions(records, errors, generation, status.get("conditions") or ())
        events.extend(transition_events(previous, records, errors, status.get("conditions") or ()))
        new_status = status_body(records, conds, generation)
        current = thaw(status)
        if {k: current.get(k) for k in new_status} != new_status:  # fields others own are left alone
            self._write_status(module, new_status)
        for event in merge_events(events):
            self.recorder.emit(module, event)

    # -- builds ----------------------------------------------------------------------------------

    def _ensure_build(self, module: Mapping[str, Any], entry: PlanEntry, previous: Mapping[str, Any] | None,
                      builds: list[Mapping[str, Any]]) -> _Outcome:
        assert entry.kernel is not None and entry.hash is not None
        name = build_name(module["metadata"]["name"], entry.kernel, entry.hash)
        mine = [b for b in builds if build_kernel(b) == entry.kernel]
        current = next((b for b in mine if build_hash(b) == entry.hash), None)
        events: list[EventSpec] = []
        for stale in (b for b in mine if build_hash(b) != entry.hash):
            events.extend(self._delete_superseded(module, stale, entry))

        if current is not None:
            phase = phase_of_build(build_phase(current))
            message = (current.get("status") or EMPTY).get("message") or _phase_message(name, build_phase(current))
            if phase == FAILED:
                message = (f"Build {name} {build_phase(current).lower()}: {message}; not retried until its inputs "
                           "change or spec.imageRebuildTriggerGeneration is bumped")
            return _Outcome(kernel_record(entry, phase, message, name, previous), tuple(events))
        if previous and previous.get("hash") == entry.hash and previous.get("phase") in DONE_PHASES:
            return _Outcome(dict(previous), tuple(events))  # already built from these very inputs
        if self.checker.exists(entry):
            return _Outcome(kernel_record(entry, EXISTS, f"{entry.image} exists and is up to date", "", previous),
                            tuple(events))
        try:
            events.extend(self._create(module, entry, name))
        except ApiError as err:
            if err.status not in (400, 403, 422):
                raise  # transient (5xx, 429, timeouts): retried with backoff
            # The API refuses this Build as written or for this operator: retrying will not help.
            message = f"Build {name} was refused by the API server ({err.status} {err.reason}): {err.message}"
            if not previous or previous.get("message") != message:
                events.append(EventSpec(WARNING, "BuildimageRefused", message))
            return _Outcome(kernel_record(entry, ERROR, message, name, previous), tuple(events))
        message = f"dry run: Build {name} not created" if self.dry_run else _phase_message(name, "New")
        return _Outcome(kernel_record(entry, PENDING, message, name, previous), tuple(events))

    def _create(self, module: Mapping[str, Any], entry: PlanEntry, name: str) -> list[EventSpec]:
        body = build_object(entry, thaw(module))
        namespace = module["metadata"]["namespace"]
        fields = {"module_": f"{namespace}/{module['metadata']['name']}", "kernel": entry.kernel, "build": name}
        if self.dry_run:
            log.info("dry run: would create Build", extra={**fields, "buildObject": json.dumps(body)})
            return []
        try:
            self.client.create(BUILDS, body, namespace)
        except ApiError as err:
            if err.status != 409:
                raise
            log.debug("Build already exists", extra=fields)
            return []
        log.info("Build created", extra={**fields, "image": entry.image, "dtkImage": entry.dtk_image})
        dtk = f" on DTK {entry.dtk_image}" if entry.dtk_image else ""
        return [EventSpec(NORMAL, "BuildimageCreated", f"Build {name} created for kernel {entry.kernel}{dtk}")]

    def _delete_superseded(self, module: Mapping[str, Any], stale: Mapping[str, Any],
                           entry: PlanEntry) -> list[EventSpec]:
        meta = stale["metadata"]
        fields = {"module_": f"{meta['namespace']}/{module['metadata']['name']}", "kernel": entry.kernel,
                  "build": meta["name"]}
        if self.dry_run:
            log.info("dry run: would delete superseded Build", extra=fields)
            return []
        try:
            self.client.delete(BUILDS, meta["name"], meta["namespace"],
                               body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        except ApiError as err:
            if err.status != 404:
                raise
            return []
        log.info("superseded Build deleted", extra=fields)
        if build_phase(stale) in ACTIVE_PHASES:
            return [EventSpec(NORMAL, "BuildimageCancelled",
                              f"Build {meta['name']} cancelled: its inputs changed (new plan hash {entry.hash})")]
        return []

    def _write_status(self, module: Mapping[str, Any], status: dict[str, Any]) -> None:
        meta = module["metadata"]
        if self.dry_run:
            log.info("dry run: would update status", extra={"module_": f"{meta['namespace']}/{meta['name']}"})
            return
        try:
            self.client.patch(MODULES, meta["name"], {"status": status}, meta["namespace"], subresource="status")
        except ApiError as err:
            if err.status == 404:
                return  # deleted meanwhile
            raise
