"""The cluster the integration tests run against: our own control plane, or an existing cluster.

``KMM_DTK_TEST_KUBECONFIG=PATH`` (or ``USE_EXISTING_CLUSTER=true`` with ``KUBECONFIG``) points the
suite at a real cluster, e.g. an OpenShift cluster; tests that need to restart the apiserver or
compact etcd skip there. Otherwise a fresh etcd + kube-apiserver is started and the project's CRDs
(and the test stand-ins for OpenShift's APIs) are installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client, config

from kmm_dtk.kube.connection import Connection
from kmm_dtk.kube.kubeconfig import load_settings
from tests.support.binaries import build
from tests.support.controlplane import ControlPlane, wait_for
from tests.support.objects import apply_crds

REPO = Path(__file__).resolve().parents[2]
CRD_DIRS = (REPO / "manifests" / "crd", REPO / "manifests" / "modulebuild", REPO / "tests" / "crds")


def existing_kubeconfig() -> Path | None:
    if os.environ.get("KMM_DTK_TEST_KUBECONFIG"):
        return Path(os.environ["KMM_DTK_TEST_KUBECONFIG"])
    if os.environ.get("USE_EXISTING_CLUSTER", "").lower() == "true":
        return Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
    return None


def crd_documents(dirs=CRD_DIRS) -> list[dict]:
    docs = []
    for folder in dirs:
        for path in sorted(folder.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    docs.append(doc)
    return docs


class TestApiClient(Connection):
    """The operator's own connection (what tests hand to ``KubeClient``), built from the kubeconfig
    by the operator's loader, that also answers as the ``kubernetes`` package's ApiClient for the
    tests' own setup (``client.CoreV1Api(api)``, ...): attributes a Connection lacks go to that one.
    The two keep separate pools."""

    __test__ = False  # not a pytest test class

    def __init__(self, kubeconfig: Path, server: str | None = None) -> None:
        settings = load_settings(str(kubeconfig))
        if server:
            settings.server = server.rstrip("/")
        super().__init__(settings)
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        if server:
            configuration.host = server
        self.kubernetes = client.ApiClient(configuration)

    def __getattr__(self, name: str):
        if name == "kubernetes":  # not set yet: __init__ failed half way
            raise AttributeError(name)
        return getattr(self.kubernetes, name)

    def close(self) -> None:
        super().close()
        self.kubernetes.close()


def api_client_from(kubeconfig: Path, server: str | None = None) -> TestApiClient:
    return TestApiClient(kubeconfig, server)


@dataclass
class TestCluster:
    kubeconfig: Path
    host: str
    ca_file: Path | None
    controlplane: ControlPlane | None  # None on an existing cluster

    __test__ = False  # not a pytest test class

    def api_client(self, server: str | None = None) -> TestApiClient:
        return api_client_from(self.kubeconfig, server)

    def kubeconfig_for(self, path: Path, server: str) -> Path:
        """An admin kubeconfig that talks to ``server`` (e.g. a fault proxy) instead."""
        if self.controlplane is not None:
            return self.controlplane.admin_kubeconfig(path, server)
        raw = yaml.safe_load(self.kubeconfig.read_text())
        for entry in raw.get("clusters", []):
            entry["cluster"]["server"] = server
        path.write_text(yaml.safe_dump(raw))
        return path


def _served_elsewhere(api: client.ApiClient, crd: dict) -> bool:
    """True when the API is already served, but not by this CRD (e.g. OpenShift's own ImageStream)."""
    group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
    try:
        client.ApiextensionsV1Api(api).read_custom_resource_definition(crd["metadata"]["name"])
        return False
    except client.ApiException as err:
        if err.status != 404:
            raise
    for version in crd["spec"]["versions"]:
        try:
            found, _, _ = api.call_api(f"/apis/{group}/{version['name']}", "GET", response_type="object",
                                       auth_settings=["BearerToken"], _return_http_data_only=False)
        except client.ApiException:
            continue
        if any(r.get("name") == plural for r in found.get("resources", [])):
            return True
    return False


# Beside the KMM operator: KMM's own Module schema (which prunes kmm-dtk's status), kmm-dtk's ModuleBuild.
KMM_CRD_DIRS = (REPO / "tests" / "crds-kmm", REPO / "manifests" / "modulebuild", REPO / "tests" / "crds")


def install_crds(api: client.ApiClient, existing: bool = False, dirs: tuple[Path, ...] = CRD_DIRS) -> None:
    docs = crd_documents(dirs)
    if existing:
        docs = [d for d in docs if not _served_elsewhere(api, d)]
    apply_crds(api, docs)
    custom = client.CustomObjectsApi(api)
    for crd in docs:
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        version = next(v["name"] for v in crd["spec"]["versions"] if v.get("served", True))
        # Established can precede the first successful request by a moment: wait until it serves.
        wait_for(lambda g=group, v=version, p=plural: custom.list_cluster_custom_object(g, v, p, limit=1) is not None,
                 30, f"{plural}.{group} to be served")


def start_test_cluster(workdir: Path, crd_dirs: tuple[Path, ...] = CRD_DIRS, **controlplane_options) -> TestCluster:
    existing = existing_kubeconfig()
    if existing is not None:
        api = api_client_from(existing)
        install_crds(api, existing=True)
        return TestCluster(existing, api.configuration.host, None, None)
    plane = ControlPlane(workdir, build(), **controlplane_options).start()
    cluster = TestCluster(plane.kubeconfig, plane.host, plane.pki.ca_cert if plane.pki else None, plane)
    install_crds(cluster.api_client(), dirs=crd_dirs)
    return cluster

