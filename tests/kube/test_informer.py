"""The informer on a real kube-apiserver, including through dropped, stalled and refused
connections, an apiserver restart and a forced 410: the cache always converges to the server."""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict

import pytest
from kubernetes import client

from kmm_dtk.kube.client import KubeClient, Resource
from kmm_dtk.kube.decode import NodeDecoder, NodeSummary
from kmm_dtk.kube.frozen import FrozenDict
from kmm_dtk.kube.informer import EventHandler, Informer
from tests.support.controlplane import wait_for
from tests.support.objects import create_node, set_node_versions

pytestmark = pytest.mark.integration

CONFIGMAPS = Resource("", "v1", "configmaps", kind="ConfigMap")
NODES = Resource("", "v1", "nodes", namespaced=False, kind="Node")
FAST = {"backoff_initial": 0.05, "backoff_max": 0.5, "watchdog": 3.0}


class Recorder:
    """Collects handler calls; per-object event order is what the tests check."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, str]] = []  # (type, name, data value or "")

    def _record(self, kind: str, obj) -> None:
        name = obj.name if isinstance(obj, NodeSummary) else obj["metadata"]["name"]
        value = "" if isinstance(obj, NodeSummary) else (obj.get("data") or {}).get("v", "")
        with self.lock:
            self.events.append((kind, name, value))

    def handler(self) -> EventHandler:
        return EventHandler(on_add=lambda o: self._record("add", o),
                            on_update=lambda old, new: self._record("update", new),
                            on_delete=lambda o: self._record("delete", o))

    def of(self, name: str) -> list[tuple[str, str]]:
        with self.lock:
            return [(k, v) for k, n, v in self.events if n == name]

    def names(self, kind: str) -> set[str]:
        with self.lock:
            return {n for k, n, _ in self.events if k == kind}


def _server_state(api, namespace: str) -> dict[str, str]:
    items = client.CoreV1Api(api).list_namespaced_config_map(namespace).items
    return {c.metadata.name: c.metadata.resource_version for c in items if c.metadata.name != "kube-root-ca.crt"}


def _cache_state(informer: Informer) -> dict[str, str]:
    return {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in informer.store.list()
            if o["metadata"]["name"] != "kube-root-ca.crt"}


def _converged(api, namespace: str, informer: Informer) -> bool:
    return _server_state(api, namespace) == _cache_state(informer)


@pytest.fixture
def start_informer():
    started: list[Informer] = []

    def start(api_client, resource=CONFIGMAPS, recorder: Recorder | None = None, **options) -> Informer:
        informer = Informer(KubeClient(api_client), resource, **options)
        if recorder is not None:
            informer.add_handler(recorder.handler())
        started.append(informer.start())
        assert informer.wait_for_sync(15), "informer did not sync"
        return informer

    yield start
    for informer in started:
        informer.stop()
        assert not informer.alive(), f"informer {informer.name} thread still running after stop()"


def _cm(name: str, value: str = "1") -> dict:
    return {"metadata": {"name": name}, "data": {"v": value}}


def test_objects_before_and_after_start_arrive_with_ordered_updates_and_deletes(api, namespace, start_informer):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, _cm("before"))
    recorder = Recorder()
    informer = start_informer(api, namespace=namespace, recorder=recorder)
    assert informer.store.get(f"{namespace}/before")["data"] == {"v": "1"}

    core.create_namespaced_config_map(namespace, _cm("after"))
    for value in ("2", "3", "4"):
        core.patch_namespaced_config_map("after", namespace, {"data": {"v": value}})
    core.delete_namespaced_config_map("after", namespace)
    core.patch_namespaced_config_map("before", namespace, {"data": {"v": "9"}})

    wait_for(lambda: ("update", "9") in recorder.of("before"), 10, "the last update")
    assert recorder.of("after") == [("add", "1"), ("update", "2"), ("update", "3"), ("update", "4"),
                                    ("delete", "4")]
    assert recorder.of("before") == [("add", "1"), ("update", "9")]
    assert _converged(api, namespace, informer)


def test_cached_objects_are_trimmed_and_read_only(api, namespace, start_informer):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "applied", "annotations": {
        "kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"}}, "data": {"v": "1"}})
    informer = start_informer(api, namespace=namespace)
    obj = informer.store.get(f"{namespace}/applied")
    assert "managedFields" not in obj["metadata"]
    assert obj["metadata"]["annotations"] == {"keep": "me"}
    assert obj["kind"] == "ConfigMap"
    assert isinstance(obj, FrozenDict)
    with pytest.raises(TypeError):
        obj["data"]["v"] = "2"
    with pytest.raises(TypeError):
        obj["metadata"]["annotations"].pop("keep")


def test_node_projection_keeps_only_what_the_operator_reads(api, new_node_name, start_informer):
    name = new_node_name("proj")
    create_node(api, name, "5.14.0-570.27.1.el9_6.x86_64", "Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)",
                {"node-role.kubernetes.io/worker": ""})
    recorder = Recorder()
    informer = start_informer(api, NODES, recorder, decoder=NodeDecoder(), label_selector="kmm-dtk-test=true")
    node = informer.store.get(name)
    assert isinstance(node, NodeSummary)
    assert node.kernel_version == "5.14.0-570.27.1.el9_6.x86_64"
    assert node.os_image == "Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)"
    assert node.labels["node-role.kubernetes.io/worker"] == ""

    set_node_versions(api, name, "5.14.0-570.49.1.el9_6.x86_64",
                      "Red Hat Enterprise Linux CoreOS 9.6.20251001-0 (Plow)")
    wait_for(lambda: informer.store.get(name).kernel_version == "5.14.0-570.49.1.el9_6.x86_64", 10,
             "the node's new kernel in the cache")
    assert recorder.of(name)[-1][0] == "update"


def test_a_failing_handler_does_not_stop_the_cache_or_other_handlers(api, namespace, start_informer):
    recorder = Recorder()
    informer = Informer(KubeClient(api), CONFIGMAPS, namespace=namespace)
    informer.add_handler(EventHandler(on_add=lambda o: 1 / 0))
    informer.add_handler(recorder.handler())
    informer.start()
    try:
        assert informer.wait_for_sync(15)
        client.CoreV1Api(api).create_namespaced_config_map(namespace, _cm("x"))
        client.CoreV1Api(api).create_namespaced_config_map(namespace, _cm("y"))
        wait_for(lambda: {"x", "y"} <= recorder.names("add"), 10, "both adds at the second handler")
        assert informer.relists == 1
    finally:
        informer.stop()


def test_dropped_connections_converge(api, proxied_api, fault_proxy, namespace, start_informer):
    core = client.CoreV1Api(api)
    recorder = Recorder()
    informer = start_informer(proxied_api, namespace=namespace, recorder=recorder, **FAST)
    for round_ in range(3):
        core.create_namespaced_config_map(namespace, _cm(f"drop-{round_}"))
        wait_for(lambda r=round_: f"drop-{r}" in recorder.names("add"), 10, "the add through the proxy")
        fault_proxy.drop_all()
        core.create_namespaced_config_map(namespace, _cm(f"during-{round_}"))
        if round_:
            core.delete_namespaced_config_map(f"drop-{round_ - 1}", namespace)
    wait_for(lambda: _converged(api, namespace, informer), 15, "the cache to converge after drops")
    assert "drop-1" in recorder.names("delete")
    assert informer.watch_restarts >= 3


def test_stalled_connection_is_detected_by_the_watchdog(api, proxied_api, fault_proxy, namespace, start_informer):
    core = client.CoreV1Api(api)
    recorder = Recorder()
    informer = start_informer(proxied_api, namespace=namespace, recorder=recorder,
                              backoff_initial=0.05, backoff_max=0.5, watchdog=1.5)
    restarts = informer.watch_restarts
    fault_proxy.stall()
    core.create_namespaced_config_map(namespace, _cm("while-stalled"))
    wait_for(lambda: informer.watch_restarts > restarts, 10, "the watchdog to end the silent watch")
    assert "while-stalled" not in recorder.names("add")  # nothing passed the stalled proxy
    fault_proxy.heal()
    wait_for(lambda: _converged(api, namespace, informer), 15, "the cache to converge after the stall")
    assert recorder.of("while-stalled") == [("add", "1")]


def test_refused_connections_back_off_then_recover(api, proxied_api, fault_proxy, namespace, start_informer):
    core = client.CoreV1Api(api)
    informer = start_informer(proxied_api, namespace=namespace, **FAST)
    fault_proxy.refuse()
    core.create_namespaced_config_map(namespace, _cm("while-refused"))
    wait_for(lambda: informer._backoff.failures >= 2, 10, "failed reconnect attempts")
    fault_proxy.heal()
    wait_for(lambda: _converged(api, namespace, informer), 15, "the cache to converge after refusals")


def test_apiserver_restart_and_410_relist_deliver_deletes(api, proxied_api, fault_proxy, namespace, controlplane,
                                                          start_informer):
    core = client.CoreV1Api(api)
    for i in range(5):
        core.create_namespaced_config_map(namespace, _cm(f"cm-{i}"))
    recorder = Recorder()
    informer = start_informer(proxied_api, namespace=namespace, recorder=recorder, **FAST)
    relists = informer.relists

    fault_proxy.refuse()  # the informer is cut off...
    core.delete_namespaced_config_map("cm-1", namespace)
    core.delete_namespaced_config_map("cm-3", namespace)
    core.patch_namespaced_config_map("cm-4", namespace, {"data": {"v": "changed"}})
    core.create_namespaced_config_map(namespace, _cm("cm-new"))
    controlplane.restart_apiserver()  # ...and its resourceVersion is now older than the watch cache
    fault_proxy.heal()

    wait_for(lambda: _converged(api, namespace, informer), 20, "the cache to converge after the 410")
    assert informer.relists > relists, "a 410 must relist"
    assert {"cm-1", "cm-3"} <= recorder.names("delete")
    assert recorder.of("cm-4")[-1] == ("update", "changed")
    assert recorder.of("cm-new") == [("add", "1")]
    deletes = defaultdict(int)
    for kind, name, _ in recorder.events:
        if kind == "delete":
            deletes[name] += 1
    assert dict(deletes) == {"cm-1": 1, "cm-3": 1}, "every delete exactly once"


def test_recreated_object_with_new_uid_is_delete_then_add(api, proxied_api, fault_proxy, namespace, controlplane,
                                                          start_informer):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, _cm("phoenix"))
    recorder = Recorder()
    informer = start_informer(proxied_api, namespace=namespace, recorder=recorder, **FAST)
    old_uid = informer.store.get(f"{namespace}/phoenix")["metadata"]["uid"]

    fault_proxy.refuse()
    core.delete_namespaced_config_map("phoenix", namespace)
    core.create_namespaced_config_map(namespace, _cm("phoenix", "2"))
    controlplane.restart_apiserver()
    fault_proxy.heal()

    wait_for(lambda: informer.store.get(f"{namespace}/phoenix")["metadata"]["uid"] != old_uid, 20,
             "the re-created object in the cache")
    assert recorder.of("phoenix") == [("add", "1"), ("delete", "1"), ("add", "2")]


def test_stop_ends_a_blocked_watch_promptly(api, namespace):
    informer = Informer(KubeClient(api), CONFIGMAPS, namespace=namespace, watchdog=120).start()
    assert informer.wait_for_sync(15)
    wait_for(lambda: informer._watch is not None, 10, "the watch to open")
    informer.stop(timeout=5)
    assert not informer.alive()


class RestartLog:
    """The informer's metrics hooks, recording when and why each list/watch ended."""

    def __init__(self) -> None:
        self.restarts: list[tuple[float, str]] = []
        self.relists: list[float] = []

    def relisted(self, name, count) -> None:
        self.relists.append(time.monotonic())

    def event(self, name, kind, size) -> None:
        pass

    def watch_restarted(self, name, reason) -> None:
        self.restarts.append((time.monotonic(), reason))


def test_watches_that_end_at_once_are_retried_with_backoff(api, proxied_api, fault_proxy, namespace,
                                                           start_informer):
    """Bound: the n-th consecutive retry waits at least 0.8 * 2**(n-1) s (up to 30 s), so a server or
    proxy that ends every watch at once gets at most 6 watch requests in the first 10 s and then
    about one per 30 s, where an unbounded loop made thousands per second."""
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, _cm("steady"))
    log = RestartLog()
    informer = start_informer(proxied_api, namespace=namespace, metrics=log)  # the default backoff
    accepted = fault_proxy.accepted
    fault_proxy.close_idle(0.3)  # a quiet watch is cut right after its headers
    began = time.monotonic()
    wait_for(lambda: len(log.restarts) >= 4, 30, "four retries")
    times = [began] + [t for t, _ in log.restarts[:4]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times[1:])]
    assert {reason for _, reason in log.restarts} <= {"short_watch", "error"}, log.restarts
    for n, gap in enumerate(gaps, start=1):
        assert gap >= 0.8 * 2 ** (n - 1) - 0.05, f"retry {n + 1} came {gap:.2f} s after the previous one"
    connections = fault_proxy.accepted - accepted
    assert connections <= len(log.restarts) + 2, f"{connections} connections for {len(log.restarts)} retries"

    fault_proxy.heal()
    core.create_namespaced_config_map(namespace, _cm("after"))
    wait_for(lambda: _converged(api, namespace, informer), 40, "the cache to converge once watches stay open")


def test_a_410_relists_after_the_backoff(api, proxied_api, fault_proxy, namespace, controlplane, start_informer):
    """An expired resourceVersion relists, but not in a tight loop: a relist is the most expensive
    request an informer makes."""
    core = client.CoreV1Api(api)
    log = RestartLog()
    informer = start_informer(proxied_api, namespace=namespace, metrics=log, backoff_initial=0.5, backoff_max=4)
    fault_proxy.refuse()
    core.create_namespaced_config_map(namespace, _cm("while-away"))
    controlplane.restart_apiserver()  # the informer's resourceVersion is now older than the watch cache
    fault_proxy.heal()
    wait_for(lambda: _converged(api, namespace, informer), 30, "the cache to converge after the 410")
    expired = [t for t, reason in log.restarts if reason == "expired"]
    assert expired, f"no 410 seen: {log.restarts}"
    relists = [t for t in log.relists if t > expired[0]]
    assert relists, "a 410 must relist"
    assert relists[0] - expired[0] >= 0.5, f"relisted {relists[0] - expired[0]:.3f} s after the 410"
