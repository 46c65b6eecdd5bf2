"""``make demo``'s disconnected cluster: a local registry (docker-registry, TLS + htpasswd) that
mirrors everything the sample cluster names, as a mirror registry does in a disconnected cluster.

- The DTK images the sample ImageStream names (on quay.io and registry.ci.openshift.org) are
  synthetic images in the mirror, each carrying ``/etc/driver-toolkit-release.json`` for its kernel;
  the ImageStream is loaded with their digests (a digest is content: the originals cannot be copied
  here), under the original hosts, and an ImageDigestMirrorSet sends those hosts to the mirror.
- The driver images (the internal registry) are mirrored by an ImageTagMirrorSet, NeverContactSource;
  the image for the first kernel is already there, built from the current inputs.
- The Module's ``imageRepoSecret`` and the cluster's global pull secret hold the mirror's credentials.
- ``start_upgrade`` pushes a release image (and its DTK, for a newer kernel) and points ClusterVersion
  at it, as the cluster-version operator does when an upgrade starts.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from kmm_dtk.core.plan import IMAGE_HASH_LABEL, plan_module, snapshot_from_objects
from kmm_dtk.core.versions import node_versions
from tests.support.registry import RegistryServer, dtk_release_files, pull_secret, push_image

DTK_HOSTS = ("quay.io/openshift-release-dev", "registry.ci.openshift.org/ocp")
DRIVER_SOURCE = "image-registry.openshift-image-registry.svc:5000/simple-kmod"
RELEASE_SOURCE = "quay.io/openshift-release-dev/ocp-release"
UPGRADE_VERSION = "4.12.30"
UPGRADE_RHCOS = "412.86.202308081039-0"
UPGRADE_KERNEL = "4.18.0-372.69.1.el8_6.x86_64"


@dataclass
class DemoRegistry:
    server: RegistryServer
    stream: dict[str, Any]  # the ImageStream to load, on the mirror's digests
    extra: list[dict[str, Any]]  # mirror sets and Secrets to load with the sample

    @property
    def ca_file(self) -> Path:
        assert self.server.ca_file is not None
        return self.server.ca_file


def _source_and_repo(pull_spec: str) -> tuple[str, str]:
    """``quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:..`` -> (mirrored source, repository)."""
    name = pull_spec.split("@", 1)[0]
    source = next(h for h in DTK_HOSTS if name.startswith(h + "/"))
    return source, name


def _mirror_repo(name: str) -> str:
    return "mirror/" + name.split("/", 1)[1]  # drop the host: quay.io/a/b -> mirror/a/b


def _mirror_set(kind: str, field: str, rules: list[tuple[str, str]]) -> dict[str, Any]:
    return {"apiVersion": "config.openshift.io/v1", "kind": kind, "metadata": {"name": "demo-mirror"},
            "spec": {field: [{"source": s, "mirrors": [m], "mirrorSourcePolicy": "NeverContactSource"}
                             for s, m in rules]}}


def prepare(workdir: Path, objects) -> DemoRegistry:
    """Start the mirror registry and fill it; returns what to load into the cluster."""
    server = RegistryServer(workdir, "tls").start()
    kernels = {}
    for node in objects.nodes:
        versions = node_versions(node)
        if versions.kernel and versions.rhcos:
            kernels[str(versions.rhcos)] = versions.kernel
    stream = copy.deepcopy(objects.find_imagestream("openshift", "driver-toolkit"))
    moved: dict[str, str] = {}  # original pull spec -> the mirror-backed one
    for tag in stream["spec"]["tags"]:
        original = tag["from"]["name"]
        if original in moved or tag["name"] not in kernels:
            continue
        source, name = _source_and_repo(original)
        pushed = push_image(server, _mirror_repo(name), tag["name"],
                            files=dtk_release_files(kernels[tag["name"]], RHEL_VERSION="8.6"))
        moved[original] = f"{name}@{pushed.digest}"
    for tag in stream["spec"]["tags"]:
        tag["from"]["name"] = moved.get(tag["from"]["name"], tag["from"]["name"])
    for tag in stream["status"]["tags"]:
        for item in tag["items"]:
            item["dockerImageReference"] = moved.get(item["dockerImageReference"], item["dockerImageReference"])
            item["image"] = item["dockerImageReference"].rsplit("@", 1)[1]

    module = objects.modules[0]
    namespace = module["metadata"]["namespace"]
    secret = module["spec"]["imageRepoSecret"]["name"]
    extra = [
        _mirror_set("ImageDigestMirrorSet", "imageDigestMirrors",
                    [(h, f"{server.host}/{_mirror_repo(h + '/x').rsplit('/', 1)[0]}") for h in DTK_HOSTS]),
        _mirror_set("ImageTagMirrorSet", "imageTagMirrors", [(DRIVER_SOURCE, f"{server.host}/mirror/simple-kmod")]),
        pull_secret(namespace, secret, server.auth_json()),
        pull_secret("openshift-config", "pull-secret", server.auth_json()),
    ]
    # The first kernel's driver image is already in the mirror, built from the current inputs.
    snapshot, _ = snapshot_from_objects(objects.nodes, stream, objects.configmaps, ("openshift", "driver-toolkit"))
    entries = [e for e in plan_module(module, snapshot) if e.hash and e.image]
    first = min(entries, key=lambda e: e.kernel or "")
    repository, _, tag = first.image.removeprefix(DRIVER_SOURCE.rsplit("/", 1)[0] + "/").rpartition(":")
    push_image(server, f"mirror/{repository}", tag, labels={IMAGE_HASH_LABEL: first.hash})
    return DemoRegistry(server, stream, extra)


def start_upgrade(api: client.ApiClient, demo: DemoRegistry) -> tuple[str, str]:
    """Push release ``UPGRADE_VERSION`` and its DTK to the mirror and make ClusterVersion desire it.
    Returns (release pull spec, its kernel)."""
    server = demo.server
    dtk = push_image(server, "mirror/openshift-release-dev/ocp-v4.0-art-dev", UPGRADE_RHCOS,
                     files=dtk_release_files(UPGRADE_KERNEL, RHEL_VERSION="8.6"))
    dtk_spec = f"quay.io/openshift-release-dev/ocp-v4.0-art-dev@{dtk.digest}"
    references = {
        "kind": "ImageStream", "apiVersion": "image.openshift.io/v1", "metadata": {"name": UPGRADE_VERSION},
        "spec": {"tags": [
            {"name": "driver-toolkit", "from": {"kind": "DockerImage", "name": dtk_spec}},
            {"name": "rhel-coreos-8", "annotations": {"io.openshift.build.versions": f"machine-os={UPGRADE_RHCOS}"},
             "from": {"kind": "DockerImage", "name": dtk_spec}},
        ]},
    }
    release = push_image(server, "mirror/openshift-release-dev/ocp-release", f"{UPGRADE_VERSION}-x86_64",
                         files={"release-manifests/image-references": json.dumps(references).encode()})
    release_spec = f"{RELEASE_SOURCE}@{release.digest}"
    custom = client.CustomObjectsApi(api)
    cv = custom.create_cluster_custom_object("config.openshift.io", "v1", "clusterversions", {
        "apiVersion": "config.openshift.io/v1", "kind": "ClusterVersion", "metadata": {"name": "version"},
        "spec": {"clusterID": "00000000-0000-4000-8000-000000000000"}})
    cv["status"] = {"desired": {"version": UPGRADE_VERSION, "image": release_spec}, "availableUpdates": None,
                    "observedGeneration": 1, "versionHash": "demo"}
    custom.replace_cluster_custom_object_status("config.openshift.io", "v1", "clusterversions", "version", cv)
    return release_spec, UPGRADE_KERNEL


def kernel_table(api: client.ApiClient, module: Mapping[str, Any]) -> list[str]:
    meta = module["metadata"]
    current = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "kmm.sigs.x-k8s.io", "v1beta1", meta["namespace"], "modules", meta["name"])
    rows = [("KERNEL", "PHASE", "MESSAGE")]
    for record in (current.get("status") or {}).get("kernels") or []:
        rows.append((record["kernel"], record["phase"], record.get("message", "")))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    return [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}" for r in rows]
