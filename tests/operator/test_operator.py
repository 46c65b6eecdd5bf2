"""The operator end to end on a real kube-apiserver: Builds, rebuild triggers, status, Events."""

from __future__ import annotations

import pytest
from kubernetes import client

from kmm_dtk.operator.caches import OWNER_INDEX
from tests.operator.conftest import DTK_410, DTK_411, K84, K86, R410, R411, module_body, os_image
from tests.support.controlplane import wait_for
from tests.support.objects import create_node, move_imagestream_tag, set_node_versions

pytestmark = pytest.mark.integration


def _from_lines(build: dict) -> list[str]:
    return [line for line in build["spec"]["source"]["dockerfile"].splitlines() if line.upper().startswith("FROM")]


def _wait_builds(scenario, count: int, what: str) -> dict[str, list[dict]]:
    return wait_for(lambda: (lambda b: b if sum(len(v) for v in b.values()) == count else None)(
        scenario.builds_by_kernel()), 40, what)


def test_design_scenario_builds_each_kernel_on_its_dtk(scenario, run_operator):
    module = scenario.create_module()
    run_operator()
    builds = _wait_builds(scenario, 2, "one Build per kernel")
    assert set(builds) == {K84, K86}
    b84, b86 = builds[K84][0], builds[K86][0]
    assert _from_lines(b84)[0] == f"FROM {DTK_410} AS builder"
    assert _from_lines(b86)[0] == f"FROM {DTK_411} AS builder"
    assert "DTK-AUTO" not in b84["spec"]["source"]["dockerfile"]

    strategy = b84["spec"]["strategy"]["dockerStrategy"]
    args = {a["name"]: a["value"] for a in strategy["buildArgs"]}
    assert args == {"DTK_AUTO": DTK_410, "KERNEL_FULL_VERSION": K84, "KERNEL_VERSION": K84, "KMOD_VERSION": "1.0.2",
                    "MOD_NAME": "simple-kmod", "MOD_NAMESPACE": scenario.namespace}
    # The base images are the DTK and registry.redhat.io, not on the push registry: imageRepoSecret
    # only pushes, and the builder ServiceAccount's and the node's credentials pull.
    assert "pullSecret" not in strategy and strategy["mountTrustedCA"] is True
    assert strategy["volumes"][0]["source"]["secret"]["secretName"] == "signing-key"
    assert strategy["volumes"][0]["mounts"] == [{"destinationPath": "/run/secrets/signing-key"}]
    output = b84["spec"]["output"]
    assert output["to"] == {"kind": "DockerImage",
                            "name": f"registry.example.com/{scenario.namespace}/simple-kmod:{K84}"}
    assert output["pushSecret"] == {"name": "push"}
    image_labels = {label["name"]: label["value"] for label in output["imageLabels"]}
    assert image_labels["kmm-dtk.io/dtk-image"] == DTK_410
    assert image_labels["kmm-dtk.io/hash"] == b84["metadata"]["labels"]["kmm-dtk.io/hash"]
    assert b84["spec"]["nodeSelector"] == {"kmm-dtk-test/ns": scenario.namespace, "kubernetes.io/arch": "amd64"}
    owner = b84["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == \
        ("Module", "simple-kmod", module["metadata"]["uid"], True)

    wait_for(lambda: set(scenario.kernel_status()) == {K84, K86}, 10, "per-kernel status")
    status = scenario.kernel_status()
    assert status[K84]["phase"] == "Pending" and status[K84]["rhcos"] == R410
    assert status[K86]["dtkImage"] == DTK_411 and status[K86]["buildName"] == b86["metadata"]["name"]
    assert scenario.condition("Progressing")["status"] == "True"
    created = wait_for(lambda: scenario.events("BuildimageCreated"), 10, "the BuildimageCreated Event")
    assert len(created) == 1, "Builds created by one reconcile share one Event"
    assert created[0].message.startswith("2 Builds: ")
    assert b84["metadata"]["name"] in created[0].message and b86["metadata"]["name"] in created[0].message


def test_upgraded_node_gets_a_build_for_its_new_kernel_only(scenario, run_operator, new_node_name):
    scenario.create_module()
    running = run_operator()
    before = _wait_builds(scenario, 2, "the initial Builds")
    new_kernel, new_rhcos = "4.18.0-372.26.1.el8_6.x86_64", "411.86.202208031059-0"
    move_imagestream_tag(scenario.api, scenario.namespace, "driver-toolkit", new_rhcos,
                         DTK_411.rsplit(":", 1)[0] + ":" + "c" * 64)
    node = next(n for n, k in scenario.nodes.items() if k == K86)
    set_node_versions(scenario.api, node, new_kernel, os_image(new_rhcos))

    after = _wait_builds(scenario, 3, "a Build for the new kernel")
    assert set(after) == {K84, K86, new_kernel}
    assert [b["metadata"]["name"] for b in after[K84]] == [b["metadata"]["name"] for b in before[K84]]
    assert _from_lines(after[new_kernel][0])[0].startswith(f"FROM {DTK_411.rsplit(':', 1)[0]}:cccc")
    # K86 no longer runs anywhere: its record leaves the status; its finished-or-not Build is left alone.
    wait_for(lambda: set(scenario.kernel_status()) == {K84, new_kernel}, 30, "the status to follow the upgrade")
    assert running.reconciles() >= 2


def test_moved_dtk_tag_rebuilds_that_kernel_only(scenario, run_operator):
    scenario.create_module()
    run_operator()
    before = _wait_builds(scenario, 2, "the initial Builds")
    z_stream = DTK_411.rsplit(":", 1)[0] + ":" + "d" * 64
    move_imagestream_tag(scenario.api, scenario.namespace, "driver-toolkit", R411, z_stream)

    def rebuilt():
        builds = scenario.builds_by_kernel()
        current = builds.get(K86, [])
        return builds if len(current) == 1 and current[0]["metadata"]["name"] != before[K86][0]["metadata"]["name"] \
            else None

    after = wait_for(rebuilt, 20, "a new Build for the moved tag, the superseded one deleted")
    assert _from_lines(after[K86][0])[0] == f"FROM {z_stream} AS builder"
    assert [b["metadata"]["name"] for b in after[K84]] == [b["metadata"]["name"] for b in before[K84]]
    wait_for(lambda: scenario.events("BuildimageCancelled"), 10, "the superseded active Build's Event")


def test_dockerfile_edit_rebuilds_every_kernel(scenario, run_operator):
    scenario.create_module()
    run_operator()
    before = {k: v[0]["metadata"]["name"] for k, v in _wait_builds(scenario, 2, "the initial Builds").items()}
    client.CoreV1Api(scenario.api).patch_namespaced_config_map(
        "dockerfile", scenario.namespace, {"data": {"dockerfile": "ARG DTK_AUTO\nFROM ${DTK_AUTO}\nRUN make v2\n"}})

    def replaced():
        builds = scenario.builds_by_kernel()
        names = {k: [b["metadata"]["name"] for b in v] for k, v in builds.items()}
        if all(len(names.get(k, [])) == 1 and names[k][0] != before[k] for k in (K84, K86)):
            return builds
        return None

    after = wait_for(replaced, 20, "both kernels rebuilt")
    assert all("RUN make v2" in after[k][0]["spec"]["source"]["dockerfile"] for k in (K84, K86))


def test_restart_creates_no_duplicate_builds(scenario, run_operator):
    scenario.create_module()
    first = run_operator()
    names = sorted(b["metadata"]["name"] for bs in _wait_builds(scenario, 2, "Builds").values() for b in bs)
    assert first.stop() == 0
    # Events are sent in the background, and a clean stop sends those still queued before it ends.
    assert len(scenario.events("BuildimageCreated")) == 1
    second = run_operator()
    wait_for(lambda: second.reconciles() >= 1, 10, "the restarted operator to reconcile the Module")
    assert sorted(b["metadata"]["name"] for b in scenario.builds()) == names
    assert len(scenario.events("BuildimageCreated")) == 1  # the first run's; the second created nothing


def test_two_replicas_with_leader_election_never_both_build(scenario, run_operator):
    from kmm_dtk.kube.manager import LeaderElectionConfig

    election = lambda who: LeaderElectionConfig("kmm-dtk", scenario.namespace, identity=who,  # noqa: E731
                                                lease_duration=3, renew_deadline=2, retry_period=0.3)
    a = run_operator(identity="replica-a", leader_election=election("replica-a"))
    wait_for(lambda: a.operator.manager.leader_state() == "leading", 10, "replica a to lead")
    b = run_operator(identity="replica-b", leader_election=election("replica-b"))
    scenario.create_module()
    _wait_builds(scenario, 2, "Builds by the leader")
    assert b.reconciles() == 0, "the standby must not reconcile"
    assert {e.reporting_instance for e in scenario.events("BuildimageCreated")} == {"replica-a"}

    a.stop()
    wait_for(lambda: b.operator.manager.leader_state() == "leading", 10, "replica b to take over")
    module = scenario.module()
    module["spec"]["imageRebuildTriggerGeneration"] = 1
    scenario.custom.replace_namespaced_custom_object("kmm.sigs.x-k8s.io", "v1beta1", scenario.namespace,
                                                     "modules", "simple-kmod", module)
    wait_for(lambda: len(scenario.events("BuildimageCreated")) == 2, 20, "the new leader's Builds")
    assert {e.reporting_instance for e in scenario.events("BuildimageCreated")} == {"replica-a", "replica-b"}
    assert len(scenario.builds()) == 2, "superseded Builds are replaced, never duplicated"


def test_build_phases_reach_status_and_events_and_failures_wait_for_new_inputs(scenario, run_operator):
    scenario.create_module()
    run_operator()
    builds = _wait_builds(scenario, 2, "Builds")
    scenario.set_build_phase(builds[K84][0], "Running")
    wait_for(lambda: scenario.kernel_status().get(K84, {}).get("phase") == "Building", 10, "Building")
    scenario.set_build_phase(builds[K84][0], "Complete")
    scenario.set_build_phase(builds[K86][0], "Failed", "error building at STEP \"RUN make\": exit status 2")
    wait_for(lambda: scenario.kernel_status().get(K84, {}).get("phase") == "Succeeded", 10, "Succeeded")
    wait_for(lambda: scenario.kernel_status().get(K86, {}).get("phase") == "Failed", 10, "Failed")
    assert scenario.condition("Degraded")["status"] == "True"
    assert scenario.condition("Degraded")["reason"] == "BuildFailed"
    wait_for(lambda: scenario.events("BuildimageSucceeded") and scenario.events("BuildimageFailed"), 10, "Events")
    failed_event = scenario.events("BuildimageFailed")[0]
    assert failed_event.type == "Warning" and "imageRebuildTriggerGeneration" in failed_event.message
    assert len(scenario.builds()) == 2, "a failed Build is not retried by itself"
    failed_record = scenario.kernel_status()[K86]
    assert "exit status 2" in failed_record["message"] and "imageRebuildTriggerGeneration" in failed_record["message"]

    module = scenario.module()
    module["spec"]["imageRebuildTriggerGeneration"] = 7
    scenario.custom.replace_namespaced_custom_object("kmm.sigs.x-k8s.io", "v1beta1", scenario.namespace,
                                                     "modules", "simple-kmod", module)
    wait_for(lambda: scenario.kernel_status().get(K86, {}).get("phase") == "Pending", 20, "a fresh Build")
    wait_for(lambda: len(scenario.builds()) == 4, 20, "the fresh Builds beside the finished ones")
    for kernel, kernel_builds in scenario.builds_by_kernel().items():
        active = [b for b in kernel_builds if (b.get("status") or {}).get("phase", "New") in ("New", "Pending")]
        assert len(active) == 1, f"one current Build per kernel: {kernel}"
        # The finished Builds of the old hash stay as history, for the garbage collector's limits.
        assert {(b.get("status") or {}).get("phase") for b in kernel_builds} - {None, "New", "Pending"} <= {
            "Complete", "Failed"}


def test_bad_modules_get_conditions_and_events_while_others_build(scenario, run_operator):
    ns = scenario.namespace
    good = module_body(ns, "good")
    bad_regexp = module_body(ns, "bad-regexp")
    bad_regexp["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = r"^(?!.*rt).*$"
    no_configmap = module_body(ns, "no-configmap")
    no_configmap["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["build"]["dockerfileConfigMap"] = \
        {"name": "missing"}
    for body in (bad_regexp, no_configmap, good):
        scenario.create_module(body)
    run_operator()

    wait_for(lambda: scenario.condition("Degraded", "bad-regexp").get("status") == "True", 15, "bad regexp reported")
    degraded = scenario.condition("Degraded", "bad-regexp")
    assert degraded["reason"] == "InvalidModule"
    assert "kernelMappings[0].regexp" in degraded["message"] and "(?!" in degraded["message"]
    wait_for(lambda: scenario.condition("Degraded", "no-configmap").get("reason") == "MissingDockerfileConfigMap",
             15, "missing ConfigMap reported")
    assert "dockerfileConfigMap" in scenario.condition("Degraded", "no-configmap")["message"]
    wait_for(lambda: len([b for b in scenario.builds() if b["metadata"]["ownerReferences"][0]["name"] == "good"]) == 2,
             15, "the good Module's Builds")
    reasons = {e.reason for e in scenario.events()}
    assert {"InvalidModule", "MissingDockerfileConfigMap", "BuildimageCreated"} <= reasons
    assert all(b["metadata"]["ownerReferences"][0]["name"] == "good" for b in scenario.builds())


def test_placeholder_without_a_dtk_tag_is_an_error_for_that_kernel_only(scenario, run_operator, new_node_name):
    name = new_node_name("rhel96")
    kernel = "4.18.0-513.5.1.el8_9.x86_64"
    create_node(scenario.api, name, kernel, os_image("9.6.20260616-0"), {"kmm-dtk-test/ns": scenario.namespace})
    scenario.create_module()
    run_operator()
    wait_for(lambda: scenario.kernel_status().get(kernel, {}).get("phase") == "Error", 15, "the missing tag reported")
    message = scenario.kernel_status()[kernel]["message"]
    assert "9.6.20260616-0" in message and f"{scenario.namespace}/driver-toolkit" in message
    assert scenario.condition("Degraded")["reason"] == "MissingDTKTag"
    wait_for(lambda: scenario.events("MissingDTKTag"), 10, "a MissingDTKTag Event")
    assert set(scenario.builds_by_kernel()) == {K84, K86}


def test_steady_state_makes_no_writes(scenario, run_operator):
    scenario.create_module()
    running = run_operator()
    builds = _wait_builds(scenario, 2, "Builds")
    wait_for(lambda: set(scenario.kernel_status()) == {K84, K86}, 10, "status")
    view = running.operator.view
    queue = running.operator.module_queue
    # Quiet first: the Builds' own add events reach the cache and their reconciles are counted.
    wait_for(lambda: len(view.builds.by_index(OWNER_INDEX, f"{scenario.namespace}/simple-kmod")) == 2
             and len(queue) == 0 and queue.num_processing() == 0 and queue.num_waiting() == 0, 10,
             "the module queue to be quiet")
    resource_version = scenario.module()["metadata"]["resourceVersion"]
    reconciles, node_reconciles = running.reconciles(), running.reconciles("node")
    # Heartbeat-like node status updates and a same-phase Build update cause no reconcile.
    patched = {}
    for node in scenario.nodes:
        patched[node] = client.CoreV1Api(scenario.api).patch_node_status(node, {"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "heartbeat"}]}}
        ).metadata.resource_version
    scenario.set_build_phase(builds[K84][0], "New")
    build_rv = scenario.build(builds[K84][0]["metadata"]["name"])["metadata"]["resourceVersion"]
    wait_for(lambda: all(view.nodes.get(n).resource_version == rv for n, rv in patched.items()), 10,
             "the node informer to see the heartbeats")
    key = f"{scenario.namespace}/{builds[K84][0]['metadata']['name']}"
    wait_for(lambda: view.builds.get(key)["metadata"]["resourceVersion"] == build_rv, 10,
             "the build informer to see the update")
    assert (running.reconciles(), running.reconciles("node")) == (reconciles, node_reconciles)
    assert scenario.module()["metadata"]["resourceVersion"] == resource_version
