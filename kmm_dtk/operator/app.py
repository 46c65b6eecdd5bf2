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

from kmm_dtk.core.dtk import dtk_index
from kmm_dtk.core.kernel_map import KernelMap
from kmm_dtk.kube.client import KubeClient
from kmm_dtk.kube.controller import Controller
from kmm_dtk.kube.decode import JsonDecoder, NodeDecoder
from kmm_dtk.kube.frozen import EMPTY
from kmm_dtk.kube.informer import EventHandler, Informer
from kmm_dtk.kube.manager import LeaderElectionConfig, Manager
from kmm_dtk.kube.workqueue import RateLimitingQueue
from kmm_dtk.observability.api_metrics import ApiMetrics
from kmm_dtk.observability.informer_metrics import InformerMetrics
from kmm_dtk.observability.metrics import ControllerMetrics
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
from kmm_dtk.operator.resources import BUILDS, CONFIGMAPS, IMAGESTREAMS, MANAGED_BY, MANAGED_BY_LABEL, MODULES, NODES

log = logging.getLogger(__name__)


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
    informer_options: Mapping[str, Any] = field(default_factory=dict)  # tests shorten timeouts


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


def build_operator(client: KubeClient, options: OperatorOptions, checker: ImageChecker | None = None,
                   registry: CollectorRegistry | None = None) -> Operator:
    registry = registry or CollectorRegistry()
    ProcessCollector(registry=registry)
    client.metrics = client.metrics or ApiMetrics(registry)
    informer_metrics = InformerMetrics(registry)
    controller_metrics = ControllerMetrics(registry)
    manager = Manager(client, registry=registry, metrics_address=options.metrics_address,
                      health_address=options.health_address, leader_election=options.leader_election)

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
    module_reconciler = ModuleReconciler(view, client, recorder, checker, dry_run=options.dry_run)
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

    manager.add_synced_hook(node_reconciler.prime)
    manager.add_controller(Controller("node", node_queue, node_reconciler.reconcile, workers=1,
                                      metrics=controller_metrics))
    manager.add_controller(Controller("module", module_queue, module_reconciler.reconcile,
                                      workers=options.workers, metrics=controller_metrics))
    return Operator(manager, view, module_queue, node_queue)
