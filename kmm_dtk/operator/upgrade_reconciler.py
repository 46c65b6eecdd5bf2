"""Builds ahead of upgrades (``--prebuild-upgrades``): from the release a cluster is moving to, the
kernels its nodes will boot into, before any node reboots.

ClusterVersion ``status.desired.image`` names the release being rolled out. Its DTK (from the
release's ``image-references``) says which kernel and RT kernel the new RHCOS carries; those become
``UpcomingKernel`` entries of the snapshot, and every Module is planned again, so the driver image
for the new kernel is built while nodes still run the old one. A kernel that a node already runs is
planned from the node as usual (``ClusterSnapshot.upcoming_for``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kmm_dtk.core.kernel import DEFAULT_ARCH, Kernel, platform_of_arch
from kmm_dtk.core.plan import UpcomingKernel
from kmm_dtk.kube.controller import Controller, Result
from kmm_dtk.kube.frozen import EMPTY
from kmm_dtk.kube.manager import Manager
from kmm_dtk.kube.watch import constant, enqueue_on
from kmm_dtk.kube.workqueue import RateLimitingQueue
from kmm_dtk.observability.metrics import ControllerMetrics
from kmm_dtk.operator.caches import Cache, ClusterView, module_key
from kmm_dtk.registry.auth import AuthConfig
from kmm_dtk.registry.client import LinkAuth, RegistryClient
from kmm_dtk.registry.mirrors import MirrorPolicy
from kmm_dtk.registry.reference import ImageRef, ReferenceError
from kmm_dtk.registry.release import DtkInspector, ReleaseLookupError, release_kernels
from kmm_dtk.registry.tls import TLSPolicy

log = logging.getLogger(__name__)

CLUSTER_VERSION = "version"


def desired_release(cluster_version: Mapping[str, Any] | None) -> str | None:
    if cluster_version is None:
        return None
    desired = (cluster_version.get("status") or EMPTY).get("desired") or EMPTY
    image = desired.get("image")
    return image if isinstance(image, str) and image else None


def desired_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return desired_release(old) != desired_release(new)


class UpgradeReconciler:
    """Resolves the desired release into ``view.upcoming`` and re-plans the Modules. A registry that
    does not answer raises, so the work queue retries with backoff; a release without a usable DTK is
    logged and leaves nothing upcoming (there is nothing to build ahead for)."""

    def __init__(self, view: ClusterView, cluster_versions: Cache, registry: RegistryClient,
                 inspector: DtkInspector, auth: Callable[[], AuthConfig | LinkAuth],
                 mirrors: Callable[[], MirrorPolicy], enqueue_module: Callable[[str], None],
                 tls_for: Callable[[ImageRef], Sequence[TLSPolicy]] | None = None, recheck: float = 60.0) -> None:
        self.view = view
        self.cluster_versions = cluster_versions
        self.registry = registry
        self.inspector = inspector
        self.auth = auth
        self.mirrors = mirrors
        self.enqueue_module = enqueue_module
        self.tls_for = tls_for
        self.recheck = recheck
        self._resolved: tuple[str | None, frozenset[tuple[str, str]]] | None = None

    def reconcile(self, key: str) -> Result | None:
        """Also every ``recheck`` seconds while a release is desired: nodes of a new architecture or
        variant (an arm64 or 64k pool) need that flavour of the release's kernel."""
        release = desired_release(self.cluster_versions.get(key))
        flavours = (frozenset(Kernel.parse(k).flavour for k in self.view.kernel_map.entries())
                    or frozenset({(DEFAULT_ARCH, "")}))
        if (release, flavours) != self._resolved:
            upcoming = self._upcoming(release, flavours) if release else ()
            self.view.set_upcoming(upcoming)
            self._resolved = (release, flavours)
            if upcoming:
                log.info("preparing driver images ahead of the upgrade",
                         extra={"release": release, "kernels": [u.kernel for u in upcoming]})
            for module in self.view.modules.list():
                self.enqueue_module(module_key(module))
        return Result(requeue_after=self.recheck) if release else None

    def _upcoming(self, release: str, flavours: frozenset[tuple[str, str]]) -> tuple[UpcomingKernel, ...]:
        try:
            ref = ImageRef.parse(release)
        except ReferenceError as err:
            log.warning("ClusterVersion names an unreadable release image", extra={"release": release,
                                                                                  "error": str(err)})
            return ()
        found: list[UpcomingKernel] = []
        for arch in sorted({arch for arch, _ in flavours}):
            try:  # RegistryError propagates: the work queue retries with backoff
                info, kernels = release_kernels(self.registry, ref, auth=self.auth(), mirrors=self.mirrors(),
                                                inspector=self.inspector, platform=platform_of_arch(arch),
                                                tls_for=self.tls_for)
            except (ReleaseLookupError, ValueError) as err:  # e.g. a single-architecture release
                log.warning("no driver-toolkit to build ahead of the upgrade",
                            extra={"release": release, "architecture": arch, "error": str(err)})
                continue
            name = f"{info.version} ({release})" if info.version else release
            kernels_of_release = [kernels.kernel, kernels.rt_kernel]
            if kernels.kernel and (arch, "64k") in flavours:
                kernels_of_release.append(f"{kernels.kernel}+64k")
            found.extend(UpcomingKernel(k, info.rhcos_version, info.dtk_image, name)
                         for k in kernels_of_release if k)
        return tuple(found)


def setup_upgrade_controller(manager: Manager, reconciler: UpgradeReconciler, *,
                             metrics: ControllerMetrics | None = None) -> Controller:
    """What enqueues it: ClusterVersion ``version`` appearing, going, or naming another desired
    release; and its own ``recheck`` while a release is desired."""
    queue = RateLimitingQueue("upgrade", metrics=metrics)
    enqueue_on(reconciler.cluster_versions.informers, queue, constant(CLUSTER_VERSION), update=desired_changed)
    return manager.add_controller(Controller("upgrade", queue, reconciler.reconcile, workers=1, metrics=metrics))
