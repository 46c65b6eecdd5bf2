"""The registry HTTP API (distribution spec v2) as the operator needs it: does a manifest exist, fetch it,
fetch a blob. Answers are three-valued: a 404 is MISSING, a manifest is PRESENT, and everything else
(refusals, timeouts, TLS, 5xx after retries) is UNKNOWN, so an unreachable or unfriendly registry can
never pass for an empty one. Content fetched by digest is checked against the digest."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlencode, urlsplit

import urllib3
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from urllib3.exceptions import HTTPError

from kmm_dtk import __version__
from kmm_dtk.core.untrusted import Limits, UntrustedInputError, load_json
from kmm_dtk.registry.auth import AuthConfig, Credential
from kmm_dtk.registry.challenge import AuthorizationCache, parse_challenges
from kmm_dtk.registry.reference import ImageRef
from kmm_dtk.registry.tls import TLSPolicy, TrustStore
from kmm_dtk.registry.transport import Final, Transient, Transport, safe_url, status_text

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
_MAX_MANIFEST = 4 << 20
_MAX_TOKEN_RESPONSE = 1 << 20
# What registries send, read with kmm_dtk.core.untrusted's bounds (sizes are capped as they are read).
_MANIFEST_JSON = Limits(max_bytes=_MAX_MANIFEST)
_SMALL_JSON = Limits(max_bytes=_MAX_TOKEN_RESPONSE)
_DEFAULT_TOKEN_TTL = 60.0
_ANONYMOUS = "anonymous"
_API_HOSTS = {"docker.io": "registry-1.docker.io"}


class Presence(str, Enum):
    PRESENT = "present"
    MISSING = "missing"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Manifest:
    presence: Presence
    ref: ImageRef  # the reference asked (a mirror's, when a mirror was asked)
    digest: str | None = None  # Docker-Content-Digest, or the digest of the body
    media_type: str | None = None
    body: bytes | None = None  # only from get_manifest
    reason: str = ""  # why MISSING / UNKNOWN
    unreachable: bool = False  # UNKNOWN because the registry did not answer (timeouts, refused, 5xx)


class RegistryError(Exception):
    """No definite answer (the UNKNOWN of blob reads and the like); ``str()`` is the reason.
    ``unreachable``: the registry did not answer at all (retries exhausted), as opposed to refusing."""

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable


class BlobMissing(RegistryError):
    """The registry answered 404 for a blob."""


def _digest_hasher(digest: str):
    algorithm, _, expected = digest.partition(":")
    if algorithm not in ("sha256", "sha512") or not expected:
        raise RegistryError(f"unsupported digest {digest!r}")
    return hashlib.new(algorithm), expected


def _error_code(body: bytes) -> str | None:
    """The first ``errors[].code`` of a distribution-spec error body."""
    try:
        errors = load_json(body, what="error body", limits=_SMALL_JSON).get("errors") or []
        code = errors[0].get("code")
        return code if isinstance(code, str) and code.isupper() and len(code) < 64 else None
    except (UntrustedInputError, AttributeError, IndexError, TypeError, KeyError):
        return None


def _read_limited(response: urllib3.BaseHTTPResponse, limit: int, where: str) -> bytes:
    try:
        data = response.read(limit + 1, decode_content=False)
    except HTTPError as err:
        raise Transient(f"reading {where} failed: {type(err).__name__}") from None
    finally:
        response.release_conn()
    if len(data) > limit:
        raise Final(f"{where} is larger than {limit} bytes")
    return data


class _VerifyingReader(io.RawIOBase):
    """A blob's body, streamed; raises RegistryError at the end if the bytes do not match the digest."""

    def __init__(self, response: urllib3.BaseHTTPResponse, digest: str, where: str, limit: int | None) -> None:
        self._response = response
        self._hasher, self._expected = _digest_hasher(digest)
        self._digest = digest
        self._where = where
        self._limit = limit
        self._count = 0
        self.verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.verified:
            return 0
        view = memoryview(buffer)
        try:
            chunk = self._response.read(len(view), decode_content=False)
        except HTTPError as err:
            raise RegistryError(f"reading {self._where} failed: {type(err).__name__}") from None
        if not chunk:
            self._finish()
            return 0
        self._count += len(chunk)
        if self._limit is not None and self._count > self._limit:
            raise RegistryError(f"{self._where} is larger than {self._limit} bytes")
        self._hasher.update(chunk)
        view[: len(chunk)] = chunk
        return len(chunk)

    def _finish(self) -> None:
        actual = self._hasher.hexdigest()
        if actual != self._expected:
            raise RegistryError(f"blob from {self._where} does not match its digest {self._digest} "
                                f"(got {self._digest.partition(':')[0]}:{actual})")
        self.verified = True

    def close(self) -> None:
        if not self.closed:
            if not self.verified:
                self._response.close()  # partly read: the connection cannot be reused
            self._response.release_conn()
        super().close()


@dataclass(frozen=True)
class LinkAuth:
    """Credentials sorted by the links they may take. Over verified TLS, ``verified`` (everything a
    Build or node would use: a Module's secret, the builder's pull secrets, the auth file, the
    cluster's global pull secret). Over plain HTTP or unverified TLS, where anyone on the path can
    read or impersonate the registry, only ``weakened``: the credentials whoever weakened the link
    named for it (a Module's own ``imageRepoSecret`` for the link its ``registryTLS`` weakened).

    A plain AuthConfig given to the client is ``LinkAuth(config)``: nothing over a weakened link
    unless a caller says so here, so no caller can send credentials there by mistake.
    """

    verified: AuthConfig
    weakened: AuthConfig = AuthConfig.EMPTY

    def for_link(self, tls: TLSPolicy) -> AuthConfig:
        return self.verified if tls.verified else self.weakened


class RegistryClient:
    """Thread-safe; one per process is enough. Connections are pooled per registry and TLS setting,
    Authorization headers cached per registry, scope and credential.

    ``auth=None`` in a call uses the client's AuthConfig; an AuthConfig or LinkAuth passed in replaces
    it for that call. Over plain HTTP or unverified TLS only a LinkAuth's ``weakened`` credentials are
    sent, never anything else (the request goes anonymously).
    """

    def __init__(self, trust: TrustStore | None = None, auth: AuthConfig | LinkAuth | None = None, *,
                 timeout: float = 10.0, attempts: int = 3, backoff: float = 0.5, max_backoff: float = 5.0,
                 user_agent: str = f"kmm-dtk/{__version__}", metrics: Any = None) -> None:
        self._trust = trust or TrustStore()
        self.auth: AuthConfig | LinkAuth = auth or AuthConfig.EMPTY
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._transport = Transport(self._trust, timeout, user_agent, metrics)
        self._authorizations = AuthorizationCache()

    @property
    def trust(self) -> TrustStore:
        return self._trust

    @trust.setter
    def trust(self, trust: TrustStore) -> None:
        """The cluster's CAs changed (additionalTrustedCA): new connections use the new store."""
        self._trust = trust
        self._transport.set_trust(trust)

    # -- the API -----------------------------------------------------------------------------------

    def head_manifest(self, ref: ImageRef, *, auth: AuthConfig | LinkAuth | None = None,
                      tls: TLSPolicy = TLSPolicy()) -> Manifest:
        return self._manifest("HEAD", ref, auth, tls)

    def get_manifest(self, ref: ImageRef, *, auth: AuthConfig | LinkAuth | None = None,
                      tls: TLSPolicy = TLSPolicy()) -> Manifest:
        return self._manifest("GET", ref, auth, tls)

    def get_blob(self, ref: ImageRef, digest: str, *, auth: AuthConfig | LinkAuth | None = None,
                 tls: TLSPolicy = TLSPolicy(), max_bytes: int = 64 << 20) -> bytes:
        with self._open_blob(ref, digest, auth, tls, max_bytes) as stream:
            return stream.read()

    def open_blob(self, ref: ImageRef, digest: str, *, auth: AuthConfig | LinkAuth | None = None,
                  tls: TLSPolicy = TLSPolicy()) -> contextlib.AbstractContextManager[BinaryIO]:
        """The blob as a stream, for layers; the digest is checked when the stream reaches its end
        (a mismatch raises RegistryError from ``read``)."""
        return self._open_blob(ref, digest, auth, tls, None)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- manifests and blobs -----------------------------------------------------------------------

    def _manifest(self, method: str, ref: ImageRef, auth: AuthConfig | LinkAuth | None, tls: TLSPolicy) -> Manifest:
        url = f"{self._base(ref, tls)}/v2/{ref.repository}/manifests/{ref.reference}"
        try:
            response = self._request(method, url, ref, auth, tls, {"Accept": _ACCEPT})
            if response.status == 404:
                body = _read_limited_quiet(response)  # only for its error code: a 404 is a 404
                reason = f"404 {_error_code(body) or 'Not Found'} from {safe_url(url)}"
                log.debug("manifest missing", extra={"image": str(ref), "reason": reason})
                return Manifest(Presence.MISSING, ref, reason=reason)
            media_type = (response.headers.get("Content-Type") or "").partition(";")[0].strip() or None
            header_digest = response.headers.get("Docker-Content-Digest")
            if method == "HEAD":
                response.release_conn()
                return Manifest(Presence.PRESENT, ref, header_digest or ref.digest, media_type)
            body = _read_limited(response, _MAX_MANIFEST, f"manifest {safe_url(url)}")
        except RegistryError as err:
            log.debug("manifest unknown", extra={"image": str(ref), "reason": err.reason})
            return Manifest(Presence.UNKNOWN, ref, reason=err.reason, unreachable=err.unreachable)
        except (Transient, Final) as err:  # a read after the retried part
            return Manifest(Presence.UNKNOWN, ref, reason=err.reason)
        algorithm = ref.digest.partition(":")[0] if ref.digest else "sha256"
        if algorithm not in ("sha256", "sha512"):
            return Manifest(Presence.UNKNOWN, ref, reason=f"unsupported digest {ref.digest!r}")
        digest = f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"
        if ref.digest and digest != ref.digest:
            reason = f"manifest from {safe_url(url)} does not match its digest (got {digest})"
            return Manifest(Presence.UNKNOWN, ref, reason=reason)
        if header_digest and header_digest != digest and not ref.digest:
            log.warning("registry's Docker-Content-Digest differs from the manifest's digest",
                        extra={"image": str(ref), "header": header_digest, "digest": digest})
        if media_type not in MANIFEST_MEDIA_TYPES:
            try:
                found = load_json(body, what=f"manifest {safe_url(url)}", limits=_MANIFEST_JSON).get("mediaType")
                media_type = found if isinstance(found, str) and found else media_type
            except (UntrustedInputError, AttributeError):
                pass  # the manifest's readers say what is wrong with it
        return Manifest(Presence.PRESENT, ref, digest, media_type, body)

    @contextlib.contextmanager
    def _open_blob(self, ref: ImageRef, digest: str, auth: AuthConfig | LinkAuth | None, tls: TLSPolicy,
                   limit: int | None) -> Iterator[BinaryIO]:
        _digest_hasher(digest)
        url = f"{self._base(ref, tls)}/v2/{ref.repository}/blobs/{digest}"
        response = self._request("GET", url, ref, auth, tls, {})
        if response.status == 404:
            body = _read_limited_quiet(response)
            raise BlobMissing(f"404 {_error_code(body) or 'Not Found'} from {safe_url(url)}")
        length = response.headers.get("Content-Length")
        if limit is not None and length and length.isdigit() and int(length) > limit:
            response.close()
            response.release_conn()
            raise RegistryError(f"blob {safe_url(url)} is larger than {limit} bytes ({length})")
        reader = _VerifyingReader(response, digest, safe_url(url), limit)
        with io.BufferedReader(reader, 1 << 16) as stream:
            yield stream

    # -- one request, authenticated and retried ----------------------------------------------------

    @staticmethod
    def _base(ref: ImageRef, tls: TLSPolicy) -> str:
        host = _API_HOSTS.get(ref.registry, ref.registry)
        return f"{'http' if tls.insecure else 'https'}://{host}"

    def _credential(self, ref: ImageRef, auth: AuthConfig | LinkAuth | None,
                    tls: TLSPolicy) -> tuple[Credential | None, bool]:
        """(the credential this link may carry, whether one was withheld because the link is weakened)."""
        given = self.auth if auth is None else auth
        sorted_auth = given if isinstance(given, LinkAuth) else LinkAuth(given)
        credential = sorted_auth.for_link(tls).lookup(ref)
        withheld = credential is None and not tls.verified and sorted_auth.verified.lookup(ref) is not None
        if withheld:
            log.debug("credentials not sent over a weakened link", extra={"registry": ref.registry,
                                                                          "plainHTTP": tls.insecure})
        return credential, withheld

    def _request(self, method: str, url: str, ref: ImageRef, auth: AuthConfig | LinkAuth | None, tls: TLSPolicy,
                 headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
        """A 2xx or 404 response, body unread; RegistryError for anything else, after retries."""
        credential, withheld = self._credential(ref, auth, tls)

        def attempt() -> urllib3.BaseHTTPResponse:
            response = self._authorized(method, url, ref, credential, tls, headers, withheld)
            if response.status == 404 or 200 <= response.status < 300:
                return response
            body = _read_limited_quiet(response)
            reason = f"{status_text(response.status)}{_code_suffix(body)} from {safe_url(url)}"
            if response.status >= 500 or response.status == 429:
                raise Transient(reason)
            raise Final(reason)

        retrying = Retrying(stop=stop_after_attempt(self.attempts), reraise=True,
                            wait=wait_exponential(multiplier=self.backoff, max=self.max_backoff),
                            retry=retry_if_exception_type(Transient), before_sleep=self._log_retry(ref, url))
        try:
            return retrying(attempt)
        except Transient as err:
            suffix = f" (after {self.attempts} attempts)" if self.attempts > 1 else ""
            raise RegistryError(err.reason + suffix, unreachable=True) from None
        except Final as err:
            raise RegistryError(err.reason) from None

    @staticmethod
    def _log_retry(ref: ImageRef, url: str):
        def before_sleep(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            log.warning("registry request failed, retrying",
                        extra={"registry": ref.registry, "url": safe_url(url), "attempt": state.attempt_number,
                               "reason": getattr(err, "reason", str(err)),
                               "retryIn": round(state.next_action.sleep, 3) if state.next_action else None})
        return before_sleep

    def _authorized(self, method: str, url: str, ref: ImageRef, credential: Credential | None, tls: TLSPolicy,
                    headers: dict[str, str], withheld: bool = False) -> urllib3.BaseHTTPResponse:
        """Anonymous first (or with what the cache holds); on 401 answer the registry's challenge once.
        ``withheld``: credentials exist for this registry but the link may not carry them (the reasons say so)."""
        scope = f"repository:{ref.repository}:pull"
        identity = credential.identity if credential else _ANONYMOUS
        cached = self._authorizations.get(ref.registry, scope, identity)
        response = self._transport.send(method, url, {**headers, **({"Authorization": cached} if cached else {})},
                                        tls)
        if response.status != 401:
            return response
        challenges = parse_challenges(response.headers.get("WWW-Authenticate"))
        _read_limited_quiet(response)
        if cached:
            self._authorizations.forget(ref.registry, scope, identity)
        schemes = {c.scheme: c for c in challenges}
        link = "plain HTTP" if tls.insecure else "unverified TLS"
        who = ("with the configured credential" if credential else
               f"anonymously: credentials are not sent over {link}" if withheld else "anonymously")
        if "bearer" in schemes:
            header, ttl = self._bearer(schemes["bearer"].params, ref, scope, credential, tls)
            self._authorizations.put(ref.registry, scope, identity, header, ttl)
        elif "basic" in schemes:
            if credential is None and withheld:
                raise Final(f"401 Unauthorized from {safe_url(url)}: the registry wants credentials and those "
                            f"configured for {ref.name} are not sent over {link}")
            if credential is None:
                raise Final(f"401 Unauthorized from {safe_url(url)}: the registry wants credentials and "
                            f"none are configured for {ref.name}")
            token = base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode()
            header = f"Basic {token}"
            self._authorizations.put(ref.registry, None, identity, header, None)
        else:
            offered = ", ".join(sorted(schemes)) or "no challenge"
            raise Final(f"401 Unauthorized from {safe_url(url)} ({offered}; tried {who})")
        response = self._transport.send(method, url, {**headers, "Authorization": header}, tls)
        if response.status in (401, 403):
            body = _read_limited_quiet(response)
            self._authorizations.forget(ref.registry, scope, identity)
            raise Final(f"{status_text(response.status)}{_code_suffix(body)} from {safe_url(url)} "
                        f"(authenticated {who})")
        return response

    def _bearer(self, params: dict[str, str], ref: ImageRef, scope: str, credential: Credential | None,
                tls: TLSPolicy) -> tuple[str, float]:
        """A token from the realm the registry named (docker token auth); (header, seconds it is good for)."""
        realm = params.get("realm")
        if not realm or urlsplit(realm).scheme not in ("http", "https"):
            raise Final(f"registry {ref.registry} sent a Bearer challenge without a usable realm")
        if urlsplit(realm).scheme == "http" and credential is not None and not tls.insecure:
            raise Final(f"token realm {safe_url(realm)} is plain HTTP: credentials not sent")
        query = {"scope": scope, **({"service": params["service"]} if params.get("service") else {})}
        url = f"{realm}{'&' if '?' in realm else '?'}{urlencode(query)}"
        headers = {"Accept": "application/json"}
        if credential is not None:
            basic = base64.b64encode(f"{credential.username}:{credential.password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        realm_tls = TLSPolicy(insecure=urlsplit(realm).scheme == "http", skip_verify=tls.skip_verify)
        response = self._transport.send("GET", url, headers, realm_tls)
        where = f"token endpoint {safe_url(realm)}"
        if response.status != 200:
            body = _read_limited_quiet(response)
            reason = f"{status_text(response.status)}{_code_suffix(body)} from {where} " \
                     f"({'with the configured credential' if credential else 'anonymously'})"
            raise (Transient if response.status >= 500 or response.status == 429 else Final)(reason)
        try:
            answer = load_json(_read_limited(response, _MAX_TOKEN_RESPONSE, where), what=where, limits=_SMALL_JSON)
            token = answer.get("token") or answer.get("access_token")
            ttl = float(answer.get("expires_in") or _DEFAULT_TOKEN_TTL)
        except (UntrustedInputError, ValueError, AttributeError, TypeError, OverflowError):
            raise Final(f"{where} answered something other than a token") from None
        if not isinstance(token, str) or not token:
            raise Final(f"{where} answered without a token")
        if not math.isfinite(ttl) or ttl <= 0:
            ttl = _DEFAULT_TOKEN_TTL  # "expires_in": 1e999 or -5 is no lifetime to plan with
        log.debug("registry token obtained", extra={"registry": ref.registry, "scope": scope, "expiresIn": ttl})
        # Renew a little early: a token that expires in flight costs a 401 and a retry.
        return f"Bearer {token}", max(ttl - min(10.0, ttl / 4), 1.0)


def _read_limited_quiet(response: urllib3.BaseHTTPResponse) -> bytes:
    """An error body, for its code; whatever fails here is not the interesting failure."""
    try:
        return response.read(64 << 10, decode_content=False) or b""
    except HTTPError:
        return b""
    finally:
        response.release_conn()


def _code_suffix(body: bytes) -> str:
    code = _error_code(body)
    return f" ({code})" if code else ""
