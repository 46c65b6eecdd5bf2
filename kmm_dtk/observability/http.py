"""The metrics endpoint and the health probes, each on its own port.

``/healthz`` answers whether the process can make progress (its threads are alive): failing it
makes the kubelet restart the pod. ``/readyz`` answers whether the caches have synced; it also
reports, without failing on it, whether this replica leads. ``?verbose`` lists every check, as
kube-apiserver's probes do.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

Check = Callable[[], bool]


def parse_bind_address(address: str) -> tuple[str, int]:
    """':8080' -> ('0.0.0.0', 8080); '127.0.0.1:0' -> a free loopback port."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bind address {address!r}: expected [HOST]:PORT, e.g. :8080")
    return (host.strip("[]") or "0.0.0.0", int(port))


@dataclass
class Checks:
    """Named checks; informational ones are reported but never fail the probe."""

    required: dict[str, Check] = field(default_factory=dict)
    informational: dict[str, Callable[[], str]] = field(default_factory=dict)

    def run(self) -> tuple[bool, list[str]]:
        ok, lines = True, []
        for name, check in self.required.items():
            try:
                passed = bool(check())
            except Exception:  # noqa: BLE001 - a broken check is a failed check
                log.exception("health check raised", extra={"check": name})
                passed = False
            ok &= passed
            lines.append(f"[{'+' if passed else '-'}]{name} {'ok' if passed else 'failed'}")
        for name, describe in self.informational.items():
            try:
                lines.append(f"[i]{name} {describe()}")
            except Exception:  # noqa: BLE001
                lines.append(f"[i]{name} unknown")
        return ok, lines


class EndpointServer:
    """A small threaded HTTP server; ``routes`` map a path to a handler returning (status, type, body)."""

    def __init__(self, address: str, routes: dict[str, Callable[[dict[str, list[str]]], tuple[int, str, bytes]]]):
        self.routes = routes
        host, port = parse_bind_address(address)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                url = urlsplit(self.path)
                route = server.routes.get(url.path)
                if route is None:
                    status, ctype, body = 404, "text/plain; charset=utf-8", b"not found\n"
                else:
                    status, ctype, body = route(parse_qs(url.query, keep_blank_values=True))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("http " + fmt, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"http-{port}", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> "EndpointServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def metrics_server(address: str, registry: CollectorRegistry) -> EndpointServer:
    def metrics(_query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)

    return EndpointServer(address, {"/metrics": metrics})


def health_server(address: str, liveness: Checks, readiness: Checks) -> EndpointServer:
    def probe(checks: Checks) -> Callable[[dict[str, list[str]]], tuple[int, str, bytes]]:
        def handle(query: dict[str, list[str]]) -> tuple[int, str, bytes]:
            ok, lines = checks.run()
            verbose = "verbose" in query or not ok
            text = "\n".join(lines) + f"\n{'ok' if ok else 'failed'}\n" if verbose else "ok\n"
            return (200 if ok else 500), "text/plain; charset=utf-8", text.encode()
        return handle

    return EndpointServer(address, {"/healthz": probe(liveness), "/readyz": probe(readiness)})
