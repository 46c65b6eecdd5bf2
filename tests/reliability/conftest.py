"""A cluster with a long queue of work and replicas that each run as their own ServiceAccount.

``Fleet`` makes ``kernels`` Nodes (one per kernel, each on its own RHCOS build with a DTK tag)
and, on demand, ``modules`` Modules selecting them: every Module needs one Build per kernel,
so a leader has modules x (kernels + 2) writes to make (Builds, a status patch, an Event).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.audit import read_writes, service_account_user
from tests.support.cluster import TestCluster
from tests.support.objects import (
    MODULE_GROUP,
    MODULE_PLURAL,
    MODULE_VERSION,
    create_imagestream,
    create_node,
    service_account_kubeconfig,
)
from tests.support.replica import Replica

DOCKERFILE = "ARG DTK_AUTO\nFROM ${DTK_AUTO} AS builder\nARG KERNEL_VERSION\nRUN make KVER=${KERNEL_VERSION}\n"


def kernel_pairs(count: int) -> list[tuple[str, str]]:
    """(kernel, RHCOS) pairs: distinct el9_6 kernels on distinct RHCOS builds."""
    return [(f"5.14.0-{570 + j}.1.1.el9_6.x86_64", f"9.6.20250{(j % 9) + 1}{(j % 28) + 1:02d}-{j}")
            for j in range(count)]


def os_image(rhcos: str) -> str:
    return f"Red Hat Enterprise Linux CoreOS {rhcos} (Plow)"


@dataclass
class Fleet:
    api: client.ApiClient
    cluster: TestCluster
    namespace: str
    workdir: Path
    kernels: list[str]
    nodes: dict[str, tuple[str, str]]  # node name -> (kernel, RHCOS)
    replicas: list[Replica] = field(default_factory=list)
    bindings: list[str] = field(default_factory=list)

    def service_account(self, name: str) -> tuple[Path, str]:
        """A kubeconfig for ServiceAccount ``name`` (bound to cluster-admin), and its user name."""
        assert self.cluster.ca_file is not None
        kubeconfig = service_account_kubeconfig(self.api, self.namespace, name, self.workdir / f"{name}.kubeconfig",
                                                self.cluster.host, self.cluster.ca_file)
        binding = f"{self.namespace}-{name}"
        client.RbacAuthorizationV1Api(self.api).create_cluster_role_binding({
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": self.namespace}]})
        self.bindings.append(binding)
        return kubeconfig, service_account_user(self.namespace, name)

    def replica(self, name: str, **options) -> tuple[Replica, str]:
        kubeconfig, user = self.service_account(name)
        replica = Replica(name, kubeconfig, self.namespace, self.workdir, **options)
        self.replicas.append(replica)
        return replica, user

    def create_modules(self, count: int) -> None:
        custom = client.CustomObjectsApi(self.api)

        def create(m: int) -> None:
            custom.create_namespaced_custom_object(MODULE_GROUP, MODULE_VERSION, self.namespace, MODULE_PLURAL, {
                "apiVersion": f"{MODULE_GROUP}/{MODULE_VERSION}", "kind": "Module",
                "metadata": {"name": f"kmod-{m}"},
                "spec": {"selector": {"kmm-dtk-test/ns": self.namespace}, "moduleLoader": {"container": {
                    "modprobe": {"moduleName": f"kmod_{m}"},
                    "kernelMappings": [{
                        "regexp": r"^.+\.el9_6\.x86_64$",
                        "containerImage": f"registry.example.com/{self.namespace}/kmod-{m}:${{KERNEL_FULL_VERSION}}",
                        "build": {"dockerfileConfigMap": {"name": "dockerfile"}}}]}}}})

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(count)))

    def build_count(self) -> int:
        listed = client.CustomObjectsApi(self.api).list_namespaced_custom_object(
            "build.openshift.io", "v1", self.namespace, "builds", _request_timeout=30)
        return len(listed["items"])

    def lease_holder(self, name: str = "kmm-dtk") -> str:
        try:
            lease = client.CoordinationV1Api(self.api).read_namespaced_lease(name, self.namespace)
        except ApiException as err:
            if err.status == 404:
                return ""
            raise
        return lease.spec.holder_identity or ""

    def writes(self, *users: str):
        assert self.cluster.controlplane is not None
        return read_writes(self.cluster.controlplane.audit_log, users)


@pytest.fixture
def fleet(cluster: TestCluster, api, namespace, new_node_name, tmp_path) -> Iterator[Fleet]:
    if cluster.controlplane is None:
        pytest.skip("needs the project's own control plane (its audit log)")
    pairs = kernel_pairs(8)
    create_imagestream(api, namespace, "driver-toolkit",
                       {rhcos: f"quay.io/ocp/dtk@sha256:{i:064x}" for i, (_, rhcos) in enumerate(pairs)})
    client.CoreV1Api(api).create_namespaced_config_map(namespace, {"metadata": {"name": "dockerfile"},
                                                                   "data": {"dockerfile": DOCKERFILE}})
    nodes = {}
    for kernel, rhcos in pairs:
        name = new_node_name("worker")
        create_node(api, name, kernel, os_image(rhcos),
                    {"node-role.kubernetes.io/worker": "", "kmm-dtk-test/ns": namespace})
        nodes[name] = (kernel, rhcos)
    fleet = Fleet(api, cluster, namespace, tmp_path, [k for k, _ in pairs], nodes)
    try:
        yield fleet
    finally:
        for replica in fleet.replicas:
            replica.stop()
        for binding in fleet.bindings:
            try:
                client.RbacAuthorizationV1Api(api).delete_cluster_role_binding(binding)
            except ApiException:
                pass
