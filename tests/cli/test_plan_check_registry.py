"""``kmm-dtk plan --check-registry`` against a real registry (TLS + htpasswd), with the mirror sets
of a disconnected cluster among the input files: the plan says what the operator would do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kmm_dtk.core.plan import IMAGE_HASH_LABEL
from tests.support.controlplane import free_port
from tests.support.design import K84, K86, R410, R411
from tests.support.registry import dtk_release_files, push_image

pytestmark = pytest.mark.registry

DOCKERFILE = "ARG DTK_AUTO\nFROM ${DTK_AUTO}\nARG KERNEL_VERSION\nRUN make KVER=${KERNEL_VERSION}\n"


def node(name: str, kernel: str, rhcos: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"node-role.kubernetes.io/worker": ""}},
            "status": {"nodeInfo": {"kernelVersion": kernel,
                                    "osImage": f"Red Hat Enterprise Linux CoreOS {rhcos} (Ootpa)"}}}


@pytest.fixture
def disconnected(registry_tls, tmp_path: Path):
    """A dump of a disconnected cluster: every image named on an unreachable source, mirrored to the
    test registry (IDMS for the DTK digests, ITMS for the driver tags, NeverContactSource)."""
    source = f"127.0.0.1:{free_port()}"
    repo = f"plan-{tmp_path.name[-12:].lower().replace('_', '-')}"
    dtk = {}
    for rhcos, kernel in ((R410, K84), (R411, K86)):
        pushed = push_image(registry_tls, f"mirror/{repo}/dtk", rhcos, files=dtk_release_files(kernel))
        dtk[rhcos] = f"{source}/{repo}/dtk@{pushed.digest}"
    stream = {"apiVersion": "image.openshift.io/v1", "kind": "ImageStream",
              "metadata": {"name": "driver-toolkit", "namespace": "openshift"},
              "spec": {"tags": [{"name": t, "from": {"kind": "DockerImage", "name": i}} for t, i in dtk.items()]}}
    module = {"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module",
              "metadata": {"name": "kmod", "namespace": "drivers"},
              "spec": {"selector": {"node-role.kubernetes.io/worker": ""}, "moduleLoader": {"container": {
                  "modprobe": {"moduleName": "kmod"},
                  "kernelMappings": [{"regexp": ".*",
                                      "containerImage": f"{source}/{repo}/kmod:${{KERNEL_FULL_VERSION}}",
                                      "build": {"dockerfileConfigMap": {"name": "dockerfile"}}}]}}}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dockerfile", "namespace": "drivers"},
          "data": {"dockerfile": DOCKERFILE}}
    mirrors = [{"apiVersion": "config.openshift.io/v1", "kind": kind, "metadata": {"name": "mirrors"},
                "spec": {field: [{"source": f"{source}/{repo}", "mirrors": [f"{registry_tls.host}/mirror/{repo}"],
                                  "mirrorSourcePolicy": "NeverContactSource"}]}}
               for kind, field in (("ImageDigestMirrorSet", "imageDigestMirrors"),
                                   ("ImageTagMirrorSet", "imageTagMirrors"))]
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump_all([node("w0", K84, R410), node("w1", K86, R411), stream, module, cm,
                                           *mirrors]))
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps(registry_tls.auth_json()))
    return cluster, auth, registry_tls, f"mirror/{repo}/kmod"


def kmm_dtk(*args) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kmm_dtk", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_existing_image_is_skipped_naming_the_mirror_and_missing_one_built(disconnected):
    cluster, auth, registry, mirror_repo = disconnected
    offline = json.loads(kmm_dtk("plan", "-f", cluster, "-o", "json").stdout)
    hashes = {b["kernel"]: b["hash"] for b in offline["builds"]}
    assert [b["action"] for b in offline["builds"]] == ["build", "build"]
    push_image(registry, mirror_repo, K84, labels={IMAGE_HASH_LABEL: hashes[K84]})

    result = kmm_dtk("plan", "-f", cluster, "-o", "json", "--check-registry", "--registry-config", auth,
                     "--ca-file", registry.ca_file)
    assert result.returncode == 0, result.stderr
    builds = {b["kernel"]: b for b in json.loads(result.stdout)["builds"]}
    assert (builds[K84]["action"], builds[K84]["reasonCode"]) == ("skip", "ImageExists")
    assert f"through mirror {registry.host}/{mirror_repo.rsplit('/', 1)[0]}" in builds[K84]["reason"]
    assert (builds[K86]["action"], builds[K86]["reasonCode"]) == ("build", "BuildNeeded")
    assert registry.password not in result.stdout + result.stderr


def test_without_credentials_the_plan_waits_instead_of_building(disconnected):
    cluster, _, registry, _ = disconnected
    result = kmm_dtk("plan", "-f", cluster, "--check-registry", "--ca-file", registry.ca_file)
    assert result.returncode == 0, result.stderr
    rows = [line.split(None, 3) for line in result.stdout.splitlines() if line.startswith("drivers/kmod")]
    assert [r[2] for r in rows] == ["wait", "wait"]
    assert "401" in result.stdout


def test_table_shows_the_skip_reason(disconnected):
    cluster, auth, registry, mirror_repo = disconnected
    offline = json.loads(kmm_dtk("plan", "-f", cluster, "-o", "json").stdout)
    push_image(registry, mirror_repo, K86, labels={IMAGE_HASH_LABEL: {b["kernel"]: b["hash"]
                                                                     for b in offline["builds"]}[K86]})
    result = kmm_dtk("plan", "-f", cluster, "--check-registry", "--registry-config", auth, "--ca-file",
                     registry.ca_file)
    line = next(line for line in result.stdout.splitlines() if K86 in line and line.startswith("drivers/kmod"))
    assert " skip " in line and "exists through mirror" in line and "up to date" in line


@pytest.mark.parametrize("flag, content, expected", [
    ("--registry-config", "{not json", "auth.json"),
    ("--ca-file", None, "missing.pem"),
])
def test_bad_registry_flags_are_one_line_and_exit_2(disconnected, tmp_path, flag, content, expected):
    cluster = disconnected[0]
    path = tmp_path / ("auth.json" if content is not None else "missing.pem")
    if content is not None:
        path.write_text(content)
    result = kmm_dtk("plan", "-f", cluster, "--check-registry", flag, path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kmm-dtk plan:") and expected in lines[0]
