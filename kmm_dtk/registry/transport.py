"""One HTTP exchange with a registry host: the right pool and TLS context, a timeout, redirects followed
(registries send blobs to storage with a 307), and every failure turned into a short, secret-free reason
marked retryable or not. Retrying and authentication are the client's business, not this module's."""

from __future__ import annotations

import http
import logging
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import urllib3
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from kmm_dtk.registry.bounded import LRU
from kmm_dtk.registry.tls import TLSPolicy, TrustStore

if TYPE_CHECKING:
    from urllib3._base_connection import BaseHTTPConnection  # the type urllib3 declares the hook with

log = logging.getLogger(__name__)

_REDIRECTS = (301, 302, 303, 307, 308)
CONNECT_TIMEOUT = 5.0  # a registry that cannot even accept a connection in 5 s is not there
_MAX_REDIRECTS = 5


class Transient(Exception):
    """A failure worth another try: timeouts, refused or broken connections, 5xx, 429."""

    def __init__(self, reason: str, kind: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # for metrics: "timeout", "connect", "dns", ...


class Final(Exception):
    """A failure another try will not fix now: TLS, 401/403, other 4xx, malformed answers."""

    def __init__(self, reason: str, kind: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def safe_url(url: str) -> str:
    """The URL without user info and query: storage redirects carry signatures in the query."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def status_text(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _tls_reason(err: BaseException) -> str:
    seen: set[int] = set()
    stack: list[BaseException] = [err]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {current.verify_message}"
        if isinstance(current, ssl.SSLError) and current.reason:
            return str(current.reason).lower().replace("_", " ")
        stack.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return str(err)


class _UnverifiedHTTPSConnectionPool(HTTPSConnectionPool):
    """For ``insecureSkipTLSVerify`` registries: the user asked for it and we log it once per host;
    urllib3's per-request warning would only repeat that."""

    def _validate_conn(self, conn: BaseHTTPConnection) -> None:
        HTTPConnectionPool._validate_conn(self, conn)
        if conn.is_closed:
            conn.connect()


class Transport:
    """Connection pools: a pool manager per HTTPS host and TLS setting, one for plain HTTP (urllib3
    keeps its 8 most recent hosts' pools), each pool up to 4 connections. At most ``max_managers`` (64
    by default) are kept: Modules may name any number of hosts, so the least recently used is closed
    when another one is needed."""

    def __init__(self, trust: TrustStore, timeout: float, user_agent: str, metrics: Any = None,
                 max_managers: int = 64) -> None:
        self.trust = trust
        self.metrics = metrics  # RegistryMetrics, or None
        self.timeout = timeout
        self.user_agent = user_agent
        self._lock = threading.Lock()
        self._managers: LRU[tuple[str, str, bool], urllib3.PoolManager] = LRU(max_managers)

    def _manager(self, scheme: str, host: str, skip_verify: bool) -> urllib3.PoolManager:
        key = (scheme, host.lower() if scheme == "https" else "", skip_verify and scheme == "https")
        evicted: list[urllib3.PoolManager] = []
        with self._lock:
            manager = self._managers.get(key)
            if manager is None:
                if scheme == "https":
                    manager = urllib3.PoolManager(num_pools=4, maxsize=4, retries=False,
                                                  ssl_context=self.trust.ssl_context(host, skip_verify))
                    if skip_verify:
                        manager.pool_classes_by_scheme = {"http": HTTPConnectionPool,
                                                          "https": _UnverifiedHTTPSConnectionPool}
                        log.warning("TLS certificate verification disabled for a registry",
                                    extra={"registry": host})
                else:
                    manager = urllib3.PoolManager(num_pools=8, maxsize=4, retries=False)
                evicted = [old for _, old in self._managers.put(key, manager)]
        for old in evicted:  # a request in flight on it finishes; its connection is then closed
            old.clear()
        return manager

    def pool_keys(self) -> list[tuple[str, str, bool]]:
        """(scheme, host, unverified) of the pools kept, least recently used first."""
        with self._lock:
            return self._managers.keys()

    def close(self) -> None:
        with self._lock:
            managers = self._managers.values()
            self._managers.clear()
        for manager in managers:
            manager.clear()

    def set_trust(self, trust: TrustStore) -> None:
        """New CAs: pools keep the TLS context they were made with, so they are dropped (a request in
        flight finishes on its old connection)."""
        with self._lock:
            self.trust = trust
            managers = self._managers.values()
            self._managers.clear()
        for manager in managers:
            manager.clear()

    def send(self, method: str, url: str, headers: dict[str, str], tls: TLSPolicy) -> urllib3.BaseHTTPResponse:
        """The response after redirects, body unread (the caller reads and releases it).

        The Authorization header stays with the host it was meant for: presigned storage URLs reject
        it, and it must not leak to a third party.
        """
        headers = {"User-Agent": self.user_agent, **headers}
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            response = self._once(method, url, parts.scheme, parts.netloc.rpartition("@")[2], headers, tls)
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or not location:
                return response
            response.drain_conn()
            response.release_conn()
            target = urljoin(url, location)
            target_parts = urlsplit(target)
            if target_parts.scheme == "http" and parts.scheme == "https" and not tls.insecure:
                raise Final(f"{safe_url(url)} redirected to plain HTTP ({safe_url(target)}): refused")
            if target_parts.netloc != parts.netloc:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if response.status == 303:
                method = "GET"
            log.debug("registry redirect", extra={"url": safe_url(url), "location": safe_url(target),
                                                  "status": response.status})
            url = target
        raise Final(f"more than {_MAX_REDIRECTS} redirects from {safe_url(url)}")

    def _once(self, method: str, url: str, scheme: str, host: str, headers: dict[str, str],
              tls: TLSPolicy) -> urllib3.BaseHTTPResponse:
        started = time.monotonic()
        outcome = "error"
        try:
            response = self._exchange(method, url, scheme, host, headers, tls)
            outcome = str(response.status)
            return response
        except (Transient, Final) as err:
            outcome = err.kind
            raise
        finally:
            if self.metrics is not None:
                self.metrics.observe_request(host, method, outcome, time.monotonic() - started)

    def _exchange(self, method: str, url: str, scheme: str, host: str, headers: dict[str, str],
                  tls: TLSPolicy) -> urllib3.BaseHTTPResponse:
        manager = self._manager(scheme, host, tls.skip_verify)
        where = safe_url(url)
        try:
            response = manager.request(method, url, headers=headers, redirect=False, retries=False,
                                       preload_content=False, decode_content=False,
                                       timeout=urllib3.Timeout(connect=min(self.timeout, CONNECT_TIMEOUT),
                                                               read=self.timeout))
        except SSLError as err:
            raise Final(f"TLS: {_tls_reason(err)} ({where})", "tls") from None
        except NameResolutionError:
            raise Transient(f"cannot resolve host {urlsplit(url).hostname} ({where})", "dns") from None
        except NewConnectionError as err:  # before ConnectTimeoutError: urllib3 derives it from that
            cause = err.__cause__ or err.__context__
            detail = getattr(cause, "strerror", None) or str(cause or err).rpartition(": ")[2]
            raise Transient(f"cannot connect to {host}: {detail} ({where})", "connect") from None
        except ConnectTimeoutError:
            raise Transient(f"timed out after {min(self.timeout, CONNECT_TIMEOUT):g}s connecting to {where}",
                            "timeout") from None
        except ReadTimeoutError:
            raise Transient(f"timed out after {self.timeout:g}s waiting for {where}", "timeout") from None
        except ProtocolError as err:
            cause = err.args[1] if len(err.args) > 1 else err
            raise Transient(f"connection to {host} broken: {_describe(cause)} ({where})") from None
        except HTTPError as err:
            raise Transient(f"HTTP error talking to {where}: {type(err).__name__}") from None
        log.debug("registry request", extra={"method": method, "url": where, "status": response.status})
        return response


def _describe(err: object) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err)
    return text if len(text) < 200 else text[:200] + "..."
