"""The deployment manifests under manifests/: structure, least-privilege RBAC, and the Deployment.

Pure and fast: no cluster and no kustomize needed. The overlays are resolved here by following each
kustomization's ``resources`` (the only transformer in use is ``images:``), so the checks see what
``kustomize build`` would emit. When a ``kustomize`` binary is on PATH (or named by ``$KUSTOMIZE``),
the last tests also render the overlays with it and compare; otherwise they are skipped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.binaries import find_kustomize
from tools.kustomize_render import (
    KUSTOMIZATION_NAMES,
    kustomization_file,
    load_documents,
    read_kustomization,
    render,
)

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"

NAMESPACE = "kmm-dtk-system"
SERVICE_ACCOUNT = "kmm-dtk"
LABELS = {"app.kubernetes.io/name": "kmm-dtk", "app.kubernetes.io/part-of": "kmm-dtk"}
OVERLAYS = ("default", "with-kmm", "openshift-monitoring")

# Exactly what the operator may do cluster-wide. Any change here is a change of its privileges.
EXPECTED_CLUSTER_RULES = {
    ("", "nodes"): {"list", "watch"},
    ("kmm.sigs.x-k8s.io", "modules"): {"list", "watch"},
    ("kmm.sigs.x-k8s.io", "modules/status"): {"patch"},
    ("kmm-dtk.io", "modulebuilds"): {"list", "watch"},
    ("kmm-dtk.io", "modulebuilds/status"): {"patch"},
    ("", "configmaps"): {"get", "list", "watch"},
    ("build.openshift.io", "builds"): {"list", "watch", "create", "delete"},
    ("", "events"): {"create"},
    # registry access: pull secrets by name (never listed or watched), the builder ServiceAccount
    ("", "secrets"): {"get"},
    ("", "serviceaccounts"): {"get"},
    # disconnected clusters and upgrades: mirror policies, trusted CAs, the release being rolled out
    ("operator.openshift.io", "imagecontentsourcepolicies"): {"list", "watch"},
    ("config.openshift.io", "imagedigestmirrorsets"): {"list", "watch"},
    ("config.openshift.io", "imagetagmirrorsets"): {"list", "watch"},
    ("config.openshift.io", "images"): {"get"},
    ("config.openshift.io", "clusterversions"): {"list", "watch"},
    # the secure metrics endpoint: each scrape's token reviewed, its user checked for GET /metrics
    ("authentication.k8s.io", "tokenreviews"): {"create"},
    ("authorization.k8s.io", "subjectaccessreviews"): {"create"},
}
# Namespaced Roles: (namespace, name) -> rules.
EXPECTED_ROLES = {
    ("openshift", "kmm-dtk-imagestreams"): {("image.openshift.io", "imagestreams"): {"list", "watch"}},
    (NAMESPACE, "kmm-dtk-leader-election"): {("coordination.k8s.io", "leases"): {"get", "create", "update"}},
}
EXPECTED_ARGS = [
    "run",
    "--leader-elect",
    f"--leader-election-namespace={NAMESPACE}",
    "--graceful-shutdown-timeout=10",
    "--metrics-bind-address=:8443",
    "--metrics-secure",
    "--metrics-cert-dir=/etc/kmm-dtk/metrics-cert",
    "--health-probe-bind-address=:8081",
    "--log-format=json",
    "--ca-file=/etc/pki/kmm-dtk/trusted-ca",
]

CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
# Kustomization fields the resolver below reproduces faithfully. Anything else (patches, a namespace
# transformer, generators, components...) could change what the checks see, e.g. widen a role.
SUPPORTED_KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "images", "patches"}


# --- loading ---------------------------------------------------------------------------------------


def all_yaml_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))


def kustomization_dirs() -> list[Path]:
    return sorted({p.parent for p in MANIFESTS.rglob("*") if p.name in KUSTOMIZATION_NAMES})


def object_id(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    group = obj["apiVersion"].rpartition("/")[0]
    return (group, obj["kind"], meta.get("namespace", ""), meta["name"])


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects
        if o["kind"] == kind
        and (name is None or o["metadata"]["name"] == name)
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def only(objects: list[dict[str, Any]], kind: str, name: str | None = None,
         namespace: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name, namespace)
    assert len(found) == 1, f"expected one {kind} {namespace or ''}/{name or '*'}, found {len(found)}"
    return found[0]


def rule_set(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs, expanded from the rules, after refusing anything broader."""
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        extra = set(rule) - {"apiGroups", "resources", "verbs"}
        assert not extra, f"rule {rule} uses {sorted(extra)} (resourceNames/nonResourceURLs are not expected)"
        for field in ("apiGroups", "resources", "verbs"):
            assert rule.get(field), f"rule {rule} has no {field}"
            assert "*" not in rule[field], f"wildcard in {field} of rule {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: render(MANIFESTS / overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="module")
def objects(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The largest composition: with-kmm + monitoring."""
    return rendered["openshift-monitoring"]


@pytest.fixture(scope="module")
def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return only(objects, "Deployment", "kmm-dtk", NAMESPACE)


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for entry in container.get("ports") or []:
        if entry.get("name") == port:
            return entry["containerPort"]
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


# --- files and kustomizations ----------------------------------------------------------------------


def test_every_yaml_file_parses_into_kubernetes_objects() -> None:
    files = all_yaml_files()
    assert files, "no YAML under manifests/"
    for path in files:
        docs = load_documents(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert isinstance(doc, dict), f"{path}: a document is not a mapping"
            assert doc.get("apiVersion") and doc.get("kind"), f"{path}: a document lacks apiVersion/kind"
            if path.name not in KUSTOMIZATION_NAMES:
                assert (doc.get("metadata") or {}).get("name"), f"{path}: a {doc['kind']} has no name"


def test_expected_kustomizations_exist() -> None:
    names = {d.relative_to(MANIFESTS).as_posix() for d in kustomization_dirs()}
    assert {"crd", "rbac", "manager", "prometheus", "default", "openshift-monitoring"} <= names


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda d: d.relative_to(MANIFESTS).as_posix())
def test_kustomization_resources_exist(directory: Path) -> None:
    kustomization = read_kustomization(directory)
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization.get("resources") or []
    assert resources, f"{directory} lists no resources"
    assert len(resources) == len(set(resources)), f"{directory} lists a resource twice"
    for entry in resources:
        assert "://" not in entry and not entry.startswith(("github.com/", "git@")), f"remote resource {entry}"
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory.name}/kustomization.yaml: {entry} does not exist"
        assert MANIFESTS.resolve() in target.parents, f"{entry} points outside manifests/"
        if target.is_dir():
            assert kustomization_file(target), f"{entry} is a directory without a kustomization"


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda d: d.relative_to(MANIFESTS).as_posix())
def test_kustomization_uses_only_fields_the_checks_understand(directory: Path) -> None:
    kustomization = read_kustomization(directory)
    unknown = set(kustomization) - SUPPORTED_KUSTOMIZATION_FIELDS
    assert not unknown, (
        f"{directory.name}/kustomization.yaml uses {sorted(unknown)}, which render() in this test does"
        " not apply; teach it, or these checks no longer see what kustomize emits"
    )
    # Above all no namespace transformer: it would move the ImageStream Role out of `openshift`.
    assert "namespace" not in kustomization


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda d: d.relative_to(MANIFESTS).as_posix())
def test_every_manifest_in_a_kustomization_directory_is_listed(directory: Path) -> None:
    listed = {(directory / entry).resolve() for entry in read_kustomization(directory).get("resources") or []}
    for path in sorted(directory.iterdir()):
        if path.suffix in (".yaml", ".yml") and path.name not in KUSTOMIZATION_NAMES:
            assert path.resolve() in listed, f"{path.relative_to(MANIFESTS)} is not in its kustomization"


def test_overlays_compose_the_bases() -> None:
    default = read_kustomization(MANIFESTS / "default")
    assert sorted(default["resources"]) == ["../crd", "../manager", "../modulebuild", "../rbac"]
    with_kmm = read_kustomization(MANIFESTS / "with-kmm")
    assert sorted(with_kmm["resources"]) == ["../manager", "../modulebuild", "../rbac"]
    monitoring = read_kustomization(MANIFESTS / "openshift-monitoring")
    assert sorted(monitoring["resources"]) == ["../prometheus", "../with-kmm", "metrics_reader.yaml",
                                               "prometheus_role.yaml", "prometheus_rule.yaml"]


def test_servicemonitor_only_in_the_monitoring_overlay(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not find(rendered["default"], "ServiceMonitor")
    assert not find(rendered["with-kmm"], "ServiceMonitor")
    assert len(find(rendered["openshift-monitoring"], "ServiceMonitor")) == 1
    default_ids = {object_id(o) for o in rendered["with-kmm"]}
    monitoring_ids = {object_id(o) for o in rendered["openshift-monitoring"]}
    assert monitoring_ids - default_ids == {
        ("monitoring.coreos.com", "ServiceMonitor", NAMESPACE, "kmm-dtk"),
        ("monitoring.coreos.com", "PrometheusRule", NAMESPACE, "kmm-dtk"),
        ("rbac.authorization.k8s.io", "Role", NAMESPACE, "kmm-dtk-prometheus-k8s"),
        ("rbac.authorization.k8s.io", "RoleBinding", NAMESPACE, "kmm-dtk-prometheus-k8s"),
        ("rbac.authorization.k8s.io", "ClusterRole", "", "kmm-dtk-metrics-reader"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding", "", "kmm-dtk-metrics-reader"),
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_objects_are_unique_and_name_their_namespace(
        overlay: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    ids = [object_id(o) for o in rendered[overlay]]
    assert len(ids) == len(set(ids)), f"{overlay}: duplicate objects"
    for obj in rendered[overlay]:
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED_KINDS:
            assert namespace is None, f"{obj['kind']} {obj['metadata']['name']} is cluster-scoped"
        else:
            assert namespace, f"{obj['kind']} {obj['metadata']['name']} names no namespace"
            assert namespace in (NAMESPACE, "openshift"), f"{obj['kind']} in unexpected namespace {namespace}"
    assert only(rendered[overlay], "Namespace", NAMESPACE)
    crds = sorted(o["metadata"]["name"] for o in rendered[overlay] if o["kind"] == "CustomResourceDefinition")
    if overlay in ("with-kmm", "openshift-monitoring"):
        assert crds == ["modulebuilds.kmm-dtk.io"], f"{overlay} must leave KMM's own Module CRD alone"
    else:
        assert crds == ["modulebuilds.kmm-dtk.io", "modules.kmm.sigs.x-k8s.io"]


def test_only_the_imagestream_role_and_binding_live_in_openshift(objects: list[dict[str, Any]]) -> None:
    in_openshift = {(o["kind"], o["metadata"]["name"]) for o in objects
                    if o["metadata"].get("namespace") == "openshift"}
    assert in_openshift == {("Role", "kmm-dtk-imagestreams"), ("RoleBinding", "kmm-dtk-imagestreams")}


@pytest.mark.parametrize("base", ["rbac", "manager", "prometheus"])
def test_every_object_carries_the_app_labels(base: str) -> None:
    for obj in render(MANIFESTS / base):
        labels = obj["metadata"].get("labels") or {}
        assert LABELS.items() <= labels.items(), f"{obj['kind']} {obj['metadata']['name']} lacks {LABELS}"


# --- RBAC ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def operator_objects(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The operator's own deployment; the monitoring overlay's roles are Prometheus', checked apart."""
    return rendered["default"]


def test_cluster_role_rules_are_exactly_the_expected_ones(operator_objects: list[dict[str, Any]]) -> None:
    cluster_roles = find(operator_objects, "ClusterRole")
    assert [r["metadata"]["name"] for r in cluster_roles] == ["kmm-dtk"]
    role = cluster_roles[0]
    assert "aggregationRule" not in role, "an aggregated ClusterRole gets rules from elsewhere"
    assert rule_set(role["rules"]) == EXPECTED_CLUSTER_RULES


def test_roles_are_exactly_the_expected_ones(operator_objects: list[dict[str, Any]]) -> None:
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): rule_set(r["rules"])
             for r in find(operator_objects, "Role")}
    assert roles == EXPECTED_ROLES


def test_no_role_lists_secrets_or_grants_privilege_escalation(operator_objects: list[dict[str, Any]]) -> None:
    """Pull secrets are read one by one by name; listing or watching would hand over every Secret."""
    for role in find(operator_objects, "ClusterRole") + find(operator_objects, "Role"):
        for (group, resource), verbs in rule_set(role["rules"]).items():
            if resource.split("/")[0] == "secrets":
                assert verbs == {"get"}, f"{role['metadata']['name']} may {sorted(verbs)} secrets"
            assert not verbs & {"escalate", "bind", "impersonate", "deletecollection"}, (
                f"{role['metadata']['name']}: {group}/{resource} {sorted(verbs)}")


def test_bindings_bind_existing_roles_to_the_service_account(operator_objects: list[dict[str, Any]]) -> None:
    objects = operator_objects
    bindings = find(objects, "ClusterRoleBinding") + find(objects, "RoleBinding")
    assert {(b["kind"], b["metadata"]["name"]) for b in bindings} == {
        ("ClusterRoleBinding", "kmm-dtk"),
        ("RoleBinding", "kmm-dtk-imagestreams"),
        ("RoleBinding", "kmm-dtk-leader-election"),
    }
    bound: set[tuple[str, str, str]] = set()
    for binding in bindings:
        ref = binding["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        if binding["kind"] == "ClusterRoleBinding":
            assert ref["kind"] == "ClusterRole"
            only(objects, "ClusterRole", ref["name"])
            bound.add(("ClusterRole", "", ref["name"]))
        else:
            # A RoleBinding to a ClusterRole would grant its rules in this namespace: not expected here.
            assert ref["kind"] == "Role"
            namespace = binding["metadata"]["namespace"]
            only(objects, "Role", ref["name"], namespace)
            bound.add(("Role", namespace, ref["name"]))
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
        ], f"{binding['kind']} {binding['metadata']['name']} binds someone else"
    roles = {("ClusterRole", "", r["metadata"]["name"]) for r in find(objects, "ClusterRole")}
    roles |= {("Role", r["metadata"]["namespace"], r["metadata"]["name"]) for r in find(objects, "Role")}
    assert roles == bound, "a role is bound to nobody"
    only(objects, "ServiceAccount", SERVICE_ACCOUNT, NAMESPACE)


# --- the Deployment --------------------------------------------------------------------------------


def test_deployment_runs_as_the_bound_service_account(deployment: dict[str, Any]) -> None:
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == SERVICE_ACCOUNT
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert spec.get("automountServiceAccountToken", True) is True


def test_deployment_replicas_selector_and_scheduling(deployment: dict[str, Any]) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    assert set(spec["selector"]) == {"matchLabels"}
    pod = spec["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    # A clean stop (graceful timeout, then one Lease release of at most 5 s) ends before SIGKILL.
    args = dict(a.split("=", 1) for a in pod["containers"][0]["args"] if "=" in a)
    assert float(args["--graceful-shutdown-timeout"]) + 5 < pod["terminationGracePeriodSeconds"]
    assert "priorityClassName" not in pod
    # Replicas on different nodes, preferred (so a single-node cluster still runs both).
    spreads = [
        term["podAffinityTerm"]
        for term in (((pod.get("affinity") or {}).get("podAntiAffinity") or {})
                     .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    ]
    spreads += [
        c for c in pod.get("topologySpreadConstraints") or [] if c.get("whenUnsatisfiable") == "ScheduleAnyway"
    ]
    assert any(
        s["topologyKey"] == "kubernetes.io/hostname"
        and s["labelSelector"]["matchLabels"].items() <= pod_labels.items()
        for s in spreads
    ), "no preferred spreading of the replicas across nodes"


def test_container_image_args_and_env(container: dict[str, Any]) -> None:
    # By digest: manifests/manager/kustomization.yaml's images entry, which `make image` sets.
    name, _, digest = container["image"].partition("@sha256:")
    assert name == "quay.io/kmm-dtk/kmm-dtk" and len(digest) == 64, container["image"]
    assert "command" not in container, "the image ENTRYPOINT (kmm-dtk) is the command"
    assert container["args"] == [*EXPECTED_ARGS, "--module-build-sections=ignore"]  # beside KMM
    env = {e["name"]: e for e in container.get("env") or []}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_leader_election_namespace_has_the_lease_role(container: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    namespace = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--leader-election-namespace="))
    lease_roles = [
        r for r in find(objects, "Role", namespace=namespace)
        if ("coordination.k8s.io", "leases") in rule_set(r["rules"])
    ]
    assert lease_roles, f"no Role for leases in {namespace}"


def test_ports_match_the_bind_addresses(container: dict[str, Any]) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8443, "health": 8081}
    args = dict(a.split("=", 1) for a in container["args"] if "=" in a)
    assert args["--metrics-bind-address"] == f":{ports['metrics']}"
    assert args["--health-probe-bind-address"] == f":{ports['health']}"


def test_probes_hit_the_health_endpoints(container: dict[str, Any]) -> None:
    for probe, path, delay, period in (("livenessProbe", "/healthz", 15, 20), ("readinessProbe", "/readyz", 5, 10)):
        spec = container[probe]
        assert spec["httpGet"]["path"] == path
        assert container_port(container, spec["httpGet"]["port"]) == 8081
        assert spec["httpGet"].get("scheme", "HTTP") == "HTTP"
        assert spec["initialDelaySeconds"] == delay
        assert spec["periodSeconds"] == period


def test_resources_request_cpu_and_memory_and_limit_only_memory(container: dict[str, Any]) -> None:
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}


def test_security_context_is_restricted(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "runAsUser" not in pod["securityContext"], "OpenShift's SCC assigns the UID"
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(field)
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert not sc.get("privileged")
    assert not {v["name"] for v in pod["volumes"] if "hostPath" in v}


def test_tmp_is_a_writable_empty_dir(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    tmp = mounts["/tmp"]
    assert not tmp.get("readOnly")
    assert "emptyDir" in volumes[tmp["name"]]


# --- Service and ServiceMonitor --------------------------------------------------------------------


def test_metrics_service_reaches_the_metrics_port(
        objects: list[dict[str, Any]], deployment: dict[str, Any], container: dict[str, Any]) -> None:
    service = only(objects, "Service", "kmm-dtk-metrics", NAMESPACE)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["port"] == 8443
    assert container_port(container, port.get("targetPort", port["port"])) == 8443


def test_servicemonitor_selects_the_metrics_service(objects: list[dict[str, Any]]) -> None:
    monitor = only(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = only(objects, "Service", "kmm-dtk-metrics", NAMESPACE)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"].get("namespaceSelector", {}).get("matchNames", [monitor["metadata"]["namespace"]]) == [
        NAMESPACE]
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports


# --- with a real kustomize, when there is one ------------------------------------------------------


def kustomize_binary() -> str | None:
    found = find_kustomize()  # $KUSTOMIZE, the one `make controlplane` builds, or one on PATH
    return str(found) if found else None


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    binary = kustomize_binary()
    if binary is None:
        pytest.skip("kustomize is not installed (`make controlplane` builds it, or set $KUSTOMIZE)")
    result = subprocess.run([binary, "build", str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_build_matches_the_checked_objects(overlay: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    built = {object_id(o): o for o in kustomize_build(MANIFESTS / overlay)}
    ours = {object_id(o): o for o in rendered[overlay]}
    assert built == ours


def test_kustomize_images_override_the_operator_image(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(MANIFESTS / "default", tmp_path)],
        "images": [{"name": "quay.io/kmm-dtk/kmm-dtk", "newName": "registry.example/kmm-dtk", "newTag": "v1"}],
    }))
    deployment = only(kustomize_build(tmp_path), "Deployment", "kmm-dtk", NAMESPACE)
    assert [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]] == ["registry.example/kmm-dtk:v1"]


def test_trusted_ca_bundle_is_injected_and_mounted_where_ca_file_points(
        container: dict[str, Any], deployment: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    cm = only(objects, "ConfigMap", "kmm-dtk-trusted-ca", NAMESPACE)
    assert cm["metadata"]["labels"]["config.openshift.io/inject-trusted-cabundle"] == "true"
    path = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--ca-file="))
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == path)
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "kmm-dtk-trusted-ca"
    assert volume["configMap"]["optional"] is True, "outside OpenShift nothing injects it: the pod must still start"
