"""Module status and the Events that its changes deserve (pure).

Status is computed from scratch on every reconcile and written only when it differs, so a
steady cluster makes no writes. Events come from comparing the new per-kernel records with the
ones already in status: they fire on transitions, so a restart does not repeat them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from kmm_dtk.core.plan import Action, PlanEntry


class Phase(str, Enum):
    """A kernel's phase in ``status.kernels[].phase``."""

    PENDING = "Pending"  # Build created, not running yet
    BUILDING = "Building"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"  # not retried until its inputs change
    EXISTS = "Exists"  # the image is in the registry already: nothing to build
    ERROR = "Error"  # the plan or the API refused it (the message says why)
    WAITING = "Waiting"  # the registry gave no definite answer: nothing built, asked again later


DONE_PHASES = frozenset({Phase.SUCCEEDED.value, Phase.EXISTS.value})  # values, as read back from status


class EventType(str, Enum):
    NORMAL = "Normal"
    WARNING = "Warning"


UNUSABLE_PULL_SECRET = "UnusablePullSecret"  # Degraded reason and Event: a pull Secret left out
IMAGE_VANISHED = "ImageVanished"  # Warning Event: a re-check found a built image gone from the registry


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class EventSpec:
    type: EventType
    reason: str
    message: str


def phase_of_build(build_phase: str) -> Phase:
    if build_phase == "Complete":
        return Phase.SUCCEEDED
    if build_phase in ("Failed", "Error", "Cancelled"):
        return Phase.FAILED
    if build_phase in ("Pending", "Running"):
        return Phase.BUILDING
    return Phase.PENDING


def kernel_record(entry: PlanEntry, phase: Phase | str, message: str, build_name: str = "",
                  previous: Mapping[str, Any] | None = None, now: str | None = None,
                  reason: str = "") -> dict[str, Any]:
    record = {
        "kernel": entry.kernel or "",
        "rhcos": entry.rhcos or "",
        "dtkImage": entry.dtk_image or "",
        "image": entry.image or "",
        "hash": entry.hash or "",
        "phase": Phase(phase).value,
        "reason": reason,
        "release": entry.release or "",
        "buildName": build_name,
        "message": message,
    }
    unchanged = previous is not None and all(previous.get(k) == record[k] for k in ("phase", "hash", "message"))
    kept = (previous or {}).get("lastTransitionTime") if unchanged else None
    record["lastTransitionTime"] = kept if isinstance(kept, str) and kept else (now or now_rfc3339())
    return {k: v for k, v in record.items() if v != ""}


def _condition(kind: str, status: bool, reason: str, message: str, generation: int | None,
               previous: Mapping[str, Mapping[str, Any]], now: str) -> dict[str, Any]:
    value = "True" if status else "False"
    old = previous.get(kind) or {}
    same = old.get("status") == value and old.get("reason") == reason and old.get("message") == message
    condition = {"type": kind, "status": value, "reason": reason, "message": message[:32768],
                 "lastTransitionTime": old.get("lastTransitionTime") if same and old.get("lastTransitionTime") else now}
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def secret_notes(problems: Iterable[str]) -> list[str]:
    """How an unusable pull Secret reads in the Degraded condition and its Event."""
    return [f"pull secret not used, registries asked without it: {p}" for p in problems]


def conditions(records: Iterable[Mapping[str, Any]], errors: Iterable[PlanEntry], generation: int | None,
               previous: Iterable[Mapping[str, Any]] = (), now: str | None = None, *,
               secret_problems: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Ready / Progressing / Degraded, each with a reason a person can act on. ``secret_problems``
    (pull Secrets that could not be used) make the Module Degraded without making it unready: what
    was built stays built, and what the registry said without them is still an answer."""
    now = now or now_rfc3339()
    previous_by_type = {str(c.get("type")): c for c in previous if isinstance(c, Mapping)}
    records = list(records)
    errors = list(errors)
    failed = [r for r in records if r["phase"] == Phase.FAILED]
    progressing = [r for r in records if r["phase"] in (Phase.PENDING, Phase.BUILDING, Phase.WAITING)]
    planned_error_kernels = {e.kernel for e in errors}
    refused = [r for r in records if r["phase"] == Phase.ERROR and r["kernel"] not in planned_error_kernels]

    if errors:
        first = errors[0]
        degraded = (True, first.reason_code.value, "; ".join(_describe(e) for e in errors))
    elif refused:
        degraded = (True, refused[0].get("reason") or "BuildRefused",
                    "; ".join(f"kernel {r['kernel']}: {r.get('message', '')}" for r in refused))
    elif failed:
        degraded = (True, "BuildFailed", "; ".join(f"kernel {r['kernel']}: {r.get('message', '')}" for r in failed))
    else:
        degraded = (False, "AsExpected", "no errors")
    notes = secret_notes(secret_problems)
    if notes and degraded[0]:
        degraded = (True, degraded[1], "; ".join([degraded[2], *notes]))
    elif notes:
        degraded = (True, UNUSABLE_PULL_SECRET, "; ".join(notes))

    if progressing:
        waiting = all(r["phase"] == Phase.WAITING for r in progressing)
        prog = (True, "WaitingForRegistry" if waiting else "Building",
                ", ".join(f"{r['kernel']} ({r['phase'].lower()})" for r in progressing))
    else:
        prog = (False, "Idle", "no build in progress")

    if not records and not errors:
        ready = (True, "NothingToBuild", "no selected node runs a kernel that this Module builds for")
    elif errors or failed or refused:
        ready = (False, degraded[1], degraded[2])
    elif progressing:
        ready = (False, prog[1], prog[2])
    else:
        ready = (True, "AllImagesBuilt", f"driver images ready for {len(records)} kernel(s)")
    return [
        _condition("Ready", *ready, generation, previous_by_type, now),
        _condition("Progressing", *prog, generation, previous_by_type, now),
        _condition("Degraded", *degraded, generation, previous_by_type, now),
    ]


def _describe(entry: PlanEntry) -> str:
    return f"kernel {entry.kernel}: {entry.reason}" if entry.kernel else entry.reason


def error_entries(entries: Iterable[PlanEntry]) -> list[PlanEntry]:
    return [e for e in entries if e.action is Action.ERROR]


def status_body(records: list[dict[str, Any]], conds: list[dict[str, Any]], generation: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"conditions": conds, "kernels": sorted(records, key=lambda r: r["kernel"])}
    if generation is not None:
        body["observedGeneration"] = generation
    return body


def transition_events(previous: Mapping[str, Mapping[str, Any]], records: Iterable[Mapping[str, Any]],
                      errors: Iterable[PlanEntry], previous_conditions: Iterable[Mapping[str, Any]], *,
                      secret_problems: Iterable[str] = ()) -> list[EventSpec]:
    """Events for what changed since the status we last wrote."""
    events: list[EventSpec] = []
    for record in records:
        old = previous.get(record["kernel"]) or {}
        if old.get("phase") == record["phase"] and old.get("hash") == record.get("hash"):
            continue
        build = record.get("buildName", "")
        if record["phase"] == Phase.SUCCEEDED:
            events.append(EventSpec(EventType.NORMAL, "BuildimageSucceeded",
                                    f"Build {build} succeeded: {record.get('image')} for kernel {record['kernel']}"))
        elif record["phase"] == Phase.FAILED:
            events.append(EventSpec(EventType.WARNING, "BuildimageFailed",
                                    f"kernel {record['kernel']}: {record.get('message', '')}"))
    old_degraded = next((c for c in previous_conditions if c.get("type") == "Degraded"), {})
    for entry in errors:
        message = _describe(entry)
        if old_degraded.get("status") == "True" and message in str(old_degraded.get("message", "")):
            continue  # already reported
        events.append(EventSpec(EventType.WARNING, entry.reason_code.value, message))
    for note in secret_notes(secret_problems):
        if old_degraded.get("status") == "True" and note in str(old_degraded.get("message", "")):
            continue
        events.append(EventSpec(EventType.WARNING, UNUSABLE_PULL_SECRET, note))
    return events
