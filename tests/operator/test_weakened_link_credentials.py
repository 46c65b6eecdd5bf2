"""The operator, on the real control plane, with a Module that weakens TLS for its own registry
(``registryTLS.insecure``: plain HTTP): the builder ServiceAccount's pull secrets and the
``--registry-config`` file hold that registry's credentials, yet neither is sent over that link; the
Module's own ``imageRepoSecret`` is. The registry's token server records who asked for a token."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from kmm_dtk.operator.options import RegistryOptions
from tests.operator.test_registry_operator import module_in_registry, pull_secret, settled
from tests.support.design import K84, K86
from tests.support.registry import auth_json

pytestmark = [pytest.mark.integration, pytest.mark.registry]


def token_users(server, repository: str) -> set[str | None]:
    return {r.username for r in server.token_server.requests if r.scope == f"repository:{repository}:pull"}


@pytest.mark.parametrize("named", [False, True], ids=["operator-wide-only", "module-names-its-secret"])
def test_operator_wide_credentials_never_go_over_the_link_a_module_weakened(api, reg, registry_plain_token,
                                                                            run_operator, tmp_path, named):
    plain = registry_plain_token
    core = client.CoreV1Api(api)
    for name in ("builder-pull", "own"):
        core.create_namespaced_secret(reg.namespace, pull_secret(reg.namespace, name, plain.host, plain.username,
                                                                 plain.password))
    core.create_namespaced_service_account(reg.namespace, {"metadata": {"name": "builder"},
                                                           "imagePullSecrets": [{"name": "builder-pull"}]})
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps(auth_json(plain.host, plain.username, plain.password)))

    body = module_in_registry(reg, image_prefix=f"{plain.host}/{reg.namespace}", secret="own" if named else None)
    body["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["registryTLS"] = {"insecure": True}
    cas = (str(plain.ca_file), str(reg.registry.ca_file))
    run_operator(registry=RegistryOptions(auth_file=str(auth_file), ca_paths=cas,
                                          global_pull_secret=(reg.namespace, "push"), retry_after=0.5))
    reg.create_module(body)

    repository = f"{reg.namespace}/simple-kmod"
    if named:  # the image is missing (a definite answer, with the Module's credential): built
        settled(reg, {K84, K86}, {"Pending"})
        assert token_users(plain, repository) == {plain.username}
        assert set(reg.builds_by_kernel()) == {K84, K86}
    else:  # the registry refuses an anonymous ask: no answer, nothing built, and why is said
        records = settled(reg, {K84, K86}, {"Waiting"})
        assert token_users(plain, repository) == {None}
        assert "credentials are not sent over plain HTTP" in records[K84]["message"]
        assert reg.builds() == []
