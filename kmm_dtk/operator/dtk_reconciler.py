"""The DTK reconciler: a tag of the DTK ImageStream moving to another image (a z-stream DTK landing
under the same RHCOS tag) concerns the Modules building for the kernels that tag serves; their plan
hash changes with the DTK digest, so they rebuild.

The ImageStream's events only enqueue one key; the reconcile compares the stream's tags with those
it saw last and enqueues the Modules concerned. The baseline is taken when this replica starts
leading, before any worker runs: every Module is queued then anyway, and is planned on that stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kmm_dtk.core.dtk import DtkImage
from kmm_dtk.kube.controller import Controller
from kmm_dtk.kube.manager import Manager
from kmm_dtk.kube.watch import constant, enqueue_on
from kmm_dtk.kube.workqueue import RateLimitingQueue
from kmm_dtk.observability.metrics import ControllerMetrics
from kmm_dtk.operator.caches import ClusterView

log = logging.getLogger(__name__)

KEY = "driver-toolkit"


class DtkReconciler:
    def __init__(self, view: ClusterView, enqueue_module: Callable[[str], None]) -> None:
        self.view = view
        self.enqueue_module = enqueue_module
        self._seen: dict[str, DtkImage] | None = None  # tag -> image at the last reconcile (one worker)

    def _images(self) -> dict[str, DtkImage]:
        index = self.view.dtk()
        return dict(index.images) if index is not None else {}

    def reconcile(self, key: str) -> None:
        images = self._images()
        before, self._seen = self._seen, images
        if before is None:
            return
        tags = {t for t in set(before) | set(images) if before.get(t) != images.get(t)}
        if not tags:
            return
        kernels = {k for k, e in self.view.kernel_map.entries().items() if {str(c) for c in e.candidates} & tags}
        modules = sorted(self.view.modules_for_kernels(kernels))
        log.info("DTK ImageStream changed", extra={"tags": sorted(tags), "kernels": sorted(kernels),
                                                   "modules": len(modules)})
        for module in modules:
            self.enqueue_module(module)

    def forget(self) -> None:
        """On takeover, before any worker: the stream as it is now is the baseline (every Module is
        queued and will be planned on it), so a tag moving after this point is a change."""
        self._seen = self._images()


def setup_dtk_controller(manager: Manager, view: ClusterView, enqueue_module: Callable[[str], None], *,
                         metrics: ControllerMetrics | None = None) -> Controller:
    """What enqueues it: any event of the DTK ImageStream (one key for the whole stream)."""
    reconciler = DtkReconciler(view, enqueue_module)
    queue = RateLimitingQueue("dtk", metrics=metrics)
    enqueue_on(view.imagestreams.informers, queue, constant(KEY))
    manager.add_prestart_hook(reconciler.forget)
    return manager.add_controller(Controller("dtk", queue, reconciler.reconcile, workers=1, metrics=metrics))
