"""`make cluster`'s sample data on a real control plane, read back the way `oc get -o yaml` would,
plans exactly as the file it came from."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from kubernetes import client

from kmm_dtk.dump import load_files
from tests.support.binaries import build
from tests.support.cluster import REPO, api_client_from, install_crds
from tests.support.controlplane import ControlPlane
from tests.support.objects import load_objects

pytestmark = pytest.mark.integration

SAMPLE = REPO / "examples" / "design-cluster.yaml"


@pytest.fixture(scope="module")
def sample_api(tmp_path_factory):
    """Its own control plane: the sample's Nodes are cluster-scoped and must not leak into others."""
    with ControlPlane(tmp_path_factory.mktemp("sample"), build()) as plane:
        api = api_client_from(plane.kubeconfig)
        install_crds(api)
        objects = load_files([str(SAMPLE)])
        load_objects(api, objects.nodes + objects.imagestreams + objects.configmaps + objects.modules)
        yield api
        api.close()


def _dump(api: client.ApiClient) -> dict:
    """What `oc get nodes,imagestreams,modules,configmaps -A -o yaml` prints: one List."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    items = [api.sanitize_for_serialization(n) | {"apiVersion": "v1", "kind": "Node"}
             for n in core.list_node().items]
    items += [api.sanitize_for_serialization(c) | {"apiVersion": "v1", "kind": "ConfigMap"}
              for c in core.list_config_map_for_all_namespaces().items]
    for group, version, plural in (("image.openshift.io", "v1", "imagestreams"),
                                   ("kmm.sigs.x-k8s.io", "v1beta1", "modules")):
        items += custom.list_cluster_custom_object(group, version, plural)["items"]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _plan(path) -> dict:
    result = subprocess.run([sys.executable, "-m", "kmm_dtk", "plan", "-f", str(path), "-o", "json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_plan_of_a_live_dump_equals_the_plan_of_the_sample_file(sample_api, tmp_path):
    dump = tmp_path / "dump.yaml"
    dump.write_text(yaml.safe_dump(_dump(sample_api)))

    live, offline = _plan(dump), _plan(SAMPLE)

    assert live == offline
    builds = [b for b in live["builds"] if b["action"] == "build"]
    assert len(builds) == 2
    from_lines = {line for b in builds for line in b["dockerfile"].splitlines() if line.startswith("FROM quay")
                  or line.startswith("FROM registry.ci")}
    assert from_lines == {
        "FROM quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:"
        "84edddb4322cfe50d8545c41014a8f5595a4260a20d9a269e144909c5949582b AS builder",
        "FROM registry.ci.openshift.org/ocp/4.11-2022-07-27-013908@sha256:"
        "484c9fe9900020e9b8f5601cbe86d054fe47a6f16e8d9dc6ecbfd58bffd1ad4b AS builder",
    }
