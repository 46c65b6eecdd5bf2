"""Shared fixtures: one real control plane per test session, a fresh namespace per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.support.cluster import TestCluster, api_client_from, start_test_cluster
from tests.support.faultproxy import FaultProxy
from tests.support.objects import create_namespace, delete_namespace, delete_nodes, unique_name


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCluster]:
    """A real kube-apiserver + etcd (or the existing cluster named by KMM_DTK_TEST_KUBECONFIG)."""
    test_cluster = start_test_cluster(tmp_path_factory.mktemp("controlplane"))
    try:
        yield test_cluster
    finally:
        if test_cluster.controlplane is not None:
            test_cluster.controlplane.stop()


@pytest.fixture(scope="session")
def api(cluster: TestCluster) -> Iterator[client.ApiClient]:
    api_client = cluster.api_client()
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = create_namespace(api)
    try:
        yield name
    finally:
        delete_namespace(api, name)


@pytest.fixture
def new_node_name(api: client.ApiClient) -> Iterator[Callable[..., str]]:
    """Makes unique names for test Nodes (cluster-scoped) and deletes those Nodes afterwards."""
    made: list[str] = []

    def new(prefix: str = "node") -> str:
        made.append(unique_name(prefix))
        return made[-1]

    try:
        yield new
    finally:
        delete_nodes(api, made)


@pytest.fixture
def controlplane(cluster: TestCluster):
    """The control plane's processes, for tests that restart kube-apiserver or compact etcd."""
    if cluster.controlplane is None:
        pytest.skip("needs the project's own control plane (not an existing cluster)")
    return cluster.controlplane


@pytest.fixture
def fault_proxy(cluster: TestCluster) -> Iterator[FaultProxy]:
    port = int(cluster.host.rsplit(":", 1)[1])
    with FaultProxy(port) as proxy:
        yield proxy


@pytest.fixture
def proxied_api(cluster: TestCluster, fault_proxy: FaultProxy, tmp_path: Path) -> Iterator[client.ApiClient]:
    """An admin client whose every connection goes through ``fault_proxy``."""
    kubeconfig = cluster.kubeconfig_for(tmp_path / "proxied.kubeconfig", fault_proxy.url)
    api_client = api_client_from(kubeconfig)
    try:
        yield api_client
    finally:
        api_client.close()


# -- OCI registries (the docker-registry binary; `.ci/run` installs it) ------------------------------

from tests.support.registry import RegistryServer  # noqa: E402 - kept with the fixtures that use it


def _registry(tmp_path_factory: pytest.TempPathFactory, mode: str) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path_factory.mktemp(f"registry-{mode}"), mode).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """docker-registry over TLS (its CA in ``.ca_file``) with htpasswd Basic auth (``.username``/``.password``)."""
    yield from _registry(tmp_path_factory, "tls")


@pytest.fixture(scope="session")
def registry_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """docker-registry over plain HTTP, anonymous: for ``registryTLS.insecure``."""
    yield from _registry(tmp_path_factory, "plain")


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """docker-registry over TLS with docker token auth; ``.token_server`` counts token requests."""
    yield from _registry(tmp_path_factory, "token")


@pytest.fixture(scope="session")
def registry_plain_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """docker-registry over plain HTTP with docker token auth (the token server on TLS, its CA in
    ``.ca_file``): ``.token_server.requests`` say which credentials a client sent for it."""
    yield from _registry(tmp_path_factory, "plain-token")
