"""A standby that takes over plans against every node event it received while standing by,
never against the kernel map it had when its caches first synced."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from kmm_dtk.kube.client import KubeClient
from kmm_dtk.kube.manager import LeaderElectionConfig
from kmm_dtk.operator.app import build_operator
from kmm_dtk.operator.options import OperatorOptions
from tests.reliability.conftest import os_image
from tests.support.controlplane import wait_for
from tests.support.objects import set_node_versions

pytestmark = pytest.mark.integration


def _hold_lease(api, namespace: str, holder: str) -> None:
    client.CoordinationV1Api(api).create_namespaced_lease(namespace, {
        "metadata": {"name": "kmm-dtk"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3600}})


def _release_lease(api, namespace: str) -> None:
    leases = client.CoordinationV1Api(api)
    lease = leases.read_namespaced_lease("kmm-dtk", namespace)
    lease.spec.holder_identity = ""
    lease.spec.lease_duration_seconds = 1
    leases.replace_namespaced_lease("kmm-dtk", namespace, lease)


def test_takeover_plans_on_the_nodes_as_they_are_now(fleet, api):
    modules = 3
    fleet.create_modules(modules)
    _hold_lease(api, fleet.namespace, "another-replica")
    election = LeaderElectionConfig("kmm-dtk", fleet.namespace, identity="standby", lease_duration=4.0,
                                    renew_deadline=3.0, retry_period=0.5)
    operator = build_operator(KubeClient(api), OperatorOptions(
        namespaces=(fleet.namespace,), dtk_imagestream=(fleet.namespace, "driver-toolkit"), workers=2,
        metrics_address=None, health_address=None, identity="standby", leader_election=election),
        registry=CollectorRegistry())
    thread = threading.Thread(target=operator.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: operator.manager.synced() and operator.manager.leader_state().startswith("standby"), 30,
                 "the replica to sync and stand by")
        # While it stands by, every node reboots into a new kernel (same RHCOS, same DTK).
        moved = {}
        for j, (name, (_, rhcos)) in enumerate(sorted(fleet.nodes.items())):
            moved[name] = f"5.14.0-{700 + j}.1.1.el9_6.x86_64"
            set_node_versions(api, name, moved[name], os_image(rhcos))
        wait_for(lambda: all((node := operator.view.nodes.get(n)) is not None and node.kernel_version == k
                             for n, k in moved.items()), 30, "the standby's cache to see every reboot")
        assert operator.manager.leader_state().startswith("standby")

        _release_lease(api, fleet.namespace)
        wait_for(lambda: operator.manager.leader_state() == "leading", 15, "the standby to take over")
        expected = modules * len(moved)
        wait_for(lambda: fleet.build_count() >= expected, 60, "Builds for the new kernels")
        wait_for(lambda: len(operator.module_queue) == 0 and operator.module_queue.num_processing() == 0
                 and len(operator.node_queue) == 0 and operator.node_queue.num_processing() == 0, 30,
                 "both queues to drain")
    finally:
        operator.stop()
        thread.join(30)
    builds = client.CustomObjectsApi(api).list_namespaced_custom_object("build.openshift.io", "v1", fleet.namespace,
                                                                        "builds")["items"]
    kernels = {b["metadata"]["annotations"]["kmm-dtk.io/kernel"] for b in builds}
    assert kernels == set(moved.values()), f"Builds for kernels no node runs: {sorted(kernels - set(moved.values()))}"
    assert len(builds) == expected
