"""What the operator needs from the cluster to talk to registries as its Builds and nodes would:
pull credentials from Secrets, and the CAs the cluster trusts for image registries.

Both are read with a GET when needed and kept for a short TTL rather than watched: the operator
reads a handful of Secrets, and an informer on every Secret in the cluster would hold them all in
memory. Read failures are logged (once per TTL) and fall back to what is known: a missing Secret
means anonymous access, never a crash. A Secret that cannot be used (malformed or hostile JSON)
is also carried as a problem of the AuthConfig, which the Module reconciler reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kmm_dtk.core.module import RegistryTLS
from kmm_dtk.core.plan import PlanEntry
from kmm_dtk.kube.client import ApiError, KubeClient
from kmm_dtk.observability.registry_metrics import RegistryMetrics
from kmm_dtk.operator.mirror_policy import MirrorWatch
from kmm_dtk.operator.options import RegistryOptions
from kmm_dtk.operator.resources import CONFIGMAPS, IMAGE_CONFIGS, SECRETS, SERVICEACCOUNTS
from kmm_dtk.registry.auth import AuthConfig, AuthConfigError
from kmm_dtk.registry.bounded import LRU
from kmm_dtk.registry.check import RegistryChecker, tls_policy
from kmm_dtk.registry.client import LinkAuth, RegistryClient
from kmm_dtk.registry.tls import TrustStore

log = logging.getLogger(__name__)

BUILDER_SERVICE_ACCOUNT = "builder"  # OpenShift Builds run as it; its pull secrets are the Build's
OPENSHIFT_CONFIG = "openshift-config"
# The image registry operator keeps the internal registry's service CA here, keyed like additionalTrustedCA.
INTERNAL_REGISTRY_CAS = ("openshift-image-registry", "image-registry-certificates")


class _TTLCache:
    """Values kept ``ttl`` seconds, at most ``max_entries`` of them (1,024 by default: a Secret or
    ServiceAccount per namespace and name that Modules named): when full, expired values are
    dropped first, then the least recently used (read again when needed)."""

    def __init__(self, ttl: float, clock: Callable[[], float], max_entries: int = 1024) -> None:
        self.ttl, self.clock = ttl, clock
        self._lock = threading.Lock()
        self._items: LRU[Any, tuple[float, Any]] = LRU(max_entries)

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        now = self.clock()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        value = load()
        with self._lock:
            self._items.put(key, (now + self.ttl, value), stale=lambda _, item: item[0] <= now)
        return value

    def keys(self) -> list[Any]:
        """Least recently used first."""
        with self._lock:
            return self._items.keys()


class PullSecrets:
    """Credentials per plan entry: the Module's ``imageRepoSecret``, else the pull secrets of the
    namespace's ``builder`` ServiceAccount (as an OpenShift Build gets them), then ``base`` (the
    ``--registry-config`` file, e.g. the cluster's global pull secret).

    Over a link the Module weakened (``registryTLS`` / ``baseImageRegistryTLS``: plain HTTP or
    unverified TLS) only the Module's own ``imageRepoSecret`` may go: the builder's pull secrets,
    the auth file and the global pull secret are not the Module author's to hand to whoever is on
    that path. The registry client enforces it (``LinkAuth``)."""

    def __init__(self, client: KubeClient, base: AuthConfig | None = None, ttl: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 1024) -> None:
        self.client = client
        self.base = base or AuthConfig.EMPTY
        self._cache = _TTLCache(ttl, clock, max_entries)

    def for_entry(self, entry: PlanEntry, module_tls: RegistryTLS | None = None, *also: AuthConfig) -> LinkAuth:
        """For ``entry``'s image, or its DTK (``module_tls`` the Module's setting for that registry,
        ``also`` the cluster's pull secret): everything over verified TLS; over a link the Module
        weakened, only its ``imageRepoSecret``; over a link only the cluster weakened (its
        ``insecureRegistries``), everything, as the nodes and Builds send it there."""
        namespace = entry.module.split("/", 1)[0]
        everything = self.for_namespace(namespace, entry.image_repo_secret).merged(*also)
        if tls_policy(module_tls).verified:
            return LinkAuth(everything, weakened=everything)
        named = self._secret(namespace, entry.image_repo_secret) if entry.image_repo_secret else AuthConfig.EMPTY
        return LinkAuth(everything, weakened=named)

    def for_namespace(self, namespace: str, secret: str | None, optional: bool = False) -> AuthConfig:
        """``optional``: a missing Secret is expected (the global pull secret off OpenShift), not logged."""
        names = (secret,) if secret else self._builder_secrets(namespace)
        configs = [self._secret(namespace, name, optional) for name in names]
        return AuthConfig.EMPTY.merged(*configs, self.base)

    def _builder_secrets(self, namespace: str) -> tuple[str, ...]:
        def load() -> tuple[str, ...]:
            try:
                sa = self.client.get(SERVICEACCOUNTS, BUILDER_SERVICE_ACCOUNT, namespace)
            except ApiError as err:
                if err.status != 404:
                    log.warning("cannot read ServiceAccount", extra={"namespace": namespace,
                                                                     "serviceAccount": BUILDER_SERVICE_ACCOUNT,
                                                                     "error": f"{err.status} {err.reason}"})
                return ()
            return tuple(ref["name"] for ref in sa.get("imagePullSecrets") or () if isinstance(ref, Mapping)
                         and isinstance(ref.get("name"), str))
        return self._cache.get(("sa", namespace), load)

    def _secret(self, namespace: str, name: str, optional: bool = False) -> AuthConfig:
        def load() -> AuthConfig:
            try:
                secret = self.client.get(SECRETS, name, namespace)
            except ApiError as err:
                level = logging.DEBUG if optional and err.status == 404 else logging.WARNING
                log.log(level, "cannot read pull secret; asking the registry without it",
                        extra={"secret": f"{namespace}/{name}", "error": f"{err.status} {err.reason}"})
                return AuthConfig.EMPTY
            try:
                return AuthConfig.from_secret(secret)
            except AuthConfigError as err:  # reported on the Modules that rely on it, too
                log.warning("unusable pull secret; asking the registry without it",
                            extra={"secret": f"{namespace}/{name}", "error": str(err)})
                return AuthConfig(problems=(str(err),))
        return self._cache.get(("secret", namespace, name), load)


class _Unavailable(Exception):
    """The API did not say: keep what is in force."""


_FIRST_READ_WAIT = 15.0  # seconds a check waits for the first read of the cluster's CAs


class ClusterTrust:
    """Keeps ``client.trust`` = the base trust store (system CAs, ``--ca-file``) plus the per-registry
    CAs of ``image.config.openshift.io/cluster`` ``spec.additionalTrustedCA`` (a ConfigMap in
    ``openshift-config`` whose keys are registry hosts, ``host..port`` for a port) and of
    ``openshift-image-registry/image-registry-certificates`` (the internal registry's service CA),
    and ``insecure_registries`` = its ``registrySources.insecureRegistries``. Re-read every ``ttl``
    seconds; when the API fails, what is in force stays and it is asked again ``retry`` seconds later."""

    def __init__(self, client: KubeClient, registry: RegistryClient, base: TrustStore, ttl: float = 300.0,
                 retry: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.registry = registry
        self.base = base
        self.ttl, self.retry, self.clock = ttl, retry, clock
        self._next_read = 0.0
        self._applied: Mapping[str, str] | None = None
        self._lock = threading.Lock()  # guards the fields below, never held across a request
        self._reading = False
        self._first_read = threading.Event()
        self.insecure_registries: frozenset[str] = frozenset()

    def refresh(self) -> None:
        """Re-read when due. One caller reads (outside the lock); the others go on with what is in
        force, except before the first read has finished, which they wait for (bounded)."""
        with self._lock:
            due = not self._reading and self.clock() >= self._next_read
            if due:
                self._reading = True
        if not due:
            if not self._first_read.is_set():
                self._first_read.wait(_FIRST_READ_WAIT)
            return
        try:
            self._apply(*self._load())
        except _Unavailable as err:
            log.warning("registry CAs not re-read; the ones in force stay", extra={"error": str(err)})
            with self._lock:
                self._next_read = self.clock() + self.retry
        finally:
            with self._lock:
                self._reading = False
            self._first_read.set()

    def _apply(self, per_host: dict[str, str], insecure: frozenset[str]) -> None:
        with self._lock:
            self._next_read = self.clock() + self.ttl
            if insecure != self.insecure_registries:
                log.info("insecure registries updated", extra={"registries": sorted(insecure)})
                self.insecure_registries = insecure
            if per_host == self._applied:
                return
            try:
                self.registry.trust = self.base.with_per_host(per_host)
            except ValueError as err:  # a malformed PEM: keep the CAs in force, say which entry is wrong
                log.warning("additionalTrustedCA not applied", extra={"error": str(err)})
            else:
                log.info("registry CAs updated", extra={"registries": sorted(per_host)})
            self._applied = per_host

    def _load(self) -> tuple[dict[str, str], frozenset[str]]:
        """additionalTrustedCA, then the internal registry's service CA: what node-ca gives the nodes;
        and ``registrySources.insecureRegistries``: what CRI-O is told it may ask without TLS."""
        per_host = self._configmap_cas(*INTERNAL_REGISTRY_CAS)
        spec = self._get(IMAGE_CONFIGS, "cluster", None).get("spec") or {}
        name = (spec.get("additionalTrustedCA") or {}).get("name")
        if isinstance(name, str) and name:
            named = self._configmap_cas(OPENSHIFT_CONFIG, name)
            if not named:
                log.warning("additionalTrustedCA names a ConfigMap that is missing or empty",
                            extra={"configMap": f"{OPENSHIFT_CONFIG}/{name}"})
            per_host.update(named)
        insecure = (spec.get("registrySources") or {}).get("insecureRegistries") or ()
        return per_host, frozenset(r for r in insecure if isinstance(r, str) and r)

    def _get(self, resource: Any, name: str, namespace: str | None) -> Mapping[str, Any]:
        """The object, or {} when it does not exist (not OpenShift); _Unavailable on any other failure."""
        try:
            found = self.client.get(resource, name, namespace)
        except ApiError as err:
            if err.status == 404:
                return {}
            raise _Unavailable(f"{resource} {namespace + '/' if namespace else ''}{name}: {err}") from None
        return found if isinstance(found, Mapping) else {}

    def _configmap_cas(self, namespace: str, name: str) -> dict[str, str]:
        data = self._get(CONFIGMAPS, name, namespace).get("data") or {}
        return {TrustStore.host_from_configmap_key(k): v for k, v in data.items() if isinstance(v, str) and v.strip()}


@dataclass(frozen=True)
class RegistryAccess:
    """The registry side of the operator: one client, and the credentials, CAs and mirrors it uses
    to ask registries what the Builds and nodes would see."""

    client: RegistryClient
    secrets: PullSecrets
    trust: ClusterTrust
    mirrors: MirrorWatch
    global_pull_secret: tuple[str, str] | None

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


    @classmethod
    def create(cls, client: KubeClient, options: RegistryOptions, mirrors: MirrorWatch,
               metrics: RegistryMetrics) -> RegistryAccess:
        base_trust = TrustStore(ca_paths=options.ca_paths)
        base_auth = AuthConfig.from_file(options.auth_file) if options.auth_file else AuthConfig.EMPTY
        registry = RegistryClient(base_trust, base_auth, timeout=options.timeout, attempts=options.attempts,
                                  metrics=metrics)
        return cls(registry, PullSecrets(client, base_auth), ClusterTrust(client, registry, base_trust), mirrors,
                   options.global_pull_secret)

    def checker(self, options: RegistryOptions, metrics: RegistryMetrics) -> RegistryChecker:
        """The image and DTK checks, asking as the Builds and nodes would (these credentials, CAs, mirrors)."""
        return RegistryChecker(self.client, mirrors=self.mirrors.policy, auth_for=self.image_auth,
                               dtk_auth_for=self.dtk_auth, ttl=options.cache_ttl,
                               unreachable_hold=max(30.0, options.retry_after * 1.5),
                               insecure_registries=lambda: self.trust.insecure_registries, metrics=metrics)
