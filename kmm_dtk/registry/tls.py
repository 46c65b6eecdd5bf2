"""Whom to trust when talking TLS to a registry: the system CAs, extra bundles for every registry, and
per-registry CAs (OpenShift's ``image.config.openshift.io/cluster`` ``additionalTrustedCA``)."""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PEM_SUFFIXES = (".crt", ".pem", ".cert")


@dataclass(frozen=True)
class TLSPolicy:
    insecure: bool = False  # plain HTTP (KMM registryTLS.insecure)
    skip_verify: bool = False  # HTTPS without verification (registryTLS.insecureSkipTLSVerify)

    @property
    def verified(self) -> bool:
        """HTTPS with the certificate verified: the only link anyone's credentials may take unless
        they were named for a weakened one (see ``kmm_dtk.registry.client.LinkAuth``)."""
        return not (self.insecure or self.skip_verify)


def _check_pem(pem: str, what: str) -> str:
    """Fail early, naming the source, rather than on the first connection."""
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError(f"{what}: no PEM certificate in it")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError) as err:
        raise ValueError(f"{what}: not a valid PEM CA bundle ({getattr(err, 'reason', None) or err})") from None
    return pem


def _read_pem(path: Path) -> str:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"CA file {path}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    return _check_pem(text, f"CA file {path}")


def _load_paths(paths: Sequence[str | os.PathLike]) -> list[str]:
    pems: list[str] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _PEM_SUFFIXES)
            pems.extend(_read_pem(p) for p in files)
        else:
            pems.append(_read_pem(path))
    return pems


def _split_host(host: str) -> str:
    """``reg:5000`` -> ``reg``; ``[::1]:5000`` -> ``[::1]``."""
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class TrustStore:
    """System CAs + extra bundles for every registry + per-registry CAs (additionalTrustedCA, keyed
    "host" or "host:port"; the ConfigMap spells the port "host..5000").

    A per-registry CA keyed ``host:port`` applies to that port only; one keyed ``host`` to every port
    of the host that has no entry of its own.
    """

    def __init__(self, ca_paths: Sequence[str | os.PathLike] = (), ca_pems: Sequence[str] = (),
                 per_host: Mapping[str, str] = {}) -> None:
        self._extra: tuple[str, ...] = tuple(_load_paths(ca_paths)) + tuple(
            _check_pem(pem, f"CA bundle #{i + 1}") for i, pem in enumerate(ca_pems))
        self._per_host: dict[str, str] = {}
        for key, pem in per_host.items():
            host = self.host_from_configmap_key(key)
            self._per_host[host] = _check_pem(pem, f"CA for registry {host}")
        self._lock = threading.Lock()
        # Keyed by the per-registry CA in force (None: none), not by host: hosts without a CA of their
        # own share one context, so there are at most len(per_host) + 2 whatever the hosts asked.
        self._contexts: dict[tuple[str | None, bool], ssl.SSLContext] = {}

    @staticmethod
    def host_from_configmap_key(key: str) -> str:
        """ConfigMap keys cannot hold ':': ``reg.example.com..5000`` -> ``reg.example.com:5000``."""
        key = key.strip().lower()
        host, sep, port = key.rpartition("..")
        return f"{host}:{port}" if sep and port.isdigit() else key

    def _per_host_pem(self, host: str) -> str | None:
        host = host.lower()
        return self._per_host.get(host) or self._per_host.get(_split_host(host))

    def ssl_context(self, host: str, skip_verify: bool = False) -> ssl.SSLContext:
        key = (None, True) if skip_verify else (self._per_host_pem(host), False)
        with self._lock:
            context = self._contexts.get(key)
            if context is None:
                context = self._contexts[key] = self._build(key[0], skip_verify)
            return context

    def context_count(self) -> int:
        with self._lock:
            return len(self._contexts)

    def _build(self, pem: str | None, skip_verify: bool) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        for extra in self._extra:
            context.load_verify_locations(cadata=extra)
        if pem:
            context.load_verify_locations(cadata=pem)
        return context

    def with_per_host(self, per_host: Mapping[str, str]) -> TrustStore:
        """The same store with these per-registry CAs added (they win over existing ones)."""
        clone = TrustStore.__new__(TrustStore)
        clone._extra = self._extra
        clone._per_host = dict(self._per_host)
        for key, pem in per_host.items():
            host = self.host_from_configmap_key(key)
            clone._per_host[host] = _check_pem(pem, f"CA for registry {host}")
        clone._lock = threading.Lock()
        clone._contexts = {}
        return clone

    def __repr__(self) -> str:
        return f"TrustStore(extra_bundles={len(self._extra)}, per_host={sorted(self._per_host)!r})"
