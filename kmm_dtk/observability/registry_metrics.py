"""What the operator asks registries, and what it concluded: the numbers an administrator of a
disconnected cluster needs to see a mirror that stopped answering or a pull secret that stopped
working, without reading logs."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


MAX_REGISTRY_LABELS = 50
OTHER = "other"


class RegistryMetrics:
    """The ``registry`` label takes the host a Module, a mirror set or a redirect named, and tenants
    may write any number of hosts: the first ``max_registries`` hosts seen (50 by default) keep their
    name, later ones are counted as ``other``, so the series stay bounded."""

    def __init__(self, registry: CollectorRegistry, max_registries: int = MAX_REGISTRY_LABELS) -> None:
        self.max_registries = max_registries
        self._hosts: set[str] = set()
        self._lock = threading.Lock()
        self.requests = Counter(
            "kmm_dtk_registry_requests_total",
            "HTTP requests to image registries by registry host, method and outcome (HTTP status, or "
            f"timeout, connect, dns, tls, error); hosts after the first {max_registries} seen are '{OTHER}'",
            ["registry", "method", "outcome"], registry=registry)
        self.latency = Histogram("kmm_dtk_registry_request_duration_seconds",
                                 "Time to the response headers of a registry request; hosts after the first "
                                 f"{max_registries} seen are '{OTHER}'", ["registry"],
                                 buckets=_BUCKETS, registry=registry)
        self.image_checks = Counter(
            "kmm_dtk_image_checks_total",
            "Driver image checks by result (Current, Outdated, Foreign, Missing, Unknown) and whether the "
            "answer came from the cache", ["result", "cached"], registry=registry)
        self.dtk_checks = Counter("kmm_dtk_dtk_checks_total",
                                  "DTK kernel checks by result (Matches, Mismatch, Unverified, Unknown)",
                                  ["result"], registry=registry)

    def registry_label(self, host: str) -> str:
        """``host`` if it is one of the first ``max_registries`` seen, else ``other``."""
        host = host.lower()
        with self._lock:
            if host in self._hosts:
                return host
            if len(self._hosts) < self.max_registries:
                self._hosts.add(host)
                return host
        return OTHER

    def observe_request(self, registry: str, method: str, outcome: str, seconds: float) -> None:
        label = self.registry_label(registry)
        self.requests.labels(label, method, outcome).inc()
        self.latency.labels(label).observe(seconds)

    def observe_image_check(self, result: str, cached: bool) -> None:
        self.image_checks.labels(result, "true" if cached else "false").inc()

    def observe_dtk_check(self, result: str) -> None:
        self.dtk_checks.labels(result).inc()
