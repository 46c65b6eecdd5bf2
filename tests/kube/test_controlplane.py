"""The test control plane itself: real objects round-trip, 410s, RBAC, the fault proxy, restarts."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.support.binaries import build
from tests.support.cluster import TestCluster, api_client_from
from tests.support.controlplane import ControlPlane, wait_for
from tests.support.objects import (
    DTK_GROUP,
    DTK_PLURAL,
    DTK_VERSION,
    MODULE_GROUP,
    MODULE_PLURAL,
    MODULE_VERSION,
    create_imagestream,
    create_node,
    move_imagestream_tag,
    service_account_kubeconfig,
)

pytestmark = pytest.mark.integration

DTK_410 = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "84" * 32
DTK_411 = "registry.ci.openshift.org/ocp/4.11-2022-07-27-013908@sha256:" + "48" * 32


def _module(namespace: str) -> dict:
    return {
        "apiVersion": f"{MODULE_GROUP}/{MODULE_VERSION}",
        "kind": "Module",
        "metadata": {"name": "simple-kmod", "namespace": namespace},
        "spec": {
            "selector": {"node-role.kubernetes.io/worker": ""},
            "imageRebuildTriggerGeneration": 1,
            "moduleLoader": {"container": {
                "modprobe": {"moduleName": "simple_kmod"},
                "kernelMappings": [{
                    "regexp": r"^.+\.el9_\d+\.x86_64$",
                    "containerImage": "registry.example.com/org/simple-kmod:${KERNEL_FULL_VERSION}",
                    "build": {"dockerfileConfigMap": {"name": "simple-kmod-dockerfile"},
                              "buildArgs": [{"name": "KMOD_VERSION", "value": "1.0"}],
                              "secrets": [{"name": "build-secret"}]},
                }],
            }},
        },
    }


def test_module_nodes_and_imagestream_round_trip(api, namespace, new_node_name):
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)

    custom.create_namespaced_custom_object(MODULE_GROUP, MODULE_VERSION, namespace, MODULE_PLURAL, _module(namespace))
    module = custom.get_namespaced_custom_object(MODULE_GROUP, MODULE_VERSION, namespace, MODULE_PLURAL, "simple-kmod")
    mapping = module["spec"]["moduleLoader"]["container"]["kernelMappings"][0]
    assert mapping["build"]["dockerfileConfigMap"]["name"] == "simple-kmod-dockerfile"
    assert module["spec"]["moduleLoader"]["container"]["modprobe"]["moduleName"] == "simple_kmod"

    # The status subresource exists and is separate from spec.
    module["status"] = {"kernels": [{"kernel": "5.14.0-570.27.1.el9_6.x86_64", "phase": "Pending"}]}
    custom.replace_namespaced_custom_object_status(MODULE_GROUP, MODULE_VERSION, namespace, MODULE_PLURAL,
                                                   "simple-kmod", module)
    again = custom.get_namespaced_custom_object(MODULE_GROUP, MODULE_VERSION, namespace, MODULE_PLURAL, "simple-kmod")
    assert again["status"]["kernels"][0]["phase"] == "Pending"

    name = new_node_name("worker")
    create_node(api, name, "5.14.0-570.27.1.el9_6.x86_64", "Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)",
                {"node-role.kubernetes.io/worker": ""})
    node = core.read_node(name)
    assert node.status.node_info.kernel_version == "5.14.0-570.27.1.el9_6.x86_64"
    assert node.status.node_info.os_image.endswith("9.6.20250715-0 (Plow)")
    assert node.metadata.labels["node-role.kubernetes.io/worker"] == ""

    create_imagestream(api, namespace, "driver-toolkit", {"410.84.202207140725-0": DTK_410,
                                                          "411.86.202207260413-0": DTK_411})
    stream = custom.get_namespaced_custom_object(DTK_GROUP, DTK_VERSION, namespace, DTK_PLURAL, "driver-toolkit")
    by_tag = {t["tag"]: t["items"][0]["dockerImageReference"] for t in stream["status"]["tags"]}
    assert by_tag == {"410.84.202207140725-0": DTK_410, "411.86.202207260413-0": DTK_411}
    assert stream["spec"]["tags"][0]["annotations"] is None  # nullable as on OpenShift

    moved = move_imagestream_tag(api, namespace, "driver-toolkit", "411.86.202207260413-0", DTK_411[:-2] + "ff")
    items = next(t["items"] for t in moved["status"]["tags"] if t["tag"] == "411.86.202207260413-0")
    assert [i["dockerImageReference"] for i in items] == [DTK_411[:-2] + "ff", DTK_411]


def test_module_schema_rejects_a_bad_phase(api, namespace):
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(MODULE_GROUP, MODULE_VERSION, namespace, MODULE_PLURAL, _module(namespace))
    module = custom.get_namespaced_custom_object(MODULE_GROUP, MODULE_VERSION, namespace, MODULE_PLURAL, "simple-kmod")
    module["status"] = {"kernels": [{"kernel": "k", "phase": "Sleeping"}]}
    with pytest.raises(ApiException) as err:
        custom.replace_namespaced_custom_object_status(MODULE_GROUP, MODULE_VERSION, namespace, MODULE_PLURAL,
                                                       "simple-kmod", module)
    assert err.value.status == 422


def _first_watch_event(core: client.CoreV1Api, namespace: str, resource_version: str) -> dict:
    stream = watch.Watch().stream(core.list_namespaced_config_map, namespace, resource_version=resource_version,
                                  timeout_seconds=5, _request_timeout=(5, 10))
    return next(iter(stream))


def test_stale_watch_after_apiserver_restart_gets_410(api, namespace, controlplane):
    core = client.CoreV1Api(api)
    stale = core.list_namespaced_config_map(namespace).metadata.resource_version
    for i in range(3):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": f"cm-{i}"}})
    controlplane.restart_apiserver()  # the new watch cache starts after `stale`

    with pytest.raises(ApiException) as err:
        _first_watch_event(core, namespace, stale)
    assert err.value.status == 410
    assert "too old resource version" in str(err.value)


@pytest.fixture(scope="module")
def uncached_controlplane(tmp_path_factory):
    """A second control plane without the watch cache: watches read etcd, so compaction means 410."""
    plane = ControlPlane(tmp_path_factory.mktemp("uncached"), build(), watch_cache=False).start()
    try:
        yield plane
    finally:
        plane.stop()


def test_stale_watch_after_etcd_compaction_gets_410(uncached_controlplane):
    api = api_client_from(uncached_controlplane.kubeconfig)
    core = client.CoreV1Api(api)
    stale = core.list_namespaced_config_map("default").metadata.resource_version
    for i in range(3):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"compact-{i}"}})
    compacted = uncached_controlplane.compact_etcd()
    assert compacted > int(stale)

    try:
        event = _first_watch_event(core, "default", stale)
    except ApiException as err:  # some versions answer the watch request itself with 410
        assert err.status == 410
    else:
        assert event["type"] == "ERROR"
        assert event["raw_object"]["code"] == 410
        assert event["raw_object"]["reason"] in ("Expired", "Gone")
    api.close()


def test_service_account_token_is_limited_to_its_role(cluster, api, namespace, tmp_path):
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "configmap-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
    })
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "configmap-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    })
    client.CoreV1Api(api).create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    client.CoreV1Api(api).create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})

    kubeconfig = service_account_kubeconfig(api, namespace, "reader", tmp_path / "sa.kubeconfig", cluster.host,
                                            cluster.ca_file) if cluster.ca_file else pytest.skip("no CA file")
    sa_api = api_client_from(kubeconfig)
    sa_core = client.CoreV1Api(sa_api)
    # RBAC may take a moment to see the new binding: wait for the allowed call, then check the denied ones.
    wait_for(lambda: sa_core.list_namespaced_config_map(namespace).items, 10, "the Role to take effect")
    for denied in (lambda: sa_core.list_namespaced_secret(namespace),
                   lambda: sa_core.read_namespaced_secret("s", namespace),
                   lambda: sa_core.list_namespaced_config_map("default"),
                   lambda: sa_core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})):
        with pytest.raises(ApiException) as err:
            denied()
        assert err.value.status == 403
    sa_api.close()


def _watch_in_thread(api: client.ApiClient, namespace: str, resource_version: str, read_timeout: float):
    """Run a raw watch in a thread; returns (events list, outcome dict, thread)."""
    events: list[str] = []
    outcome: dict[str, object] = {}

    def run() -> None:
        core = client.CoreV1Api(api)
        try:
            for event in watch.Watch().stream(core.list_namespaced_config_map, namespace,
                                              resource_version=resource_version, timeout_seconds=60,
                                              _request_timeout=(5, read_timeout)):
                events.append(event["object"].metadata.name)
            outcome["end"] = "clean"
        except Exception as err:  # noqa: BLE001 - the test inspects what ended the watch
            outcome["end"] = type(err).__name__
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return events, outcome, thread


def test_proxy_drop_ends_an_open_watch(api, proxied_api, fault_proxy, namespace):
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    events, outcome, thread = _watch_in_thread(proxied_api, namespace, rv, read_timeout=30)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "before-drop"}})
    wait_for(lambda: "before-drop" in events, 10, "the watch to deliver an event through the proxy")

    assert fault_proxy.drop_all() >= 1
    thread.join(10)
    assert not thread.is_alive(), "the watch did not notice its connection was dropped"
    assert outcome["end"] != "clean" or events == ["before-drop"]
    # The proxy keeps serving new connections after a drop.
    assert client.CoreV1Api(proxied_api).list_namespaced_config_map(namespace).items[0].metadata.name == "before-drop"


def test_proxy_stall_starves_a_watch_until_its_read_timeout(api, proxied_api, fault_proxy, namespace):
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    events, outcome, thread = _watch_in_thread(proxied_api, namespace, rv, read_timeout=2)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "before-stall"}})
    wait_for(lambda: events == ["before-stall"], 10, "the first event through the proxy")

    fault_proxy.stall()
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "during-stall"}})
    thread.join(15)
    assert not thread.is_alive(), "a stalled watch must end by its client read timeout"
    assert "during-stall" not in events, "no byte may pass a stalled proxy"
    assert "Timeout" in str(outcome["end"]) or "Timeout" in repr(outcome.get("error")), outcome

    fault_proxy.heal()
    names = {c.metadata.name for c in client.CoreV1Api(proxied_api).list_namespaced_config_map(namespace).items}
    assert names == {"before-stall", "during-stall"}


def test_proxy_refuse_and_latency(proxied_api, fault_proxy, namespace):
    core = client.CoreV1Api(proxied_api)
    fault_proxy.refuse()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", fault_proxy.port)) != 0
    fault_proxy.heal()

    fault_proxy.latency = 0.3
    fault_proxy.drop_all()  # force a new connection so the request pays the latency both ways
    started = time.monotonic()
    core.read_namespace(namespace)
    assert time.monotonic() - started >= 0.6


def test_apiserver_restart_keeps_etcd_data(api, namespace, controlplane):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "survivor"}, "data": {"k": "v"}})
    etcd_pid = controlplane.processes()[0]
    controlplane.restart_apiserver()
    assert controlplane.processes()[0] == etcd_pid
    assert core.read_namespaced_config_map("survivor", namespace).data == {"k": "v"}


def test_control_plane_stops_cleanly(tmp_path: Path):
    plane = ControlPlane(tmp_path / "cp", build())
    started = time.monotonic()
    plane.start()
    assert time.monotonic() - started < 15, "the control plane must be ready within 15 s once built"
    pids, ports = plane.processes(), (plane.apiserver_port, plane.etcd_port)
    assert len(pids) == 2
    plane.stop()
    assert plane.processes() == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open after stop"


def test_cluster_fixture_reports_how_to_reach_it(cluster: TestCluster):
    assert cluster.host.startswith("https://")
    assert cluster.kubeconfig.exists()
