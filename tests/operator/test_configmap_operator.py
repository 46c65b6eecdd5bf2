"""The operator with ConfigMaps cached as metadata only, on a real kube-apiserver: a Module builds
with its Dockerfile ConfigMap's content, re-plans when the data changes, reports the ConfigMap
missing when it is deleted or not created yet, and retries (never reports it missing) when the
ConfigMap cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.operator.conftest import DOCKERFILE, K84, K86, module_body
from tests.support.cluster import REPO, api_client_from
from tests.support.controlplane import wait_for
from tests.support.objects import service_account_kubeconfig, unique_name

pytestmark = pytest.mark.integration

HASH = "kmm-dtk.io/hash"


def _builds_with(scenario, marker: str) -> dict[str, dict]:
    """kernel -> the Build whose Dockerfile holds ``marker``."""
    return {b["metadata"]["annotations"]["kmm-dtk.io/kernel"]: b for b in scenario.builds()
            if marker in b["spec"]["source"]["dockerfile"]}


def _both_kernels(scenario, marker: str) -> dict[str, dict] | None:
    found = _builds_with(scenario, marker)
    return found if len(found) == 2 else None


def _missing(scenario) -> bool:
    return scenario.condition("Degraded").get("reason") == "MissingDockerfileConfigMap"


def test_builds_from_the_data_replans_on_change_and_reports_a_deleted_configmap(scenario, run_operator):
    scenario.create_module()
    running = run_operator()
    first = wait_for(lambda: _both_kernels(scenario, "RUN make -C /lib/modules"), 30,
                     "one Build per kernel from the ConfigMap's Dockerfile")
    assert set(first) == {K84, K86}
    configmaps = running.operator.view.configmaps
    assert all("data" not in cm for cm in configmaps.list()), "the cache holds metadata only"
    assert configmaps.cached_keys() == [f"{scenario.namespace}/dockerfile"]

    core = client.CoreV1Api(scenario.api)
    core.patch_namespaced_config_map("dockerfile", scenario.namespace,
                                     {"data": {"dockerfile": DOCKERFILE + "RUN echo second-revision\n"}})
    second = wait_for(lambda: _both_kernels(scenario, "second-revision"), 30,
                      "new Builds from the changed Dockerfile")
    for kernel in (K84, K86):
        assert second[kernel]["metadata"]["labels"][HASH] != first[kernel]["metadata"]["labels"][HASH]

    core.delete_namespaced_config_map("dockerfile", scenario.namespace)
    wait_for(lambda: _missing(scenario), 20, "the missing ConfigMap in the Module's status")
    message = scenario.condition("Degraded")["message"]
    assert f"ConfigMap {scenario.namespace}/dockerfile" in message and "does not exist" in message
    wait_for(lambda: configmaps.cached_keys() == [], 10, "the deleted ConfigMap's data dropped")


def test_a_configmap_created_after_its_module_is_then_built(scenario, run_operator):
    body = module_body(scenario.namespace)
    body["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["build"]["dockerfileConfigMap"] = {"name": "later"}
    scenario.create_module(body)
    run_operator()
    wait_for(lambda: _missing(scenario), 20, "the not-yet-created ConfigMap in the Module's status")
    assert f"{scenario.namespace}/later" in scenario.condition("Degraded")["message"]
    assert scenario.builds() == []
    client.CoreV1Api(scenario.api).create_namespaced_config_map(scenario.namespace, {
        "metadata": {"name": "later"}, "data": {"dockerfile": DOCKERFILE + "RUN echo later\n"}})
    wait_for(lambda: _both_kernels(scenario, "RUN echo later"), 30, "Builds once the ConfigMap exists")


def test_a_configmap_the_operator_cannot_read_is_retried_never_reported_missing(cluster, api, scenario,
                                                                               run_operator, tmp_path: Path):
    """The operator may list and watch ConfigMaps but not get them: every reconcile fails (and is
    retried with backoff) and the status never calls the ConfigMap missing; once it may, it builds."""
    rules = [doc for doc in yaml.safe_load_all((REPO / "manifests" / "rbac" / "cluster_role.yaml").read_text())
             if doc][0]["rules"]
    no_get = [{**r, "verbs": [v for v in r["verbs"] if v != "get"]} if "configmaps" in r["resources"] else r
              for r in rules]
    assert no_get != rules
    name = unique_name("no-cm-get")
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": no_get})
    rbac.create_cluster_role_binding({"metadata": {"name": name}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": scenario.namespace}]})
    rbac.create_namespaced_role(scenario.namespace, {"metadata": {"name": "dtk"}, "rules": [
        {"apiGroups": ["image.openshift.io"], "resources": ["imagestreams"], "verbs": ["get", "list", "watch"]}]})
    rbac.create_namespaced_role_binding(scenario.namespace, {"metadata": {"name": "dtk"}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "dtk"},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": scenario.namespace}]})
    sa_api = None
    try:
        kubeconfig = service_account_kubeconfig(api, scenario.namespace, "op", tmp_path / "op.kubeconfig",
                                                cluster.host, cluster.ca_file)
        sa_api = api_client_from(kubeconfig)
        scenario.create_module()
        running = run_operator(sa_api)

        def failures() -> float:
            return running.registry.get_sample_value("controller_runtime_reconcile_total",
                                                     {"controller": "module", "result": "error"}) or 0.0

        wait_for(lambda: failures() >= 2, 20, "reconciles failing on the 403 and retried")
        assert not _missing(scenario) and scenario.builds() == []
        assert all(r.get("reason") != "MissingDockerfileConfigMap" for r in scenario.kernel_status().values())

        rbac.patch_cluster_role(name, {"rules": rules})
        wait_for(lambda: _both_kernels(scenario, "RUN make -C /lib/modules"), 30,
                 "Builds once the ConfigMap may be read")
        assert not _missing(scenario)
    finally:
        if sa_api is not None:
            sa_api.close()
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)
