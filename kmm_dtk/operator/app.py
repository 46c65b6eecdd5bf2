"""Composition: informers -> caches -> queues -> reconcilers -> Build submitter.

Nothing is decided here. Each controller declares what enqueues its keys next to its reconciler
(``setup_*_controller``); this module only builds the parts in order and hands them to each other:

| controller | keys | triggered by | module |
|---|---|---|---|
| module | a Module | its spec, its Dockerfile, its Builds; the other controllers | ``module_reconciler`` |
| modulebuild | a ModuleBuild | its spec, its Module, their Dockerfiles, its Builds; others | ``module_reconciler`` |
| node | a Node's name | its kernel, OS image or labels | ``node_reconciler`` |
| dtk | the DTK ImageStream | any change of it | ``dtk_reconciler`` |
| mirrors | all mirror sets | any ICSP, IDMS or ITMS change | ``mirror_policy`` |
| upgrade | ClusterVersion ``version`` | its desired release | ``upgrade_reconciler`` |
| build-gc | a Module | its Builds' phases, the kernels its status lists; a Build coming due | ``build_gc`` |
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector

from kmm_dtk.core.kernel_map import KernelMap
from kmm_dtk.kube.client import KubeClient
from kmm_dtk.kube.delegated_auth import DelegatedAuth
from kmm_dtk.kube.manager import Manager
from kmm_dtk.kube.workqueue import RateLimitingQueue
from kmm_dtk.observability.api_metrics import ApiMetrics
from kmm_dtk.observability.http import EndpointServer, Guard, metrics_server
from kmm_dtk.observability.informer_metrics import InformerMetrics
from kmm_dtk.observability.metrics import ControllerMetrics
from kmm_dtk.observability.product_metrics import ProductCollector
from kmm_dtk.observability.registry_metrics import RegistryMetrics
from kmm_dtk.observability.serving_cert import ServingCert
from kmm_dtk.operator.build_gc import BuildGcReconciler, setup_build_gc_controller
from kmm_dtk.operator.caches import ClusterView
from kmm_dtk.operator.discovery import Discovery
from kmm_dtk.operator.dtk_reconciler import setup_dtk_controller
from kmm_dtk.operator.events import EventRecorder
from kmm_dtk.operator.fanout import FanOut
from kmm_dtk.operator.informers import watch_caches
from kmm_dtk.operator.mirror_policy import MirrorWatch, setup_mirror_controller
from kmm_dtk.operator.module_reconciler import (
    ImageChecker,
    ModuleReconciler,
    setup_module_controller,
    setup_modulebuild_controller,
)
from kmm_dtk.operator.node_reconciler import setup_node_controller
from kmm_dtk.operator.options import OperatorOptions, RegistryOptions
from kmm_dtk.operator.product_state import product_snapshot
from kmm_dtk.operator.registry_access import RegistryAccess
from kmm_dtk.operator.upgrade_reconciler import UpgradeReconciler, setup_upgrade_controller

log = logging.getLogger(__name__)


@dataclass
class Operator:
    manager: Manager
    view: ClusterView
    module_queue: RateLimitingQueue
    node_queue: RateLimitingQueue
    serve_metrics: Callable[[], EndpointServer] | None = None  # binds and serves /metrics; None: off
    metrics_endpoint: EndpointServer | None = field(default=None, init=False)

    def run(self) -> int:
        """The metrics endpoint for as long as the manager runs (followers serve it too)."""
        if self.serve_metrics is not None:
            self.metrics_endpoint = self.serve_metrics().start()
        try:
            return self.manager.run()
        finally:
            if self.metrics_endpoint is not None:
                self.metrics_endpoint.stop()

    def stop(self) -> None:
        self.manager.stop()


def build_operator(client: KubeClient, options: OperatorOptions, checker: ImageChecker | None = None,
                   registry: CollectorRegistry | None = None) -> Operator:
    """``checker`` replaces the registry checks (tests); ``registry`` collects the metrics."""
    if options.prebuild_upgrades and options.registry is None:
        raise ValueError("--prebuild-upgrades reads release images: it needs registry access (drop --assume-missing)")
    tls = serving_cert(options)  # before any request: a bad certificate directory stops the start
    registry = registry or CollectorRegistry()
    ProcessCollector(registry=registry)
    client.metrics = client.metrics or ApiMetrics(registry)
    metrics = ControllerMetrics(registry)
    # The operator serves /metrics itself (below), secure or not; the manager serves the probes.
    manager = Manager(client, registry=registry, metrics_address=None,
                      health_address=options.health_address, leader_election=options.leader_election,
                      graceful_timeout=options.graceful_timeout)
    auth_client = client  # unfenced: the metrics endpoint's TokenReviews and SubjectAccessReviews
    client = manager.client  # from here on, every write goes through the leader fence
    discovery = Discovery(client)
    caches = watch_caches(manager, client, namespaces=options.namespaces, dtk_imagestream=options.dtk_imagestream,
                          metrics=InformerMetrics(registry), discovery=discovery,
                          mirrors=options.registry is not None, cluster_versions=options.prebuild_upgrades,
                          informer_options=options.informer_options)
    view = ClusterView(caches.nodes, caches.modules, caches.configmaps, caches.imagestreams, caches.builds,
                       KernelMap(), options.dtk_imagestream, caches.modulebuilds)
    product = ProductCollector(lambda: manager.leader_state() in ("disabled", "leading"),
                               lambda: product_snapshot(view, manager.synced, product.observed))
    registry.register(product)
    recorder = EventRecorder(client, options.identity, dry_run=options.dry_run, senders=4)  # off the write path
    manager.add_drain_hook(recorder.flush)  # queued Events go out before the fence closes

    access, registry_metrics = None, RegistryMetrics(registry)
    if options.registry is not None:
        access = RegistryAccess.create(client, options.registry, MirrorWatch(caches.mirror_sets, recorder),
                                       registry_metrics)
    registry_checker = access.checker(options.registry, registry_metrics) if access and options.registry else None
    reconciler = ModuleReconciler(view, client, recorder, checker or registry_checker, dry_run=options.dry_run,
                                  registry_retry=options.registry.retry_after if options.registry else 60.0,
                                  build_module_sections=options.build_module_sections,
                                  recheck_rate=(options.registry or RegistryOptions()).recheck_rate,
                                  fanout=FanOut(options.max_concurrent_writes))
    modules = setup_module_controller(manager, view, reconciler, workers=options.workers, metrics=metrics)
    module_builds = setup_modulebuild_controller(manager, view, reconciler, workers=options.workers, metrics=metrics)

    def enqueue_module(key: str) -> None:
        """A Module concerned by a change: it, and the ModuleBuilds building for it."""
        if options.build_module_sections:
            modules.queue.add(key)
        if module_builds is not None:
            for build in view.modulebuilds_for(key):
                module_builds.queue.add(build)

    nodes = setup_node_controller(manager, view, enqueue_module, metrics=metrics)
    setup_dtk_controller(manager, view, enqueue_module, metrics=metrics)
    setup_build_gc_controller(manager, view, BuildGcReconciler(
        view, client, grace=options.build_gc_grace, keep=options.build_history_limit, dry_run=options.dry_run),
        metrics=metrics)
    if access is not None and registry_checker is not None:
        setup_mirror_controller(manager, access.mirrors, registry_checker.clear, view.module_keys, enqueue_module,
                                metrics=metrics)
        if options.prebuild_upgrades and caches.cluster_versions is None:
            log.warning("--prebuild-upgrades: this cluster serves no ClusterVersion; nothing is built ahead")
        elif caches.cluster_versions is not None:
            setup_upgrade_controller(manager, UpgradeReconciler(
                view, caches.cluster_versions, access.client, registry_checker.dtk, access.release_auth,
                access.mirrors.policy, enqueue_module, tls_for=registry_checker.tls_choices), metrics=metrics)
    return Operator(manager, view, modules.queue, nodes.queue,
                    serve_metrics=metrics_endpoint(options, registry, tls, auth_client))


def serving_cert(options: OperatorOptions) -> ServingCert | None:
    """The certificate of a secure metrics endpoint (raises ServingCertError, one line)."""
    if not options.metrics_secure or not options.metrics_address:
        return None
    return ServingCert.from_dir(options.metrics_cert_dir) if options.metrics_cert_dir else ServingCert.self_signed()


def metrics_endpoint(options: OperatorOptions, registry: CollectorRegistry, tls: ServingCert | None,
                     auth_client: KubeClient) -> Callable[[], EndpointServer] | None:
    """How /metrics is served: not at all, plain HTTP, or HTTPS with every scrape reviewed by the API
    server through ``auth_client``, which no write fence stands in front of (reviews are POSTs, and
    standbys serve metrics too)."""
    address = options.metrics_address
    if not address:
        return None
    guard: Guard | None = None
    if tls is not None:
        auth = DelegatedAuth(auth_client)

        def guard(authorization: str | None, path: str, method: str) -> tuple[int, str]:
            decision = auth.check(authorization, path, method)
            return decision.status, decision.message

    return lambda: metrics_server(address, registry, tls=tls, guard=guard)
