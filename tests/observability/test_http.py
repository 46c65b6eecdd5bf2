"""Metrics and health endpoints, scraped over HTTP."""

from __future__ import annotations

import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from kmm_dtk.kube.client import KubeClient, Resource
from kmm_dtk.kube.informer import Informer
from kmm_dtk.observability.http import Checks, health_server, metrics_server, parse_bind_address
from kmm_dtk.observability.informer_metrics import InformerMetrics
from tests.support.controlplane import wait_for
from tests.support.http import http_get


@pytest.mark.parametrize("address, expected", [(":8080", ("", 8080)), ("127.0.0.1:0", ("127.0.0.1", 0)),
                                               ("[::1]:9090", ("::1", 9090)), ("[::]:8080", ("::", 8080)),
                                               ("localhost:65535", ("localhost", 65535))])
def test_parse_bind_address(address, expected):
    assert parse_bind_address(address) == expected


@pytest.mark.parametrize("address", ["8080", "localhost", ":http", "", ":８０"])
def test_parse_bind_address_rejects_nonsense(address):
    with pytest.raises(ValueError, match="HOST"):
        parse_bind_address(address)


def test_health_probes_report_each_check():
    state = {"threads": True, "synced": False}
    liveness = Checks({"informers": lambda: state["threads"]})
    readiness = Checks({"caches-synced": lambda: state["synced"]}, {"leader-election": lambda: "standby"})
    server = health_server("127.0.0.1:0", liveness, readiness).start()
    try:
        assert http_get(server.port, "/healthz") == (200, "ok\n")
        status, body = http_get(server.port, "/readyz")
        assert status == 500
        assert "[-]caches-synced failed" in body and "[i]leader-election standby" in body

        state["synced"] = True
        assert http_get(server.port, "/readyz") == (200, "ok\n")
        status, body = http_get(server.port, "/readyz?verbose")
        assert status == 200 and "[+]caches-synced ok" in body

        state["threads"] = False
        assert http_get(server.port, "/healthz")[0] == 500
        assert http_get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


def test_a_raising_check_fails_the_probe():
    server = health_server("127.0.0.1:0", Checks({"broken": lambda: 1 / 0}), Checks()).start()
    try:
        status, body = http_get(server.port, "/healthz")
        assert status == 500 and "[-]broken failed" in body
    finally:
        server.stop()


@pytest.mark.integration
def test_informer_metrics_are_served(api, namespace):
    registry = CollectorRegistry()
    informer = Informer(KubeClient(api), Resource("", "v1", "configmaps", kind="ConfigMap"), namespace=namespace,
                        metrics=InformerMetrics(registry), name="configmaps").start()
    server = metrics_server("127.0.0.1:0", registry).start()
    try:
        assert informer.wait_for_sync(15)
        client.CoreV1Api(api).create_namespaced_config_map(namespace, {"metadata": {"name": "m"}})
        wait_for(lambda: 'kmm_dtk_informer_events_total{informer="configmaps",type="ADDED"} 1.0'
                 in http_get(server.port, "/metrics")[1], 10, "the ADDED event in /metrics")
        body = http_get(server.port, "/metrics")[1]
        assert 'kmm_dtk_informer_relists_total{informer="configmaps"} 1.0' in body
        assert 'kmm_dtk_informer_objects{informer="configmaps"} 1.0' in body
    finally:
        server.stop()
        informer.stop()
