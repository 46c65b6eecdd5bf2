"""Build garbage collection: which completed Builds go (pure), and on the real control plane, that
three upgrades in a row leave one Build per Module rather than one per kernel ever run."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from kubernetes import client

from kmm_dtk.cli import _build_parser
from kmm_dtk.operator.build_gc import Collection, finished_at, select_garbage
from kmm_dtk.operator.builds import ACTIVE_PHASES, KERNEL_ANNOTATION, MODULE_ANNOTATION
from tests.operator.conftest import K84, K86, R410, R411, module_body, os_image
from tests.support.controlplane import wait_for
from tests.support.objects import create_node, set_node_versions

T0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
HOUR = 3600.0
K1, K2 = "5.14.0-427.50.1.el9_4.x86_64", "5.14.0-570.12.1.el9_6.x86_64"
MOD = "drivers/simple-kmod"


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(name: str, kernel: str = K1, phase: str = "Complete", finished: float | None = T0,
          created: float = T0 - 600, module: str = "simple-kmod", namespace: str = "drivers", **meta) -> dict:
    status: dict = {"phase": phase}
    if finished is not None:
        status["completionTimestamp"] = _stamp(finished)
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}",
                         "creationTimestamp": _stamp(created),
                         "annotations": {MODULE_ANNOTATION: module, KERNEL_ANNOTATION: kernel}, **meta},
            "status": status}


def gone(collection: Collection) -> list[str]:
    return [d.name for d in collection.doomed]


def test_a_kernel_out_of_use_loses_every_completed_build_after_the_grace_period():
    builds = [build("ok", finished=T0), build("failed", phase="Failed", finished=T0 - HOUR),
              build("error", phase="Error"), build("cancelled", phase="Cancelled")]
    since = {(MOD, K1): T0 + 10}
    early = select_garbage(builds, set(), since, now=T0 + HOUR, grace=HOUR, keep=2)
    assert gone(early) == [], "out of use for less than the grace period"
    assert early.next_due == T0 + 10 + HOUR
    late = select_garbage(builds, set(), since, now=T0 + 10 + HOUR, grace=HOUR, keep=2)
    assert sorted(gone(late)) == ["cancelled", "error", "failed", "ok"]
    assert late.next_due is None
    assert {d.reason for d in late.doomed} == {"no node runs its kernel and no release being rolled out brings it"}
    assert late.doomed[0].uid == f"uid-{late.doomed[0].name}", "deleted with a uid precondition"


def test_the_grace_period_also_counts_from_completion():
    """A Build that ended after its kernel went out of use (it was running then) gets the full grace."""
    builds = [build("late", finished=T0 + 2 * HOUR)]
    collection = select_garbage(builds, set(), {(MOD, K1): T0}, now=T0 + 2.5 * HOUR, grace=HOUR, keep=2)
    assert gone(collection) == [] and collection.next_due == T0 + 3 * HOUR


def test_a_pair_first_seen_out_of_use_now_starts_its_grace_now():
    collection = select_garbage([build("old", finished=T0 - 100 * HOUR)], set(), {}, now=T0, grace=HOUR, keep=1)
    assert gone(collection) == [] and collection.next_due == T0 + HOUR


def test_a_kernel_in_use_keeps_its_last_n_completed_builds_whatever_their_age():
    # Three hashes of one running kernel (a DTK z-stream, a rebuild trigger): the superseded ones
    # are subject to the history limit like any other.
    builds = [build("h1", finished=T0 - 30 * HOUR, phase="Failed"), build("h2", finished=T0 - 20 * HOUR),
              build("h3", finished=T0 - 10 * HOUR)]
    collection = select_garbage(builds, {(MOD, K1)}, {}, now=T0, grace=HOUR, keep=2)
    assert gone(collection) == ["h1"]
    assert collection.doomed[0].reason == "more than 2 completed Builds for a kernel in use"
    assert gone(select_garbage(builds, {(MOD, K1)}, {}, now=T0, grace=HOUR, keep=3)) == []
    assert gone(select_garbage(builds, {(MOD, K1)}, {}, now=T0, grace=HOUR, keep=1)) == ["h2", "h1"]


def test_history_beyond_the_limit_still_waits_out_the_grace_period():
    builds = [build("older", finished=T0 - 100), build("newer", finished=T0)]
    collection = select_garbage(builds, {(MOD, K1)}, {}, now=T0 + 60, grace=HOUR, keep=1)
    assert gone(collection) == [] and collection.next_due == T0 - 100 + HOUR


def test_active_builds_are_never_deleted_nor_counted():
    active = [build(phase, phase=phase, finished=None, created=T0 - 100 * HOUR)
              for phase in ("New", "Pending", "Running")] + [build("no-status", finished=None)]
    active[-1]["status"] = {}
    for in_use in (set(), {(MOD, K1)}):
        collection = select_garbage(active, in_use, {(MOD, K1): T0 - 100 * HOUR}, now=T0, grace=0, keep=1)
        assert gone(collection) == [] and collection.next_due is None
    # Two completed Builds and a running one of a kernel in use, limit 1: the running one does not
    # take the place of the newest completed one.
    mixed = [build("running", phase="Running", finished=None), build("a", finished=T0 - 2 * HOUR),
             build("b", finished=T0 - HOUR)]
    assert gone(select_garbage(mixed, {(MOD, K1)}, {}, now=T0, grace=0, keep=1)) == ["a"]


def test_the_build_a_status_record_names_is_never_deleted():
    """A hash that flipped back, or a Failed Build the reconciler reads to not retry: kept whatever its age."""
    builds = [build("new", finished=T0), build("failed", phase="Failed", finished=T0 - 50 * HOUR,
                                             labels={"kmm-dtk.io/hash": "h-current"})]
    assert gone(select_garbage(builds, {(MOD, K1)}, {}, now=T0, grace=0, keep=1)) == ["failed"]
    kept = select_garbage(builds, {(MOD, K1)}, {}, now=T0, grace=0, keep=1, current={(MOD, K1): {"h-current"}})
    assert gone(kept) == []
    out_of_use = select_garbage(builds, set(), {(MOD, K1): T0 - 100 * HOUR}, now=T0, grace=0, keep=1,
                                current={(MOD, K1): {"h-current"}})
    assert gone(out_of_use) == ["new"]


def test_pairs_are_per_module_and_kernel():
    builds = [build("m1-k1"), build("m1-k2", kernel=K2), build("m2-k1", module="other"),
              build("ns2-k1", namespace="elsewhere")]
    collection = select_garbage(builds, {(MOD, K2), ("drivers/other", K1)}, {}, now=T0 + 2 * HOUR, grace=0, keep=1)
    assert sorted(gone(collection)) == ["m1-k1", "ns2-k1"]


def test_builds_being_deleted_or_not_ours_are_left_alone():
    deleting = build("deleting", deletionTimestamp=_stamp(T0))
    foreign = build("foreign")
    foreign["metadata"]["annotations"] = {}
    collection = select_garbage([deleting, foreign], set(), {}, now=T0 + 10 * HOUR, grace=0, keep=1)
    assert gone(collection) == []


def test_completion_time_falls_back_to_start_then_creation():
    started = build("started", finished=None)
    started["status"]["startTimestamp"] = _stamp(T0 + 5)
    assert finished_at(started) == T0 + 5
    assert finished_at(build("created", finished=None, created=T0 - 7)) == T0 - 7
    assert finished_at({"metadata": {}, "status": {"completionTimestamp": "not a time"}}) == 0.0
    # Ordered by that time: the Build created last is the one kept.
    builds = [build("first", finished=None, created=T0 - 20), build("second", finished=None, created=T0 - 10)]
    assert gone(select_garbage(builds, {(MOD, K1)}, {}, now=T0 + HOUR, grace=0, keep=1)) == ["first"]


@pytest.mark.parametrize("value, seconds", [("1h", 3600.0), ("90m", 5400.0), ("1h30m", 5400.0), ("45s", 45.0),
                                            ("120", 120.0), ("0", 0.0)])
def test_grace_period_flag_takes_seconds_or_durations(value, seconds):
    args = _build_parser().parse_args(["run", "--build-gc-grace-period", value, "--build-history-limit", "5"])
    assert (args.build_gc_grace_period, args.build_history_limit) == (seconds, 5)


def test_gc_flag_defaults_and_refusals(capsys):
    args = _build_parser().parse_args(["run"])
    assert (args.build_gc_grace_period, args.build_history_limit) == (3600.0, 2)
    for flags in (["--build-gc-grace-period", "1d"], ["--build-gc-grace-period", "-5"],
                  ["--build-gc-grace-period", "31d"], ["--build-history-limit", "0"]):
        with pytest.raises(SystemExit) as exited:
            _build_parser().parse_args(["run", *flags])
        assert exited.value.code == 2
        assert flags[0] in capsys.readouterr().err



# -- on the real control plane ---------------------------------------------------------------------

GRACE = 2.0
MAIN, EVERYWHERE = "simple-kmod", "everywhere"
UPGRADES = ("4.18.0-372.41.1.el8_6.x86_64", "4.18.0-372.42.1.el8_6.x86_64", "4.18.0-372.43.1.el8_6.x86_64")


def _pairs(scenario) -> dict[tuple[str, str], list[str]]:
    """(Module, kernel) -> names of its Builds, as the API server has them."""
    found: dict[tuple[str, str], list[str]] = {}
    for item in scenario.builds():
        annotations = item["metadata"]["annotations"]
        found.setdefault((annotations[MODULE_ANNOTATION], annotations[KERNEL_ANNOTATION]), []).append(
            item["metadata"]["name"])
    return found


def _wait_pairs(scenario, expected: set[tuple[str, str]], what: str) -> dict[tuple[str, str], list[str]]:
    return wait_for(lambda: (lambda found: found if set(found) == expected else None)(_pairs(scenario)), 40, what)


def _complete_active_builds(scenario) -> None:
    """What the build controller would do once the Builds ran (the test API has no build controller)."""
    for item in scenario.builds():
        if (item.get("status") or {}).get("phase", "New") in ACTIVE_PHASES:
            scenario.set_build_phase(item, "Complete")


@pytest.mark.integration
def test_three_upgrades_in_a_row_leave_one_build_per_module_and_kernel_in_use(scenario, run_operator, new_node_name):
    """Every upgrade moves every node of the scenario to a new kernel. ``simple-kmod`` selects those
    nodes only; ``everywhere`` also selects a node of a paused pool that stays on K84. The bound:
    once an upgrade settles, each Module has one Build per kernel in use (its history limit is 2,
    and each kernel has only been built once), so 1 + 2 Builds, where 10 would pile up without
    collection; the paused pool's Build, older than the grace period many times over, stays."""
    namespace = scenario.namespace
    core = client.CoreV1Api(scenario.api)
    for node in scenario.nodes:
        core.patch_node(node, {"metadata": {"labels": {"kmm-dtk-test/gc": namespace}}})
    create_node(scenario.api, new_node_name("paused"), K84, os_image(R410), {"kmm-dtk-test/gc": namespace})
    scenario.create_module()
    scenario.create_module(module_body(namespace, EVERYWHERE, selector={"kmm-dtk-test/gc": namespace}))
    run_operator(build_gc_grace=GRACE, build_history_limit=2)

    start = _wait_pairs(scenario, {(m, k) for m in (MAIN, EVERYWHERE) for k in (K84, K86)},
                        "a Build per Module and kernel")
    _complete_active_builds(scenario)
    paused_build = start[(EVERYWHERE, K84)]
    created = len(start)

    for step, kernel in enumerate(UPGRADES, start=1):
        moved_at = time.monotonic()
        for node in scenario.nodes:
            set_node_versions(scenario.api, node, kernel, os_image(R411))
        wait_for(lambda k=kernel: {(MAIN, k), (EVERYWHERE, k)} <= set(_pairs(scenario)), 40,
                 f"upgrade {step}: a Build of each Module for {kernel}")
        created += 2
        _complete_active_builds(scenario)
        settled = _wait_pairs(scenario, {(MAIN, kernel), (EVERYWHERE, kernel), (EVERYWHERE, K84)},
                              f"upgrade {step}: the Builds of the kernels left behind collected")
        assert time.monotonic() - moved_at >= GRACE, "collected before the grace period was over"
        assert all(len(names) == 1 for names in settled.values()), settled
        assert settled[(EVERYWHERE, K84)] == paused_build, "a kernel a node still runs keeps its Build"
        assert len(settled) == 3 < created
    assert created == 10
