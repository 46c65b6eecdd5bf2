"""Helpers that put test objects into a real API server through the ``kubernetes`` client.

Nodes and ImageStreams need their status written through the status subresource, as the kubelet
and the image controller do; nothing else in a bare control plane would fill it in.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support.controlplane import wait_for, write_kubeconfig

DTK_GROUP, DTK_VERSION, DTK_PLURAL = "image.openshift.io", "v1", "imagestreams"
MODULE_GROUP, MODULE_VERSION, MODULE_PLURAL = "kmm.sigs.x-k8s.io", "v1beta1", "modules"


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def create_namespace(api: client.ApiClient, prefix: str = "t") -> str:
    name = unique_name(prefix)
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name, "labels": {"kmm-dtk-test": "true"}}})
    return name


def delete_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).delete_namespace(name)
    except ApiException as err:
        if err.status != 404:
            raise


def node_body(name: str, kernel: str, os_image: str, labels: Mapping[str, str] | None = None,
              arch: str = "amd64") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/arch": arch,
                                               "kmm-dtk-test": "true", **(labels or {})}},
        "status": {"nodeInfo": node_info(kernel, os_image, arch)},
    }


def node_info(kernel: str, os_image: str, arch: str = "amd64") -> dict[str, str]:
    return {
        "machineID": secrets.token_hex(16),
        "systemUUID": secrets.token_hex(16),
        "bootID": secrets.token_hex(16),
        "kernelVersion": kernel,
        "osImage": os_image,
        "containerRuntimeVersion": "cri-o://1.31.0",
        "kubeletVersion": "v1.34.4",
        "kubeProxyVersion": "",
        "operatingSystem": "linux",
        "architecture": arch,
    }


def create_node(api: client.ApiClient, name: str, kernel: str, os_image: str,
                labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Create a Node and write its ``status.nodeInfo`` as a kubelet would."""
    core = client.CoreV1Api(api)
    body = node_body(name, kernel, os_image, labels)
    core.create_node({k: v for k, v in body.items() if k != "status"})
    core.patch_node_status(name, {"status": body["status"]})
    return body


def set_node_versions(api: client.ApiClient, name: str, kernel: str, os_image: str) -> None:
    """What a node looks like after rebooting into a new RHCOS."""
    client.CoreV1Api(api).patch_node_status(name, {"status": {"nodeInfo": {"kernelVersion": kernel,
                                                                           "osImage": os_image}}})


def delete_nodes(api: client.ApiClient, names: Iterable[str]) -> None:
    core = client.CoreV1Api(api)
    for name in names:
        try:
            core.delete_node(name)
        except ApiException as err:
            if err.status != 404:
                raise


def imagestream_body(namespace: str, name: str, tags: Mapping[str, str]) -> dict[str, Any]:
    """A DTK ImageStream whose tags (RHCOS version -> digest pull spec) are all imported."""
    spec_tags, status_tags = [], []
    for generation, (tag, image) in enumerate(sorted(tags.items()), start=2):
        spec_tags.append({"name": tag, "annotations": None, "generation": generation,
                          "from": {"kind": "DockerImage", "name": image},
                          "importPolicy": {"scheduled": True}, "referencePolicy": {"type": "Source"}})
        status_tags.append({"tag": tag, "items": [_status_item(image, generation)]})
    return {
        "apiVersion": f"{DTK_GROUP}/{DTK_VERSION}",
        "kind": "ImageStream",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tags": spec_tags},
        "status": {"dockerImageRepository": f"image-registry.openshift-image-registry.svc:5000/{namespace}/{name}",
                   "tags": status_tags},
    }


def _status_item(image: str, generation: int) -> dict[str, Any]:
    digest = image.rsplit("@", 1)[-1] if "@" in image else ""
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "dockerImageReference": image,
            "image": digest, "generation": generation}


def create_imagestream(api: client.ApiClient, namespace: str, name: str, tags: Mapping[str, str]) -> dict[str, Any]:
    """Create the ImageStream, then write its status as OpenShift's image import would."""
    custom = client.CustomObjectsApi(api)
    body = imagestream_body(namespace, name, tags)
    created = custom.create_namespaced_custom_object(DTK_GROUP, DTK_VERSION, namespace, DTK_PLURAL,
                                                     {k: v for k, v in body.items() if k != "status"})
    created["status"] = body["status"]
    return custom.replace_namespaced_custom_object_status(DTK_GROUP, DTK_VERSION, namespace, DTK_PLURAL, name, created)


def move_imagestream_tag(api: client.ApiClient, namespace: str, name: str, tag: str, image: str) -> dict[str, Any]:
    """A z-stream DTK landing under an existing tag: the new image goes first in status.items."""
    custom = client.CustomObjectsApi(api)
    current = custom.get_namespaced_custom_object_status(DTK_GROUP, DTK_VERSION, namespace, DTK_PLURAL, name)
    for entry in current.setdefault("status", {}).setdefault("tags", []):
        if entry.get("tag") == tag:
            generation = max((i.get("generation") or 0 for i in entry.get("items", [])), default=0) + 1
            entry["items"] = [_status_item(image, generation)] + entry.get("items", [])
            break
    else:
        current["status"]["tags"].append({"tag": tag, "items": [_status_item(image, 1)]})
    return custom.replace_namespaced_custom_object_status(DTK_GROUP, DTK_VERSION, namespace, DTK_PLURAL, name, current)


def service_account_kubeconfig(api: client.ApiClient, namespace: str, name: str, path: Path, server: str,
                               ca_file: Path, expiration_seconds: int = 3600) -> Path:
    """A kubeconfig holding a bound token for a ServiceAccount, minted through TokenRequest."""
    core = client.CoreV1Api(api)
    try:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    except ApiException as err:
        if err.status != 409:
            raise
    request = core.create_namespaced_service_account_token(
        name, namespace, {"spec": {"audiences": [], "expirationSeconds": expiration_seconds}})
    return write_kubeconfig(path, server, ca_file, token=request.status.token, user=f"{namespace}-{name}",
                            namespace=namespace)


def apply_crds(api: client.ApiClient, documents: Iterable[Mapping[str, Any]], timeout: float = 30) -> list[str]:
    """Create or update CRDs and wait until each is Established and served."""
    ext = client.ApiextensionsV1Api(api)
    names = []
    for crd in documents:
        name = crd["metadata"]["name"]
        names.append(name)
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as err:
            if err.status != 409:
                raise
            current = ext.read_custom_resource_definition(name)
            body = dict(crd)
            body["metadata"] = {**crd["metadata"], "resourceVersion": current.metadata.resource_version}
            ext.replace_custom_resource_definition(name, body)

    def established(name: str) -> bool:
        status = ext.read_custom_resource_definition(name).status
        return any(c.type == "Established" and c.status == "True" for c in (status.conditions or []))

    for name in names:
        wait_for(functools.partial(established, name), timeout, f"CRD {name} to be Established")
    return names


_STATUS_WRITTEN_BY_CONTROLLERS = {("v1", "Node"), (f"{DTK_GROUP}/{DTK_VERSION}", "ImageStream")}


def load_objects(api: client.ApiClient, objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Create sample objects of any kind (namespaces created as needed), writing the status of
    Nodes and ImageStreams as their controllers would. Returns ``kind namespace/name`` lines."""
    from kubernetes.dynamic import DynamicClient

    dynamic = DynamicClient(api)
    core = client.CoreV1Api(api)
    created = []
    for obj in objects:
        resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        namespace = obj.get("metadata", {}).get("namespace") if resource.namespaced else None
        if namespace:
            try:
                core.create_namespace({"metadata": {"name": namespace}})
            except ApiException as err:
                if err.status != 409:
                    raise
        body = {k: v for k, v in obj.items() if k != "status"}
        result = resource.create(body=body, namespace=namespace)
        if "status" in obj and (obj["apiVersion"], obj["kind"]) in _STATUS_WRITTEN_BY_CONTROLLERS:
            status_body = result.to_dict()
            status_body["status"] = obj["status"]
            if obj["kind"] == "Node":
                status_body["status"]["nodeInfo"] = {**node_info("", ""), **obj["status"].get("nodeInfo", {})}
            resource.status.replace(body=status_body, namespace=namespace)
        created.append(f"{obj['kind']} {namespace + '/' if namespace else ''}{obj['metadata']['name']}")
    return created
