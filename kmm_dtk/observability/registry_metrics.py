"""What the operator asks registries, and what it concluded: the numbers an administrator of a
disconnected cluster needs to see a mirror that stopped answering or a pull secret that stopped
working, without reading logs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RegistryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "kmm_dtk_registry_requests_total",
            "HTTP requests to image registries by registry host, method and outcome (HTTP status, or "
            "timeout, connect, dns, tls, error)", ["registry", "method", "outcome"], registry=registry)
        self.latency = Histogram("kmm_dtk_registry_request_duration_seconds",
                                 "Time to the response headers of a registry request", ["registry"],
                                 buckets=_BUCKETS, registry=registry)
        self.image_checks = Counter(
            "kmm_dtk_image_checks_total",
            "Driver image checks by result (Current, Outdated, Foreign, Missing, Unknown) and whether the "
            "answer came from the cache", ["result", "cached"], registry=registry)
        self.dtk_checks = Counter("kmm_dtk_dtk_checks_total",
                                  "DTK kernel checks by result (Matches, Mismatch, Unverified, Unknown)",
                                  ["result"], registry=registry)

    def observe_request(self, registry: str, method: str, outcome: str, seconds: float) -> None:
        self.requests.labels(registry, method, outcome).inc()
        self.latency.labels(registry).observe(seconds)

    def observe_image_check(self, result: str, cached: bool) -> None:
        self.image_checks.labels(result, "true" if cached else "false").inc()

    def observe_dtk_check(self, result: str) -> None:
        self.dtk_checks.labels(result).inc()
