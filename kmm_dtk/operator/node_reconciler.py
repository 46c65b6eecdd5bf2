"""The node reconciler: keeps the kernel -> RHCOS map and enqueues the Modules a change concerns.

A change to one node concerns the Modules that select it (by its labels before or after the
change): their set of kernels may have changed. A change of the RHCOS that wins for a kernel
concerns every Module that selects any node running that kernel: its DTK image may have changed.
Nothing else is enqueued, so kubelet heartbeats and unrelated label edits do no work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import NamedTuple

from kmm_dtk.core.versions import versions_of
from kmm_dtk.kube.controller import Controller
from kmm_dtk.kube.decode import NodeSummary
from kmm_dtk.kube.manager import Manager
from kmm_dtk.kube.watch import enqueue_on
from kmm_dtk.kube.workqueue import RateLimitingQueue
from kmm_dtk.observability.metrics import ControllerMetrics
from kmm_dtk.operator.caches import ClusterView, selects

log = logging.getLogger(__name__)


class _Seen(NamedTuple):
    kernel: str | None
    rhcos: str | None
    labels: Mapping[str, str]


def node_changed(old: NodeSummary, new: NodeSummary) -> bool:
    """Informer update filter: only what the decision depends on."""
    return (old.kernel_version, old.os_image, old.labels, old.uid) != (new.kernel_version, new.os_image,
                                                                        new.labels, new.uid)


class NodeReconciler:
    def __init__(self, view: ClusterView, enqueue_module: Callable[[str], None]) -> None:
        self.view = view
        self.enqueue_module = enqueue_module
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}

    def _modules_whose_kernels_changed(self, name: str, previous: _Seen | None, current: _Seen | None) -> set[str]:
        """Modules selecting this node (before or after) whose set of kernels this change alters: a
        kernel gained that no other node they select runs, or one lost that no other still runs.
        Decided once per distinct selector, not once per Module: 200 Modules usually share a few."""
        table = self.view.kernel_map
        found: set[str] = set()
        for selector, value in self.view.modules_by_selector():
            was = previous.kernel if previous is not None and selects(selector, previous.labels) else None
            now = current.kernel if current is not None and selects(selector, current.labels) else None
            if was == now:
                continue  # not selected, or the same kernel still selected: an RHCOS change is the map's

            def elsewhere(kernel: str, selector: Mapping[str, str] = selector) -> bool:
                return table.any_running(kernel, lambda labels: selects(selector, labels), exclude=name)

            if (now is not None and not elsewhere(now)) or (was is not None and not elsewhere(was)):
                found.update(self.view.modules_with_selector(value))
        return found

    def prime(self) -> None:
        """Fill the map from the cache before any Module is planned, without enqueuing: at start and
        again on every takeover, so that a new leader plans against every node event its cache has
        received, not against the map it primed when it synced as a standby. The Modules' own
        queued keys plan them, against this map."""
        seen = {}
        versions = []
        for node in self.view.nodes.list():
            v = versions_of(node.name, node.kernel_version, node.os_image, node.labels)
            versions.append((v, node.labels))
            seen[node.name] = _Seen(v.kernel, str(v.rhcos) if v.rhcos else None, node.labels)
        self.view.kernel_map.replace_all(versions)
        with self._lock:
            self._seen = seen
        log.info("kernel map primed", extra={"nodes": len(seen), "kernels": len(self.view.kernel_map)})

    def reconcile(self, name: str) -> None:
        node: NodeSummary | None = self.view.nodes.get(name)
        with self._lock:
            previous = self._seen.get(name)
        if node is None:
            changed = self.view.kernel_map.remove(name)
            with self._lock:
                self._seen.pop(name, None)
            current = None
        else:
            versions = versions_of(node.name, node.kernel_version, node.os_image, node.labels)
            if versions.reason:
                log.warning("node versions unreadable", extra={"node": name, "reason": versions.reason})
            changed = self.view.kernel_map.upsert(versions, node.labels)
            current = _Seen(versions.kernel, str(versions.rhcos) if versions.rhcos else None, node.labels)
            with self._lock:
                self._seen[name] = current
            if previous == current and not changed:
                return
        modules = self._modules_whose_kernels_changed(name, previous, current)
        # ``changed``: kernels whose winning RHCOS or candidate RHCOS (the DTK fallbacks) changed, or
        # that appeared or went; a node joining RHCOS builds that others already run changes none.
        modules |= self.view.modules_for_kernels(changed)
        if modules or changed:
            log.info("node changed", extra={"node": name, "kernels_changed": sorted(changed),
                                            "modules": len(modules)})
        for key in sorted(modules):
            self.enqueue_module(key)


def setup_node_controller(manager: Manager, view: ClusterView, enqueue_module: Callable[[str], None], *,
                          metrics: ControllerMetrics | None = None) -> Controller:
    """What enqueues a node: appearing, going, or changing its kernel, OS image or labels
    (``node_changed``); heartbeats and status updates do not. The map is primed from the cache before
    the workers start, at start and on every takeover."""
    reconciler = NodeReconciler(view, enqueue_module)
    queue = RateLimitingQueue("node", metrics=metrics)
    enqueue_on(view.nodes.informers, queue, lambda node: (node.name,), update=node_changed)
    manager.add_prestart_hook(reconciler.prime)
    return manager.add_controller(Controller("node", queue, reconciler.reconcile, workers=1, metrics=metrics))
