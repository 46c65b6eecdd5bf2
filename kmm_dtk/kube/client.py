"""Raw JSON access to any Kubernetes resource over the operator's own connection.

Nothing here deserialises into typed models (the ``kubernetes`` package's cost seconds per thousand
objects and ~60 MiB just to import): responses are parsed as JSON, or by the caller's decoder.
Kubeconfig and in-cluster loading are :mod:`kmm_dtk.kube.kubeconfig`; TLS, pooling and auth headers
:mod:`kmm_dtk.kube.connection`.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import urllib3

from kmm_dtk.kube.connection import Connection, describe
from kmm_dtk.kube.credentials import CredentialError
from kmm_dtk.kube.kubeconfig import KubeConfigError, load_settings

if TYPE_CHECKING:
    from kmm_dtk.kube.fence import WriteFence

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds: no request may hang forever


@dataclass(frozen=True)
class Resource:
    """A resource by group/version/plural: core (group ""), built-in groups, CRDs or OpenShift APIs."""

    group: str
    version: str
    plural: str
    namespaced: bool = True
    kind: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


class ApiError(Exception):
    """A failed API call: HTTP status (0 for transport errors), the Status reason and message."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def expired(self) -> bool:
        """The resourceVersion is too old (410 Gone / Expired) or too new: relist."""
        return (self.status == 410 or self.reason in ("Expired", "Gone")
                or "too large resource version" in self.message.lower())

    @classmethod
    def from_status(cls, status: Mapping[str, Any], retry_after: float | None = None) -> ApiError:
        found = status.get("details")
        details: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        hint = details.get("retryAfterSeconds")
        return cls(int(status.get("code") or 0), str(status.get("reason") or ""), str(status.get("message") or ""),
                   retry_after if retry_after is not None else (float(hint) if hint else None))

    @classmethod
    def from_response(cls, status: int, reason: str, headers: Mapping[str, str], data: bytes) -> ApiError:
        """An error response: its Status body if it has one, Retry-After from the header first."""
        retry_after = None
        if headers.get("Retry-After"):
            try:
                retry_after = float(headers["Retry-After"])
            except ValueError:
                retry_after = None
        try:
            body = json.loads(data) if data else {}
        except ValueError:
            body = {}
        if isinstance(body, dict) and body.get("kind") == "Status":
            return cls.from_status({**body, "code": status or body.get("code")}, retry_after)
        text = data[:1024].decode("utf-8", "replace").strip()
        return cls(status, reason, " ".join(text.split()) or reason, retry_after)

    @classmethod
    def from_exception(cls, err: Exception) -> ApiError:
        return cls(0, type(err).__name__, str(err))


class FencedWrite(ApiError):
    """A write the fence refused (:mod:`kmm_dtk.kube.fence`): this replica does not lead, or is
    shutting down. Nothing was sent. An ApiError (status 0) so that callers treating transport
    failures as "not done" need no change; controllers do not retry it."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(0, "Fenced", f"{what}: not sent, this replica is {reason}")


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def load_api_client(kubeconfig: str | None = None, context: str | None = None,
                    pool_size: int = 16) -> Connection:
    """In-cluster config inside a pod (unless a kubeconfig is named), else the kubeconfig
    (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``). One connection, shared by all threads;
    its pool holds ``pool_size`` connections per host (watches + workers). KubeConfigError (one
    line) when the configuration cannot be used."""
    settings = load_settings(kubeconfig, context)
    return Connection(settings, pool_size=pool_size)


__all__ = ["ApiError", "Connection", "FencedWrite", "KubeClient", "KubeConfigError", "Resource", "WatchStream",
           "load_api_client"]


class KubeClient:
    """JSON in, JSON out, for any :class:`Resource`. Thread-safe: one instance for the process.

    After a 401 with a credential that can change (a token file, an exec plugin) the credential
    is refreshed and a read is sent once more; a write is not re-sent (its caller decides, and the
    fence's budget covers one attempt), but its next attempt carries the new credential."""

    def __init__(self, api_client: Connection, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 metrics: Any = None, fence: WriteFence | None = None) -> None:
        self.api_client = api_client  # the shared connection (pool and credential)
        self.timeout = timeout
        self.metrics = metrics  # an ApiMetrics-like object with observe(method, path, watch, code, seconds)
        self.fence = fence  # every write asks it first; None: this client writes freely (the Lease's own)

    def fenced(self, fence: WriteFence) -> KubeClient:
        """The same connection pool and metrics, with every write going through ``fence``."""
        clone = copy.copy(self)
        clone.fence = fence
        return clone

    @property
    def host(self) -> str:
        return self.api_client.host

    def _call(self, method: str, path: str, query: Mapping[str, Any] | None = None, body: Any = None,
              content_type: str | None = None, timeout: tuple[float, float] | None = None,
              accept: str | None = None) -> urllib3.BaseHTTPResponse:
        headers = {"Accept": accept or "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
        params = [(k, _query_value(v)) for k, v in (query or {}).items() if v is not None and v != ""]
        watch = (query or {}).get("watch") == "true"
        timeout = timeout or self.timeout
        for attempt in (1, 2):
            started, code = time.monotonic(), 0
            try:
                response = self.api_client.open(method, path, params, data, headers, timeout)
                code = response.status
            except (urllib3.exceptions.HTTPError, OSError) as err:
                raise ApiError(0, "Transport", describe(err, self.api_client.url(path), timeout)) from None
            except CredentialError as err:
                raise ApiError(0, "Credential", str(err)) from None
            finally:
                if self.metrics is not None:
                    self.metrics.observe(method, path, watch, code, time.monotonic() - started)
            if code < 400:
                return response
            try:
                error = ApiError.from_response(code, response.reason or "", response.headers, response.data)
            finally:
                response.release_conn()
            if code == 401 and attempt == 1 and self._refreshed() and method not in WRITE_METHODS:
                log.info("credential refreshed after 401, sending again", extra={"method": method, "path": path})
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    def _refreshed(self) -> bool:
        try:
            return self.api_client.refresh()
        except CredentialError as err:
            log.warning("credential not refreshed after 401", extra={"error": str(err)})
            return False

    @contextmanager
    def _granted(self, method: str, path: str,
                 timeout: tuple[float, float] | None) -> Iterator[tuple[float, float] | None]:
        """For a write: hold the fence's grant (or raise FencedWrite) and cut the timeouts to its
        budget; for a read: nothing."""
        if self.fence is None or method not in WRITE_METHODS:
            yield timeout
            return
        with self.fence.write(f"{method} {path}") as budget:
            if budget is not None:  # connect and read together end within the budget
                connect, read = timeout or self.timeout
                timeout = (min(connect, budget / 2), min(read, budget / 2))
            yield timeout

    def request(self, method: str, path: str, query: Mapping[str, Any] | None = None, body: Any = None,
                content_type: str | None = None, timeout: tuple[float, float] | None = None,
                accept: str | None = None) -> Any:
        """``accept`` overrides the Accept header, e.g. to ask for PartialObjectMetadata."""
        with self._granted(method, path, timeout) as timeout:
            response = self._call(method, path, query, body, content_type, timeout, accept)
            try:
                data = response.data
            finally:
                response.release_conn()
        return json.loads(data) if data else None

    def request_raw(self, method: str, path: str, query: Mapping[str, Any] | None = None,
                    timeout: tuple[float, float] | None = None, accept: str | None = None) -> bytes:
        """The body as bytes, for callers with their own decoder (e.g. a msgspec projection)."""
        with self._granted(method, path, timeout) as timeout:
            response = self._call(method, path, query, timeout=timeout, accept=accept)
            try:
                return response.data
            finally:
                response.release_conn()

    def watch(self, path: str, query: Mapping[str, Any],
              timeout: tuple[float, float] | None = None, accept: str | None = None) -> WatchStream:
        """Open a watch; the read timeout doubles as the inactivity watchdog."""
        timeout = timeout or self.timeout
        return WatchStream(self._call("GET", path, {**query, "watch": "true"}, timeout=timeout, accept=accept),
                           self.api_client.url(path), timeout)

    # -- conveniences --------------------------------------------------------------------------

    def get(self, resource: Resource, name: str, namespace: str | None = None,
            subresource: str | None = None) -> dict[str, Any]:
        return cast("dict[str, Any]", self.request("GET", resource.path(namespace, name, subresource)))

    def list(self, resource: Resource, namespace: str | None = None, **query: Any) -> dict[str, Any]:
        return cast("dict[str, Any]", self.request("GET", resource.path(namespace), query))

    def create(self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        return cast("dict[str, Any]", self.request("POST", resource.path(namespace), body=body))

    def replace(self, resource: Resource, body: Mapping[str, Any], namespace: str | None = None,
                subresource: str | None = None) -> dict[str, Any]:
        return cast("dict[str, Any]",
                    self.request("PUT", resource.path(namespace, body["metadata"]["name"], subresource), body=body))

    def patch(self, resource: Resource, name: str, patch: Any, namespace: str | None = None,
              subresource: str | None = None, patch_type: str = "application/merge-patch+json") -> dict[str, Any]:
        return cast("dict[str, Any]", self.request("PATCH", resource.path(namespace, name, subresource), body=patch,
                                                   content_type=patch_type))

    def delete(self, resource: Resource, name: str, namespace: str | None = None,
               body: Mapping[str, Any] | None = None) -> None:
        self.request("DELETE", resource.path(namespace, name), body=body)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class WatchStream:
    """One open watch response: iterate ``lines()``; ``abort()`` from another thread ends it now."""

    def __init__(self, response: urllib3.BaseHTTPResponse, url: str = "",
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self._response = response
        self._url = url
        self._timeout = timeout
        self._aborted = False

    def lines(self) -> Iterator[bytes]:
        pending = b""
        try:
            for chunk in self._response.stream(64 * 1024, decode_content=True):
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    if line.strip():
                        yield line
            if pending.strip():
                yield pending
        except (urllib3.exceptions.HTTPError, OSError, AttributeError, ValueError) as err:
            if self._aborted:
                return
            raise ApiError(0, "Transport", describe(err, self._url, self._timeout)) from None
        finally:
            self.close()

    def abort(self) -> None:
        """Unblock a reader stuck in recv(): shut the socket down under it."""
        self._aborted = True
        connection = getattr(self._response, "connection", None) or getattr(self._response, "_connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        """Close the connection before handing it back: the pool is shared, and a watch's
        connection still holds the stream's unread bytes."""
        try:
            self._response.close()
            self._response.release_conn()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail in many ways
            pass
