"""Credentials never travel over a weakened link unless they were named for it.

Over plain HTTP or unverified TLS anyone on the path can read a credential or pose as the registry.
The registry client sends only a LinkAuth's ``weakened`` credentials there (a Module's own
imageRepoSecret); operator-wide ones (the auth file, the builder's and the global pull secret) go only
over verified TLS. Observed on the real registry: its token server records the user each token
request came with, so a credential that reached the registry side shows up by name.
"""

from __future__ import annotations

import pytest

from kmm_dtk.core.module import RegistryTLS
from kmm_dtk.core.plan import Action, PlanEntry, Reason
from kmm_dtk.core.verdicts import ImageState
from kmm_dtk.registry.auth import AuthConfig
from kmm_dtk.registry.check import RegistryChecker
from kmm_dtk.registry.client import LinkAuth, Presence, RegistryClient
from kmm_dtk.registry.reference import ImageRef
from kmm_dtk.registry.tls import TLSPolicy, TrustStore
from tests.registry.conftest import FAST, repo, server_auth
from tests.support.registry import RegistryServer, push_image

pytestmark = pytest.mark.registry

PLAIN_HTTP = TLSPolicy(insecure=True)
UNVERIFIED = TLSPolicy(skip_verify=True)
KERNEL = "5.14.0-570.27.1.el9_6.x86_64"


def token_users(server: RegistryServer, repository: str) -> list[str | None]:
    """Who asked the token server for ``repository`` (None: anonymously), in order."""
    assert server.token_server is not None
    return [r.username for r in server.token_server.requests if r.scope == f"repository:{repository}:pull"]


def client_for(server: RegistryServer, auth: AuthConfig | LinkAuth, trusted: bool = True) -> RegistryClient:
    """A client holding ``auth`` as its own (what --registry-config gives the operator). The token
    server's CA is trusted unless ``trusted`` is False (then nothing of the server's is verified)."""
    return RegistryClient(TrustStore(ca_paths=[server.ca_file] if trusted else []), auth, **FAST)


@pytest.mark.parametrize("operator_wide", ["client's own", "per call"])
def test_operator_credentials_never_reach_a_registry_over_plain_http(registry_plain_token, operator_wide):
    image = push_image(registry_plain_token, repo(), "v1", files={"x": b"1"})
    credentials = server_auth(registry_plain_token)
    with client_for(registry_plain_token, credentials) as client:
        auth = None if operator_wide == "client's own" else LinkAuth(credentials)
        answer = client.get_manifest(ImageRef.parse(image.tag_spec), auth=auth, tls=PLAIN_HTTP)
    assert answer.presence is Presence.UNKNOWN  # refused, never "missing"
    assert "credentials are not sent over plain HTTP" in answer.reason
    users = token_users(registry_plain_token, image.repository)
    assert users and set(users) == {None}, users  # asked anonymously, the credential never left


def test_the_modules_own_secret_goes_over_the_plain_http_link_it_weakened(registry_plain_token):
    image = push_image(registry_plain_token, repo(), "v1", files={"x": b"1"})
    named = server_auth(registry_plain_token)
    with client_for(registry_plain_token, AuthConfig.EMPTY) as client:
        answer = client.get_manifest(ImageRef.parse(image.tag_spec), auth=LinkAuth(named, weakened=named),
                                     tls=PLAIN_HTTP)
    assert answer.presence is Presence.PRESENT, answer.reason
    assert token_users(registry_plain_token, image.repository) == [registry_plain_token.username]


def test_operator_credentials_never_reach_a_registry_over_unverified_tls(registry_token):
    image = push_image(registry_token, repo(), "v1", files={"x": b"1"})
    with client_for(registry_token, server_auth(registry_token), trusted=False) as client:
        answer = client.get_manifest(ImageRef.parse(image.tag_spec), tls=UNVERIFIED)
    assert answer.presence is Presence.UNKNOWN
    assert "credentials are not sent over unverified TLS" in answer.reason
    users = token_users(registry_token, image.repository)
    assert users and set(users) == {None}, users


def test_verified_tls_still_gets_operator_credentials(registry_token):
    image = push_image(registry_token, repo(), "v1", files={"x": b"1"})
    with client_for(registry_token, server_auth(registry_token)) as client:
        answer = client.get_manifest(ImageRef.parse(image.tag_spec))
    assert answer.presence is Presence.PRESENT, answer.reason
    assert token_users(registry_token, image.repository) == [registry_token.username]


def test_basic_auth_over_unverified_tls_is_refused_without_sending_the_password(registry_tls):
    """htpasswd: the registry's 401 asks for Basic credentials; the client answers none."""
    image = push_image(registry_tls, repo(), "v1", files={"x": b"1"})
    with client_for(registry_tls, server_auth(registry_tls), trusted=False) as client:
        refused = client.head_manifest(ImageRef.parse(image.tag_spec), tls=UNVERIFIED)
        named = client.head_manifest(ImageRef.parse(image.tag_spec), tls=UNVERIFIED,
                                     auth=LinkAuth(AuthConfig.EMPTY, weakened=server_auth(registry_tls)))
    assert refused.presence is Presence.UNKNOWN
    assert refused.reason.endswith(f"those configured for {registry_tls.host}/{image.repository} are not sent "
                                   "over unverified TLS")
    assert named.presence is Presence.PRESENT, named.reason
    uri = f"/v2/{image.repository}/manifests/v1"
    log = registry_tls.log_text().splitlines()
    statuses = [line.split('" ')[1].split()[0] for line in log if f'"HEAD {uri} HTTP/1.1"' in line]
    authorized = [line for line in log if 'msg="authorized request"' in line and f"http.request.uri={uri} " in line
                  and "http.request.method=HEAD" in line]
    assert statuses == ["401", "401", "200"]  # refused once and given up; the named credential's retry got in
    assert len(authorized) == 1


@pytest.mark.parametrize("module_tls", [RegistryTLS(insecure=True), None], ids=["module-weakened", "verified"])
def test_the_checker_sends_what_the_link_allows(registry_token, module_tls):
    """Through RegistryChecker as the operator wires it: the entry's LinkAuth holds the builder's and
    the auth file's credentials as ``verified`` only; the Module weakened TLS for its registry
    (``insecureSkipTLSVerify``), so those stay home. Without the weakening they are used."""
    image = push_image(registry_token, repo(), KERNEL, files={"x": b"1"})
    operator_wide = server_auth(registry_token)
    tls = RegistryTLS(insecure_skip_tls_verify=True) if module_tls else None
    entry = PlanEntry("ns/m", KERNEL, Action.BUILD, Reason.BUILD_NEEDED, "build", image=image.tag_spec,
                      hash="h", registry_tls=tls)
    with client_for(registry_token, AuthConfig.EMPTY) as client:
        checker = RegistryChecker(client, auth_for=lambda _: LinkAuth(operator_wide))
        answer = checker.check(entry)
    users = token_users(registry_token, image.repository)
    if module_tls:
        assert answer.state is ImageState.UNKNOWN and set(users) == {None}, (answer, users)
    else:
        assert answer.state is ImageState.FOREIGN and users == [registry_token.username], (answer, users)
