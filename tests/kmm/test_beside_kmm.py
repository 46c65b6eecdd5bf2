"""kmm-dtk beside the KMM operator, on KMM's own Module schema: one builder per image, status and
Events complete and quiet on the ModuleBuild, nothing written to Modules KMM builds itself."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.kmm.conftest import MB_GROUP, MB_VERSION, BesideKmm, module_build, module_without_build
from tests.operator.conftest import DOCKERFILE
from tests.support.controlplane import wait_for
from tests.support.objects import MODULE_GROUP, MODULE_PLURAL, MODULE_VERSION

pytestmark = pytest.mark.integration


def _kernels(obj: dict) -> dict[str, dict]:
    return {r["kernel"]: r for r in (obj.get("status") or {}).get("kernels") or ()}


def test_kmms_schema_prunes_kmm_dtk_status_from_a_module(beside_kmm: BesideKmm):
    """Why the build half has an object of its own: on KMM's schema a Module keeps no kmm-dtk status."""
    created = beside_kmm.create(module_without_build(beside_kmm.namespace, "pruned"))
    created["status"] = {"conditions": [{"type": "Ready", "status": "True", "reason": "X", "message": "",
                                         "lastTransitionTime": "2026-11-30T00:00:00Z"}],
                         "kernels": [{"kernel": "k", "phase": "Pending"}], "moduleLoader": {"desiredNumber": 2}}
    beside_kmm.custom.replace_namespaced_custom_object_status(MODULE_GROUP, MODULE_VERSION, beside_kmm.namespace,
                                                              MODULE_PLURAL, "pruned", created)
    assert beside_kmm.get("Module", "pruned")["status"] == {"moduleLoader": {"desiredNumber": 2}}


def test_a_module_build_gets_one_build_per_kernel_and_complete_quiet_status(beside_kmm: BesideKmm):
    ns = beside_kmm.namespace
    beside_kmm.create(module_without_build(ns, "simple-kmod"))
    beside_kmm.create(module_build(ns, "simple-kmod", "simple-kmod"))
    # KMM builds this one itself: kmm-dtk must neither build it nor write to it.
    kmms = module_without_build(ns, "kmm-builds-this")
    kmms["spec"]["moduleLoader"]["container"]["build"] = {"dockerfileConfigMap": {"name": "dockerfile"}}
    kmms_version = beside_kmm.create(kmms)["metadata"]["resourceVersion"]
    module_version = beside_kmm.get("Module", "simple-kmod")["metadata"]["resourceVersion"]
    beside_kmm.start()

    wait_for(lambda: set(_kernels(beside_kmm.get("ModuleBuild", "simple-kmod"))) == beside_kmm.kernels, 30,
             "a record per kernel on the ModuleBuild")
    builds = beside_kmm.builds()
    assert sorted(b["metadata"]["annotations"]["kmm-dtk.io/kernel"] for b in builds) == sorted(beside_kmm.kernels)
    for build in builds:
        [owner] = build["metadata"]["ownerReferences"]
        assert (owner["apiVersion"], owner["kind"], owner["name"]) == (f"{MB_GROUP}/{MB_VERSION}", "ModuleBuild",
                                                                       "simple-kmod")
        image = build["spec"]["output"]["to"]["name"]
        assert image.startswith(f"registry.example.com/{ns}/simple-kmod:")  # the image KMM will pull
    mb = beside_kmm.get("ModuleBuild", "simple-kmod")
    conditions = {c["type"]: c for c in mb["status"]["conditions"]}
    assert conditions["Progressing"]["status"] == "True" and mb["status"]["observedGeneration"] == 1
    assert beside_kmm.get("Module", "simple-kmod")["metadata"]["resourceVersion"] == module_version
    assert beside_kmm.get("Module", "kmm-builds-this")["metadata"]["resourceVersion"] == kmms_version

    for build in builds:
        beside_kmm.set_build_phase(build["metadata"]["name"], "Complete")
    wait_for(lambda: all(r["phase"] == "Succeeded" for r in
                         _kernels(beside_kmm.get("ModuleBuild", "simple-kmod")).values()), 30, "Succeeded records")
    wait_for(lambda: len(beside_kmm.events("BuildimageSucceeded")) == 2, 20, "one Succeeded Event per kernel")

    # Quiet: more reconciles of unchanged inputs write nothing and repeat no Event.
    settled = beside_kmm.get("ModuleBuild", "simple-kmod")["metadata"]["resourceVersion"]
    events = sorted((e.reason, e.message) for e in beside_kmm.events())
    assert beside_kmm.operator is not None
    [controller] = [c for c in beside_kmm.operator.manager.controllers if c.name == "modulebuild"]
    before = beside_kmm.reconciles("modulebuild")
    for _ in range(3):
        done = beside_kmm.reconciles("modulebuild")
        controller.queue.add(f"{ns}/simple-kmod")
        wait_for(lambda done=done: beside_kmm.reconciles("modulebuild") > done, 10, "one more reconcile")
    assert beside_kmm.reconciles("modulebuild") >= before + 3
    assert beside_kmm.get("ModuleBuild", "simple-kmod")["metadata"]["resourceVersion"] == settled
    assert sorted((e.reason, e.message) for e in beside_kmm.events()) == events
    assert len(beside_kmm.builds()) == 2, "exactly one Build per kernel"
    assert beside_kmm.get("Module", "kmm-builds-this")["metadata"]["resourceVersion"] == kmms_version


def test_a_module_build_that_cannot_apply_says_why_once(beside_kmm: BesideKmm):
    ns = beside_kmm.namespace
    kmms = module_without_build(ns, "own-build")
    kmms["spec"]["moduleLoader"]["container"]["build"] = {"dockerfileConfigMap": {"name": "dockerfile"}}
    beside_kmm.create(kmms)
    beside_kmm.create(module_build(ns, "conflict", "own-build"))
    beside_kmm.create(module_build(ns, "orphan", "no-such-module"))
    beside_kmm.start()

    def degraded(name: str) -> dict:
        found = beside_kmm.get("ModuleBuild", name).get("status") or {}
        return next((c for c in found.get("conditions") or () if c["type"] == "Degraded"), {})

    wait_for(lambda: degraded("conflict").get("status") == "True" and degraded("orphan").get("status") == "True",
             30, "both ModuleBuilds degraded")
    assert degraded("conflict")["reason"] == "InvalidModuleBuild"
    assert "has build sections of its own, so KMM builds it" in degraded("conflict")["message"]
    assert "spec.moduleName: Module" in degraded("orphan")["message"]
    wait_for(lambda: len(beside_kmm.events("InvalidModuleBuild")) == 2, 20, "one Event each")
    assert beside_kmm.builds() == []

    # The fix: the Module appears; the orphan's ModuleBuild builds without being touched.
    beside_kmm.create(module_without_build(ns, "no-such-module"))
    wait_for(lambda: len(beside_kmm.builds()) == 2, 30, "Builds once the named Module exists")
    assert {b["metadata"]["ownerReferences"][0]["name"] for b in beside_kmm.builds()} == {"orphan"}
    assert len(beside_kmm.events("InvalidModuleBuild")) == 2


def test_the_dockerfile_of_a_module_build_triggers_it(beside_kmm: BesideKmm):
    ns = beside_kmm.namespace
    beside_kmm.create(module_without_build(ns, "simple-kmod"))
    beside_kmm.create(module_build(ns, "simple-kmod", "simple-kmod"))
    beside_kmm.start()
    wait_for(lambda: len(beside_kmm.builds()) == 2, 30, "the first Builds")
    first = {b["metadata"]["name"] for b in beside_kmm.builds()}
    client.CoreV1Api(beside_kmm.api).patch_namespaced_config_map(
        "dockerfile", ns, {"data": {"dockerfile": DOCKERFILE + "RUN true\n"}})
    wait_for(lambda: {b["metadata"]["name"] for b in beside_kmm.builds()}.isdisjoint(first)
             and len(beside_kmm.builds()) == 2, 30, "new Builds for the new Dockerfile, the superseded ones gone")



def test_a_second_module_build_takes_over_when_the_first_goes(beside_kmm: BesideKmm):
    ns = beside_kmm.namespace
    beside_kmm.create(module_without_build(ns, "simple-kmod"))
    beside_kmm.create(module_build(ns, "first", "simple-kmod"))
    beside_kmm.create(module_build(ns, "second", "simple-kmod"))
    beside_kmm.start()
    wait_for(lambda: len(beside_kmm.builds()) == 2, 30, "the first ModuleBuild's Builds")
    assert {b["metadata"]["ownerReferences"][0]["name"] for b in beside_kmm.builds()} == {"first"}

    def second_degraded() -> str:
        status = beside_kmm.get("ModuleBuild", "second").get("status") or {}
        return next((c["status"] for c in status.get("conditions") or () if c["type"] == "Degraded"), "")

    wait_for(lambda: second_degraded() == "True", 20, "the second one said to be redundant")
    beside_kmm.custom.delete_namespaced_custom_object(MB_GROUP, MB_VERSION, ns, "modulebuilds", "first")
    wait_for(lambda: any(b["metadata"]["ownerReferences"][0]["name"] == "second" for b in beside_kmm.builds()), 30,
             "the second ModuleBuild to build once the first is gone")
    wait_for(lambda: second_degraded() == "False", 20, "the second one no longer degraded")
