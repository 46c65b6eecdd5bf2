"""The module reconciler: plan from the caches, make the Builds match the plan, report status.

For each planned kernel: a Build for the current plan hash that already exists is only
reflected; one known built for this hash (status says so) is left alone; otherwise the image
checker is asked and, if the image is missing, the Build is created. A Build for a superseded
hash of the same kernel still running is deleted first, so at most one Build per (Module, kernel)
is active; finished ones are left to the Build garbage collector. A
Failed Build is not retried until its hash changes, which includes
``spec.imageRebuildTriggerGeneration``.

An image recorded as in the registry (``Exists``, ``Succeeded``) is asked about again once a
period (:mod:`kmm_dtk.operator.recheck`); one found gone is rebuilt with an ``ImageVanished``
Event, and the Module is requeued for its next re-check.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kmm_dtk.core.decision import decide
from kmm_dtk.core.modulebuild import ModuleBuildError, module_with_builds
from kmm_dtk.core.modulebuild import module_name as modulebuild_module_name
from kmm_dtk.core.plan import Action, PlanEntry, Reason, plan_module
from kmm_dtk.core.reference import ImageRef
from kmm_dtk.core.verdicts import DtkCheck, DtkState, ImageCheck, ImageState
from kmm_dtk.kube.client import ApiError, KubeClient
from kmm_dtk.kube.controller import Controller, Result
from kmm_dtk.kube.frozen import EMPTY, thaw
from kmm_dtk.kube.informer import EventHandler
from kmm_dtk.kube.manager import Manager
from kmm_dtk.kube.watch import enqueue_on
from kmm_dtk.kube.workqueue import RateLimitingQueue
from kmm_dtk.observability.metrics import ControllerMetrics
from kmm_dtk.operator.builds import (
    ACTIVE_PHASES,
    build_hash,
    build_kernel,
    build_name,
    build_object,
    build_phase,
    owner_keys,
    owner_tag,
)
from kmm_dtk.operator.caches import BUILD_OWNER_INDEX, OWNER_INDEX, ClusterView, module_key
from kmm_dtk.operator.events import EventRecorder
from kmm_dtk.operator.fanout import FanOut
from kmm_dtk.operator.recheck import DEFAULT_RATE, Rechecks, RegistryLimiter
from kmm_dtk.operator.resources import BUILDS, MODULEBUILDS, MODULES
from kmm_dtk.operator.status import (
    DONE_PHASES,
    IMAGE_VANISHED,
    EventSpec,
    EventType,
    Phase,
    conditions,
    error_entries,
    kernel_record,
    phase_of_build,
    status_body,
    transition_events,
)

log = logging.getLogger(__name__)

RECHECK_FLOOR = 0.5  # seconds: a requeue for a re-check is never sooner (no busy loop on a turn just missed)
DEFAULT_RECHECK_PERIOD = 300.0  # for a checker that does not say how long it keeps its answers


class ImageChecker(Protocol):
    """Asks the registry before a Build is made: does the image exist, built from these inputs, and
    is the DTK really for this kernel? ``kmm_dtk.registry.check.RegistryChecker`` is the real one."""

    def check(self, entry: PlanEntry) -> ImageCheck: ...

    def check_dtk(self, entry: PlanEntry) -> DtkCheck: ...

    def invalidate(self, image: str) -> None: ...

    def auth_problems(self, entry: PlanEntry) -> tuple[str, ...]: ...


class AssumeMissing:
    """No registry access (``--assume-missing``): every image without a Build is built, every DTK trusted."""

    def check(self, entry: PlanEntry) -> ImageCheck:
        return ImageCheck(ImageState.MISSING, "not checked (--assume-missing)")

    def check_dtk(self, entry: PlanEntry) -> DtkCheck:
        return DtkCheck(DtkState.MATCHES, "not checked (--assume-missing)")

    def invalidate(self, image: str) -> None:
        pass

    def auth_problems(self, entry: PlanEntry) -> tuple[str, ...]:
        return ()


class _OwnedElsewhere(Exception):
    """A Build of the computed name exists, owned by another object: never adopted, never counted."""


@dataclass(frozen=True)
class _Subject:
    """What one reconcile is about: the object that reports it (status, Events, Build owner: a Module,
    or the ModuleBuild that builds for one), the Module as planned, and the Builds it owns."""

    reported: Mapping[str, Any]
    module: Mapping[str, Any]
    builds: list[Mapping[str, Any]]


@dataclass(frozen=True)
class _KernelResult:
    """One kernel's status record, and the Events its reconcile deserves."""

    record: dict[str, Any]
    events: tuple[EventSpec, ...] = ()

    @property
    def waiting(self) -> bool:
        return self.record.get("phase") == Phase.WAITING


_MERGED_REASONS = ("BuildimageCreated", "BuildimageCancelled", "BuildimageSucceeded", "BuildimageFailed")


def merge_events(events: list[EventSpec]) -> list[EventSpec]:
    """One Event per reason for the Builds created, cancelled, succeeded or failed as seen by one
    reconcile: a new Module on a cluster with 20 kernels records 1 Event, not 20 (client-go's
    recorder aggregates likewise)."""
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


def default_rechecks(checker: ImageChecker, rate: float = DEFAULT_RATE) -> Rechecks | None:
    """Re-checks once per period of the checker's answer cache (``--registry-cache-ttl``): a re-check
    asks the registry, not the cache. None for ``--assume-missing``: it cannot see the registry, so it
    must not rebuild images that exist."""
    if isinstance(checker, AssumeMissing):
        return None
    ttl = getattr(checker, "ttl", None)
    period = float(ttl) if isinstance(ttl, int | float) and ttl > 0 else DEFAULT_RECHECK_PERIOD
    return Rechecks(period, RegistryLimiter(rate))


def _registry(image: str) -> str:
    """The registry host a re-check of ``image`` counts against (mirrors asked for it count as it)."""
    try:
        return ImageRef.parse(image).registry
    except ValueError:
        return image


def _uid(build: Mapping[str, Any]) -> str:
    return str((build.get("metadata") or EMPTY).get("uid") or "")


class ModuleReconciler:
    def __init__(self, view: ClusterView, client: KubeClient, recorder: EventRecorder,
                 checker: ImageChecker | None = None, dry_run: bool = False,
                 registry_retry: float = 60.0, build_module_sections: bool = True,
                 recheck_rate: float = DEFAULT_RATE, rechecks: Rechecks | None = None,
                 fanout: FanOut | None = None) -> None:
        self.view = view
        # Shared by every worker: at most --max-concurrent-writes kernels in flight in the process.
        self.fanout = fanout or FanOut(1)
        # False beside the KMM operator: it builds the Modules that carry build sections.
        self.build_module_sections = build_module_sections
        self.client = client
        self.recorder = recorder
        self.checker = checker or AssumeMissing()
        self.dry_run = dry_run
        self.registry_retry = registry_retry  # seconds before asking a silent registry again
        # When images recorded as in the registry are asked about again (``recheck_rate``: per host, a second).
        self.rechecks = rechecks if rechecks is not None else default_rechecks(self.checker, recheck_rate)

    def reconcile(self, key: str) -> Result | None:
        """A Module with build sections of its own (where kmm-dtk is the only builder)."""
        module = self.view.modules.get(key)
        if module is None or (module.get("metadata") or EMPTY).get("deletionTimestamp"):
            return None  # its Builds are owned by it and go with it
        if not self.build_module_sections:
            return None  # beside KMM: KMM builds the Modules that carry build sections
        subject = _Subject(module, module, self.view.builds.by_index(OWNER_INDEX, key))
        return self._reconcile(subject, plan_module(module, self.view.snapshot()))

    def reconcile_module_build(self, key: str) -> Result | None:
        """A ModuleBuild: its Module planned with the ModuleBuild's build sections; status and Events
        on the ModuleBuild, Builds owned by it."""
        module_build = self.view.modulebuilds.get(key) if self.view.modulebuilds is not None else None
        if module_build is None or (module_build.get("metadata") or EMPTY).get("deletionTimestamp"):
            return None
        builds = self.view.builds.by_index(BUILD_OWNER_INDEX, key)
        try:
            merged = self._module_for(key, module_build)
        except ModuleBuildError as err:
            refused = PlanEntry(key, None, Action.ERROR, Reason.INVALID_MODULE_BUILD, str(err))
            return self._reconcile(_Subject(module_build, module_build, builds), [refused])
        return self._reconcile(_Subject(module_build, merged, builds),
                               plan_module(merged, self.view.snapshot()))

    def _module_for(self, key: str, module_build: Mapping[str, Any]) -> dict[str, Any]:
        namespace = key.split("/", 1)[0]
        module_ref = f"{namespace}/{modulebuild_module_name(module_build)}"
        module = self.view.modules.get(module_ref)
        if module is None:
            raise ModuleBuildError(f"spec.moduleName: Module {module_ref} does not exist (yet)")
        first = min(((b.get("metadata") or EMPTY).get("creationTimestamp") or "", k)
                    for k in self.view.modulebuilds_for(module_ref)
                    if (b := self.view.modulebuilds.get(k) if self.view.modulebuilds else None) is not None
                    and (k == key or not (b.get("metadata") or EMPTY).get("deletionTimestamp")))
        if first[1] != key:
            raise ModuleBuildError(f"spec.moduleName: Module {module_ref} is built by ModuleBuild {first[1]} already; "
                                   "one ModuleBuild per Module")
        return module_with_builds(module, module_build)

    def _reconcile(self, subject: _Subject, entries: list[PlanEntry]) -> Result | None:
        reported, builds = subject.reported, subject.builds
        status = reported.get("status") or EMPTY
        previous: dict[str, Mapping[str, Any]] = {r["kernel"]: r for r in status.get("kernels") or ()
                                                  if isinstance(r, Mapping) and isinstance(r.get("kernel"), str)}

        secret_problems: dict[str, None] = {}  # pull Secrets left out, in first-seen order
        for entry in entries:
            if entry.action is Action.BUILD:
                secret_problems.update(dict.fromkeys(self.checker.auth_problems(entry)))

        def kernel_result(entry: PlanEntry) -> _KernelResult | None:
            if entry.action is Action.BUILD:
                return self._ensure_build(subject, entry, previous.get(entry.kernel or ""), builds)
            if entry.action is Action.ERROR and entry.kernel is not None:
                return _KernelResult(kernel_record(entry, Phase.ERROR, entry.reason,
                                                   previous=previous.get(entry.kernel)))
            return None  # skips (no mapping, no build section) and Module-wide errors have no kernel record

        records: list[dict[str, Any]] = []
        events: list[EventSpec] = []
        waiting = False
        # Kernels are independent of each other: those that may need a registry check and a Build
        # write run side by side; those whose Build exists only read the cache and stay inline (they
        # must not queue behind other reconciles' writes).
        current = {(build_kernel(b), build_hash(b)) for b in builds}
        slow = [i for i, e in enumerate(entries) if e.action is Action.BUILD and (e.kernel, e.hash) not in current]
        outcomes: list[_KernelResult | None] = [None] * len(entries)
        for i, outcome in zip(slow, self.fanout.map(kernel_result, [entries[i] for i in slow]), strict=True):
            outcomes[i] = outcome
        fast = set(range(len(entries))) - set(slow)
        for i in sorted(fast):
            outcomes[i] = kernel_result(entries[i])
        for outcome in outcomes:
            if outcome is None:
                continue
            records.append(outcome.record)
            events.extend(outcome.events)
            waiting = waiting or outcome.waiting

        errors = error_entries(entries)
        generation = (reported.get("metadata") or EMPTY).get("generation")
        conds = conditions(records, errors, generation, status.get("conditions") or (),
                           secret_problems=secret_problems)
        events.extend(transition_events(previous, records, errors, status.get("conditions") or (),
                                        secret_problems=secret_problems))
        new_status = status_body(records, conds, generation)
        current = thaw(status)
        if {k: current.get(k) for k in new_status} != new_status:  # fields others own are left alone
            self._write_status(reported, new_status)
        for event in merge_events(events):
            self.recorder.emit(reported, event)
        # Secrets are read, not watched: a Module reporting an unusable one is looked at again for the fix.
        retry = self.registry_retry if waiting or secret_problems else None
        after = min((d for d in (retry, self._next_recheck(subject, records)) if d is not None), default=None)
        return Result(requeue_after=after) if after is not None else None

    # -- builds ----------------------------------------------------------------------------------

    def _ensure_build(self, subject: _Subject, entry: PlanEntry, previous: Mapping[str, Any] | None,
                      builds: list[Mapping[str, Any]]) -> _KernelResult:
        assert entry.kernel is not None and entry.hash is not None
        module = subject.module
        name = build_name(module["metadata"]["name"], entry.kernel, entry.hash, owner_tag(subject.reported))
        key = _recheck_key(subject)
        replacing = self.rechecks.rebuilding(key, entry.kernel, entry.hash) if self.rechecks else None
        # A completed Build deleted to rebuild its vanished image may linger in the cache: it is gone.
        mine = [b for b in builds if build_kernel(b) == entry.kernel and not (replacing and _uid(b) == replacing)]
        current = next((b for b in mine if build_hash(b) == entry.hash), None)
        events: list[EventSpec] = []
        # Superseded Builds still running are cancelled (deleted); finished ones are history, kept or
        # removed by the Build garbage collector (--build-history-limit).
        for stale in (b for b in mine if build_hash(b) != entry.hash and build_phase(b) in ACTIVE_PHASES):
            events.extend(self._delete_superseded(module, stale, entry))

        gone: ImageCheck | None = None  # a re-check found the image recorded as there gone
        if current is not None:
            phase = phase_of_build(build_phase(current))
            if phase == Phase.SUCCEEDED and (not previous or previous.get("phase") != Phase.SUCCEEDED):
                self.checker.invalidate(entry.image or "")  # the registry's answer changed: ask again
            message = (current.get("status") or EMPTY).get("message") or _phase_message(name, build_phase(current))
            if phase == Phase.FAILED:
                message = (f"Build {name} {build_phase(current).lower()}: {message}; not retried until its inputs "
                           "change or spec.imageRebuildTriggerGeneration is bumped")
            if self.rechecks is not None:
                self.rechecks.building(key, entry.kernel, entry.hash, _uid(current))
            if phase != Phase.SUCCEEDED or (gone := self._recheck(key, entry)) is None:
                return _KernelResult(kernel_record(entry, phase, message, name, previous), tuple(events))
            self._delete_completed(module, current, entry)  # its rebuild takes its name
        elif previous and previous.get("hash") == entry.hash and previous.get("phase") in DONE_PHASES \
                and replacing is None:
            if (gone := self._recheck(key, entry)) is None:
                return _KernelResult(dict(previous), tuple(events))  # already built from these very inputs
        if gone is not None:
            events.append(self._vanished(key, entry, previous, gone, _uid(current) if current is not None else ""))
        decision = decide(entry, self.checker)  # the same ladder as `kmm-dtk plan --check-registry`
        decided, image = decision.entry, decision.image
        if decided.action is Action.SKIP:
            if self.rechecks is not None:
                self.rechecks.checked(key, entry.kernel, entry.hash, found=True)
            return _KernelResult(kernel_record(entry, Phase.EXISTS, decided.reason, "", previous), tuple(events))
        if decided.action is Action.WAIT:
            return _KernelResult(kernel_record(entry, Phase.WAITING, f"not built: {decided.reason}; asking again later",
                                               "", previous, reason=decided.reason_code.value), tuple(events))
        if decided.action is Action.ERROR:
            if not previous or previous.get("message") != decided.reason:
                events.append(EventSpec(EventType.WARNING, decided.reason_code.value,
                                        f"kernel {entry.kernel}: {decided.reason}"))
            return _KernelResult(kernel_record(entry, Phase.ERROR, decided.reason, "", previous,
                                               reason=decided.reason_code.value), tuple(events))
        if decision.unverified_dtk:
            log.warning("building on a DTK whose kernel cannot be verified",
                        extra={"module_": entry.module, "kernel": entry.kernel,
                               "reason": decision.dtk.message if decision.dtk else ""})
        assert image is not None
        try:
            events.extend(self._create(subject, entry, name, image))
        except _OwnedElsewhere as err:
            if not previous or previous.get("message") != str(err):
                events.append(EventSpec(EventType.WARNING, "BuildimageConflict", str(err)))
            return _KernelResult(kernel_record(entry, Phase.ERROR, str(err), name, previous, reason="BuildConflict"),
                                 tuple(events))
        except ApiError as err:
            if err.status not in (400, 403, 422):
                raise  # transient (5xx, 429, timeouts): retried with backoff
            # The API refuses this Build as written or for this operator: retrying will not help.
            message = f"Build {name} was refused by the API server ({err.status} {err.reason}): {err.message}"
            if not previous or previous.get("message") != message:
                events.append(EventSpec(EventType.WARNING, "BuildimageRefused", message))
            return _KernelResult(kernel_record(entry, Phase.ERROR, message, name, previous, reason="BuildRefused"),
                            tuple(events))
        message = f"dry run: Build {name} not created" if self.dry_run else _phase_message(name, "New")
        return _KernelResult(kernel_record(entry, Phase.PENDING, message, name, previous), tuple(events))

    # -- re-checks of images recorded as in the registry -----------------------------------------

    def _recheck(self, key: str, entry: PlanEntry) -> ImageCheck | None:
        """Ask the registry again about an image recorded as there, if its turn has come: the answer when
        the image is gone (missing, or replaced by one built from other inputs), else None and the record
        stands (the image is there, or the registry said nothing definite: silence never builds)."""
        assert entry.kernel is not None and entry.hash is not None and entry.image is not None
        if self.rechecks is None or not self.rechecks.due(key, entry.kernel, entry.hash, _registry(entry.image)):
            return None
        self.checker.invalidate(entry.image)  # the answer cached is the one being questioned
        answer = self.checker.check(entry)
        fields = {"module_": key, "kernel": entry.kernel, "image": entry.image, "answer": answer.state.value}
        if answer.build:
            return answer
        self.rechecks.checked(key, entry.kernel, entry.hash, found=answer.exists)
        if answer.exists:
            log.debug("image re-checked: still in the registry", extra=fields)
        else:
            log.info("image re-checked: no answer, record kept", extra={**fields, "reason": answer.message})
        return None

    def _vanished(self, key: str, entry: PlanEntry, previous: Mapping[str, Any] | None, answer: ImageCheck,
                  replacing: str) -> EventSpec:
        """Remember the rebuild (a stale status saying the image is there is not believed until its Build
        shows up) and say why it happens."""
        assert self.rechecks is not None and entry.kernel is not None and entry.hash is not None
        seen = (self.rechecks.seen(key, entry.kernel, entry.hash) or (previous or EMPTY).get("lastTransitionTime")
                or "an earlier check")
        self.rechecks.vanished(key, entry.kernel, entry.hash, replacing)
        what = "is gone" if answer.state is ImageState.MISSING else f"was replaced ({answer.message})"
        log.info("image gone from the registry", extra={"module_": key, "kernel": entry.kernel, "image": entry.image,
                                                        "answer": answer.state.value, "lastSeen": seen})
        return EventSpec(EventType.WARNING, IMAGE_VANISHED,
                         f"image {entry.image} for kernel {entry.kernel} was in the registry on {seen} and {what}; "
                         "rebuilding")

    def _delete_completed(self, module: Mapping[str, Any], build: Mapping[str, Any], entry: PlanEntry) -> None:
        """Delete the completed Build whose image vanished: its rebuild has the same name."""
        meta = build["metadata"]
        fields = {"module_": module_key(module), "kernel": entry.kernel, "build": meta["name"]}
        if self.dry_run:
            log.info("dry run: would delete the completed Build to rebuild its image", extra=fields)
            return
        try:
            self.client.delete(BUILDS, meta["name"], meta["namespace"],
                               body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
                                     "preconditions": {"uid": meta["uid"]}})
        except ApiError as err:
            if err.status not in (404, 409):  # gone already, or already replaced by another
                raise
        log.info("completed Build deleted: its image is gone from the registry", extra=fields)

    def _next_recheck(self, subject: _Subject, records: list[dict[str, Any]]) -> float | None:
        """Seconds until this Module's next re-check, if it records any image as in the registry."""
        if self.rechecks is None:
            return None
        delay = self.rechecks.next_in(_recheck_key(subject), {r["kernel"]: r.get("hash", "") for r in records},
                                      {r["kernel"] for r in records if r.get("phase") in DONE_PHASES})
        return None if delay is None else max(delay, RECHECK_FLOOR)

    def _create(self, subject: _Subject, entry: PlanEntry, name: str, image: ImageCheck) -> list[EventSpec]:
        module = subject.module
        body = build_object(entry, thaw(subject.reported))
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
            existing = self.view.builds.get(f"{namespace}/{name}")
            owners = [r for r in ((existing or EMPTY).get("metadata") or EMPTY).get("ownerReferences") or ()
                      if r.get("controller")]
            mine = (subject.reported.get("metadata") or EMPTY).get("uid")
            if owners and owners[0].get("uid") != mine:
                raise _OwnedElsewhere(f"Build {name} exists and belongs to {owners[0].get('kind')} "
                                      f"{owners[0].get('name')}: delete it, or the object that owns it") from None
            log.debug("Build already exists", extra=fields)
            return []
        log.info("Build created", extra={**fields, "image": entry.image, "dtkImage": entry.dtk_image})
        dtk = f" on DTK {entry.dtk_image}" if entry.dtk_image else ""
        ahead = f" ahead of the upgrade to release {entry.release}" if entry.release else ""
        why = f" ({image.message})" if image.state is ImageState.OUTDATED else ""
        return [EventSpec(EventType.NORMAL, "BuildimageCreated",
                          f"Build {name} created for kernel {entry.kernel}{ahead}{dtk}{why}")]

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
            return [EventSpec(EventType.NORMAL, "BuildimageCancelled",
                              f"Build {meta['name']} cancelled: its inputs changed (new plan hash {entry.hash})")]
        return []

    def _write_status(self, obj: Mapping[str, Any], status: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if self.dry_run:
            log.info("dry run: would update status",
                     extra={"object": f"{obj.get('kind')} {meta['namespace']}/{meta['name']}"})
            return
        body = {"status": status}
        try:
            if obj.get("kind") == MODULEBUILDS.kind:
                self.client.patch(MODULEBUILDS, meta["name"], body, meta["namespace"], subresource="status")
            else:
                self.client.patch(MODULES, meta["name"], body, meta["namespace"], subresource="status")
        except ApiError as err:
            if err.status == 404:
                return  # deleted meanwhile
            raise


def _recheck_key(subject: _Subject) -> str:
    """Whose re-checks: a Module and a ModuleBuild of the same name are two."""
    return f"{subject.reported.get('kind') or 'Module'}/{module_key(subject.reported)}"


def _generation_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """A Module's spec (its generation), identity or deletion: status writes and labels are ignored."""
    o, n = old.get("metadata") or EMPTY, new.get("metadata") or EMPTY
    return (o.get("generation"), o.get("uid"), o.get("deletionTimestamp")) != \
        (n.get("generation"), n.get("uid"), n.get("deletionTimestamp"))


def _data_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """ConfigMaps are cached as metadata only: a new resourceVersion may be new data (or only new
    labels or annotations, which costs one reconcile that changes nothing)."""
    return (old.get("metadata") or EMPTY).get("resourceVersion") != \
        (new.get("metadata") or EMPTY).get("resourceVersion")


def _phase_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return build_phase(old) != build_phase(new)


def _named_module(module_build: Mapping[str, Any]) -> str:
    spec = module_build.get("spec") or EMPTY
    return f"{(module_build.get('metadata') or EMPTY).get('namespace')}/{spec.get('moduleName')}"


def _moved_or_leaving(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return _named_module(old) != _named_module(new) or bool((new.get("metadata") or EMPTY).get("deletionTimestamp"))


def setup_module_controller(manager: Manager, view: ClusterView, reconciler: ModuleReconciler, *, workers: int,
                            metrics: ControllerMetrics | None = None) -> Controller[str]:
    """What enqueues a Module here: its spec changing (a new generation), a Dockerfile ConfigMap it
    names changing its data, and one of its Builds appearing, changing phase or going. The node, DTK,
    mirror and upgrade controllers add Modules to ``queue`` too, when the kernels a Module selects,
    its DTK image, the mirror policy or the release being rolled out change."""
    queue = RateLimitingQueue("module", metrics=metrics)
    enqueue_on(view.modules.informers, queue, lambda m: (module_key(m),), update=_generation_changed, delete=False)
    enqueue_on(view.configmaps.informers, queue, view.modules_using_configmap, update=_data_changed)
    enqueue_on(view.builds.informers, queue, owner_keys(MODULES.kind), update=_phase_changed)
    return manager.add_controller(Controller("module", queue, reconciler.reconcile, workers=workers, metrics=metrics))


def setup_modulebuild_controller(manager: Manager, view: ClusterView, reconciler: ModuleReconciler, *,
                                 workers: int, metrics: ControllerMetrics | None = None) -> Controller[str] | None:
    """What enqueues a ModuleBuild: its spec changing; its Module appearing, changing or going; a
    Dockerfile ConfigMap either of them names changing; one of its Builds changing phase. Whatever
    enqueues a Module enqueues the ModuleBuilds naming it too (``enqueue_module`` in app.py)."""
    if view.modulebuilds is None:
        log.info("the ModuleBuild API is not served; only Modules with build sections are built")
        return None
    queue = RateLimitingQueue("modulebuild", metrics=metrics)
    enqueue_on(view.modulebuilds.informers, queue, lambda b: (module_key(b),), update=_generation_changed,
               delete=False)
    # The others naming the same Module: one of them may build it now that this one went or moved on.
    def siblings(*module_builds: Mapping[str, Any]) -> None:
        for key in sorted({k for b in module_builds for k in view.modulebuilds_for(_named_module(b))}):
            queue.add(key)

    for informer in view.modulebuilds.informers:
        informer.add_handler(EventHandler(
            on_update=lambda old, new: siblings(old, new) if _moved_or_leaving(old, new) else None,
            on_delete=siblings))
    enqueue_on(view.modules.informers, queue, lambda m: view.modulebuilds_for(module_key(m)),
               update=_generation_changed)
    enqueue_on(view.configmaps.informers, queue, view.modulebuilds_using_configmap, update=_data_changed)
    enqueue_on(view.builds.informers, queue, owner_keys(MODULEBUILDS.kind), update=_phase_changed)
    return manager.add_controller(Controller("modulebuild", queue, reconciler.reconcile_module_build, workers=workers,
                                             metrics=metrics))
