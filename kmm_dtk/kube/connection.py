"""One pooled HTTPS connection to the API server: TLS, proxy, auth headers; nothing about Kubernetes
objects. Built from :class:`~kmm_dtk.kube.kubeconfig.ConnectionSettings`; shared by every thread.

urllib3's own retries and redirects are off: a retried watch would hide a dead connection, and every
caller owns its retries. Transport failures are turned into one plain sentence (:func:`describe`)
instead of urllib3's reprs.
"""

from __future__ import annotations

import errno
import logging
import re
import ssl
import threading
import warnings
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode, urlsplit

import urllib3

from kmm_dtk.kube.kubeconfig import ConnectionSettings

USER_AGENT = "kmm-dtk"
log = logging.getLogger(__name__)


class Connection:
    """The pool and the credential; ``open`` sends one request and returns the unread response."""

    def __init__(self, settings: ConnectionSettings, pool_size: int = 16) -> None:
        self.settings = settings
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self._cert: tuple[bytes, bytes] | None = None
        self._pool = self._make_pool(None)
        if settings.insecure:  # said once, in the log, instead of urllib3's warning on every request
            log.warning("the API server's certificate is not verified (insecure-skip-tls-verify)",
                        extra={"server": settings.server, "source": settings.source})
            hostname = urlsplit(settings.server).hostname or ""
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning,
                                    message=f".*'{re.escape(hostname)}'")

    @property
    def host(self) -> str:
        return self.settings.server

    @property
    def namespace(self) -> str | None:
        return self.settings.namespace

    def _make_pool(self, client_cert: tuple[bytes, bytes] | None) -> urllib3.PoolManager:
        settings = self.settings
        context = settings.ssl_context(client_cert)
        options: dict[str, object] = {"num_pools": 4, "maxsize": self.pool_size, "block": False,
                                      "retries": False, "ssl_context": context}
        if settings.tls_server_name:
            options["server_hostname"] = settings.tls_server_name
            options["assert_hostname"] = settings.tls_server_name
        if settings.insecure:
            options["cert_reqs"] = ssl.CERT_NONE
            options["assert_hostname"] = False
        if settings.proxy_url:
            return urllib3.ProxyManager(settings.proxy_url, **options)  # type: ignore[arg-type]
        return urllib3.PoolManager(**options)  # type: ignore[arg-type]

    def _auth(self) -> tuple[urllib3.PoolManager, dict[str, str]]:
        credential = self.settings.credential
        if credential is None:
            return self._pool, {}
        headers = credential.headers()
        cert = credential.client_cert()
        with self._lock:
            if cert is not None and cert is not self._cert:  # an exec plugin's new certificate
                self._pool, self._cert = self._make_pool(cert), cert
            return self._pool, headers

    def url(self, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
        return self.host + path + (f"?{urlencode(query)}" if query else "")

    def open(self, method: str, path: str, query: Sequence[tuple[str, str]] = (), body: bytes | None = None,
             headers: Mapping[str, str] | None = None,
             timeout: tuple[float, float] = (5.0, 30.0)) -> urllib3.BaseHTTPResponse:
        """Send one request; the response body is not read yet (``preload_content=False``).
        Raises urllib3/OS errors (see :func:`describe`) and CredentialError."""
        pool, auth = self._auth()
        sent = {"User-Agent": USER_AGENT, **(headers or {}), **auth}
        return pool.request(method, self.url(path, query), body=body, headers=sent,
                            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                            preload_content=False, redirect=False, retries=False)

    def refresh(self) -> bool:
        """After a 401: a new credential now (re-read token file, re-run exec plugin); True if
        the request may be worth sending again."""
        credential = self.settings.credential
        return credential.refresh() if credential is not None else False

    def close(self) -> None:
        self._pool.clear()


def describe(err: BaseException, url: str, timeout: tuple[float, float]) -> str:
    """One sentence for a transport failure, without library internals."""
    target = _origin(url)
    if isinstance(err, urllib3.exceptions.NameResolutionError):
        return f"cannot connect to {target}: the host name does not resolve"
    if isinstance(err, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError subclass in urllib3 2
        return f"cannot connect to {target}: {_cause(err)}"
    if isinstance(err, urllib3.exceptions.ConnectTimeoutError) or (
            isinstance(err, urllib3.exceptions.MaxRetryError)
            and isinstance(err.reason, urllib3.exceptions.ConnectTimeoutError)):
        return f"timed out after {_seconds(timeout[0])} s connecting to {target}"
    if isinstance(err, urllib3.exceptions.ReadTimeoutError):
        return f"timed out after {_seconds(timeout[1])} s waiting for {target}"
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        return describe(err.reason, url, timeout)
    if isinstance(err, urllib3.exceptions.ProxyError):
        return f"cannot connect to {target} through the proxy: {_cause(err)}"
    if isinstance(err, urllib3.exceptions.SSLError):
        return f"TLS with {target} failed: {_cause(err)}"
    if isinstance(err, urllib3.exceptions.ProtocolError):
        return f"connection to {target} lost: {_cause(err)}"
    if isinstance(err, TimeoutError):
        return f"timed out talking to {target}"
    return f"request to {target} failed: {_cause(err)}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url


def _seconds(value: float) -> str:
    return f"{value:g}"


def _cause(err: BaseException) -> str:
    """The innermost OS or TLS error, in words."""
    seen: BaseException | None = err
    innermost: BaseException = err
    for _ in range(8):
        if seen is None:
            break
        innermost = seen
        if isinstance(seen, ssl.SSLError):
            verify = getattr(seen, "verify_message", None)
            if verify:
                return f"certificate verify failed: {verify}"
            return str(seen.reason or "handshake failed").lower().replace("_", " ")
        if isinstance(seen, OSError) and seen.errno is not None:
            if seen.errno == errno.ECONNREFUSED:
                return "connection refused"
            return (seen.strerror or errno.errorcode.get(seen.errno, "error")).lower()
        nxt = getattr(seen, "reason", None)
        seen = nxt if isinstance(nxt, BaseException) else (seen.__cause__ or seen.__context__)
    if isinstance(innermost, urllib3.exceptions.ProtocolError) and innermost.args:
        first = innermost.args[0]
        return str(first).lower() if isinstance(first, str) else "connection closed"
    text = str(innermost)
    if " object at 0x" in text or not text:
        return type(innermost).__name__
    return text.split(": ", 1)[-1].lower() if text.startswith("<") else text.lower()
