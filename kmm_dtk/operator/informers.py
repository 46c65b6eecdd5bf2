"""What the operator watches and caches: one informer per resource (per watched namespace), each
with the narrowest selector and the smallest projection that the reconcilers need.

ConfigMaps are watched as metadata only: the cluster has thousands, the operator reads the few its
Modules name, on demand (:mod:`kmm_dtk.operator.configmap_data`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kmm_dtk.kube.client import KubeClient, Resource
from kmm_dtk.kube.decode import METADATA_ONLY, Decoder, JsonDecoder, MetadataDecoder, NodeDecoder
from kmm_dtk.kube.informer import Informer
from kmm_dtk.kube.manager import Manager
from kmm_dtk.observability.informer_metrics import InformerMetrics
from kmm_dtk.operator.builds import build_projection, owner_keys
from kmm_dtk.operator.caches import (
    BUILD_OWNER_INDEX,
    CONFIGMAP_INDEX,
    MODULE_NAME_INDEX,
    OWNER_INDEX,
    SELECTOR_INDEX,
    Cache,
    module_configmap_index,
    module_selector_index,
    modulebuild_configmap_index,
    modulebuild_module_index,
)
from kmm_dtk.operator.configmap_data import ConfigMapCache
from kmm_dtk.operator.discovery import Discovery
from kmm_dtk.operator.resources import (
    BUILDS,
    CLUSTERVERSIONS,
    CONFIGMAPS,
    IMAGESTREAMS,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MIRROR_RESOURCES,
    MODULEBUILDS,
    MODULES,
    NODES,
)
from kmm_dtk.operator.upgrade_reconciler import CLUSTER_VERSION


@dataclass(frozen=True)
class Caches:
    nodes: Cache
    modules: Cache
    configmaps: ConfigMapCache  # metadata cached, data read on demand
    imagestreams: Cache  # the DTK ImageStream only
    builds: Cache  # kmm-dtk's own Builds only, projected
    modulebuilds: Cache | None = None  # where the ModuleBuild CRD is served
    mirror_sets: tuple[Cache, ...] = ()  # ICSP, IDMS, ITMS: those the cluster serves, with registry checks
    cluster_versions: Cache | None = None  # with --prebuild-upgrades on a cluster that serves it


class _Factory:
    def __init__(self, manager: Manager, client: KubeClient, namespaces: tuple[str, ...],
                 metrics: InformerMetrics, options: Mapping[str, Any]) -> None:
        self.manager, self.client, self.namespaces = manager, client, namespaces
        self.metrics, self.options = metrics, options

    def informers(self, resource: Resource, name: str, decoder: Decoder[Any], *, cluster_scoped: bool = False,
                  namespaces: tuple[str, ...] | None = None, **options: Any) -> list[Informer[Any]]:
        """One informer per namespace (or one for all), registered with the manager."""
        made: list[Informer[Any]] = []
        for namespace in (() if cluster_scoped else (namespaces or self.namespaces)) or (None,):
            label = f"{name}/{namespace}" if namespace else name
            made.append(self.manager.add_informer(Informer(
                self.client, resource, namespace=namespace, decoder=decoder, metrics=self.metrics, name=label,
                **options, **self.options)))
        return made

    def cache(self, resource: Resource, name: str, decoder: Decoder[Any], **options: Any) -> Cache:
        return Cache(self.informers(resource, name, decoder, **options))



def watch_caches(manager: Manager, client: KubeClient, *, namespaces: tuple[str, ...],
                 dtk_imagestream: tuple[str, str], metrics: InformerMetrics, discovery: Discovery,
                 mirrors: bool, cluster_versions: bool, informer_options: Mapping[str, Any]) -> Caches:
    make = _Factory(manager, client, namespaces, metrics, informer_options)
    dtk_ns, dtk_name = dtk_imagestream
    return Caches(
        nodes=make.cache(NODES, "nodes", NodeDecoder(), cluster_scoped=True),
        modules=make.cache(MODULES, "modules", JsonDecoder("Module"),
                           indexers={CONFIGMAP_INDEX: module_configmap_index,
                                     SELECTOR_INDEX: module_selector_index}),
        configmaps=ConfigMapCache(make.informers(CONFIGMAPS, "configmaps", MetadataDecoder(), accept=METADATA_ONLY),
                                  client),
        imagestreams=make.cache(IMAGESTREAMS, "dtk-imagestream", JsonDecoder("ImageStream"), namespaces=(dtk_ns,),
                                field_selector=f"metadata.name={dtk_name}"),
        builds=make.cache(BUILDS, "builds", JsonDecoder("Build", transform=build_projection),  # by owner
                          label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
                          indexers={OWNER_INDEX: owner_keys(MODULES.kind),
                                    BUILD_OWNER_INDEX: owner_keys(MODULEBUILDS.kind)}),
        modulebuilds=(make.cache(MODULEBUILDS, "modulebuilds", JsonDecoder("ModuleBuild"),
                                 indexers={MODULE_NAME_INDEX: modulebuild_module_index,
                                           CONFIGMAP_INDEX: modulebuild_configmap_index})
                      if discovery.served(MODULEBUILDS) else None),
        mirror_sets=tuple(make.cache(r, str(r), JsonDecoder(r.kind), cluster_scoped=True)
                          for r in MIRROR_RESOURCES if mirrors and discovery.served(r)),
        cluster_versions=(make.cache(CLUSTERVERSIONS, "clusterversion", JsonDecoder("ClusterVersion"),
                                     cluster_scoped=True, field_selector=f"metadata.name={CLUSTER_VERSION}")
                          if cluster_versions and discovery.served(CLUSTERVERSIONS) else None),
    )
