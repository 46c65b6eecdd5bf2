"""A docker token-auth server for the test registry (the ``Bearer realm=...`` flow).

It checks Basic credentials and issues ES256 JWTs whose ``x5c`` header carries the signing certificate;
the registry trusts the test CA that issued it (``auth.token.rootcertbundle``). Anonymous requests get a
token with no access, as public token servers do, so the registry itself refuses them. Every request is
recorded, so tests can count how often a client came for a token.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.support.pki import issue


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenRequest:
    scope: str | None
    service: str | None
    username: str | None  # None: anonymous
    status: int


class TokenServer:
    def __init__(self, workdir: Path, ca_cert: Path, ca_key: Path, *, username: str, password: str,
                 service: str, issuer: str, expires_in: int = 300, tls: bool = True) -> None:
        self.workdir = workdir
        self.username = username
        self.password = password
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.tls = tls
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        signer_cert, signer_key = issue(workdir, ca_cert, ca_key, "token-signer", "kmm-dtk test token signer",
                                        client=True)
        self._key = serialization.load_pem_private_key(signer_key.read_bytes(), password=None)
        self._x5c = base64.b64encode(
            x509.load_pem_x509_certificate(signer_cert.read_bytes()).public_bytes(serialization.Encoding.DER)).decode()
        self._serving = issue(workdir, ca_cert, ca_key, "token-server", "token-server",
                              server_names=("127.0.0.1", "localhost")) if tls else None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- tokens ------------------------------------------------------------------------------------

    def mint(self, access: list[tuple[str, list[str]]], subject: str = "") -> str:
        """A signed token granting ``actions`` on each repository in ``access``."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + self.expires_in,
            "nbf": now - 60, "iat": now, "jti": uuid.uuid4().hex,
            "access": [{"type": "repository", "name": repo, "actions": actions} for repo, actions in access],
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def count(self, scope: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if scope is None or r.scope == scope)

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    # -- the HTTP side -----------------------------------------------------------------------------

    @property
    def realm(self) -> str:
        assert self._server is not None
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._server.server_address[1]}/token"

    def _who(self, header: str | None) -> tuple[bool, str | None]:
        """(acceptable, username): no header is an acceptable anonymous request."""
        if not header:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            username, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False, None
        return (username == self.username and password == self.password), username

    def start(self) -> TokenServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                scope = query.get("scope", [None])[0]
                service = query.get("service", [None])[0]
                ok, username = owner._who(self.headers.get("Authorization"))
                if parts.path != "/token" or not ok:
                    status = 404 if parts.path != "/token" else 401
                    owner._record(TokenRequest(scope, service, username, status))
                    self._reply(status, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    return
                access = []
                if username is not None and scope and scope.startswith("repository:"):
                    _, repo, actions = scope.split(":", 2)
                    access.append((repo, actions.split(",")))
                token = owner.mint(access, subject=username or "")
                owner._record(TokenRequest(scope, service, username, 200))
                self._reply(200, {"token": token, "access_token": token, "expires_in": owner.expires_in})

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # quiet: requests are recorded instead
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self._serving is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self._serving[0]), str(self._serving[1]))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="token-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
