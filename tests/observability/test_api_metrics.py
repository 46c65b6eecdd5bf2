"""Request classification for kmm_dtk_api_requests_total."""

import pytest
from prometheus_client import CollectorRegistry

from kmm_dtk.observability.api_metrics import ApiMetrics, classify


@pytest.mark.parametrize("method, path, watch, expected", [
    ("GET", "/api/v1/nodes", False, ("LIST", "nodes")),
    ("GET", "/api/v1/nodes", True, ("WATCH", "nodes")),
    ("GET", "/api/v1/nodes/worker-0", False, ("GET", "nodes")),
    ("GET", "/api/v1/namespaces/ns/configmaps", False, ("LIST", "configmaps")),
    ("GET", "/api/v1/namespaces/ns", False, ("GET", "namespaces")),
    ("POST", "/apis/build.openshift.io/v1/namespaces/ns/builds", False, ("CREATE", "builds")),
    ("DELETE", "/apis/build.openshift.io/v1/namespaces/ns/builds/b", False, ("DELETE", "builds")),
    ("PATCH", "/apis/kmm.sigs.x-k8s.io/v1beta1/namespaces/ns/modules/m/status", False, ("PATCH", "modules/status")),
    ("PUT", "/apis/coordination.k8s.io/v1/namespaces/x/leases/l", False, ("UPDATE", "leases")),
])
def test_classify(method, path, watch, expected):
    assert classify(method, path, watch) == expected


def test_observe_counts_by_verb_resource_and_code():
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    metrics.observe("POST", "/apis/build.openshift.io/v1/namespaces/ns/builds", False, 409, 0.01)
    metrics.observe("POST", "/apis/build.openshift.io/v1/namespaces/ns/builds", False, 201, 0.01)
    assert registry.get_sample_value("kmm_dtk_api_requests_total",
                                     {"verb": "CREATE", "resource": "builds", "code": "409"}) == 1
    assert registry.get_sample_value("kmm_dtk_api_request_duration_seconds_count", {"verb": "CREATE"}) == 2
