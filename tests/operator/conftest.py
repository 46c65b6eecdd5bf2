"""Fixtures that run the operator in-process against the real control plane, one per test
namespace, with the design document's cluster: a DTK ImageStream with two RHCOS tags and Nodes
on both builds (labelled for this test only, since Nodes are cluster-scoped)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from kmm_dtk.kube.client import KubeClient
from kmm_dtk.operator.app import Operator, build_operator
from kmm_dtk.operator.options import OperatorOptions
from tests.support.controlplane import wait_for
from tests.support.design import DTK_410, DTK_411, K84, K86, R410, R411
from tests.support.objects import MODULE_GROUP, MODULE_PLURAL, MODULE_VERSION, create_imagestream, create_node

DOCKERFILE = """\
ARG DTK-AUTO
FROM ${DTK-AUTO} AS builder
ARG KERNEL_VERSION
RUN make -C /lib/modules/${KERNEL_VERSION}/build M=/src modules

FROM registry.redhat.io/ubi9/ubi-minimal
COPY --from=builder /src/simple_kmod.ko /opt/lib/modules/
"""
FAST_INFORMERS = {"backoff_initial": 0.05, "backoff_max": 0.5, "watchdog": 10.0}

BUILD_GROUP, BUILD_VERSION, BUILD_PLURAL = "build.openshift.io", "v1", "builds"


def os_image(rhcos: str) -> str:
    return f"Red Hat Enterprise Linux CoreOS {rhcos} (Ootpa)"


def module_body(namespace: str, name: str = "simple-kmod", selector: dict | None = None,
                **container_overrides) -> dict:
    container = {
        "modprobe": {"moduleName": "simple_kmod"},
        "kernelMappings": [{
            "regexp": r"^.+\.el8_\d+\.x86_64$",
            "containerImage": f"registry.example.com/{namespace}/{name}:${{KERNEL_FULL_VERSION}}",
            "build": {"dockerfileConfigMap": {"name": "dockerfile"},
                      "buildArgs": [{"name": "KMOD_VERSION", "value": "1.0.2"}],
                      "secrets": [{"name": "signing-key"}]},
        }],
    }
    container.update(container_overrides)
    return {
        "apiVersion": f"{MODULE_GROUP}/{MODULE_VERSION}", "kind": "Module",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector or {"kmm-dtk-test/ns": namespace}, "imageRepoSecret": {"name": "push"},
                 "moduleLoader": {"container": container}},
    }


@dataclass
class Scenario:
    api: client.ApiClient
    namespace: str
    nodes: dict[str, str]  # node name -> kernel

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def create_module(self, body: dict | None = None) -> dict:
        body = body or module_body(self.namespace)
        return self.custom.create_namespaced_custom_object(MODULE_GROUP, MODULE_VERSION, self.namespace,
                                                           MODULE_PLURAL, body)

    def module(self, name: str = "simple-kmod") -> dict:
        return self.custom.get_namespaced_custom_object(MODULE_GROUP, MODULE_VERSION, self.namespace,
                                                        MODULE_PLURAL, name)

    def builds(self) -> list[dict]:
        return self.custom.list_namespaced_custom_object(BUILD_GROUP, BUILD_VERSION, self.namespace,
                                                         BUILD_PLURAL)["items"]

    def build(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(BUILD_GROUP, BUILD_VERSION, self.namespace, BUILD_PLURAL,
                                                        name)

    def builds_by_kernel(self) -> dict[str, list[dict]]:
        found: dict[str, list[dict]] = {}
        for build in self.builds():
            found.setdefault(build["metadata"]["annotations"]["kmm-dtk.io/kernel"], []).append(build)
        return found

    def events(self, reason: str | None = None) -> list:
        items = client.CoreV1Api(self.api).list_namespaced_event(self.namespace).items
        return [e for e in items if reason is None or e.reason == reason]

    def kernel_status(self, name: str = "simple-kmod") -> dict[str, dict]:
        return {r["kernel"]: r for r in (self.module(name).get("status") or {}).get("kernels", [])}

    def condition(self, kind: str, name: str = "simple-kmod") -> dict:
        return next((c for c in (self.module(name).get("status") or {}).get("conditions", [])
                     if c["type"] == kind), {})

    def set_build_phase(self, build: dict, phase: str, message: str = "") -> None:
        current = self.build(build["metadata"]["name"])
        current["status"] = {**(current.get("status") or {}), "phase": phase, "message": message}
        self.custom.replace_namespaced_custom_object_status(BUILD_GROUP, BUILD_VERSION, self.namespace, BUILD_PLURAL,
                                                            build["metadata"]["name"], current)


@pytest.fixture
def scenario(api, namespace, new_node_name) -> Scenario:
    create_imagestream(api, namespace, "driver-toolkit", {R410: DTK_410, R411: DTK_411})
    client.CoreV1Api(api).create_namespaced_config_map(namespace, {"metadata": {"name": "dockerfile"},
                                                                   "data": {"dockerfile": DOCKERFILE}})
    nodes = {}
    for rhcos, kernel in ((R410, K84), (R410, K84), (R411, K86)):
        name = new_node_name("worker")
        create_node(api, name, kernel, os_image(rhcos), {"node-role.kubernetes.io/worker": "",
                                                         "kmm-dtk-test/ns": namespace})
        nodes[name] = kernel
    return Scenario(api, namespace, nodes)


@dataclass
class Running:
    operator: Operator
    thread: threading.Thread
    registry: CollectorRegistry
    identity: str

    def reconciles(self, controller: str = "module") -> float:
        total = 0.0
        for result in ("success", "error", "requeue", "requeue_after"):
            total += self.registry.get_sample_value("controller_runtime_reconcile_total",
                                                    {"controller": controller, "result": result}) or 0.0
        return total

    def stop(self) -> int | None:
        self.operator.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the operator did not stop"
        return getattr(self, "exit_code", None)


@pytest.fixture
def run_operator(api, namespace) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(kube_api: client.ApiClient | None = None, wait: bool = True, identity: str = "test-operator",
              checker=None, **overrides) -> Running:
        options = dict(namespaces=(namespace,), dtk_imagestream=(namespace, "driver-toolkit"), workers=2,
                       metrics_address=None, health_address=None, identity=identity,
                       informer_options=FAST_INFORMERS)
        options.update(overrides)
        registry = CollectorRegistry()
        operator = build_operator(KubeClient(kube_api or api), OperatorOptions(**options), checker=checker,
                                  registry=registry)
        running = Running(operator, threading.Thread(target=lambda: setattr(running, "exit_code", operator.run()),
                                                     daemon=True), registry, identity)
        running.thread.start()
        started.append(running)
        if wait:
            wait_for(operator.manager.synced, 20, "the operator's caches to sync")
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()


# The registry scenario, shared with the weakened-link tests (a fixture is found through conftest).
from tests.operator.test_registry_operator import reg  # noqa: E402, F401
