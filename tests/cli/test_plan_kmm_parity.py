"""``kmm-dtk plan`` names a real-time node's driver image as KMM does, end to end through the command."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.cli.test_plan_cli import DATA, kmm_dtk

RT = "5.14.0-427.68.1.el9_4.x86_64+rt"
RT_TAG = "5.14.0-427.68.1.el9_4.x86_64_rt"
R418 = "418.94.202410260038-0"
DTK_418 = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "1" * 64


def cluster_with_an_rt_worker(tmp_path: Path) -> Path:
    """The 4.18 -> 4.19 upgrade dump with worker-a booted into the RT kernel of its RHCOS, and the ice
    Module's x86_64 mapping widened to RT kernels."""
    docs = [doc for doc in yaml.safe_load_all((DATA / "upgrade-419-cluster.yaml").read_text()) if doc]
    for doc in docs:
        if doc["kind"] == "Node" and doc["metadata"]["name"] == "worker-a":
            doc["status"]["nodeInfo"]["kernelVersion"] = RT
        if doc["kind"] == "Module" and doc["apiVersion"] == "kmm.sigs.x-k8s.io/v1beta1":
            doc["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = r"^.+\.x86_64(\+rt)?$"
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def test_an_rt_kernel_gets_kmms_image_name_and_its_real_kernel_in_build_args(tmp_path):
    """KMM tags the image with the kernel's '+' made '_' and builds with the real kernel: a '+rt' node is
    a Build, not a refused Module."""
    result = kmm_dtk("plan", "-o", "json", "--strict", "-f", cluster_with_an_rt_worker(tmp_path))
    assert result.returncode == 1, result.stderr  # the +64k node's missing DTK tag, as before
    data = json.loads(result.stdout)
    assert data["kernels"][RT] == R418
    [rt] = [b for b in data["builds"] if b["kernel"] == RT]
    assert (rt["action"], rt["reasonCode"]) == ("build", "BuildNeeded")
    assert rt["image"] == f"quay.io/acme/ice:{RT_TAG}"
    assert rt["buildArgs"]["KERNEL_VERSION"] == RT
    assert rt["buildArgs"]["KERNEL_FULL_VERSION"] == RT
    assert (rt["rhcos"], rt["dtkImage"]) == (R418, DTK_418)
    assert f"FROM {DTK_418} AS builder" in rt["dockerfile"]


def test_the_table_shows_the_real_kernel_and_kmms_image(tmp_path):
    result = kmm_dtk("plan", "-f", cluster_with_an_rt_worker(tmp_path))
    assert result.returncode == 0, result.stderr
    [row] = [line for line in result.stdout.splitlines() if line.startswith("ice/ice-driver") and RT in line]
    assert row.split() == ["ice/ice-driver", RT, "build", R418, f"quay.io/acme/ice:{RT_TAG}"]
