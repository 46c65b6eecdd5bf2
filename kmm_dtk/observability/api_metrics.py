"""Requests to the Kubernetes API by verb, resource and status code (client-go's
``rest_client_requests_total`` split by what the request did, so LIST and WATCH are told apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def classify(method: str, path: str, watch: bool) -> tuple[str, str]:
    """(verb, resource) for a request: LIST and WATCH are GETs of a collection."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    # /api/v1[/namespaces/NS]/RESOURCE[/NAME[/SUB]]  or  /apis/GROUP/VERSION[/namespaces/NS]/RESOURCE[...]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
        rest = rest[2:]
    resource = rest[0] if rest else "?"
    named = len(rest) >= 2
    if len(rest) >= 3:
        resource = f"{rest[0]}/{rest[2]}"
    verbs = {"POST": "CREATE", "PUT": "UPDATE", "PATCH": "PATCH", "DELETE": "DELETE"}
    if method == "GET":
        verb = "GET" if named else ("WATCH" if watch else "LIST")
    else:
        verb = verbs.get(method, method)
    return verb, resource


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("kmm_dtk_api_requests_total", "Kubernetes API requests by verb, resource and code",
                                ["verb", "resource", "code"], registry=registry)
        self.latency = Histogram("kmm_dtk_api_request_duration_seconds",
                                 "Time to the response headers of a Kubernetes API request",
                                 ["verb"], buckets=_BUCKETS, registry=registry)

    def observe(self, method: str, path: str, watch: bool, code: int, seconds: float) -> None:
        verb, resource = classify(method, path, watch)
        self.requests.labels(verb, resource, str(code)).inc()
        self.latency.labels(verb).observe(seconds)
