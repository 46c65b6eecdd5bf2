"""The operator does its whole job with only manifests/rbac's permissions, and no more."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from kmm_dtk.kube.manager import LeaderElectionConfig
from tests.operator.conftest import DTK_410, DTK_411, K84, K86, R410, R411
from tests.support.cluster import REPO, api_client_from
from tests.support.controlplane import wait_for
from tests.support.objects import create_imagestream, service_account_kubeconfig, unique_name

pytestmark = pytest.mark.integration

RBAC = REPO / "manifests" / "rbac"


def _apply(api: client.ApiClient, docs: list[dict]) -> None:
    dynamic = DynamicClient(api)
    for doc in docs:
        resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        namespace = doc["metadata"].get("namespace")
        try:
            resource.create(body=doc, namespace=namespace)
        except ApiException as err:
            if err.status != 409:
                raise
            current = resource.get(name=doc["metadata"]["name"], namespace=namespace)
            doc = {**doc, "metadata": {**doc["metadata"], "resourceVersion": current.metadata.resourceVersion}}
            resource.replace(body=doc, namespace=namespace)


def _ensure_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    except ApiException as err:
        if err.status != 409:
            raise


@pytest.fixture
def openshift_dtk(api):
    _ensure_namespace(api, "openshift")
    create_imagestream(api, "openshift", "driver-toolkit", {R410: DTK_410, R411: DTK_411})
    yield
    client.CustomObjectsApi(api).delete_namespaced_custom_object("image.openshift.io", "v1", "openshift",
                                                                 "imagestreams", "driver-toolkit")


def test_operator_runs_on_the_manifest_rbac_and_nothing_more(cluster, api, scenario, run_operator, openshift_dtk,
                                                             tmp_path: Path):
    for namespace in ("kmm-dtk-system", "openshift"):
        _ensure_namespace(api, namespace)
    docs = [doc for path in sorted(RBAC.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    _apply(api, docs)
    kubeconfig = service_account_kubeconfig(api, "kmm-dtk-system", "kmm-dtk", tmp_path / "sa.kubeconfig",
                                            cluster.host, cluster.ca_file)
    sa_api = api_client_from(kubeconfig)
    lease = unique_name("kmm-dtk")

    scenario.create_module()
    running = run_operator(sa_api, identity="sa-operator", dtk_imagestream=("openshift", "driver-toolkit"),
                           leader_election=LeaderElectionConfig(lease, "kmm-dtk-system", identity="sa-operator",
                                                                lease_duration=3, renew_deadline=2,
                                                                retry_period=0.3))
    wait_for(lambda: set(scenario.builds_by_kernel()) == {K84, K86}, 20, "Builds created with the SA's token")
    wait_for(lambda: set(scenario.kernel_status()) == {K84, K86}, 10, "Module status written with the SA's token")
    wait_for(lambda: scenario.events("BuildimageCreated"), 10, "Events recorded with the SA's token")
    held = client.CoordinationV1Api(api).read_namespaced_lease(lease, "kmm-dtk-system")
    assert held.spec.holder_identity == "sa-operator"
    assert running.operator.manager.alive()

    denied = client.CoreV1Api(sa_api)
    client.CoreV1Api(api).create_namespaced_secret(scenario.namespace, {"metadata": {"name": "push"},
                                                                        "stringData": {"k": "v"}})
    denied.read_namespaced_secret("push", scenario.namespace)  # pull secrets are read by name...
    for call in (lambda: denied.list_namespaced_secret(scenario.namespace),  # ...never listed or changed
                 lambda: denied.list_secret_for_all_namespaces(),
                 lambda: denied.patch_namespaced_secret("push", scenario.namespace, {"data": {}}),
                 lambda: client.CustomObjectsApi(sa_api).list_namespaced_custom_object(
                     "image.openshift.io", "v1", scenario.namespace, "imagestreams"),
                 lambda: client.CoordinationV1Api(sa_api).list_namespaced_lease(scenario.namespace)):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 403
    assert running.stop() == 0
    sa_api.close()


def test_a_build_the_api_refuses_is_reported_not_retried_blindly(cluster, api, scenario, run_operator, tmp_path):
    """An operator whose role lacks `create` on builds: the 403 lands in status and an Event."""
    rules = [doc for path in sorted(RBAC.glob("cluster_role.yaml")) for doc in yaml.safe_load_all(path.read_text())
             if doc][0]["rules"]
    crippled = [{**r, "verbs": [v for v in r["verbs"] if v != "create"]} if "builds" in r["resources"] else r
                for r in rules]
    name = unique_name("no-builds")
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": crippled})
    rbac.create_cluster_role_binding({"metadata": {"name": name}, "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": scenario.namespace}]})
    try:
        kubeconfig = service_account_kubeconfig(api, scenario.namespace, "op", tmp_path / "op.kubeconfig",
                                                cluster.host, cluster.ca_file)
        sa_api = api_client_from(kubeconfig)
        # The DTK ImageStream is in the test namespace here; let the role read it.
        rbac.create_namespaced_role(scenario.namespace, {"metadata": {"name": "dtk"}, "rules": [
            {"apiGroups": ["image.openshift.io"], "resources": ["imagestreams"], "verbs": ["get", "list", "watch"]}]})
        rbac.create_namespaced_role_binding(scenario.namespace, {"metadata": {"name": "dtk"}, "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "dtk"},
            "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": scenario.namespace}]})
        scenario.create_module()
        run_operator(sa_api)
        wait_for(lambda: scenario.condition("Degraded").get("reason") == "BuildRefused", 20, "the refusal in status")
        records = scenario.kernel_status()
        assert {r["phase"] for r in records.values()} == {"Error"}
        assert all("403" in r["message"] for r in records.values())
        wait_for(lambda: len(scenario.events("BuildimageRefused")) == 2, 10, "one Event per kernel")
        assert scenario.builds() == []
        sa_api.close()
    finally:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)
