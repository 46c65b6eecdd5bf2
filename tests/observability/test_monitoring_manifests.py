"""The openshift-monitoring overlay: cluster monitoring may find and scrape the secure endpoint, and
every alert is documented and reads only metrics the operator exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from kmm_dtk.observability.api_metrics import ApiMetrics
from kmm_dtk.observability.informer_metrics import InformerMetrics
from kmm_dtk.observability.metrics import ControllerMetrics
from kmm_dtk.observability.product_metrics import BUILD_DURATION, FinishedBuild, ProductCollector, ProductSnapshot
from kmm_dtk.observability.registry_metrics import RegistryMetrics
from tools.kustomize_render import render

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "kmm-dtk-system"
PROMETHEUS = {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "openshift-monitoring"}
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_PREFIX = "https://github.com/kmm-dtk/kmm-dtk/blob/main/docs/runbooks.md#"


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render(ROOT / "manifests" / "openshift-monitoring")


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def test_the_namespace_is_opted_in_to_cluster_monitoring(objects):
    labels = one(objects, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["openshift.io/cluster-monitoring"] == "true"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"  # the base's labels stay
    assert "openshift.io/cluster-monitoring" not in one(render(ROOT / "manifests" / "default"), "Namespace",
                                                        NAMESPACE)["metadata"]["labels"]


def test_prometheus_may_discover_the_endpoints_and_read_metrics(objects):
    role = one(objects, "Role", "kmm-dtk-prometheus-k8s")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [{"apiGroups": [""], "resources": ["services", "endpoints", "pods"],
                              "verbs": ["get", "list", "watch"]}]
    binding = one(objects, "RoleBinding", "kmm-dtk-prometheus-k8s")
    assert binding["roleRef"]["name"] == "kmm-dtk-prometheus-k8s" and binding["subjects"] == [PROMETHEUS]
    reader = one(objects, "ClusterRole", "kmm-dtk-metrics-reader")
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    bound = one(objects, "ClusterRoleBinding", "kmm-dtk-metrics-reader")
    assert bound["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                "name": "kmm-dtk-metrics-reader"}
    assert bound["subjects"] == [PROMETHEUS]


def test_the_servicemonitor_scrapes_https_with_a_token_and_the_service_ca(objects):
    service = one(objects, "Service", "kmm-dtk-metrics")
    secret = service["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"]
    [endpoint] = one(objects, "ServiceMonitor", "kmm-dtk")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["path"] == "/metrics"
    assert endpoint["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert endpoint["tlsConfig"]["serverName"] == f"kmm-dtk-metrics.{NAMESPACE}.svc"
    assert endpoint["tlsConfig"]["caFile"].endswith("/service-ca.crt")
    assert "insecureSkipVerify" not in endpoint["tlsConfig"]
    # The Deployment serves the certificate the service-ca writes for that Service.
    pod = one(objects, "Deployment", "kmm-dtk")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    cert_dir = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--metrics-cert-dir="))
    assert "--metrics-secure" in container["args"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == cert_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == secret


# --- alerts ----------------------------------------------------------------------------------------


def alerts(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rule = one(objects, "PrometheusRule", "kmm-dtk")
    assert rule["metadata"]["namespace"] == NAMESPACE
    return [r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r]


def exported_names() -> set[str]:
    """Every series name the operator's registry serves (collectors as build_operator registers them)."""
    registry = CollectorRegistry()
    ControllerMetrics(registry)
    ApiMetrics(registry)
    InformerMetrics(registry)
    RegistryMetrics(registry)
    snapshot = ProductSnapshot(conditions={("Module", "Ready", "True"): 1}, records={("Module", "Failed"): 1},
                               kernels_running=1, kernels_without_dtk=[("k", "r")], registry_waiting=1,
                               finished_builds=[FinishedBuild("uid", "Complete", 60)])
    registry.register(ProductCollector(lambda: True, lambda: snapshot))
    names = set()
    for family in registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "absent", "max_over_time",
                "min_over_time", "changes", "delta", "histogram_quantile", "topk", "bottomk", "time", "vector"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: with label matchers, ranges, grouping clauses and
    strings taken out, the identifiers left that are not PromQL's own words."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    return {name for name in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text) if name not in PROMQL_WORDS}


def test_metric_names_are_read_from_expressions():
    assert metric_names('max by (kernel) (a_b{x="y"}) > 0 or rate(c_total{o=~"5.."}[5m]) / absent(d)') == {
        "a_b", "c_total", "d"}


def test_every_alert_is_documented_and_has_a_severity(objects):
    found = alerts(objects)
    assert {a["alert"] for a in found} == {"KmmDtkKernelWithoutDTKTag", "KmmDtkBuildFailed",
                                           "KmmDtkRegistryUnavailable", "KmmDtkNoLeader"}
    runbooks = RUNBOOKS.read_text()
    sections = dict(re.findall(r"(?ms)^## (\S+)\n(.*?)(?=^## |\Z)", runbooks))
    for alert in found:
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("info", "warning", "critical"), name
        assert alert.get("for"), f"{name} fires on a single evaluation"
        annotations = alert["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert annotations["runbook_url"] == RUNBOOK_PREFIX + name.lower(), name
        section = sections.get(name)
        assert section is not None, f"docs/runbooks.md has no section {name}"
        for part in ("**Meaning.**", "**Impact.**", "**Diagnosis.**", "**Mitigation.**"):
            assert part in section, f"{name}: no {part}"
        assert "oc " in section, f"{name}: the diagnosis names no oc command"


def test_every_metric_an_alert_reads_is_exported(objects):
    exported = exported_names()
    assert {"kmm_dtk_leader", BUILD_DURATION + "_bucket", "kmm_dtk_registry_requests_total",
            "workqueue_depth"} <= exported
    for alert in alerts(objects):
        names = metric_names(alert["expr"])
        assert names, f"{alert['alert']}: no metric found in its expression"
        assert names <= exported, f"{alert['alert']} reads {sorted(names - exported)}, which nothing exports"
