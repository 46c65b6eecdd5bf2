"""Who the operator is to the API server, for credentials that change while it runs.

A bound ServiceAccount token rotates on disk (client-go re-reads it about once a minute); an exec
plugin's token expires. Each credential gives the headers (and, for an exec plugin, perhaps a client
certificate) for the next request, and ``refresh()`` forces a new one after a 401. Thread-safe.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)

TOKEN_REREAD_SECONDS = 60.0
EXEC_TIMEOUT_SECONDS = 60.0
MAX_TOKEN_BYTES = 1 << 20
MAX_EXEC_OUTPUT = 4 << 20


class CredentialError(Exception):
    """A credential could not be produced (token file unreadable, exec plugin failed); one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class Credential(Protocol):
    def headers(self) -> dict[str, str]:
        """The headers for the next request (may run a plugin or re-read a file)."""

    def client_cert(self) -> tuple[bytes, bytes] | None:
        """A PEM (certificate, key) the credential supplies, if any; asked right after headers()."""

    def refresh(self) -> bool:
        """After a 401: get a fresh credential now; True if it may differ from the one just refused."""


class StaticHeader:
    """A credential that never changes: a bearer token or a username and password."""

    def __init__(self, authorization: str) -> None:
        self._headers = {"Authorization": authorization}

    def headers(self) -> dict[str, str]:
        return self._headers

    def client_cert(self) -> tuple[bytes, bytes] | None:
        return None

    def refresh(self) -> bool:
        return False


def StaticToken(token: str) -> StaticHeader:  # noqa: N802 - reads as the credential it makes
    return StaticHeader(f"Bearer {token.strip()}")


def BasicAuth(username: str, password: str) -> StaticHeader:  # noqa: N802 - as StaticToken
    return StaticHeader("Basic " + base64.b64encode(f"{username}:{password}".encode()).decode())


class TokenFile:
    """A bearer token read from a file, re-read when older than ``reread`` seconds or on a 401.
    A failed re-read keeps the last token (the kubelet replaces the file atomically, but a
    transient error must not take the operator down); the first read must succeed."""

    def __init__(self, path: str, reread: float = TOKEN_REREAD_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._reread = reread
        self._clock = clock
        self._lock = threading.Lock()
        self._token = self._load()
        self._read_at = clock()

    def _load(self) -> str:
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_TOKEN_BYTES + 1)
        except OSError as err:
            raise CredentialError(f"cannot read {self.path} ({(err.strerror or str(err)).lower()})") from None
        token = data.decode("utf-8", "replace").strip()
        if not token or len(data) > MAX_TOKEN_BYTES:
            raise CredentialError(f"{self.path} holds no token")
        return token

    def _update(self) -> bool:
        try:
            token = self._load()
        except CredentialError as err:
            log.warning("token file not re-read, keeping the last token", extra={"error": str(err)})
            self._read_at = self._clock()
            return False
        changed, self._token, self._read_at = token != self._token, token, self._clock()
        return changed

    def headers(self) -> dict[str, str]:
        with self._lock:
            if self._clock() - self._read_at >= self._reread:
                self._update()
            return {"Authorization": f"Bearer {self._token}"}

    def client_cert(self) -> tuple[bytes, bytes] | None:
        return None

    def refresh(self) -> bool:
        with self._lock:
            return self._update()


class ExecPlugin:
    """A client.authentication.k8s.io exec plugin: run it, cache its ExecCredential until
    ``status.expirationTimestamp`` (or a 401), take ``status.token`` or its client certificate."""

    def __init__(self, api_version: str, argv: list[str], env: Mapping[str, str], *,
                 cluster: Mapping[str, Any] | None = None, what: str = "exec plugin",
                 clock: Callable[[], float] = time.time) -> None:
        self.api_version = api_version
        self.argv = argv
        self.env = dict(env)
        self.cluster = cluster
        self.what = what
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._cert: tuple[bytes, bytes] | None = None
        self._expires: float | None = None
        self._have = False

    def _exec_info(self) -> str:
        spec: dict[str, Any] = {"interactive": False}
        if self.cluster is not None:
            spec["cluster"] = dict(self.cluster)
        return json.dumps({"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec})

    def _run(self) -> None:
        from kmm_dtk.core.untrusted import UntrustedInputError, load_json

        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": self._exec_info()}
        try:
            done = subprocess.run(self.argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=EXEC_TIMEOUT_SECONDS, check=False)
        except FileNotFoundError:
            raise CredentialError(f"{self.what} was not found") from None
        except subprocess.TimeoutExpired:
            raise CredentialError(f"{self.what} gave no credential within {EXEC_TIMEOUT_SECONDS:.0f} s") from None
        except OSError as err:
            raise CredentialError(f"{self.what} cannot run ({(err.strerror or str(err)).lower()})") from None
        if done.returncode != 0:
            last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no error output"])[-1]
            raise CredentialError(f"{self.what} failed (exit {done.returncode}): {last[:300]}")
        if len(done.stdout) > MAX_EXEC_OUTPUT:
            raise CredentialError(f"{self.what} printed more than {MAX_EXEC_OUTPUT} bytes")
        try:
            credential = load_json(done.stdout, what=self.what)
        except UntrustedInputError as err:
            raise CredentialError(f"{err} (expected an ExecCredential)") from None
        self._accept(credential)

    def _accept(self, credential: Any) -> None:
        if not isinstance(credential, Mapping) or credential.get("kind") != "ExecCredential":
            raise CredentialError(f"{self.what} did not print an ExecCredential")
        if credential.get("apiVersion") != self.api_version:
            raise CredentialError(f"{self.what} answered {credential.get('apiVersion')!r}, "
                                  f"not the {self.api_version!r} the kubeconfig asked for")
        status = credential.get("status")
        if not isinstance(status, Mapping):
            raise CredentialError(f"{self.what} printed an ExecCredential without status")
        token, cert, key = status.get("token"), status.get("clientCertificateData"), status.get("clientKeyData")
        if not (isinstance(token, str) and token) and not (isinstance(cert, str) and isinstance(key, str)
                                                             and cert and key):
            raise CredentialError(f"{self.what} gave neither status.token nor "
                                  "status.clientCertificateData with status.clientKeyData")
        expires = status.get("expirationTimestamp")
        when: float | None = None
        if expires is not None:
            try:
                stamp = datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
                when = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
            except ValueError:
                raise CredentialError(f"{self.what}: status.expirationTimestamp {expires!r} is not "
                                      "an RFC 3339 time") from None
        self._token = token if isinstance(token, str) and token else None
        self._cert = (cert.encode(), key.encode()) if isinstance(cert, str) and isinstance(key, str) and cert else None
        self._expires = when
        self._have = True

    def _current(self) -> None:
        if not self._have or (self._expires is not None and self._clock() >= self._expires):
            self._run()

    def headers(self) -> dict[str, str]:
        with self._lock:
            self._current()
            return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def client_cert(self) -> tuple[bytes, bytes] | None:
        with self._lock:  # the one headers() just obtained: one run per request
            return self._cert

    def refresh(self) -> bool:
        with self._lock:
            self._run()
            return True
