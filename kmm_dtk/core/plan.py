"""The build plan: for each Module and each kernel running on a node it selects, what to build.

``plan_module`` is the one decision function; the offline ``kmm-dtk plan`` and the operator's
module reconciler both call it with snapshots, so they cannot disagree. The hash covers everything
that determines the image, including the DTK digest, so a z-stream DTK landing under the same tag
changes the hash and triggers a rebuild.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from kmm_dtk.core.dockerfile import DTK_BUILD_ARG, DockerfileError, render, uses_placeholder
from kmm_dtk.core.dtk import DtkImage, DtkIndex, DtkResolutionError, dtk_index, missing_imagestream_error
from kmm_dtk.core.fields import as_mapping
from kmm_dtk.core.kernel import Kernel
from kmm_dtk.core.kernel_map import KernelEntry, KernelMap
from kmm_dtk.core.module import (
    DOCKERFILE_KEY,
    Module,
    ModuleError,
    RegistryTLS,
    parse_module,
    target_for,
)
from kmm_dtk.core.versions import node_versions

HASH_LENGTH = 20  # hex characters; fits a label value and is far from colliding per Module
# Builds stamp the plan hash on the image they push: the registry then says what an image was built from.
IMAGE_HASH_LABEL = "kmm-dtk.io/hash"


class Action(str, Enum):
    BUILD = "build"
    SKIP = "skip"
    ERROR = "error"
    WAIT = "wait"  # the registry gave no definite answer: neither built nor skipped yet


class Reason(str, Enum):
    """Machine-readable reasons, used as condition and Event reasons by the operator."""

    BUILD_NEEDED = "BuildNeeded"
    NO_KERNEL_MAPPING = "NoKernelMapping"
    NO_BUILD = "NoBuildSection"
    INVALID_MODULE = "InvalidModule"
    INVALID_MODULE_BUILD = "InvalidModuleBuild"  # a ModuleBuild that cannot apply to its Module
    MISSING_CONFIGMAP = "MissingDockerfileConfigMap"
    MISSING_DOCKERFILE_KEY = "MissingDockerfileKey"
    INVALID_CONFIGMAP = "InvalidDockerfileConfigMap"
    NO_DTK_IMAGESTREAM = "MissingDTKImageStream"
    NO_DTK_TAG = "MissingDTKTag"
    UNKNOWN_RHCOS = "UnparseableOSImage"
    INVALID_DOCKERFILE = "InvalidDockerfile"
    NO_NODES = "NoSelectedNodes"
    # from the registry (kmm-dtk plan --check-registry, the operator's checks)
    IMAGE_EXISTS = "ImageExists"
    IMAGE_OUTDATED = "ImageOutdated"
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"
    DTK_KERNEL_MISMATCH = "DTKKernelMismatch"


@dataclass(frozen=True)
class PlanEntry:
    module: str
    kernel: str | None
    action: Action
    reason_code: Reason
    reason: str
    rhcos: str | None = None
    dtk_image: str | None = None
    image: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    dockerfile: str | None = None
    hash: str | None = None
    image_repo_secret: str | None = None
    build_selector: Mapping[str, str] = field(default_factory=dict)
    registry_tls: RegistryTLS | None = None
    base_image_registry_tls: RegistryTLS | None = None
    release: str | None = None  # set when built ahead of an upgrade to this release

    def to_json(self) -> dict[str, Any]:
        extra = {"release": self.release} if self.release else {}
        return {
            "module": self.module,
            "kernel": self.kernel,
            "rhcos": self.rhcos,
            "dtkImage": self.dtk_image,
            "image": self.image,
            "action": self.action.value,
            "reasonCode": self.reason_code.value,
            "reason": self.reason,
            "buildArgs": dict(sorted(self.build_args.items())),
            "secrets": list(self.secrets),
            "imageRepoSecret": self.image_repo_secret,
            "buildSelector": dict(sorted(self.build_selector.items())),
            "dockerfile": self.dockerfile,
            "hash": self.hash,
            **extra,
        }


@dataclass(frozen=True)
class UpcomingKernel:
    """A kernel that nodes will boot into once a cluster upgrade reaches them, known from the release
    before any node runs it. Nodes running a kernel of the same flavour (architecture, RT, 64k) move
    to it."""

    kernel: str
    rhcos: str | None
    dtk_image: str
    release: str


@dataclass(frozen=True)
class ClusterSnapshot:
    """What the planner reads. The operator builds it from informer caches, ``plan`` from files.

    ``nodes_by_kernel`` maps each kernel key to the labels of the nodes running it (nodes without
    a readable kernel are absent): a Module's kernels are found by checking a few nodes per kernel
    rather than every node. ``kernels`` is the kernel map's entries.
    """

    nodes_by_kernel: Mapping[str, Iterable[Mapping[str, str]]]
    kernels: Mapping[str, KernelEntry]
    dtk: DtkIndex | None
    dtk_ref: tuple[str, str]
    configmaps: Mapping[tuple[str, str], Mapping[str, str]]
    upcoming: tuple[UpcomingKernel, ...] = ()

    def upcoming_for(self, kernel: str) -> UpcomingKernel | None:
        """The upcoming entry of a kernel no node runs yet (once one does, the node's facts win)."""
        if kernel in self.kernels:
            return None
        return next((u for u in self.upcoming if u.kernel == kernel), None)


def content_hash(dockerfile: str, build_args: Mapping[str, str], secrets: Iterable[str], image: str,
                 rebuild_generation: int | None) -> str:
    canonical = json.dumps(
        {
            "dockerfile": dockerfile,
            "buildArgs": sorted(build_args.items()),
            "secrets": sorted(secrets),
            "image": image,
            "imageRebuildTriggerGeneration": rebuild_generation,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def selected_kernels(module: Module, snapshot: ClusterSnapshot) -> list[str]:
    """Kernels of the selected nodes, plus the upcoming kernels those nodes will boot into."""
    selected: set[str] = set()
    flavours: set[tuple[str, str]] = set()
    for kernel, nodes in snapshot.nodes_by_kernel.items():
        if any(module.selects(labels) for labels in nodes):
            selected.add(kernel)
            flavours.add(Kernel.parse(kernel).flavour)
    selected.update(u.kernel for u in snapshot.upcoming
                    if Kernel.parse(u.kernel).flavour in flavours and snapshot.upcoming_for(u.kernel) is not None)
    return sorted(selected)


def plan_module(raw_module: Mapping[str, Any], snapshot: ClusterSnapshot) -> list[PlanEntry]:
    """Every entry for one Module dict. Never raises on bad input: errors become entries."""
    meta = as_mapping(raw_module.get("metadata"))
    key = f"{meta.get('namespace') or 'default'}/{meta.get('name') or '<unnamed>'}"
    try:
        module = parse_module(raw_module)
    except ModuleError as err:
        return [PlanEntry(key, None, Action.ERROR, Reason.INVALID_MODULE, f"invalid Module: {err}")]

    kernels = selected_kernels(module, snapshot)
    if not kernels:
        return [
            PlanEntry(module.key, None, Action.SKIP, Reason.NO_NODES,
                      f"no node with a readable kernel matches spec.selector {dict(module.selector)}")
        ]
    return [_plan_kernel(module, kernel, snapshot) for kernel in kernels]


def _resolve_dtk(dtk: DtkIndex, entry: KernelEntry) -> DtkImage | DtkResolutionError:
    """The DTK of the newest RHCOS running this kernel, else of an older one running the same kernel."""
    first_error: DtkResolutionError | None = None
    for candidate in entry.candidates:
        try:
            return dtk.resolve(str(candidate))
        except DtkResolutionError as err:
            first_error = first_error or err
    assert first_error is not None  # callers pass entries with at least one RHCOS
    return first_error


def configmap_problem(data: Any) -> str | None:
    """What makes a ConfigMap's ``data`` other than a map of strings (a hand-written or edited dump:
    the API server would refuse it), naming the first offending key; None when it is one."""
    if not isinstance(data, Mapping):
        return f"data is not a map of strings ({type(data).__name__})"
    for key, value in data.items():
        if not isinstance(key, str):
            return f"data key {_short(key)} is not a string ({type(key).__name__}; quote it in YAML)"
        if not isinstance(value, str):
            return f"data[{_short(key)}] is not a string ({type(value).__name__}; quote it in YAML)"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _plan_kernel(module: Module, kernel: str, snapshot: ClusterSnapshot) -> PlanEntry:
    entry = snapshot.kernels.get(kernel)
    upcoming = snapshot.upcoming_for(kernel)
    rhcos = str(entry.rhcos) if entry and entry.rhcos else (upcoming.rhcos if upcoming else None)
    release = upcoming.release if upcoming else None

    def error(code: Reason, reason: str, **kw: Any) -> PlanEntry:
        return PlanEntry(module.key, kernel, Action.ERROR, code, reason, rhcos=rhcos, release=release, **kw)

    try:
        target = target_for(module, kernel)
    except ModuleError as err:
        return error(Reason.INVALID_MODULE, str(err))
    if target is None:
        return PlanEntry(module.key, kernel, Action.SKIP, Reason.NO_KERNEL_MAPPING,
                         f"no kernelMappings entry matches kernel {kernel}", rhcos=rhcos, release=release)
    build = target.build
    if build is None or build.dockerfile_configmap is None:
        return PlanEntry(module.key, kernel, Action.SKIP, Reason.NO_BUILD,
                         "no build.dockerfileConfigMap for this kernel: the image is expected to exist already",
                         rhcos=rhcos, image=target.image, release=release)

    cm_key = (module.namespace, build.dockerfile_configmap)
    configmap = snapshot.configmaps.get(cm_key)
    field_path = f"{target.mapping.path}.build.dockerfileConfigMap" if (
        target.mapping.build and target.mapping.build.dockerfile_configmap
    ) else "spec.moduleLoader.container.build.dockerfileConfigMap"
    if configmap is None:
        return error(Reason.MISSING_CONFIGMAP,
                     f"ConfigMap {module.namespace}/{build.dockerfile_configmap} named by {field_path} "
                     "does not exist; create it with the Dockerfile under key 'dockerfile'", image=target.image)
    malformed = configmap_problem(configmap)
    if malformed is not None:
        return error(Reason.INVALID_CONFIGMAP,
                     f"ConfigMap {module.namespace}/{build.dockerfile_configmap} named by {field_path}: {malformed}",
                     image=target.image)
    source = configmap.get(DOCKERFILE_KEY)
    if not isinstance(source, str) or not source.strip():
        return error(Reason.MISSING_DOCKERFILE_KEY,
                     f"ConfigMap {module.namespace}/{build.dockerfile_configmap} has no non-empty key "
                     f"'{DOCKERFILE_KEY}' (keys: {', '.join(sorted(configmap)) or 'none'})", image=target.image)

    dtk_image, fallback_note = None, ""
    if uses_placeholder(source) and upcoming is not None:
        dtk_image = upcoming.dtk_image  # the release's own DTK: the ImageStream gets its tag only later
    elif uses_placeholder(source):
        if rhcos is None:
            why = "; ".join(entry.reasons) if entry and entry.reasons else "no node reports it"
            return error(Reason.UNKNOWN_RHCOS,
                         f"the Dockerfile uses the DTK placeholder but the RHCOS version of kernel {kernel} "
                         f"is unknown: {why}", image=target.image)
        if snapshot.dtk is None:
            return error(Reason.NO_DTK_IMAGESTREAM, f"kernel {kernel} runs RHCOS {rhcos}: "
                         f"{missing_imagestream_error(*snapshot.dtk_ref)}", image=target.image)
        assert entry is not None  # rhcos came from it
        resolved = _resolve_dtk(snapshot.dtk, entry)
        if isinstance(resolved, DtkResolutionError):
            return error(Reason.NO_DTK_TAG, f"kernel {kernel} runs RHCOS {rhcos}: {resolved}", image=target.image)
        if resolved.tag != rhcos:
            fallback_note = (f" (RHCOS {rhcos} has no DTK tag yet; {resolved.tag} runs the same kernel)")
        rhcos, dtk_image = resolved.tag, resolved.image
    try:
        rendered = render(source, dtk_image)
    except DockerfileError as err:
        return error(Reason.INVALID_DOCKERFILE, str(err), image=target.image)

    args = dict(build.build_args)
    args.update({
        "KERNEL_VERSION": kernel,
        "KERNEL_FULL_VERSION": kernel,
        "MOD_NAME": module.name,
        "MOD_NAMESPACE": module.namespace,
    })
    if dtk_image is not None:
        args[DTK_BUILD_ARG] = dtk_image
    digest = content_hash(rendered.text, args, build.secrets, target.image, module.rebuild_trigger_generation)
    ahead = f" ahead of the upgrade to {release}" if release else ""
    return PlanEntry(
        module.key, kernel, Action.BUILD, Reason.BUILD_NEEDED,
        f"build {target.image} for kernel {kernel}{ahead}"
        + (f" on DTK {rhcos or dtk_image}{fallback_note}" if dtk_image else ""),
        rhcos=rhcos, dtk_image=dtk_image, image=target.image, build_args=args, secrets=build.secrets,
        dockerfile=rendered.text, hash=digest, image_repo_secret=module.image_repo_secret,
        build_selector=dict(build.selector if build.selector is not None else module.selector),
        registry_tls=target.registry_tls, base_image_registry_tls=build.base_image_registry_tls, release=release,
    )


# -- whole-cluster planning from plain objects ------------------------------------------------


@dataclass(frozen=True)
class ClusterPlan:
    kernels: Mapping[str, str | None]
    entries: tuple[PlanEntry, ...]
    node_problems: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "kernels": dict(sorted(self.kernels.items())),
            "builds": [e.to_json() for e in self.entries],
            "nodeProblems": list(self.node_problems),
        }


def snapshot_from_objects(
    nodes: Iterable[Mapping[str, Any]],
    imagestream: Mapping[str, Any] | None,
    configmaps: Iterable[Mapping[str, Any]],
    dtk_ref: tuple[str, str],
) -> tuple[ClusterSnapshot, tuple[str, ...]]:
    """Build a snapshot from plain objects; also returns the per-node problems found."""
    kernel_map = KernelMap()
    nodes_by_kernel: dict[str, list[Mapping[str, str]]] = {}
    problems: list[str] = []
    for node in nodes:
        versions = node_versions(node)
        kernel_map.upsert(versions)
        meta = as_mapping(node.get("metadata"))
        raw_labels = as_mapping(meta.get("labels"))
        if versions.kernel is not None:
            nodes_by_kernel.setdefault(versions.kernel, []).append({str(k): str(v) for k, v in raw_labels.items()})
        if versions.reason:
            problems.append(versions.reason)
    cms: dict[tuple[str, str], Mapping[str, str]] = {}
    for cm in configmaps:
        meta = as_mapping(cm.get("metadata"))
        data = cm.get("data")
        # Kept as written: a malformed one is reported for the Modules that use it, when planned.
        cms[(str(meta.get("namespace") or "default"), str(meta.get("name")))] = {} if data is None else data
    snapshot = ClusterSnapshot(
        nodes_by_kernel=nodes_by_kernel,
        kernels=kernel_map.entries(),
        dtk=dtk_index(imagestream) if imagestream is not None else None,
        dtk_ref=dtk_ref,
        configmaps=cms,
    )
    return snapshot, tuple(sorted(problems))


def plan_cluster(modules: Iterable[Mapping[str, Any]], snapshot: ClusterSnapshot,
                 node_problems: tuple[str, ...] = ()) -> ClusterPlan:
    def by_namespace_and_name(m: Mapping[str, Any]) -> tuple[str, str]:
        meta = as_mapping(m.get("metadata"))
        return (str(meta.get("namespace") or "default"), str(meta.get("name") or ""))

    entries: list[PlanEntry] = []
    for module in sorted(modules, key=by_namespace_and_name):
        entries.extend(plan_module(module, snapshot))
    kernels = {k: (str(e.rhcos) if e.rhcos else None) for k, e in snapshot.kernels.items()}
    return ClusterPlan(kernels, tuple(entries), node_problems)
