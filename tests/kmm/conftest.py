"""A control plane set up as a cluster where the KMM operator is installed: KMM's own Module schema
(tests/crds-kmm, which prunes every status field but KMM's), kmm-dtk's ModuleBuild, and the OpenShift
stand-ins. kmm-dtk runs as the with-kmm overlay runs it (``--module-build-sections=ignore``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from kmm_dtk.kube.client import KubeClient
from kmm_dtk.operator.app import Operator, build_operator
from kmm_dtk.operator.options import OperatorOptions
from tests.operator.conftest import DOCKERFILE, FAST_INFORMERS, os_image
from tests.support.cluster import KMM_CRD_DIRS, TestCluster, existing_kubeconfig, start_test_cluster
from tests.support.controlplane import wait_for
from tests.support.design import DTK_410, DTK_411, K84, K86, R410, R411
from tests.support.objects import (
    MODULE_GROUP,
    MODULE_PLURAL,
    MODULE_VERSION,
    create_imagestream,
    create_namespace,
    create_node,
    delete_namespace,
    delete_nodes,
    unique_name,
)

MB_GROUP, MB_VERSION, MB_PLURAL = "kmm-dtk.io", "v1alpha1", "modulebuilds"
BUILD_GROUP, BUILD_VERSION, BUILD_PLURAL = "build.openshift.io", "v1", "builds"


@pytest.fixture(scope="module")
def kmm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    if existing_kubeconfig() is not None:
        pytest.skip("needs the project's own control plane with KMM's Module schema")
    cluster = start_test_cluster(tmp_path_factory.mktemp("kmm-controlplane"), crd_dirs=KMM_CRD_DIRS)
    try:
        yield cluster
    finally:
        assert cluster.controlplane is not None
        cluster.controlplane.stop()


@pytest.fixture(scope="module")
def kmm_api(kmm_cluster: TestCluster) -> Iterator[client.ApiClient]:
    api = kmm_cluster.api_client()
    try:
        yield api
    finally:
        api.close()


def module_without_build(namespace: str, name: str) -> dict:
    """What KMM loads: selector, mapping, image; no build section (KMM waits for the image)."""
    return {"apiVersion": f"{MODULE_GROUP}/{MODULE_VERSION}", "kind": "Module",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"kmm-dtk-test/ns": namespace}, "moduleLoader": {"container": {
                "modprobe": {"moduleName": "simple_kmod"},
                "kernelMappings": [{"regexp": r"^.+\.el8_\d+\.x86_64$",
                                    "containerImage": f"registry.example.com/{namespace}/{name}"
                                                      ":${KERNEL_FULL_VERSION}"}],
            }}}}


def module_build(namespace: str, name: str, module: str) -> dict:
    return {"apiVersion": f"{MB_GROUP}/{MB_VERSION}", "kind": "ModuleBuild",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"moduleName": module, "build": {"dockerfileConfigMap": {"name": "dockerfile"},
                                                     "buildArgs": [{"name": "KMOD_VERSION", "value": "1.0.2"}]}}}


@dataclass
class BesideKmm:
    api: client.ApiClient
    namespace: str
    kernels: set[str]
    operator: Operator | None = None
    registry: CollectorRegistry | None = None
    thread: threading.Thread | None = None

    def start(self) -> Operator:
        """The operator as the with-kmm overlay runs it: Modules' own build sections are KMM's."""
        self.registry = CollectorRegistry()
        self.operator = build_operator(KubeClient(self.api), OperatorOptions(
            namespaces=(self.namespace,), dtk_imagestream=(self.namespace, "driver-toolkit"), workers=2,
            metrics_address=None, health_address=None, identity="beside-kmm",
            informer_options=FAST_INFORMERS, build_module_sections=False), registry=self.registry)
        self.thread = threading.Thread(target=self.operator.run, daemon=True)
        self.thread.start()
        wait_for(self.operator.manager.synced, 20, "the operator's caches to sync")
        return self.operator

    def stop(self) -> None:
        if self.operator is not None and self.thread is not None:
            self.operator.stop()
            self.thread.join(30)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def create(self, body: dict) -> dict:
        group, version = body["apiVersion"].split("/")
        plural = MODULE_PLURAL if body["kind"] == "Module" else MB_PLURAL
        return self.custom.create_namespaced_custom_object(group, version, self.namespace, plural, body)

    def get(self, kind: str, name: str) -> dict:
        if kind == "Module":
            return self.custom.get_namespaced_custom_object(MODULE_GROUP, MODULE_VERSION, self.namespace,
                                                            MODULE_PLURAL, name)
        return self.custom.get_namespaced_custom_object(MB_GROUP, MB_VERSION, self.namespace, MB_PLURAL, name)

    def builds(self) -> list[dict]:
        return self.custom.list_namespaced_custom_object(BUILD_GROUP, BUILD_VERSION, self.namespace,
                                                         BUILD_PLURAL)["items"]

    def set_build_phase(self, name: str, phase: str) -> None:
        build = self.custom.get_namespaced_custom_object(BUILD_GROUP, BUILD_VERSION, self.namespace, BUILD_PLURAL,
                                                         name)
        build["status"] = {**(build.get("status") or {}), "phase": phase}
        self.custom.replace_namespaced_custom_object_status(BUILD_GROUP, BUILD_VERSION, self.namespace,
                                                            BUILD_PLURAL, name, build)

    def events(self, reason: str | None = None) -> list:
        items = client.CoreV1Api(self.api).list_namespaced_event(self.namespace).items
        return [e for e in items if reason is None or e.reason == reason]

    def reconciles(self, controller: str) -> float:
        assert self.registry is not None
        return sum(self.registry.get_sample_value("controller_runtime_reconcile_total",
                                                  {"controller": controller, "result": result}) or 0.0
                   for result in ("success", "error", "requeue", "requeue_after"))


@pytest.fixture
def beside_kmm(kmm_api) -> Iterator[BesideKmm]:
    namespace = create_namespace(kmm_api)
    nodes: list[str] = []
    create_imagestream(kmm_api, namespace, "driver-toolkit", {R410: DTK_410, R411: DTK_411})
    client.CoreV1Api(kmm_api).create_namespaced_config_map(namespace, {"metadata": {"name": "dockerfile"},
                                                                       "data": {"dockerfile": DOCKERFILE}})
    for rhcos, kernel in ((R410, K84), (R411, K86)):
        nodes.append(unique_name("worker"))
        create_node(kmm_api, nodes[-1], kernel, os_image(rhcos), {"kmm-dtk-test/ns": namespace})
    scene = BesideKmm(kmm_api, namespace, {K84, K86})
    try:
        yield scene
    finally:
        scene.stop()
        delete_nodes(kmm_api, nodes)
        delete_namespace(kmm_api, namespace)
