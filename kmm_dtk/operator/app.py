"""Wiring: informers -> caches -> queues -> node and module reconcilers -> Build submitter.

Event handlers only enqueue, and only for changes a decision depends on: a Module's generation,
a Dockerfile ConfigMap's data, a node's kernel, OS image or labels, the image behind a DTK tag,
a Build's phase. Everything else (status writes, heartbeats) is ignored, so a steady cluster
does no work.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

from prometheus_client import CollectorRegistry, ProcessCollector
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from kmm_dtk.core.dtk import dtk_index
from kmm_dtk.core.kernel_map import KernelMap
from kmm_dtk.kube.client import ApiError, KubeClient, Resource
from kmm_dtk.kube.controller import Controller
from kmm_dtk.kube.decode import JsonDecoder, NodeDecoder
from kmm_dtk.kube.frozen import EMPTY
from kmm_dtk.kube.informer import EventHandler, Informer
from kmm_dtk.kube.manager import DEFAULT_GRACEFUL_TIMEOUT, LeaderElectionConfig, Manager
from kmm_dtk.kube.workqueue import RateLimitingQueue
from kmm_dtk.observability.api_metrics import ApiMetrics
from kmm_dtk.observability.informer_metrics import InformerMetrics
from kmm_dtk.observability.metrics import ControllerMetrics
from kmm_dtk.observability.registry_metrics import RegistryMetrics
from kmm_dtk.operator.builds import build_owner_key, build_phase, build_projection
from kmm_dtk.operator.caches import (
    CONFIGMAP_INDEX,
    OWNER_INDEX,
    Cache,
    ClusterView,
    module_configmap_index,
    module_key,
)
from kmm_dtk.operator.events import EventRecorder
from kmm_dtk.operator.module_reconciler import ImageChecker, ModuleReconciler
from kmm_dtk.operator.node_reconciler import NodeReconciler, node_changed
from kmm_dtk.operator.mirror_policy import MirrorWatch
from kmm_dtk.operator.registry_access import ClusterTrust, PullSecrets
from kmm_dtk.operator.resources import (
    BUILDS,
    CLUSTERVERSIONS,
    CONFIGMAPS,
    IMAGESTREAMS,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MIRROR_RESOURCES,
    MODULES,
    NODES,
)
from kmm_dtk.operator.upgrade_reconciler import CLUSTER_VERSION, UpgradeReconciler, desired_changed
from kmm_dtk.registry.auth import AuthConfig
from kmm_dtk.registry.check import RegistryChecker
from kmm_dtk.registry.client import LinkAuth, RegistryClient
from kmm_dtk.registry.tls import TrustStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryOptions:
    """How the operator asks registries whether images exist (``None`` in OperatorOptions: it never does)."""

    auth_file: str | None = None  # containers auth.json, e.g. a mounted copy of the global pull secret
    ca_paths: tuple[str, ...] = ()  # CA files or directories trusted for every registry
    global_pull_secret: tuple[str, str] | None = ("openshift-config", "pull-secret")
    cache_ttl: float = 300.0  # seconds an answer about an image is reused
    retry_after: float = 60.0  # seconds before a silent registry is asked again
    timeout: float = 10.0
    attempts: int = 3


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    dtk_imagestream: tuple[str, str] = ("openshift", "driver-toolkit")
    workers: int = 4
    dry_run: bool = False
    identity: str = "kmm-dtk"
    metrics_address: str | None = ":8080"
    health_address: str | None = ":8081"
    leader_election: LeaderElectionConfig | None = None
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT  # seconds reconciles in flight get on SIGTERM
    informer_options: Mapping[str, Any] = field(default_factory=dict)  # tests shorten timeouts
    registry: RegistryOptions | None = None  # None: --assume-missing, no registry access at all
    prebuild_upgrades: bool = False  # build for the desired release's kernels before nodes reboot


@dataclass
class Operator:
    manager: Manager
    view: ClusterView
    module_queue: RateLimitingQueue
    node_queue: RateLimitingQueue

    def run(self) -> int:
        return self.manager.run()

    def stop(self) -> None:
        self.manager.stop()


def _generation_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    o, n = old.get("metadata") or EMPTY, new.get("metadata") or EMPTY
    return (o.get("generation"), o.get("uid"), o.get("deletionTimestamp")) != \
        (n.get("generation"), n.get("uid"), n.get("deletionTimestamp"))


class Discovery:
    """Which optional APIs the API server serves to us (OpenShift-only kinds are absent elsewhere),
    with one discovery request per group/version. Not served, or forbidden by RBAC, means no informer
    (one that never syncs would keep the operator from starting). An API server that does not answer
    is asked again for ``patience`` seconds, as the informers would; then the ApiError is raised."""

    def __init__(self, client: KubeClient, patience: float = 60.0) -> None:
        self.client = client
        self.patience = patience
        self._resources: dict[str, frozenset[str] | None] = {}  # group/version -> plurals; None: forbidden

    def served(self, resource: Resource) -> bool:
        path = f"/apis/{resource.group}/{resource.version}"
        if path not in self._resources:
            self._resources[path] = self._fetch(path)
        plurals = self._resources[path]
        if plurals is None:
            log.warning("API discovery forbidden; not watched", extra={"resource": str(resource)})
            return False
        if resource.plural not in plurals:
            log.info("API not served; not watched", extra={"resource": str(resource)})
            return False
        return True

    def _fetch(self, path: str) -> frozenset[str] | None:
        retrying = Retrying(stop=stop_after_delay(self.patience), wait=wait_exponential(multiplier=0.5, max=10),
                            retry=retry_if_exception(lambda e: isinstance(e, ApiError)
                                                     and e.status not in (401, 403, 404)),
                            reraise=True)
        try:
            found = retrying(self.client.request, "GET", path)
        except ApiError as err:
            if err.status == 404:
                return frozenset()
            if err.status == 403:
                return None
            raise
        return frozenset(r.get("name") for r in found.get("resources") or () if isinstance(r, Mapping))


def served(client: KubeClient, resource: Resource, patience: float = 60.0) -> bool:
    """One-off ``Discovery(client, patience).served(resource)``."""
    return Discovery(client, patience).served(resource)


@dataclass
class _RegistryAccess:
    """The registry side of the operator: one client, the credentials, CAs and mirrors it uses."""

    client: RegistryClient
    checker: RegistryChecker
    secrets: PullSecrets
    trust: ClusterTrust
    mirrors: MirrorWatch
    global_pull_secret: tuple[str, str] | None
    enqueue_all: Any = None

    def image_auth(self, entry: Any) -> LinkAuth:
        """The target image, as its Build pushes it: the Module's secret or the builder's; over a link
        its ``registryTLS`` weakened, only the Module's own secret (PullSecrets.for_entry)."""
        self.trust.refresh()
        return self.secrets.for_entry(entry, entry.registry_tls)

    def dtk_auth(self, entry: Any) -> LinkAuth:
        """The DTK, as the Build pulls it: also the cluster's global pull secret; over a link the
        Module's ``baseImageRegistryTLS`` weakened, only the Module's own secret."""
        self.trust.refresh()
        return self.secrets.for_entry(entry, entry.base_image_registry_tls, self._global_auth())

    def release_auth(self) -> LinkAuth:
        """What nodes pull release images with: the cluster's global pull secret, also over the links
        the cluster itself weakened (its insecureRegistries: no Module names a release image)."""
        self.trust.refresh()
        auth = self._global_auth()
        return LinkAuth(auth, weakened=auth)

    def _global_auth(self) -> AuthConfig:
        if self.global_pull_secret is None:
            return self.secrets.base
        return self.secrets.for_namespace(*self.global_pull_secret, optional=True)

    def mirrors_changed(self) -> None:
        self.checker.clear()
        if self.enqueue_all is not None:
            self.enqueue_all()


def _registry_access(client: KubeClient, options: RegistryOptions, mirrors: MirrorWatch,
                     metrics: RegistryMetrics) -> _RegistryAccess:
    base_trust = TrustStore(ca_paths=options.ca_paths)
    base_auth = AuthConfig.from_file(options.auth_file) if options.auth_file else AuthConfig.EMPTY
    registry = RegistryClient(base_trust, base_auth, timeout=options.timeout, attempts=options.attempts,
                              metrics=metrics)
    secrets = PullSecrets(client, base_auth)
    access = _RegistryAccess(registry, None, secrets, ClusterTrust(client, registry, base_trust),  # type: ignore[arg-type]
                             mirrors, options.global_pull_secret)
    access.checker = RegistryChecker(registry, mirrors=mirrors.policy, auth_for=access.image_auth,
                                     dtk_auth_for=access.dtk_auth, ttl=options.cache_ttl,
                                     unreachable_hold=max(30.0, options.retry_after * 1.5),
                                     insecure_registries=lambda: access.trust.insecure_registries,
                                     metrics=metrics)
    return access


def build_operator(client: KubeClient, options: OperatorOptions, checker: ImageChecker | None = None,
                   registry: CollectorRegistry | None = None) -> Operator:
    registry = registry or CollectorRegistry()
    ProcessCollector(registry=registry)
    client.metrics = client.metrics or ApiMetrics(registry)
    informer_metrics = InformerMetrics(registry)
    controller_metrics = ControllerMetrics(registry)
    manager = Manager(client, registry=registry, metrics_address=options.metrics_address,
                      health_address=options.health_address, leader_election=options.leader_election,
                      graceful_timeout=options.graceful_timeout)
    client = manager.client  # from here on, every write goes through the leader fence

    def informers(resource, name, namespaces=options.namespaces, **kw) -> Cache:
        made = []
        for namespace in namespaces or (None,):
            label = f"{name}/{namespace}" if namespace else name
            made.append(manager.add_informer(Informer(client, resource, namespace=namespace, metrics=informer_metrics,
                                                      name=label, **kw, **options.informer_options)))
        return Cache(made)

    dtk_ns, dtk_name = options.dtk_imagestream
    nodes = informers(NODES, "nodes", (), decoder=NodeDecoder())
    modules = informers(MODULES, "modules", decoder=JsonDecoder("Module"),
                        indexers={CONFIGMAP_INDEX: module_configmap_index})
    configmaps = informers(CONFIGMAPS, "configmaps", decoder=JsonDecoder("ConfigMap"))
    imagestreams = informers(IMAGESTREAMS, "dtk-imagestream", (dtk_ns,), decoder=JsonDecoder("ImageStream"),
                             field_selector=f"metadata.name={dtk_name}")
    builds = informers(BUILDS, "builds", decoder=JsonDecoder("Build", transform=build_projection),
                       label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
                       indexers={OWNER_INDEX: lambda b: [k for k in [build_owner_key(b)] if k]})
    view = ClusterView(nodes, modules, configmaps, imagestreams, builds, KernelMap(), options.dtk_imagestream)

    module_queue = RateLimitingQueue("modules", metrics=controller_metrics)
    node_queue = RateLimitingQueue("nodes", metrics=controller_metrics)
    recorder = EventRecorder(client, options.identity, dry_run=options.dry_run)
    discovery = Discovery(client)

    access = None
    if options.registry is not None:
        mirror_caches = [informers(r, str(r), (), decoder=JsonDecoder(r.kind))
                         for r in MIRROR_RESOURCES if discovery.served(r)]
        access = _registry_access(client, options.registry, MirrorWatch(mirror_caches, recorder),
                                  RegistryMetrics(registry))
        checker = checker or access.checker
        for cache in mirror_caches:
            for informer in cache.informers:
                informer.add_handler(EventHandler(on_add=lambda _: access.mirrors_changed(),
                                                  on_update=lambda old, new: access.mirrors_changed(),
                                                  on_delete=lambda _: access.mirrors_changed()))
    module_reconciler = ModuleReconciler(view, client, recorder, checker, dry_run=options.dry_run,
                                         registry_retry=options.registry.retry_after if options.registry else 60.0)
    if access is not None:
        access.enqueue_all = lambda: [module_queue.add(module_key(m)) for m in modules.list()]
    node_reconciler = NodeReconciler(view, module_queue.add)

    # -- triggers: handlers only enqueue -------------------------------------------------------
    for informer in nodes.informers:
        informer.add_handler(EventHandler(
            on_add=lambda n: node_queue.add(n.name),
            on_update=lambda old, new: node_queue.add(new.name) if node_changed(old, new) else None,
            on_delete=lambda n: node_queue.add(n.name)))
    for informer in modules.informers:
        informer.add_handler(EventHandler(
            on_add=lambda m: module_queue.add(module_key(m)),
            on_update=lambda old, new: module_queue.add(module_key(new)) if _generation_changed(old, new) else None))

    def configmap_changed(cm: Mapping[str, Any]) -> None:
        meta = cm["metadata"]
        for module in modules.by_index(CONFIGMAP_INDEX, f"{meta['namespace']}/{meta['name']}"):
            module_queue.add(module_key(module))

    for informer in configmaps.informers:
        informer.add_handler(EventHandler(
            on_add=configmap_changed,
            on_update=lambda old, new: configmap_changed(new) if old.get("data") != new.get("data") else None,
            on_delete=configmap_changed))

    def dtk_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        before = dict(dtk_index(old).images) if old is not None else {}
        after = dict(dtk_index(new).images) if new is not None else {}
        tags = {t for t in set(before) | set(after) if before.get(t) != after.get(t)}
        if not tags:
            return
        kernels = {k for k, e in view.kernel_map.entries().items() if {str(c) for c in e.candidates} & tags}
        log.info("DTK ImageStream changed", extra={"tags": sorted(tags), "kernels": sorted(kernels)})
        for key in sorted(view.modules_for_kernels(kernels)):
            module_queue.add(key)

    for informer in imagestreams.informers:
        informer.add_handler(EventHandler(on_add=lambda s: dtk_changed(None, s), on_update=dtk_changed,
                                          on_delete=lambda s: dtk_changed(s, None)))

    def build_event(build: Mapping[str, Any]) -> None:
        owner = build_owner_key(build)
        if owner:
            module_queue.add(owner)

    for informer in builds.informers:
        informer.add_handler(EventHandler(
            on_add=build_event,
            on_update=lambda old, new: build_event(new) if build_phase(old) != build_phase(new) else None,
            on_delete=build_event))

    if options.prebuild_upgrades and access is None:
        raise ValueError("--prebuild-upgrades reads release images: it needs registry access "
                         "(drop --assume-missing)")
    if options.prebuild_upgrades and not discovery.served(CLUSTERVERSIONS):
        log.warning("--prebuild-upgrades: this cluster serves no ClusterVersion; nothing is built ahead")
    elif options.prebuild_upgrades:
        cluster_versions = informers(CLUSTERVERSIONS, "clusterversion", (), decoder=JsonDecoder("ClusterVersion"),
                                     field_selector=f"metadata.name={CLUSTER_VERSION}")
        upgrade_queue = RateLimitingQueue("upgrades", metrics=controller_metrics)
        upgrades = UpgradeReconciler(view, cluster_versions, access.client, access.checker.dtk,
                                     access.release_auth, access.mirrors.policy, module_queue.add,
                                     tls_for=access.checker.tls_choices)
        for informer in cluster_versions.informers:
            informer.add_handler(EventHandler(
                on_add=lambda cv: upgrade_queue.add(CLUSTER_VERSION),
                on_update=lambda old, new: upgrade_queue.add(CLUSTER_VERSION) if desired_changed(old, new) else None,
                on_delete=lambda cv: upgrade_queue.add(CLUSTER_VERSION)))
        manager.add_controller(Controller("upgrade", upgrade_queue, upgrades.reconcile, workers=1,
                                          metrics=controller_metrics))

    manager.add_prestart_hook(node_reconciler.prime)  # on every takeover, before any Module is planned
    manager.add_controller(Controller("node", node_queue, node_reconciler.reconcile, workers=1,
                                      metrics=controller_metrics))
    manager.add_controller(Controller("module", module_queue, module_reconciler.reconcile,
                                      workers=options.workers, metrics=controller_metrics))
    return Operator(manager, view, module_queue, node_queue)
