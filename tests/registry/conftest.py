"""Fixtures for the registry client tests: clients wired to the session's test registries."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator

import pytest

from kmm_dtk.registry.auth import AuthConfig
from kmm_dtk.registry.client import RegistryClient
from kmm_dtk.registry.tls import TLSPolicy, TrustStore
from tests.support.registry import RegistryServer

FAST = {"timeout": 5.0, "attempts": 3, "backoff": 0.001, "max_backoff": 0.01}


def repo(prefix: str = "kmm") -> str:
    """A repository of its own for each test, so tests share a registry without sharing state."""
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def policy(server: RegistryServer) -> TLSPolicy:
    return TLSPolicy(insecure=not server.tls)


def server_auth(server: RegistryServer, password: str | None = None) -> AuthConfig:
    data = server.auth_json()
    if password is not None:
        data["auths"][server.host]["auth"] = base64.b64encode(f"{server.username}:{password}".encode()).decode()
    return AuthConfig.from_json(data, f"auth for {server.host}")


def server_trust(server: RegistryServer) -> TrustStore:
    return TrustStore(ca_paths=[server.ca_file] if server.ca_file else [])


@pytest.fixture
def make_client() -> Iterator[Callable[..., RegistryClient]]:
    """``make_client(server)``: a fast-retrying client trusting the server's CA and holding its credentials;
    ``trust=``/``auth=`` replace those, other keywords go to RegistryClient."""
    made: list[RegistryClient] = []

    def make(server: RegistryServer | None = None, **kwargs) -> RegistryClient:
        options = {**FAST, **kwargs}
        if "trust" not in options:
            options["trust"] = server_trust(server) if server else TrustStore()
        if "auth" not in options:
            options["auth"] = server_auth(server) if server else AuthConfig.EMPTY
        made.append(RegistryClient(**options))
        return made[-1]

    yield make
    for client in made:
        client.close()
