"""A metadata-only informer on a real kube-apiserver: the server sends PartialObjectMetadata for the
LIST and the WATCH, and the cache holds identities, never ConfigMap data."""

from __future__ import annotations

import json
import threading

import pytest
from kubernetes import client

from kmm_dtk.kube.client import KubeClient, Resource
from kmm_dtk.kube.decode import METADATA_ONLY, JsonDecoder, MetadataDecoder, decode_event
from kmm_dtk.kube.informer import EventHandler, Informer
from tests.support.controlplane import wait_for

pytestmark = pytest.mark.integration

CONFIGMAPS = Resource("", "v1", "configmaps", kind="ConfigMap")
FAST = {"backoff_initial": 0.05, "backoff_max": 0.5, "watchdog": 3.0}
IDENTITY = {"name", "namespace", "uid", "resourceVersion"}


def _metadata_informer(api, namespace: str, **options) -> Informer:
    return Informer(KubeClient(api), CONFIGMAPS, namespace=namespace, decoder=MetadataDecoder(),
                    accept=METADATA_ONLY, name=f"cm-meta/{namespace}", **FAST, **options)


def _create(api, namespace: str, name: str, data: dict[str, str], labels: dict[str, str] | None = None) -> None:
    client.CoreV1Api(api).create_namespaced_config_map(namespace, {"metadata": {"name": name, "labels": labels},
                                                                   "data": data})


def _cached_bytes(informer: Informer) -> int:
    return sum(len(json.dumps(obj)) for obj in informer.store.list())


def test_the_server_answers_partial_object_metadata_for_list_and_watch(api, namespace):
    _create(api, namespace, "dockerfile", {"dockerfile": "FROM scratch\n" + "#" * 5000}, {"app": "x"})
    kube = KubeClient(api)
    listed = json.loads(kube.request_raw("GET", CONFIGMAPS.path(namespace), accept=METADATA_ONLY.list))
    assert listed["kind"] == "PartialObjectMetadataList"
    item = next(i for i in listed["items"] if i["metadata"]["name"] == "dockerfile")
    assert item["kind"] == "PartialObjectMetadata" and "data" not in item
    assert item["metadata"]["labels"] == {"app": "x"}

    stream = kube.watch(CONFIGMAPS.path(namespace), {"timeoutSeconds": 5, "resourceVersion": "0",
                                                     "fieldSelector": "metadata.name=dockerfile"},
                        timeout=(5, 10), accept=METADATA_ONLY.watch)
    try:
        line = next(iter(stream.lines()))
    finally:
        stream.close()
    assert json.loads(line)["object"]["kind"] == "PartialObjectMetadata"
    assert b"#####" not in line
    event = decode_event(line, MetadataDecoder())
    assert event.type == "ADDED" and event.obj is not None and set(event.obj["metadata"]) == IDENTITY


def test_metadata_informer_lists_and_watches_without_data(api, namespace):
    _create(api, namespace, "before", {"v": "1"})
    events: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def record(kind: str, obj) -> None:
        with lock:
            events.append((kind, obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))

    informer = _metadata_informer(api, namespace)
    informer.add_handler(EventHandler(on_add=lambda o: record("add", o),
                                      on_update=lambda old, new: record("update", new),
                                      on_delete=lambda o: record("delete", o)))
    informer.start()
    try:
        assert informer.wait_for_sync(20)
        assert informer.store.get(f"{namespace}/before") is not None
        _create(api, namespace, "after", {"v": "1"})
        wait_for(lambda: informer.store.get(f"{namespace}/after"), 10, "the watch's ADDED")
        core = client.CoreV1Api(api)
        updated = core.patch_namespaced_config_map("after", namespace, {"data": {"v": "2"}})
        wait_for(lambda: ("update", "after", updated.metadata.resource_version) in events, 10, "the data change")
        core.delete_namespaced_config_map("before", namespace)
        wait_for(lambda: informer.store.get(f"{namespace}/before") is None, 10, "the watch's DELETED")
        assert ("delete", "before") in {(k, n) for k, n, _ in events}
        for obj in informer.store.list():
            assert set(obj) == {"metadata"} and set(obj["metadata"]) == IDENTITY, obj
        assert informer.store.get(f"{namespace}/after")["metadata"]["resourceVersion"] == \
            updated.metadata.resource_version
    finally:
        informer.stop()


def test_cached_bytes_do_not_grow_with_the_data_of_configmaps(api, namespace):
    """50 ConfigMaps of 100 KB: the metadata cache holds none of it; a whole-object cache of the
    same namespace, for contrast, holds all of it."""
    payload = "x" * 100_000
    informer = _metadata_informer(api, namespace)
    whole = Informer(KubeClient(api), CONFIGMAPS, namespace=namespace, decoder=JsonDecoder("ConfigMap"),
                     name=f"cm-whole/{namespace}", **FAST)
    informer.start()
    whole.start()
    try:
        assert informer.wait_for_sync(20) and whole.wait_for_sync(20)
        empty = _cached_bytes(informer)
        for i in range(50):
            _create(api, namespace, f"big-{i}", {"blob": payload})
        wait_for(lambda: sum(k.startswith(f"{namespace}/big-") for k in informer.store.keys()) == 50, 30,
                 "the 50 ConfigMaps in the metadata cache")
        wait_for(lambda: sum(k.startswith(f"{namespace}/big-") for k in whole.store.keys()) == 50, 30,
                 "the 50 ConfigMaps in the whole-object cache")
        assert all("data" not in obj and "blob" not in json.dumps(obj) for obj in informer.store.list())
        grown = _cached_bytes(informer) - empty
        assert grown < 50 * 300, f"the metadata cache grew by {grown} bytes for 50 ConfigMaps"
        assert _cached_bytes(whole) > 50 * 100_000  # what the cache held before
    finally:
        informer.stop()
        whole.stop()
