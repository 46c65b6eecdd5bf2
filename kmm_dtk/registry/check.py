"""Does a plan entry's image already exist, built from the same inputs? And is its DTK the right one?

Shared by the operator and ``kmm-dtk plan --check-registry``. The registry is asked the way a node
would ask it: through the cluster's mirrors in order, then the source unless a policy forbids it.
Only a definite answer counts: a registry that cannot be reached, refuses us or times out gives
``UNKNOWN``, which is never a reason to build (an ephemeral or unreachable registry must not cause a
rebuild storm) nor a reason to believe the image is there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from kmm_dtk.core.kernel import DEFAULT_PLATFORM, Kernel
from kmm_dtk.core.module import RegistryTLS
from kmm_dtk.core.plan import IMAGE_HASH_LABEL, PlanEntry
from kmm_dtk.core.verdicts import DtkCheck, DtkState, ImageCheck, ImageState
from kmm_dtk.registry.auth import AuthConfig
from kmm_dtk.registry.bounded import LRU
from kmm_dtk.registry.client import LinkAuth, RegistryClient, RegistryError
from kmm_dtk.registry.image import ImageConfig, image_config_over
from kmm_dtk.registry.mirrors import MirrorPolicy, PullSource
from kmm_dtk.registry.reference import ImageRef, ReferenceError
from kmm_dtk.registry.release import DtkInspector
from kmm_dtk.registry.tls import TLSPolicy

log = logging.getLogger(__name__)


def platform_for(kernel: str | None) -> tuple[str, str]:
    """The image platform a node running ``kernel`` pulls (``Kernel.platform``); linux/amd64 for an
    entry without a kernel."""
    return Kernel.parse(kernel).platform if kernel is not None else DEFAULT_PLATFORM


def is_insecure(registry: str, insecure: Collection[str]) -> bool:
    """``registrySources.insecureRegistries`` entries: ``host[:port]`` or ``*.domain`` wildcards."""
    host = registry.split(":", 1)[0]
    return registry in insecure or any(p.startswith("*.") and host.endswith(p[1:]) for p in insecure)


def tls_policy(tls: RegistryTLS | None) -> TLSPolicy:
    if tls is None:
        return TLSPolicy()
    return TLSPolicy(insecure=bool(tls.insecure), skip_verify=bool(tls.insecure_skip_tls_verify))


def _where(source: PullSource) -> str:
    return f" through mirror {source.mirror} ({source.origin})" if source.mirror else ""


class UnreachableRegistries:
    """Registries that did not answer at all (timeouts, refused connections, 5xx after retries), not
    asked again for ``hold`` seconds: without this, every reconcile touching a dead registry would
    wait out its timeouts and retries again, holding a worker for each kernel. When the hold ends,
    one caller asks again while the others keep the last answer: a registry still dead costs one
    worker, not all of them.

    At most ``max_entries`` registries are held (1,000 by default; Modules may name any host): when
    full, holds that ended with nobody asking are dropped first, then the least recently marked."""

    def __init__(self, hold: float, clock: Callable[[], float], max_entries: int = 1000) -> None:
        self.hold, self.clock = hold, clock
        self._lock = threading.Lock()
        # registry -> (held until, reason, when a caller started asking again or None)
        self._held: LRU[str, tuple[float, str, float | None]] = LRU(max_entries)

    def reason(self, registry: str) -> str | None:
        """The reason to skip ``registry`` now, or None: ask it (the caller then reports ``answered``
        or ``mark``)."""
        now = self.clock()
        with self._lock:
            hit = self._held.get(registry)
            if hit is None:
                return None
            until, reason, probing = hit
            if until > now or (probing is not None and now - probing < self.hold):
                return reason
            self._held.put(registry, (until, reason, now))  # this caller asks; the others wait for it
            return None

    def mark(self, registry: str, reason: str) -> None:
        if self.hold > 0:
            now = self.clock()
            with self._lock:
                self._held.put(registry, (now + self.hold, reason, None), stale=lambda _, held: self._ended(held, now))

    def _ended(self, held: tuple[float, str, float | None], now: float) -> bool:
        """The hold is over and nobody is asking (or the one asking gave up long ago)."""
        until, _, probing = held
        return until <= now and (probing is None or now - probing >= self.hold)

    def answered(self, registry: str) -> None:
        """The registry answered (even with a refusal): it is reachable again."""
        with self._lock:
            self._held.pop(registry)

    def held(self) -> list[str]:
        """The registries held, least recently marked or asked first."""
        with self._lock:
            return self._held.keys()


class RegistryChecker:
    """The operator's and the planner's ``ImageChecker``: answers cached for ``ttl`` seconds, at most
    ``max_entries`` of them (10,000 by default, one per image, plan hash and platform: a few MB). When
    full, expired answers are dropped first, then the least recently used.

    ``auth_for(entry)`` gives the credentials a node or the Build would use for that entry (the
    Module's ``imageRepoSecret``, else the namespace's ``builder`` pull secrets, plus any global auth
    file), ``dtk_auth_for(entry)`` those for its DTK, as a LinkAuth saying which may go over a link the
    Module weakened (a plain AuthConfig: none); ``mirrors()`` the policy in force now. Neither is
    cached here: their owners cache them.
    """

    def __init__(self, client: RegistryClient, *, mirrors: Callable[[], MirrorPolicy] = lambda: MirrorPolicy.EMPTY,
                 auth_for: Callable[[PlanEntry], AuthConfig | LinkAuth | None] = lambda entry: None,
                 dtk_auth_for: Callable[[PlanEntry], AuthConfig | LinkAuth | None] | None = None, ttl: float = 300.0,
                 unreachable_hold: float = 30.0, insecure_registries: Callable[[], Collection[str]] = frozenset,
                 metrics: Any = None, clock: Callable[[], float] = time.monotonic, max_entries: int = 10_000) -> None:
        self.client = client
        self.mirrors = mirrors
        self.auth_for = auth_for
        self.dtk_auth_for = dtk_auth_for or auth_for
        self.ttl = ttl
        self.clock = clock
        self.dtk = DtkInspector(client)
        self.unreachable = UnreachableRegistries(unreachable_hold, clock)
        self.insecure_registries = insecure_registries
        self.metrics = metrics  # RegistryMetrics, or None
        self._lock = threading.Lock()
        self._cache: LRU[tuple[str, str, tuple[str, str]], tuple[float, ImageCheck]] = LRU(max_entries)

    # -- target images -----------------------------------------------------------------------------

    def check(self, entry: PlanEntry) -> ImageCheck:
        assert entry.image is not None and entry.hash is not None
        key = (entry.image, entry.hash, platform_for(entry.kernel))
        now = self.clock()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            if self.metrics is not None:
                self.metrics.observe_image_check(cached[1].state.value, cached=True)
            return cached[1]
        result = self._check(entry)
        if result.state is not ImageState.UNKNOWN:
            with self._lock:
                self._cache.put(key, (now + self.ttl, result), stale=lambda _, hit: hit[0] <= now)
        if self.metrics is not None:
            self.metrics.observe_image_check(result.state.value, cached=False)
        return result

    def cached_images(self) -> list[str]:
        """The images with an answer kept (expired or not), least recently used first."""
        with self._lock:
            return [image for image, _, _ in self._cache.keys()]

    def invalidate(self, image: str) -> None:
        """A Build just pushed ``image``: the next check asks the registry again."""
        with self._lock:
            self._cache.drop(lambda key, _: key[0] == image)

    def tls_choices(self, asked: ImageRef, ref: ImageRef | None = None,
                    module_tls: RegistryTLS | None = None) -> list[TLSPolicy]:
        """The Module's TLS setting for the registry it names; for a registry the cluster lists as
        insecure, HTTPS without verification, then plain HTTP, as CRI-O tries them; else verified HTTPS."""
        if ref is not None and asked.registry == ref.registry and module_tls is not None:
            return [tls_policy(module_tls)]
        if is_insecure(asked.registry, self.insecure_registries()):
            return [TLSPolicy(skip_verify=True), TLSPolicy(insecure=True)]
        return [TLSPolicy()]

    def _image_config(self, entry: PlanEntry, source: PullSource, ref: ImageRef) -> ImageConfig | None:
        config, _ = image_config_over(self.client, source.ref, self.tls_choices(source.ref, ref, entry.registry_tls),
                                      platform=platform_for(entry.kernel), auth=self.auth_for(entry))
        return config

    def clear(self) -> None:
        """The mirror policy changed: every answer may be different now."""
        with self._lock:
            self._cache.clear()

    def _check(self, entry: PlanEntry) -> ImageCheck:
        assert entry.image is not None
        try:
            ref = ImageRef.parse(entry.image)
        except ReferenceError as err:
            return ImageCheck(ImageState.UNKNOWN, f"cannot check {entry.image}: {err}")
        unknown: list[str] = []
        sources = self.mirrors().pull_sources(ref)
        for source in sources:
            down = self.unreachable.reason(source.ref.registry)
            if down is not None:
                unknown.append(f"{source.ref}: {down}")
                continue
            try:
                config = self._image_config(entry, source, ref)
            except RegistryError as err:
                if err.unreachable:
                    self.unreachable.mark(source.ref.registry, err.reason)
                else:
                    self.unreachable.answered(source.ref.registry)
                unknown.append(f"{source.ref}: {err}")
                continue
            self.unreachable.answered(source.ref.registry)
            if config is None:
                continue
            where = _where(source)
            label = config.labels.get(IMAGE_HASH_LABEL)
            if label is None:
                return ImageCheck(ImageState.FOREIGN, f"{entry.image} exists{where} without a {IMAGE_HASH_LABEL} "
                                  "label (built elsewhere): kept", source.mirror)
            if label == entry.hash:
                return ImageCheck(ImageState.CURRENT, f"{entry.image} exists{where} and is up to date", source.mirror)
            return ImageCheck(ImageState.OUTDATED, f"{entry.image} exists{where} but was built from other inputs "
                              f"(hash {label}, plan {entry.hash}): rebuilding", source.mirror)
        if unknown:
            return ImageCheck(ImageState.UNKNOWN, "registry gave no answer for " + "; ".join(unknown))
        asked = ", ".join(str(s.ref) for s in sources)
        return ImageCheck(ImageState.MISSING, f"{entry.image} not found (asked {asked})")

    # -- DTK images --------------------------------------------------------------------------------

    def check_dtk(self, entry: PlanEntry) -> DtkCheck:
        """Is the DTK this entry builds on really for its kernel? (OKD has shipped DTKs that were not.)"""
        answer = self._check_dtk(entry)
        if self.metrics is not None:
            self.metrics.observe_dtk_check(answer.state.value)
        return answer

    def auth_problems(self, entry: PlanEntry) -> tuple[str, ...]:
        """Credentials left out for this entry's image and DTK (an unusable pull Secret), one line
        each: the checks went on without them, and the Module should say so."""
        auths = [self.auth_for(entry)] + ([self.dtk_auth_for(entry)] if entry.dtk_image else [])
        # An AuthConfig, or credentials sorted by link (a LinkAuth's two AuthConfigs), or None.
        configs = [c for a in auths for c in (a, getattr(a, "verified", None), getattr(a, "weakened", None))]
        return tuple(dict.fromkeys(p for config in configs for p in getattr(config, "problems", ())))

    def _check_dtk(self, entry: PlanEntry) -> DtkCheck:
        if not entry.dtk_image or entry.kernel is None:
            return DtkCheck(DtkState.MATCHES, "no DTK")
        try:
            ref = ImageRef.parse(entry.dtk_image)
        except ReferenceError as err:
            return DtkCheck(DtkState.UNKNOWN, f"cannot read DTK {entry.dtk_image}: {err}")
        sources = self.mirrors().pull_sources(ref)
        held = {r: self.unreachable.reason(r) for r in dict.fromkeys(s.ref.registry for s in sources)}
        askable = [s for s in sources if held[s.ref.registry] is None]
        if sources and not askable:  # the same words as when it was asked: no status churn
            return DtkCheck(DtkState.UNKNOWN, f"cannot read DTK {entry.dtk_image}: "
                            f"{next(r for r in held.values() if r)}")
        try:
            kernels = self.dtk.kernels(
                ref, auth=self.dtk_auth_for(entry), sources=askable, platform=platform_for(entry.kernel),
                tls_for=lambda asked: self.tls_choices(asked, ref, entry.base_image_registry_tls))
        except RegistryError as err:
            if err.unreachable:  # every place asked gave no answer at all
                for registry in dict.fromkeys(s.ref.registry for s in askable):
                    self.unreachable.mark(registry, str(err))
            return DtkCheck(DtkState.UNKNOWN, f"cannot read DTK {entry.dtk_image}: {err}")
        except ValueError as err:  # no readable driver-toolkit-release.json and no kernel labels
            return DtkCheck(DtkState.UNVERIFIED, f"kernel of DTK {entry.dtk_image} not verified: {err}")
        offered = [k for k in (kernels.kernel, kernels.rt_kernel) if k]
        if entry.kernel in offered or Kernel.parse(entry.kernel).base in offered:
            return DtkCheck(DtkState.MATCHES, f"DTK {entry.dtk_image} carries kernel {entry.kernel}")
        if not offered:
            return DtkCheck(DtkState.UNVERIFIED, f"kernel of DTK {entry.dtk_image} not verified: it names none "
                            f"({kernels.source})")
        return DtkCheck(DtkState.MISMATCH,
                        f"DTK {entry.dtk_image} (RHCOS {entry.rhcos or 'unknown'}) is for kernel "
                        f"{' / '.join(offered)}, not {entry.kernel} ({kernels.source}); a driver built on it would "
                        "not load: fix or re-import the driver-toolkit ImageStream tag")
