"""Read views over the informers' caches, shaped for the reconcilers and the planner.

Everything here reads frozen cached objects; nothing calls the API, except the data of the
ConfigMaps a Module names, which the planner reads through ``ConfigMapCache.data``
(:mod:`kmm_dtk.operator.configmap_data`: ConfigMaps are cached as metadata only).
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kmm_dtk.core.dtk import DtkIndex, dtk_index
from kmm_dtk.core.kernel_map import KernelMap
from kmm_dtk.core.plan import ClusterSnapshot, UpcomingKernel
from kmm_dtk.kube.frozen import EMPTY
from kmm_dtk.kube.informer import Informer

if TYPE_CHECKING:  # it subclasses Cache
    from kmm_dtk.operator.configmap_data import ConfigMapCache

CONFIGMAP_INDEX = "configmap"
OWNER_INDEX = "owner"  # Builds by the Module that owns them
BUILD_OWNER_INDEX = "modulebuild"  # Builds by the ModuleBuild that owns them
MODULE_NAME_INDEX = "module-name"  # ModuleBuilds by the Module they name
SELECTOR_INDEX = "selector"  # Modules by their node selector: a node event is matched once per selector


class Cache:
    """One resource read through one informer per watched namespace (or one for all)."""

    def __init__(self, informers: list[Informer[Any]]) -> None:
        self.informers = informers

    def _for_key(self, key: str) -> list[Informer[Any]]:
        namespace = key.split("/", 1)[0] if "/" in key else None
        return [i for i in self.informers if i.namespace in (None, namespace)]

    def get(self, key: str) -> Any:
        for informer in self._for_key(key):
            found = informer.store.get(key)
            if found is not None:
                return found
        return None

    def list(self) -> builtins.list[Any]:
        return [obj for informer in self.informers for obj in informer.store.list()]

    def by_index(self, name: str, value: str) -> builtins.list[Any]:
        return [obj for informer in self.informers for obj in informer.store.by_index(name, value)]

    def any_by_index(self, name: str, value: str) -> Any:
        for informer in self.informers:
            found = informer.store.any_by_index(name, value)
            if found is not None:
                return found
        return None

    def index_values(self, name: str) -> builtins.list[str]:
        return sorted({value for informer in self.informers for value in informer.store.index_values(name)})



def _configmap_refs(namespace: Any, builds: Iterable[Any]) -> list[str]:
    names = set()
    for build in builds:
        if isinstance(build, Mapping) and isinstance(build.get("dockerfileConfigMap"), Mapping):
            name = build["dockerfileConfigMap"].get("name")
            if isinstance(name, str) and name:
                names.add(f"{namespace}/{name}")
    return sorted(names)


def module_configmap_index(module: Mapping[str, Any]) -> list[str]:
    """``namespace/name`` of every Dockerfile ConfigMap a Module names (container and mappings)."""
    meta = module.get("metadata") or EMPTY
    container = (((module.get("spec") or EMPTY).get("moduleLoader") or EMPTY).get("container") or EMPTY)
    return _configmap_refs(meta.get("namespace"), [container.get("build")] + [
        m.get("build") for m in container.get("kernelMappings") or () if isinstance(m, Mapping)])


def modulebuild_configmap_index(module_build: Mapping[str, Any]) -> list[str]:
    """``namespace/name`` of every Dockerfile ConfigMap a ModuleBuild names (its build and mappings)."""
    meta = module_build.get("metadata") or EMPTY
    spec = module_build.get("spec") or EMPTY
    return _configmap_refs(meta.get("namespace"), [spec.get("build")] + [
        m.get("build") for m in spec.get("kernelMappings") or () if isinstance(m, Mapping)])


def modulebuild_module_index(module_build: Mapping[str, Any]) -> list[str]:
    """``namespace/name`` of the Module a ModuleBuild names."""
    meta = module_build.get("metadata") or EMPTY
    name = (module_build.get("spec") or EMPTY).get("moduleName")
    return [f"{meta.get('namespace')}/{name}"] if isinstance(name, str) and name else []


def module_selector_index(module: Mapping[str, Any]) -> list[str]:
    """The Module's node selector in one canonical spelling; none for a Module without a usable one
    (it selects no node)."""
    selector = selector_of(module)
    if selector is None:
        return []
    return [json.dumps({str(k): v for k, v in selector.items()}, sort_keys=True, default=str)]


def selector_of(module: Mapping[str, Any]) -> Mapping[str, str] | None:
    selector = (module.get("spec") or EMPTY).get("selector")
    return selector if isinstance(selector, Mapping) else None


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str]) -> bool:
    return selector is not None and all(labels.get(k) == v for k, v in selector.items())


def module_key(module: Mapping[str, Any]) -> str:
    meta = module["metadata"]
    return f"{meta['namespace']}/{meta['name']}"


class _NodesByKernel(Mapping[str, Iterable[Mapping[str, str]]]):
    """kernel -> labels of the nodes running it, read lazily from the kernel map.

    Planning reads the map, not the informer's cache, so that a Module is planned against the same
    nodes that fed the kernel -> RHCOS entries: the cache runs ahead of the node reconciler, and a
    kernel seen in the cache but not yet in the map would look like a node with no RHCOS."""

    def __init__(self, table: KernelMap) -> None:
        self._table = table
        self._kernels = table.kernels()

    def __getitem__(self, kernel: str) -> Iterable[Mapping[str, str]]:
        return self._table.labels_running(kernel)

    def __iter__(self) -> Iterator[str]:
        return iter(self._kernels)

    def __len__(self) -> int:
        return len(self._kernels)


class _ConfigMapData(Mapping[tuple[str, str], Mapping[str, str]]):
    """(namespace, name) -> data, as the planner reads it: the keys from the metadata cache, the
    data read on demand. A failed read raises ApiError (not KeyError): the reconcile is retried
    rather than told the ConfigMap is missing."""

    def __init__(self, configmaps: ConfigMapCache) -> None:
        self._configmaps = configmaps

    def __getitem__(self, key: tuple[str, str]) -> Mapping[str, str]:
        found = self._configmaps.data(key[0], key[1])
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for cm in self._configmaps.list():
            yield (cm["metadata"]["namespace"], cm["metadata"]["name"])

    def __len__(self) -> int:
        return len(self._configmaps.list())


class ClusterView:
    """The caches the reconcilers share, and the snapshot the planner reads."""

    def __init__(self, nodes: Cache, modules: Cache, configmaps: ConfigMapCache, imagestreams: Cache, builds: Cache,
                 kernel_map: KernelMap, dtk_ref: tuple[str, str], modulebuilds: Cache | None = None) -> None:
        self.nodes = nodes
        self.modulebuilds = modulebuilds  # None where the ModuleBuild CRD is not served
        self.modules = modules
        self.configmaps = configmaps
        self.imagestreams = imagestreams
        self.builds = builds
        self.kernel_map = kernel_map
        self.dtk_ref = dtk_ref
        self._dtk_lock = threading.Lock()
        self._dtk_cached: tuple[Any, DtkIndex | None] = (None, None)
        self._upcoming: tuple[UpcomingKernel, ...] = ()  # kernels of the release being rolled out

    def set_upcoming(self, upcoming: tuple[UpcomingKernel, ...]) -> None:
        self._upcoming = tuple(upcoming)  # one reference swap: readers see the old or the new tuple

    @property
    def upcoming(self) -> tuple[UpcomingKernel, ...]:
        return self._upcoming

    def dtk(self) -> DtkIndex | None:
        stream = self.imagestreams.get(f"{self.dtk_ref[0]}/{self.dtk_ref[1]}")
        with self._dtk_lock:
            if self._dtk_cached[0] is not stream:  # frozen objects: a new object means a new version
                self._dtk_cached = (stream, dtk_index(stream) if stream is not None else None)
            return self._dtk_cached[1]

    def snapshot(self) -> ClusterSnapshot:
        return ClusterSnapshot(
            nodes_by_kernel=_NodesByKernel(self.kernel_map),
            kernels=self.kernel_map.entries(),
            dtk=self.dtk(),
            dtk_ref=self.dtk_ref,
            configmaps=_ConfigMapData(self.configmaps),
            upcoming=self._upcoming,
        )

    def modulebuilds_for(self, module: str) -> list[str]:
        """The ModuleBuilds naming the Module ``namespace/name``."""
        if self.modulebuilds is None:
            return []
        return [module_key(b) for b in self.modulebuilds.by_index(MODULE_NAME_INDEX, module)]

    def modulebuilds_using_configmap(self, configmap: Mapping[str, Any]) -> list[str]:
        """The ModuleBuilds whose Dockerfile lives in ``configmap``, directly or through their Module."""
        if self.modulebuilds is None:
            return []
        meta = configmap.get("metadata") or EMPTY
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        direct = {module_key(b) for b in self.modulebuilds.by_index(CONFIGMAP_INDEX, key)}
        return sorted(direct | {b for m in self.modules_using_configmap(configmap) for b in self.modulebuilds_for(m)})

    def module_keys(self) -> list[str]:
        return [module_key(m) for m in self.modules.list()]

    def modules_using_configmap(self, configmap: Mapping[str, Any]) -> list[str]:
        """The Modules whose Dockerfile lives in ``configmap`` (an index lookup)."""
        meta = configmap.get("metadata") or EMPTY
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        return [module_key(m) for m in self.modules.by_index(CONFIGMAP_INDEX, key)]

    def modules_by_selector(self) -> list[tuple[Mapping[str, str], str]]:
        """Each distinct node selector, with the index value that names its Modules (for
        ``modules_with_selector``): a cluster has many Modules and few selectors, so matching a node
        against each selector once is what keeps a node event cheap."""
        groups = []
        for value in self.modules.index_values(SELECTOR_INDEX):
            module = self.modules.any_by_index(SELECTOR_INDEX, value)
            selector = selector_of(module) if module is not None else None
            if selector is not None:
                groups.append((selector, value))
        return groups

    def modules_with_selector(self, value: str) -> list[str]:
        """The keys of the Modules whose selector is ``value`` (from ``modules_by_selector``)."""
        return [module_key(m) for m in self.modules.by_index(SELECTOR_INDEX, value)]

    def modules_for_kernels(self, kernels: Iterable[str]) -> set[str]:
        """Modules that select at least one node running one of ``kernels``."""
        kernels = set(kernels)
        if not kernels:
            return set()
        found: set[str] = set()
        for selector, value in self.modules_by_selector():
            def match(labels: Mapping[str, str], selector: Mapping[str, str] = selector) -> bool:
                return selects(selector, labels)

            if any(self.kernel_map.any_running(k, match) for k in kernels):
                found.update(self.modules_with_selector(value))
        return found
