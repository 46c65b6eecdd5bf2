"""OpenShift Build objects for plan entries: names, labels and the Build body (pure).

A Build's name is derived from (Module, kernel, plan hash), so creating it twice is harmless:
AlreadyExists means it is already there, and an operator restart can never duplicate a Build.
Labels carry the plan hash so the current Build of a (Module, kernel) is found by label, and
``output.imageLabels`` carry the hash and DTK image so the registry itself records what an image
was built from.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from kmm_dtk.core.plan import IMAGE_HASH_LABEL, PlanEntry
from kmm_dtk.operator.resources import BUILDS, MANAGED_BY, MANAGED_BY_LABEL

GROUP = "kmm-dtk.io"
MODULE_LABEL = f"{GROUP}/module"  # the Module's name when it fits a label value, else its hash
KERNEL_LABEL = f"{GROUP}/kernel-hash"  # kernels hold '+', not allowed in label values
HASH_LABEL = IMAGE_HASH_LABEL  # on the Build and on the image it pushes
KERNEL_ANNOTATION = f"{GROUP}/kernel"
RHCOS_ANNOTATION = f"{GROUP}/rhcos"
DTK_ANNOTATION = f"{GROUP}/dtk-image"
MODULE_ANNOTATION = f"{GROUP}/module"

ACTIVE_PHASES = frozenset({"New", "Pending", "Running"})

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


def short_hash(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def module_label_value(name: str) -> str:
    return name if _LABEL_VALUE.match(name) else short_hash(name, 32)


def build_name(module_name: str, kernel: str, plan_hash: str) -> str:
    """``<module>-<kernel hash>-<plan hash>``, at most 63 characters, a valid DNS subdomain."""
    prefix = module_name[:40].rstrip("-.")
    return f"{prefix}-{short_hash(kernel, 8)}-{plan_hash[:12]}"


def build_labels(module_name: str, kernel: str, plan_hash: str) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        MODULE_LABEL: module_label_value(module_name),
        KERNEL_LABEL: short_hash(kernel),
        HASH_LABEL: plan_hash,
    }


def build_object(entry: PlanEntry, module: Mapping[str, Any]) -> dict[str, Any]:
    """The Build for a ``build`` entry of ``module`` (a Module dict with name, namespace, uid)."""
    assert entry.kernel is not None and entry.hash is not None and entry.image is not None
    meta = module["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    strategy: dict[str, Any] = {
        "buildArgs": [{"name": k, "value": v} for k, v in sorted(entry.build_args.items())],
    }
    output: dict[str, Any] = {
        "to": {"kind": "DockerImage", "name": entry.image},
        "imageLabels": [
            {"name": HASH_LABEL, "value": entry.hash},
            {"name": KERNEL_ANNOTATION, "value": entry.kernel},
            *([{"name": DTK_ANNOTATION, "value": entry.dtk_image}] if entry.dtk_image else []),
        ],
    }
    if entry.image_repo_secret:
        strategy["pullSecret"] = {"name": entry.image_repo_secret}
        output["pushSecret"] = {"name": entry.image_repo_secret}
    if entry.secrets:
        # Build-time volumes: mounted while the Dockerfile runs, never copied into the image.
        strategy["volumes"] = [
            {"name": f"secret-{i}", "source": {"type": "Secret", "secret": {"secretName": secret}},
             "mounts": [{"destinationPath": f"/run/secrets/{secret}"}]}
            for i, secret in enumerate(entry.secrets)
        ]
    annotations = {KERNEL_ANNOTATION: entry.kernel, MODULE_ANNOTATION: name}
    if entry.rhcos:
        annotations[RHCOS_ANNOTATION] = entry.rhcos
    if entry.dtk_image:
        annotations[DTK_ANNOTATION] = entry.dtk_image
    return {
        "apiVersion": BUILDS.api_version,
        "kind": "Build",
        "metadata": {
            "name": build_name(name, entry.kernel, entry.hash),
            "namespace": namespace,
            "labels": build_labels(name, entry.kernel, entry.hash),
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": module.get("apiVersion", "kmm.sigs.x-k8s.io/v1beta1"),
                "kind": "Module",
                "name": name,
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": False,
            }],
        },
        "spec": {
            "serviceAccount": "builder",
            "source": {"type": "Dockerfile", "dockerfile": entry.dockerfile},
            "strategy": {"type": "Docker", "dockerStrategy": strategy},
            "output": output,
            "nodeSelector": dict(entry.build_selector),
        },
    }


def build_kernel(build: Mapping[str, Any]) -> str:
    return ((build.get("metadata") or {}).get("annotations") or {}).get(KERNEL_ANNOTATION, "")


def build_hash(build: Mapping[str, Any]) -> str:
    return ((build.get("metadata") or {}).get("labels") or {}).get(HASH_LABEL, "")


def build_phase(build: Mapping[str, Any]) -> str:
    return (build.get("status") or {}).get("phase") or "New"


def build_owner_key(build: Mapping[str, Any], kind: str = "Module") -> str | None:
    """``namespace/name`` of the object of ``kind`` (a Module, or a ModuleBuild) that owns this Build."""
    meta = build.get("metadata") or {}
    for ref in meta.get("ownerReferences") or ():
        if ref.get("kind") == kind and ref.get("controller"):
            return f"{meta.get('namespace')}/{ref.get('name')}"
    return None


def build_projection(build: dict[str, Any]) -> dict[str, Any]:
    """What the operator reads from its Builds: identity, labels, annotations, owner and phase.

    The spec (the whole Dockerfile, args) is never read back, and is most of a Build's size.
    """
    meta = build.get("metadata") or {}
    status = build.get("status") or {}
    return {
        "apiVersion": build.get("apiVersion"),
        "kind": build.get("kind") or "Build",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "labels", "annotations",
                                          "ownerReferences", "deletionTimestamp") if k in meta},
        "status": {k: status[k] for k in ("phase", "message", "reason") if k in status},
    }
