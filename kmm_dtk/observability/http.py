"""The metrics endpoint and the health probes, each on its own port.

``/metrics`` is served over plain HTTP (a local run, the benchmark) or, secure, over HTTPS with
every request authenticated and authorized by a ``guard`` (the API server's TokenReview and
SubjectAccessReview, wired by the operator), as controller-runtime's secure metrics server does.

``/healthz`` answers whether the process can make progress (its threads are alive): failing it
makes the kubelet restart the pod. ``/readyz`` answers whether the caches have synced; it also
reports, without failing on it, whether this replica leads. ``?verbose`` lists every check, as
kube-apiserver's probes do.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics, generate_latest

from kmm_dtk.observability.serving_cert import ServingCert

log = logging.getLogger(__name__)

Check = Callable[[], bool]
# (Authorization header or None, URL path, HTTP method) -> (HTTP status, message): 200 lets the request through.
Guard = Callable[["str | None", str, str], tuple[int, str]]
Route = Callable[[dict[str, list[str]]], tuple[int, str, bytes]]
HANDSHAKE_TIMEOUT = 10.0  # seconds a client gets to finish the TLS handshake, on its handler's thread
IDLE_TIMEOUT = 30.0  # seconds a connection may sit between requests


class BindAddressError(ValueError):
    """A bind address that cannot be listened on; the message is one line: the address and the problem."""


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
# Where the host has no IPv6 at all, "every interface" falls back to IPv4's.
_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}


def parse_bind_address(address: str) -> tuple[str, int]:
    """``[HOST]:PORT`` -> (host, port): ``:8080`` -> ('', 8080), every interface; ``[::1]:9090`` ->
    ('::1', 9090); ``127.0.0.1:0`` a free loopback port; a hostname is resolved when bound."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit():
        raise BindAddressError(f"bind address {address!r}: expected [HOST]:PORT, e.g. :8080 or [::1]:8080")
    if int(port) > 65535:
        raise BindAddressError(f"bind address {address!r}: port {int(port)} is out of range (0-65535)")
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1])), int(port)
        except ValueError:
            raise BindAddressError(f"bind address {address!r}: {host} is not an IPv6 address") from None
    if ":" in host or "[" in host or "]" in host:
        raise BindAddressError(f"bind address {address!r}: an IPv6 address goes in brackets, e.g. [::1]:{port}")
    if host and not _HOSTNAME.fullmatch(host):
        raise BindAddressError(f"bind address {address!r}: {host!r} is not an IP address or host name")
    return host, int(port)


def _listening(family: int, sockaddr: tuple, dual_stack: bool = False) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does: TIME_WAIT is no conflict
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_address(address: str) -> socket.socket:
    """A listening socket for ``address``. ``:PORT`` and ``[::]:PORT`` listen on every interface, IPv4
    and IPv6 (one socket with IPV6_V6ONLY off), or IPv4's only where the host has no IPv6; ``[::1]``
    IPv6 only; a host name its first address. BindAddressError names the problem (syntax, port range,
    unknown host, address in use, permission denied)."""
    host, port = parse_bind_address(address)
    try:
        if host in ("", "::"):
            if socket.has_ipv6:
                try:
                    return _listening(socket.AF_INET6, ("::", port), dual_stack=True)
                except OSError as err:
                    if err.errno not in _NO_IPV6:
                        raise
                    log.info("no IPv6 on this host: listening on IPv4 only", extra={"address": address})
            return _listening(socket.AF_INET, ("0.0.0.0", port))
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                           flags=socket.AI_PASSIVE)[0]
        except (socket.gaierror, UnicodeError):
            raise BindAddressError(f"bind address {address!r}: cannot resolve host {host!r}") from None
        return _listening(family, sockaddr)
    except OSError as err:
        detail = (err.strerror or str(err)).lower()
        if err.errno == errno.EACCES and port < 1024:
            detail += f" (port {port} needs privileges)"
        raise BindAddressError(f"bind address {address!r}: {detail}") from None


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer on a socket bound by ``bind_address`` (IPv6 and dual stack included; the
    stock server only binds IPv4 addresses)."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, handler: type[BaseHTTPRequestHandler],
                 tls: ServingCert | None = None) -> None:
        self.address_family = sock.family
        super().__init__(sock.getsockname(), handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])
        self.tls = tls

    def get_request(self) -> tuple[socket.socket, object]:
        """Wrap each connection in the current certificate's context; the handshake itself happens on
        the handler's thread (``finish_request``), so a slow client never holds up accepting others."""
        sock, address = self.socket.accept()
        if self.tls is None:
            return sock, address
        try:
            return self.tls.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address
        except (OSError, ssl.SSLError):
            sock.close()
            raise

    def finish_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: object) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(HANDSHAKE_TIMEOUT)
            try:
                request.do_handshake()
            except (OSError, ssl.SSLError) as err:  # plain HTTP on the TLS port, a scanner, a timeout
                log.debug("TLS handshake failed", extra={"client": str(client_address), "error": str(err)})
                return
        super().finish_request(request, client_address)


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
            except Exception:  # a broken check is a failed check
                log.exception("health check raised", extra={"check": name})
                passed = False
            ok &= passed
            lines.append(f"[{'+' if passed else '-'}]{name} {'ok' if passed else 'failed'}")
        for name, describe in self.informational.items():
            try:
                lines.append(f"[i]{name} {describe()}")
            except Exception:  # noqa: BLE001 - an informational line never fails the probe
                lines.append(f"[i]{name} unknown")
        return ok, lines


class EndpointServer:
    """A small threaded HTTP server; ``routes`` map a path to a handler returning (status, type, body)."""

    def __init__(self, address: str, routes: dict[str, Route], *, tls: ServingCert | None = None,
                 guard: Guard | None = None):
        """``tls`` serves HTTPS; ``guard`` decides every request before its route runs."""
        self.routes = routes
        sock = bind_address(address)
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = IDLE_TIMEOUT

            def do_GET(self) -> None:  # http.server's naming
                url = urlsplit(self.path)
                route = server.routes.get(url.path)
                verdict = (200, "") if guard is None or route is None else guard(
                    self.headers.get("Authorization"), url.path, self.command)
                if verdict[0] != 200:
                    status, ctype, body = verdict[0], "text/plain; charset=utf-8", f"{verdict[1]}\n".encode()
                elif route is None:
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

        self._httpd = _Server(sock, Handler, tls)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"http-{self.port}", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> EndpointServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def metrics_server(address: str, registry: CollectorRegistry, *, tls: ServingCert | None = None,
                   guard: Guard | None = None) -> EndpointServer:
    """``/metrics`` of ``registry``; with ``tls`` and ``guard``, controller-runtime's secure serving."""
    disable_created_metrics()  # process-wide: no *_created series, as controller-runtime exports none

    def metrics(_query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(registry)

    return EndpointServer(address, {"/metrics": metrics}, tls=tls, guard=guard)


def health_server(address: str, liveness: Checks, readiness: Checks) -> EndpointServer:
    def probe(checks: Checks) -> Callable[[dict[str, list[str]]], tuple[int, str, bytes]]:
        def handle(query: dict[str, list[str]]) -> tuple[int, str, bytes]:
            ok, lines = checks.run()
            verbose = "verbose" in query or not ok
            text = "\n".join(lines) + f"\n{'ok' if ok else 'failed'}\n" if verbose else "ok\n"
            return (200 if ok else 500), "text/plain; charset=utf-8", text.encode()
        return handle

    return EndpointServer(address, {"/healthz": probe(liveness), "/readyz": probe(readiness)})
