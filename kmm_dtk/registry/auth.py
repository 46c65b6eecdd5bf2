"""Pull credentials from the files and Secrets clusters keep them in.

Reads containers ``auth.json``, docker ``config.json``, ``kubernetes.io/dockerconfigjson`` and the older
``kubernetes.io/dockercfg`` shape. Lookups follow containers-auth.json: the most specific key wins
(``host/ns/repo``, then ``host/ns``, then ``host``). No message, log line or repr ever carries a secret:
errors name the source (a file path or ``Secret ns/name``) and the entry, never its value. The JSON
is read with the bounds of ``kmm_dtk.core.untrusted`` (``AUTH_LIMITS``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kmm_dtk.core.untrusted import Limits, UntrustedInputError, load_json
from kmm_dtk.registry.reference import DEFAULT_REGISTRY, ImageRef

log = logging.getLogger(__name__)

_DOCKER_HOSTS = ("index.docker.io", "registry-1.docker.io")
# A cluster's global pull secret is a few KB and a Secret at most 1 MiB; nothing here nests deeply.
AUTH_LIMITS = Limits(max_bytes=4 << 20, max_depth=32)
_SECRET_KEYS = {"kubernetes.io/dockerconfigjson": ".dockerconfigjson", "kubernetes.io/dockercfg": ".dockercfg"}


class AuthConfigError(ValueError):
    """Unusable credentials; names the source and the problem, never the secret."""


@dataclass(frozen=True)
class Credential:
    username: str
    password: str = field(repr=False)

    @property
    def identity(self) -> str:
        """A stable, non-reversible key for caches (tokens are per credential)."""
        return hashlib.sha256(f"{self.username}\0{self.password}".encode()).hexdigest()[:16]


def normalize_key(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``quay.io/ns/`` -> ``quay.io/ns``."""
    key = key.strip()
    for scheme in ("https://", "http://"):
        if key.lower().startswith(scheme):
            key = key[len(scheme):]
            break
    for suffix in ("/v1/", "/v2/", "/v1", "/v2"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
            break
    key = key.rstrip("/")
    host, sep, path = key.partition("/")
    host = host.lower()
    if host in _DOCKER_HOSTS:
        host = DEFAULT_REGISTRY
    return host + sep + path


def _decode_entry(entry: Any, key: str, source: str) -> Credential | None:
    if not isinstance(entry, Mapping):
        raise AuthConfigError(f"{source}: entry {key!r} is not an object")
    encoded = entry.get("auth")
    if encoded:
        if not isinstance(encoded, str):
            raise AuthConfigError(f"{source}: entry {key!r}: 'auth' is not a string")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthConfigError(f"{source}: entry {key!r}: 'auth' is not base64 of 'user:password'") from None
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            raise AuthConfigError(f"{source}: entry {key!r}: 'auth' does not hold 'user:password'")
        return Credential(username, password)
    user, secret = entry.get("username"), entry.get("password")
    if user or secret:
        if not isinstance(user, str) or not isinstance(secret, str) or not user:
            raise AuthConfigError(f"{source}: entry {key!r}: needs both 'username' and 'password' as strings")
        return Credential(user, secret)
    return None  # e.g. {} left by a credential helper, or an identitytoken only: nothing usable here


class AuthConfig:
    """containers auth.json / docker config.json / kubernetes.io/dockerconfigjson ``.dockerconfigjson``
    (``{"auths": {KEY: {"auth": base64("user:pass")} | {"username", "password"}}}``), and the older
    kubernetes.io/dockercfg shape (the map without ``"auths"``)."""

    EMPTY: ClassVar[AuthConfig]

    def __init__(self, entries: Mapping[str, Credential] | None = None, sources: tuple[str, ...] = (),
                 problems: tuple[str, ...] = ()) -> None:
        self._entries: dict[str, Credential] = dict(entries or {})
        self.sources = sources
        # Sources that could not be used and were left out (an unusable pull Secret), one line each,
        # for whoever relies on this config to report; they never change what lookup answers.
        self.problems = problems

    @classmethod
    def from_json(cls, data: bytes | str | Mapping, source: str, field: str | None = None) -> AuthConfig:
        """``field``: where in ``source`` the JSON sits (a Secret's ``.dockerconfigjson``), named when
        the JSON itself is refused."""
        if isinstance(data, (bytes, bytearray, str)):
            try:
                data = load_json(data, what=f"{source}: {field}" if field else source, limits=AUTH_LIMITS)
            except UntrustedInputError as err:  # its words never quote the input
                raise AuthConfigError(str(err)) from None
        if not isinstance(data, Mapping):
            raise AuthConfigError(f"{source}: expected a JSON object")
        if "auths" in data:
            auths = data["auths"]
            if not isinstance(auths, Mapping):
                raise AuthConfigError(f"{source}: 'auths' is not an object")
        else:
            auths = data  # the dockercfg shape: the map itself
        entries: dict[str, Credential] = {}
        exact: set[str] = set()
        for raw_key, entry in auths.items():
            if not isinstance(raw_key, str) or not raw_key.strip():
                raise AuthConfigError(f"{source}: an entry has an empty registry key")
            credential = _decode_entry(entry, raw_key, source)
            if credential is None:
                continue
            key = normalize_key(raw_key)
            # "quay.io" beats "https://quay.io/v1/" when a file holds both, whatever their order.
            if key in entries and (key in exact or raw_key != key):
                continue
            entries[key] = credential
            if raw_key == key:
                exact.add(key)
        log.debug("registry credentials loaded", extra={"source": source, "registries": sorted(entries)})
        return cls(entries, (source,))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> AuthConfig:
        source = os.fspath(path)
        try:
            with open(source, "rb") as handle:
                data = handle.read(AUTH_LIMITS.max_bytes + 1)  # one byte over says "too large"
        except OSError as err:
            raise AuthConfigError(f"{source}: cannot read ({err.strerror})") from None
        return cls.from_json(data, source)

    @classmethod
    def from_secret(cls, secret: Mapping) -> AuthConfig:
        """A Secret as the API returns it (``data`` values base64), of either docker config type."""
        if not isinstance(secret, Mapping) and hasattr(secret, "to_dict"):
            secret = secret.to_dict()
        meta = secret.get("metadata") or {}
        source = f"Secret {meta.get('namespace') or '?'}/{meta.get('name') or '?'}"
        data = secret.get("data") or {}
        wanted = _SECRET_KEYS.get(secret.get("type") or "")
        keys = [wanted] if wanted else [k for k in (".dockerconfigjson", ".dockercfg") if k in data]
        if not keys or keys[0] not in data:
            expected = wanted or "'.dockerconfigjson' or '.dockercfg'"
            raise AuthConfigError(f"{source}: no {expected} key (type {secret.get('type') or 'unset'})")
        key = keys[0]
        try:
            decoded = base64.b64decode(data[key], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise AuthConfigError(f"{source}: key {key!r} is not valid base64") from None
        return cls.from_json(decoded, source, key)

    def merged(self, *others: AuthConfig) -> AuthConfig:
        """One config from several; earlier ones win on equal keys (``self`` first)."""
        entries: dict[str, Credential] = {}
        sources = list(self.sources)
        for config in reversed(others):
            entries.update(config._entries)
        entries.update(self._entries)
        for config in others:
            sources.extend(s for s in config.sources if s not in sources)
        problems = dict.fromkeys(p for config in (self, *others) for p in config.problems)
        return AuthConfig(entries, tuple(sources), tuple(problems))

    def lookup(self, ref: ImageRef) -> Credential | None:
        host = normalize_key(ref.registry)
        parts = ref.repository.split("/")
        for n in range(len(parts), -1, -1):
            key = "/".join([host, *parts[:n]])
            if key in self._entries:
                return self._entries[key]
        return None

    def keys(self) -> list[str]:
        return sorted(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuthConfig) and self._entries == other._entries

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, c.identity) for k, c in self._entries.items())))

    def __repr__(self) -> str:
        return f"AuthConfig(registries={self.keys()!r}, sources={list(self.sources)!r})"


AuthConfig.EMPTY = AuthConfig()
