"""Pure parts of the informer: backoff, error classification, event and Node decoding, the store."""

from __future__ import annotations

import json

import msgspec
import pytest

from bench.nodes import RHCOS_PAIRS, node
from kmm_dtk.kube.client import ApiError, Resource
from kmm_dtk.kube.decode import JsonDecoder, NodeDecoder, NodeSummary, decode_event, strip_noise
from kmm_dtk.kube.frozen import FrozenDict, FrozenList, freeze, thaw
from kmm_dtk.kube.informer import _Backoff, retry_delay
from kmm_dtk.kube.store import Store


def test_backoff_doubles_from_0_8_to_30_with_jitter_and_resets():
    backoff = _Backoff(0.8, 30.0)
    delays = [backoff.next_delay() for _ in range(10)]
    for n, delay in enumerate(delays[:5]):
        base = 0.8 * 2 ** n
        assert base <= delay <= base + 0.8
    assert all(30.0 <= d <= 30.8 for d in delays[6:])
    backoff.reset()
    assert 0.8 <= backoff.next_delay() <= 1.6


def test_retry_after_is_honoured_only_for_429():
    assert retry_delay(ApiError(429, "TooManyRequests", "slow down", retry_after=7), 1.0) == 7
    assert retry_delay(ApiError(429, "TooManyRequests", "slow down", retry_after=0.5), 2.0) == 2.0
    assert retry_delay(ApiError(500, "InternalError", "x", retry_after=7), 1.0) == 1.0


@pytest.mark.parametrize("err, expired", [
    (ApiError(410, "Gone", "too old resource version: 1 (5)"), True),
    (ApiError(0, "Expired", "The resourceVersion for the provided watch is too old."), True),
    (ApiError(500, "InternalError", "Timeout: Too large resource version: 99, current: 5"), True),
    (ApiError(500, "InternalError", "etcdserver: request timed out"), False),
    (ApiError(0, "ReadTimeoutError", "read timed out"), False),
])
def test_expired_classification(err, expired):
    assert err.expired is expired


def test_status_with_retry_after_seconds_detail():
    err = ApiError.from_status({"kind": "Status", "code": 429, "reason": "TooManyRequests", "message": "m",
                                "details": {"retryAfterSeconds": 3}})
    assert (err.status, err.reason, err.retry_after) == (429, "TooManyRequests", 3.0)


def test_resource_paths():
    assert Resource("", "v1", "nodes", namespaced=False).path() == "/api/v1/nodes"
    assert Resource("", "v1", "configmaps").path("ns", "a b") == "/api/v1/namespaces/ns/configmaps/a%20b"
    assert Resource("kmm.sigs.x-k8s.io", "v1beta1", "modules").path("ns", "m", "status") == \
        "/apis/kmm.sigs.x-k8s.io/v1beta1/namespaces/ns/modules/m/status"


def test_decode_event_kinds():
    decoder = JsonDecoder("ConfigMap")
    added = decode_event(b'{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n",'
                         b'"resourceVersion":"7","uid":"u","managedFields":[{}]}}}', decoder)
    assert added.type == "ADDED" and added.resource_version == "7"
    assert added.obj["kind"] == "ConfigMap" and "managedFields" not in added.obj["metadata"]
    bookmark = decode_event(b'{"type":"BOOKMARK","object":{"kind":"ConfigMap","metadata":{"resourceVersion":"9"}}}',
                            decoder)
    assert (bookmark.type, bookmark.resource_version, bookmark.obj) == ("BOOKMARK", "9", None)
    error = decode_event(b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}', decoder)
    assert ApiError.from_status(error.status).expired
    with pytest.raises(msgspec.DecodeError):
        decode_event(b'{"type":"ADDED","object":', decoder)


def test_node_decoder_keeps_only_what_is_read_and_interns_labels():
    raw = [node(i, *RHCOS_PAIRS[0]) for i in range(2)]
    page = NodeDecoder().decode_list(json.dumps({"metadata": {"resourceVersion": "42", "continue": "tok"},
                                                 "items": raw}).encode())
    assert (page.resource_version, page.continue_token) == ("42", "tok")
    first, second = page.items
    assert isinstance(first, NodeSummary)
    assert first.kernel_version == RHCOS_PAIRS[0][0] and first.os_image == RHCOS_PAIRS[0][1]
    assert first.labels["node-role.kubernetes.io/worker"] == ""
    key = next(k for k in first.labels if k == "topology.kubernetes.io/region")
    assert key is next(k for k in second.labels if k == "topology.kubernetes.io/region")  # one string for both
    with pytest.raises(TypeError):
        first.labels["x"] = "y"
    with pytest.raises(AttributeError):
        first.kernel_version = "other"


def test_strip_noise_drops_managed_fields_last_applied_and_node_images():
    obj = node(1, *RHCOS_PAIRS[1])
    obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    stripped = strip_noise(obj)
    assert "managedFields" not in stripped["metadata"]
    assert "kubectl.kubernetes.io/last-applied-configuration" not in stripped["metadata"]["annotations"]
    assert "images" not in stripped["status"]
    assert stripped["status"]["nodeInfo"]["kernelVersion"] == RHCOS_PAIRS[1][0]


def test_frozen_containers_refuse_every_mutation():
    frozen = freeze({"a": [1, {"b": 2}], "c": {}})
    assert isinstance(frozen, FrozenDict) and isinstance(frozen["a"], FrozenList)
    for mutate in (lambda: frozen.__setitem__("x", 1), lambda: frozen.pop("a"), lambda: frozen.update(x=1),
                   lambda: frozen["a"].append(3), lambda: frozen["a"][1].clear(), lambda: frozen.setdefault("z"),
                   lambda: frozen["a"].sort(), lambda: frozen.__delitem__("c")):
        with pytest.raises(TypeError, match="read-only"):
            mutate()
    copy = thaw(frozen)
    copy["a"].append(3)
    assert frozen["a"] == [1, {"b": 2}] and json.loads(json.dumps(frozen)) == {"a": [1, {"b": 2}], "c": {}}


def test_store_indexes_follow_updates_and_deletes():
    store: Store[dict] = Store({"by_kernel": lambda o: [o["kernel"]]})
    store.put("a", {"kernel": "k1"})
    store.put("b", {"kernel": "k1"})
    store.put("c", {"kernel": "k2"})
    assert sorted(o["kernel"] for o in store.by_index("by_kernel", "k1")) == ["k1", "k1"]
    store.put("b", {"kernel": "k2"})
    assert len(store.by_index("by_kernel", "k1")) == 1 and len(store.by_index("by_kernel", "k2")) == 2
    store.delete("a")
    assert store.by_index("by_kernel", "k1") == [] and sorted(store.index_values("by_kernel")) == ["k2"]
    store.add_indexer("all", lambda o: ["*"])
    assert len(store.by_index("all", "*")) == 2
