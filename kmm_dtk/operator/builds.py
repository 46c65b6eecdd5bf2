"""OpenShift Build objects for plan entries: names, labels and the Build body (pure).

A Build's name is derived from (Module, kernel, plan hash), so creating it twice is harmless:
AlreadyExists means it is already there, and an operator restart can never duplicate a Build.
Labels carry the plan hash so the current Build of a (Module, kernel) is found by label, and
``output.imageLabels`` carry the hash and DTK image so the registry itself records what an image
was built from.

Where a Build runs and what it may pull:

* **Architecture**: ``nodeSelector`` carries ``kubernetes.io/arch`` of the kernel (``aarch64`` ->
  ``arm64``). On a node of another architecture the DTK's manifest list resolves to that node's
  variant, and the Build would compile against another kernel-devel and push the result under
  this kernel's tag. So the kernel's architecture wins over a different one in the build selector
  (a Build asking for both could never be scheduled); the value it replaced is kept in the
  ``kmm-dtk.io/arch-selector-overridden`` annotation.
* **Pull credentials**: a Docker-strategy Build has one ``pullSecret``, and setting it replaces
  the builder ServiceAccount's dockercfg secret, which is what holds the internal registry's
  token. The build pod also merges in the node's credentials (the cluster's global pull secret:
  the DTK on quay.io, registry.redhat.io, a mirror), a namespace secret overriding them per
  registry. So ``imageRepoSecret`` is the ``pushSecret`` always, and the ``pullSecret`` only when
  a ``FROM`` image other than the DTK is on the registry the driver image is pushed to (the one
  ``imageRepoSecret`` is for) and that registry is not the internal one. See :func:`pull_secret_of`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from kmm_dtk.core.kernel import PLATFORMS, Kernel
from kmm_dtk.core.plan import IMAGE_HASH_LABEL, PlanEntry
from kmm_dtk.core.reference import ImageRef, ReferenceError
from kmm_dtk.operator.resources import BUILDS, MANAGED_BY, MANAGED_BY_LABEL

GROUP = "kmm-dtk.io"
MODULE_LABEL = f"{GROUP}/module"  # the Module's name when it fits a label value, else its hash
KERNEL_LABEL = f"{GROUP}/kernel-hash"  # kernels hold '+', not allowed in label values
HASH_LABEL = IMAGE_HASH_LABEL  # on the Build and on the image it pushes
KERNEL_ANNOTATION = f"{GROUP}/kernel"
RHCOS_ANNOTATION = f"{GROUP}/rhcos"
DTK_ANNOTATION = f"{GROUP}/dtk-image"
MODULE_ANNOTATION = f"{GROUP}/module"
ARCH_OVERRIDDEN_ANNOTATION = f"{GROUP}/arch-selector-overridden"
ARCH_LABEL = "kubernetes.io/arch"
# The internal registry's service: only the builder ServiceAccount's dockercfg secret holds its token.
INTERNAL_REGISTRY_HOSTS = frozenset({"image-registry.openshift-image-registry.svc:5000",
                                     "image-registry.openshift-image-registry.svc.cluster.local:5000"})

ACTIVE_PHASES = frozenset({"New", "Pending", "Running"})

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


def short_hash(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def module_label_value(name: str) -> str:
    return name if _LABEL_VALUE.match(name) else short_hash(name, 32)


def owner_tag(owner: Mapping[str, Any]) -> str:
    """What sets a Build's name apart by its owner: nothing for a Module (the names Builds always had),
    ``<kind>/<name>`` for a ModuleBuild."""
    kind = owner.get("kind") or "Module"
    return "" if kind == "Module" else f"{kind}/{(owner.get('metadata') or {}).get('name')}"


def build_name(module_name: str, kernel: str, plan_hash: str, owner: str = "") -> str:
    """``<module>-<kernel hash>-<plan hash>``, at most 63 characters, a valid DNS subdomain. The
    Builds of a ModuleBuild (``owner``: ``ModuleBuild/<name>``) hash the kernel with it, so they never
    take the name of Builds another owner had for the same Module: the Module itself before ``kmm-dtk
    migrate``, or a ModuleBuild deleted while its Builds wait for the garbage collector."""
    prefix = module_name[:40].rstrip("-.")
    return f"{prefix}-{short_hash(f'{owner}/{kernel}' if owner else kernel, 8)}-{plan_hash[:12]}"


def build_labels(module_name: str, kernel: str, plan_hash: str) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        MODULE_LABEL: module_label_value(module_name),
        KERNEL_LABEL: short_hash(kernel),
        HASH_LABEL: plan_hash,
    }


def build_selector(entry: PlanEntry) -> tuple[dict[str, str], str | None]:
    """The Build's ``nodeSelector``: the entry's build selector pinned to the kernel's architecture,
    and the selector's own ``kubernetes.io/arch`` value when the kernel's replaced it. A kernel whose
    architecture is not one OpenShift runs on (an unparseable release) pins nothing."""
    selector = dict(entry.build_selector)
    kernel = Kernel.parse(entry.kernel or "")
    if kernel.arch not in PLATFORMS:
        return selector, None
    arch = kernel.platform[1]
    requested = selector.get(ARCH_LABEL)
    selector[ARCH_LABEL] = arch
    return selector, requested if requested is not None and requested != arch else None


_ARG_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _instructions(dockerfile: str) -> list[str]:
    """Logical instructions: continuation lines joined, comments and blank lines dropped."""
    escape = "\\"
    first = dockerfile.lstrip().split("\n", 1)[0]
    directive = re.match(r"^#\s*escape\s*=\s*(\S)\s*$", first, re.IGNORECASE)
    if directive:
        escape = directive.group(1)
    found, current = [], ""
    for line in dockerfile.split("\n"):
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith(escape):
            current += stripped[:-1] + " "
            continue
        found.append(current + stripped)
        current = ""
    if current.strip():
        found.append(current)
    return found


def from_images(dockerfile: str, build_args: Mapping[str, str]) -> list[str]:
    """The images a Dockerfile pulls in its ``FROM`` lines, ``ARG`` references resolved from the build
    args and the ``ARG`` defaults before the first ``FROM``. Earlier stages, ``scratch`` and references
    that stay unresolved are left out: they name nothing a credential could be chosen for."""
    defaults: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    seen_from = False
    for instruction in _instructions(dockerfile):
        words = instruction.split()
        keyword = words[0].upper()
        if keyword == "ARG" and not seen_from and len(words) > 1:
            name, equals, value = words[1].partition("=")
            if equals:
                defaults[name] = value.strip("\"'")
            continue
        if keyword != "FROM":
            continue
        seen_from = True
        rest = [w for w in words[1:] if not w.startswith("--")]
        if not rest:
            continue
        image = _expand(rest[0], {**defaults, **build_args})
        if "$" not in image and image.lower() not in stages and image.lower() != "scratch":
            images.append(image)
        if len(rest) >= 3 and rest[1].lower() == "as":
            stages.add(rest[2].lower())
    return images


def _expand(text: str, values: Mapping[str, str]) -> str:
    return _ARG_REF.sub(lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def _registry(image: str) -> str | None:
    try:
        return ImageRef.parse(image).registry
    except ReferenceError:
        return None


def pull_secret_of(entry: PlanEntry) -> str | None:
    """``imageRepoSecret`` when the Build must pull with it, else None (the builder ServiceAccount's
    secret and the node's credentials then serve): only for a base image on the registry the driver
    image goes to, since that is the registry the secret is for. The DTK is left out (the global pull
    secret serves it), and so is the internal registry (the secret would replace the builder
    ServiceAccount's token, the one credential that registry takes)."""
    if not entry.image_repo_secret or not entry.image:
        return None
    target = _registry(entry.image)
    if target is None or target in INTERNAL_REGISTRY_HOSTS:
        return None
    for image in from_images(entry.dockerfile or "", entry.build_args):
        if image != entry.dtk_image and _registry(image) == target:
            return entry.image_repo_secret
    return None


def build_object(entry: PlanEntry, owner: Mapping[str, Any]) -> dict[str, Any]:
    """The Build for a ``build`` entry. ``owner`` is the object the Build belongs to (a Module, or any
    kind with apiVersion, kind, name and uid): it owns the Build; names, labels and annotations
    follow the entry's Module."""
    assert entry.kernel is not None and entry.hash is not None and entry.image is not None
    namespace, _, name = entry.module.rpartition("/")
    owner_meta = owner["metadata"]
    namespace = namespace or owner_meta["namespace"]
    strategy: dict[str, Any] = {
        "buildArgs": [{"name": k, "value": v} for k, v in sorted(entry.build_args.items())],
        "mountTrustedCA": True,  # RUN steps trust the cluster's CA bundle (a proxy's, a mirror's)
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
        output["pushSecret"] = {"name": entry.image_repo_secret}
    pull_secret = pull_secret_of(entry)
    if pull_secret:
        strategy["pullSecret"] = {"name": pull_secret}
    if entry.secrets:
        # Build-time volumes: mounted while the Dockerfile runs, never copied into the image.
        strategy["volumes"] = [
            {"name": f"secret-{i}", "source": {"type": "Secret", "secret": {"secretName": secret}},
             "mounts": [{"destinationPath": f"/run/secrets/{secret}"}]}
            for i, secret in enumerate(entry.secrets)
        ]
    selector, overridden = build_selector(entry)
    annotations = {KERNEL_ANNOTATION: entry.kernel, MODULE_ANNOTATION: name}
    if entry.rhcos:
        annotations[RHCOS_ANNOTATION] = entry.rhcos
    if entry.dtk_image:
        annotations[DTK_ANNOTATION] = entry.dtk_image
    if overridden is not None:
        annotations[ARCH_OVERRIDDEN_ANNOTATION] = overridden
    return {
        "apiVersion": BUILDS.api_version,
        "kind": "Build",
        "metadata": {
            "name": build_name(name, entry.kernel, entry.hash, owner_tag(owner)),
            "namespace": namespace,
            "labels": build_labels(name, entry.kernel, entry.hash),
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": owner.get("apiVersion", "kmm.sigs.x-k8s.io/v1beta1"),
                "kind": owner.get("kind", "Module"),
                "name": owner_meta["name"],
                "uid": owner_meta["uid"],
                "controller": True,
                "blockOwnerDeletion": False,
            }],
        },
        "spec": {
            "serviceAccount": "builder",
            "source": {"type": "Dockerfile", "dockerfile": entry.dockerfile},
            "strategy": {"type": "Docker", "dockerStrategy": strategy},
            "output": output,
            "nodeSelector": selector,
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


def owner_keys(kind: str) -> Callable[[Mapping[str, Any]], list[str]]:
    """``build -> [namespace/name of its owner of kind]`` (or []): for indexes and watches."""
    def keys(build: Mapping[str, Any]) -> list[str]:
        owner = build_owner_key(build, kind)
        return [owner] if owner else []
    return keys


def build_projection(build: dict[str, Any]) -> dict[str, Any]:
    """What the operator reads from its Builds: identity, labels, annotations, owner, phase, and the
    times garbage collection orders them by.

    The spec (the whole Dockerfile, args) is never read back, and is most of a Build's size.
    """
    meta = build.get("metadata") or {}
    status = build.get("status") or {}
    return {
        "apiVersion": build.get("apiVersion"),
        "kind": build.get("kind") or "Build",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "labels", "annotations",
                                          "ownerReferences", "creationTimestamp", "deletionTimestamp")
                     if k in meta},
        "status": {k: status[k] for k in ("phase", "message", "reason", "startTimestamp", "completionTimestamp")
                   if k in status},
    }
