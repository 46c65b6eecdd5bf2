"""The registry client (kmm_dtk.registry.client) against a real docker-registry in each mode, plus loopback
servers for what a real registry will not do on demand (503s, redirects to storage, dropped connections).

The rule under test throughout: only a 404 is MISSING. Refusals, TLS failures, timeouts and 5xx are UNKNOWN.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging

import pytest

from kmm_dtk.registry.auth import AuthConfig
from kmm_dtk.registry.client import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    BlobMissing,
    LinkAuth,
    Presence,
    RegistryError,
)
from kmm_dtk.registry.reference import ImageRef
from kmm_dtk.registry.tls import TLSPolicy, TrustStore
from tests.registry.conftest import policy, repo, server_auth
from tests.support.controlplane import free_port, wait_until
from tests.support.loopback import CountingListener, Reply, ScriptedHTTPServer
from tests.support.registry import RegistryServer, make_layer, push_blob, push_image, sha256

MODES = ["registry_tls", "registry_plain", "registry_token"]
INSECURE = TLSPolicy(insecure=True)
ABSENT = "sha256:" + "0" * 64


@pytest.fixture(params=MODES)
def server(request) -> RegistryServer:
    return request.getfixturevalue(request.param)


def ref(text: str) -> ImageRef:
    return ImageRef.parse(text)


# -- present and missing, on every kind of registry ----------------------------------------------------

@pytest.mark.registry
@pytest.mark.parametrize("method", ["head_manifest", "get_manifest"])
def test_present_by_tag_and_by_digest(server, make_client, method):
    image = push_image(server, repo(), "v1", labels={"a": "b"}, files={"x": b"1"})
    client = make_client(server)
    by_tag = getattr(client, method)(ref(image.tag_spec), tls=policy(server))
    by_digest = getattr(client, method)(ref(image.pull_spec), tls=policy(server))
    for answer in (by_tag, by_digest):
        assert answer.presence is Presence.PRESENT, answer.reason
        assert answer.digest == image.digest
        assert answer.media_type == DOCKER_MANIFEST
    assert by_tag.ref == ref(image.tag_spec)
    if method == "get_manifest":
        assert sha256(by_tag.body) == image.digest
        assert json.loads(by_digest.body)["config"]["digest"] == image.config_digest
    else:
        assert by_tag.body is None


@pytest.mark.registry
@pytest.mark.parametrize("method", ["head_manifest", "get_manifest"])
def test_missing_tag_digest_and_repository(server, make_client, method):
    image = push_image(server, repo(), "v1", files={"x": b"1"})
    client = make_client(server)
    name = f"{server.host}/{image.repository}"
    for text in (f"{name}:v2", f"{name}@{ABSENT}", f"{server.host}/{repo()}:v1"):
        answer = getattr(client, method)(ref(text), tls=policy(server))
        assert answer.presence is Presence.MISSING, answer.reason
        assert answer.reason.startswith("404 ")
        assert f"{server.url}/v2/" in answer.reason
        assert answer.digest is None and answer.body is None


@pytest.mark.registry
def test_missing_reason_carries_the_registry_error_code(registry_tls, make_client):
    image = push_image(registry_tls, repo(), "v1", files={"x": b"1"})
    answer = make_client(registry_tls).get_manifest(ref(f"{registry_tls.host}/{image.repository}:nope"))
    assert answer.reason == (f"404 MANIFEST_UNKNOWN from {registry_tls.url}/v2/{image.repository}/manifests/nope")


@pytest.mark.registry
@pytest.mark.parametrize("media, index, expected", [
    ("docker", False, DOCKER_MANIFEST),
    ("oci", False, OCI_MANIFEST),
    ("docker", True, DOCKER_MANIFEST_LIST),
    ("oci", True, OCI_INDEX),
])
def test_manifest_media_types(registry_tls, make_client, media, index, expected):
    image = push_image(registry_tls, repo(), "v1", files={"x": b"1"}, media=media, index=index)
    client = make_client(registry_tls)
    head = client.head_manifest(ref(image.tag_spec))
    got = client.get_manifest(ref(image.tag_spec))
    assert (head.presence, got.presence) == (Presence.PRESENT, Presence.PRESENT)
    assert head.media_type == got.media_type == expected
    assert head.digest == got.digest == image.digest
    assert json.loads(got.body)["mediaType"] == expected
    if index:
        platform = client.get_manifest(ref(image.tag_spec).with_digest(image.manifest_digest))
        assert platform.media_type == (OCI_MANIFEST if media == "oci" else DOCKER_MANIFEST)
        assert platform.digest == image.platform_digests["linux/amd64"]


# -- credentials -----------------------------------------------------------------------------------------

@pytest.mark.registry
@pytest.mark.parametrize("mode", ["registry_tls", "registry_token"])
def test_wrong_password_is_unknown_never_missing(request, make_client, mode):
    server = request.getfixturevalue(mode)
    image = push_image(server, repo(), "v1", files={"x": b"1"})
    client = make_client(server, auth=server_auth(server, password="wrong"))
    for text in (image.tag_spec, f"{server.host}/{image.repository}:absent", f"{server.host}/{repo()}:absent"):
        for answer in (client.head_manifest(ref(text)), client.get_manifest(ref(text))):
            assert answer.presence is Presence.UNKNOWN, answer.reason
            assert "401" in answer.reason
            assert "with the configured credential" in answer.reason


@pytest.mark.registry
def test_anonymous_against_htpasswd_registry_is_unknown(registry_tls, make_client):
    image = push_image(registry_tls, repo(), "v1", files={"x": b"1"})
    client = make_client(registry_tls, auth=AuthConfig.EMPTY)
    answer = client.head_manifest(ref(image.tag_spec))
    assert answer.presence is Presence.UNKNOWN
    assert "401" in answer.reason and "none are configured" in answer.reason
    assert client.head_manifest(ref(f"{registry_tls.host}/{repo()}:v1")).presence is Presence.UNKNOWN


@pytest.mark.registry
def test_anonymous_against_token_registry_is_unknown(registry_token, make_client):
    image = push_image(registry_token, repo(), "v1", files={"x": b"1"})
    answer = make_client(registry_token, auth=AuthConfig.EMPTY).head_manifest(ref(image.tag_spec))
    assert answer.presence is Presence.UNKNOWN
    assert "401" in answer.reason and "anonymously" in answer.reason


@pytest.mark.registry
def test_per_call_auth_overrides_the_clients(registry_tls, make_client):
    image = push_image(registry_tls, repo(), "v1", files={"x": b"1"})
    anonymous = make_client(registry_tls, auth=AuthConfig.EMPTY)
    assert anonymous.head_manifest(ref(image.tag_spec), auth=server_auth(registry_tls)).presence is Presence.PRESENT
    authed = make_client(registry_tls)
    answer = authed.head_manifest(ref(image.tag_spec), auth=server_auth(registry_tls, password="nope"))
    assert answer.presence is Presence.UNKNOWN


@pytest.mark.registry
def test_bearer_token_is_fetched_once_per_scope_and_credential(registry_token, make_client):
    tokens = registry_token.token_server
    first = push_image(registry_token, repo(), "v1", files={"x": b"1"})
    second = push_image(registry_token, repo(), "v1", files={"x": b"2"})
    client = make_client(registry_token)
    before = tokens.count()
    for _ in range(3):
        assert client.head_manifest(ref(first.tag_spec)).presence is Presence.PRESENT
        assert client.get_manifest(ref(first.pull_spec)).presence is Presence.PRESENT
        assert client.get_blob(ref(first.tag_spec), first.config_digest)
    assert tokens.count() - before == 1
    assert tokens.requests[-1].scope == f"repository:{first.repository}:pull"
    assert tokens.requests[-1].service == "kmm-dtk-test-registry"
    assert tokens.requests[-1].username == registry_token.username

    assert client.head_manifest(ref(second.tag_spec)).presence is Presence.PRESENT
    assert tokens.count() - before == 2  # another repository, another scope

    other_credential = make_client(registry_token)  # a new client has its own cache
    assert other_credential.head_manifest(ref(first.tag_spec)).presence is Presence.PRESENT
    assert tokens.count() - before == 3


@pytest.mark.registry
def test_bearer_with_wrong_password_names_the_token_endpoint(registry_token, make_client):
    image = push_image(registry_token, repo(), "v1", files={"x": b"1"})
    before = registry_token.token_server.count()
    answer = make_client(registry_token, auth=server_auth(registry_token, "wrong")).head_manifest(ref(image.tag_spec))
    assert answer.presence is Presence.UNKNOWN
    assert "401" in answer.reason and "token endpoint" in answer.reason
    assert registry_token.token_server.count() - before == 1  # a refusal is not retried


# -- TLS -------------------------------------------------------------------------------------------------

@pytest.mark.registry
def test_tls_without_the_ca_is_unknown_with_a_tls_reason(registry_tls, make_client):
    image = push_image(registry_tls, repo(), "v1", files={"x": b"1"})
    answer = make_client(registry_tls, trust=TrustStore()).head_manifest(ref(image.tag_spec))
    assert answer.presence is Presence.UNKNOWN
    assert answer.reason.startswith("TLS: certificate verify failed")
    assert registry_tls.host in answer.reason


@pytest.mark.registry
def test_skip_verify_talks_to_an_untrusted_registry(registry_tls, make_client):
    image = push_image(registry_tls, repo(), "v1", files={"x": b"1"})
    named = server_auth(registry_tls)  # named for this weakened link, as a Module's imageRepoSecret is
    client = make_client(registry_tls, trust=TrustStore(), auth=LinkAuth(named, weakened=named))
    answer = client.get_manifest(ref(image.tag_spec), tls=TLSPolicy(skip_verify=True))
    assert answer.presence is Presence.PRESENT, answer.reason
    assert answer.digest == image.digest
    # and verification is still on for calls that did not ask to skip it
    assert client.head_manifest(ref(image.tag_spec)).presence is Presence.UNKNOWN


@pytest.mark.registry
def test_plain_http_registry_needs_insecure(registry_plain, make_client):
    image = push_image(registry_plain, repo(), "v1", files={"x": b"1"})
    client = make_client(registry_plain)
    assert client.head_manifest(ref(image.tag_spec), tls=INSECURE).presence is Presence.PRESENT
    answer = client.head_manifest(ref(image.tag_spec))  # https to a plain HTTP port
    assert answer.presence is Presence.UNKNOWN
    assert answer.reason.startswith("TLS: ")


# -- unreachable, slow and failing registries ------------------------------------------------------------------

def test_refused_port_is_unknown_after_every_attempt(make_client, caplog):
    caplog.set_level(logging.WARNING, logger="kmm_dtk.registry.client")
    host = f"127.0.0.1:{free_port()}"
    answer = make_client(attempts=4).head_manifest(ref(f"{host}/a/b:v1"), tls=INSECURE)
    assert answer.presence is Presence.UNKNOWN
    assert "cannot connect" in answer.reason and "after 4 attempts" in answer.reason
    retries = [r for r in caplog.records if r.getMessage() == "registry request failed, retrying"]
    assert [r.attempt for r in retries] == [1, 2, 3]
    assert all(r.registry == host for r in retries)


def test_dropped_connections_are_retried_attempts_times(make_client):
    with CountingListener("drop") as listener:
        answer = make_client(attempts=3).head_manifest(ref(f"{listener.host}/a/b:v1"), tls=INSECURE)
        assert answer.presence is Presence.UNKNOWN
        assert "after 3 attempts" in answer.reason
        assert listener.accepted == 3


def test_a_registry_that_never_answers_times_out(make_client):
    with CountingListener("hold") as listener:
        answer = make_client(attempts=2, timeout=0.3).get_manifest(ref(f"{listener.host}/a/b:v1"), tls=INSECURE)
        assert answer.presence is Presence.UNKNOWN
        assert answer.reason.startswith("timed out after 0.3s waiting for http://")
        assert wait_until(lambda: listener.accepted == 2)


@pytest.mark.registry
def test_stopped_registry_is_unknown_not_missing(tmp_path, make_client):
    with RegistryServer(tmp_path, "plain") as server:
        image = push_image(server, repo(), "v1", files={"x": b"1"})
        client = make_client(server, attempts=2)
        assert client.head_manifest(ref(image.tag_spec), tls=INSECURE).presence is Presence.PRESENT
        server.stop()
        assert not server.running
        for text in (image.tag_spec, f"{server.host}/{image.repository}:never-pushed"):
            answer = client.head_manifest(ref(text), tls=INSECURE)
            assert answer.presence is Presence.UNKNOWN, answer.reason


def _manifest_reply(body: bytes, media_type: str = DOCKER_MANIFEST) -> Reply:
    return Reply(200, body, {"Content-Type": media_type, "Docker-Content-Digest": sha256(body)})


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_are_retried_then_succeed(make_client, status, caplog):
    body = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST}).encode()
    path = "/v2/a/b/manifests/v1"
    with ScriptedHTTPServer({path: [Reply(status), Reply(status), _manifest_reply(body)]}) as fake:
        answer = make_client(attempts=3).get_manifest(ref(f"{fake.host}/a/b:v1"), tls=INSECURE)
        assert answer.presence is Presence.PRESENT, answer.reason
        assert answer.body == body and answer.digest == sha256(body)
        assert fake.count(path) == 3
    assert sum(r.getMessage() == "registry request failed, retrying" for r in caplog.records) == 2


def test_server_errors_give_unknown_after_the_last_attempt(make_client):
    path = "/v2/a/b/manifests/v1"
    with ScriptedHTTPServer({path: [Reply(503, b'{"errors":[{"code":"UNAVAILABLE"}]}')]}) as fake:
        answer = make_client(attempts=3).head_manifest(ref(f"{fake.host}/a/b:v1"), tls=INSECURE)
        assert answer.presence is Presence.UNKNOWN
        assert answer.reason == f"503 Service Unavailable from http://{fake.host}{path} (after 3 attempts)"
        assert fake.count(path) == 3


@pytest.mark.parametrize("status", [403, 400, 405])
def test_client_errors_are_unknown_and_not_retried(make_client, status):
    path = "/v2/a/b/manifests/v1"
    with ScriptedHTTPServer({path: [Reply(status, b'{"errors":[{"code":"DENIED"}]}')]}) as fake:
        answer = make_client(attempts=3).get_manifest(ref(f"{fake.host}/a/b:v1"), tls=INSECURE)
        assert answer.presence is Presence.UNKNOWN
        assert answer.reason.startswith(f"{status} ") and "(DENIED)" in answer.reason
        assert fake.count(path) == 1


def test_manifest_by_digest_is_verified(make_client):
    body = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST}).encode()
    wanted = sha256(body + b" ")
    path = f"/v2/a/b/manifests/{wanted}"
    with ScriptedHTTPServer({path: [_manifest_reply(body)]}) as fake:
        answer = make_client().get_manifest(ref(f"{fake.host}/a/b@{wanted}"), tls=INSECURE)
        assert answer.presence is Presence.UNKNOWN
        assert "does not match its digest" in answer.reason


# -- blobs ---------------------------------------------------------------------------------------------------------

@pytest.mark.registry
def test_get_and_open_blob(server, make_client):
    image = push_image(server, repo(), "v1", files={"etc/os-release": b"ID=rhcos\n"})
    client = make_client(server)
    config = json.loads(client.get_blob(ref(image.tag_spec), image.config_digest, tls=policy(server)))
    assert config["architecture"] == "amd64"
    with client.open_blob(ref(image.tag_spec), image.layers[0], tls=policy(server)) as stream:
        data = stream.read()
    assert sha256(data) == image.layers[0]


@pytest.mark.registry
def test_blob_missing_and_too_large(registry_tls, make_client):
    image = push_image(registry_tls, repo(), "v1", files={"x": b"y" * 1000}, compress=False)
    client = make_client(registry_tls)
    with pytest.raises(BlobMissing, match=r"^404 BLOB_UNKNOWN from https://"):
        client.get_blob(ref(image.tag_spec), ABSENT)
    with pytest.raises(RegistryError, match="larger than 100 bytes"):
        client.get_blob(ref(image.tag_spec), image.layers[0], max_bytes=100)
    assert client.get_blob(ref(image.tag_spec), image.layers[0], max_bytes=1 << 20)  # the pool is still usable


@pytest.mark.registry
def test_corrupted_blob_fails_its_digest(registry_tls, make_client):
    blob, _ = make_layer({"corrupt-me": b"original bytes, unique to this test " + repo().encode()})
    name = repo()
    digest = push_blob(registry_tls, name, blob)
    path = registry_tls.blob_path(digest)
    path.write_bytes(bytes(b ^ 0xFF for b in path.read_bytes()))  # same length, other bytes
    with pytest.raises(RegistryError, match="does not match its digest") as caught:
        make_client(registry_tls).get_blob(ref(f"{registry_tls.host}/{name}"), digest)
    assert not isinstance(caught.value, BlobMissing)


def test_blob_redirect_is_followed_without_the_registry_credential(make_client, caplog):
    caplog.set_level(logging.DEBUG, logger="kmm_dtk")  # urllib3's own debug lines print whole URLs
    content = b"layer bytes in object storage"
    digest = sha256(content)
    with ScriptedHTTPServer({"/bucket/blob": [Reply(200, content)]}) as storage:
        blob_path = f"/v2/a/b/blobs/{digest}"
        script = {blob_path: [
            Reply(401, headers={"WWW-Authenticate": 'Basic realm="fake"'}),
            Reply(307, headers={"Location": f"http://{storage.host}/bucket/blob?X-Amz-Signature=sig-SECRET"}),
        ]}
        with ScriptedHTTPServer(script) as registry:
            auth = AuthConfig.from_json({"auths": {registry.host: {"auth": base64.b64encode(b"u:pw").decode()}}}, "t")
            named = LinkAuth(auth, weakened=auth)  # plain HTTP: only credentials named for it are sent
            assert make_client(auth=named).get_blob(ref(f"{registry.host}/a/b"), digest, tls=INSECURE) == content
            assert [s.headers.get("Authorization") for s in registry.seen] == [None, "Basic dTpwdw=="]
        assert len(storage.seen) == 1
        assert "Authorization" not in storage.seen[0].headers
    assert any(r.getMessage() == "registry redirect" for r in caplog.records)
    assert "sig-SECRET" not in "\n".join(str(vars(r)) for r in caplog.records if r.name.startswith("kmm_dtk"))


def test_redirected_blob_with_wrong_bytes_is_an_error(make_client):
    digest = sha256(b"the real layer")
    with ScriptedHTTPServer({"/store": [Reply(200, b"something else")]}) as storage:
        redirect = Reply(307, headers={"Location": f"http://{storage.host}/store"})
        with ScriptedHTTPServer({f"/v2/a/b/blobs/{digest}": [redirect]}) as registry:
            with pytest.raises(RegistryError, match="does not match its digest"):
                make_client().get_blob(ref(f"{registry.host}/a/b"), digest, tls=INSECURE)


# -- secrets never show ------------------------------------------------------------------------------------------

@pytest.mark.registry
def test_credentials_never_appear_in_logs_reasons_or_reprs(registry_tls, registry_token, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = []
    texts: list[str] = []
    for server in (registry_tls, registry_token):
        image = push_image(server, repo(), "v1", files={"x": b"1"})
        for password in (server.password, "wrong-" + server.password):
            auth = server_auth(server, password)
            secrets += [password, base64.b64encode(f"{server.username}:{password}".encode()).decode()]
            client = make_client(server, auth=auth)
            for text in (image.tag_spec, f"{server.host}/{image.repository}:absent"):
                for answer in (client.head_manifest(ref(text)), client.get_manifest(ref(text))):
                    texts += [answer.reason, repr(answer)]
            try:
                client.get_blob(ref(image.tag_spec), image.config_digest)
            except RegistryError as err:
                texts += [str(err), repr(err)]
            texts += [repr(client), repr(auth), repr(auth.lookup(ref(image.tag_spec))), repr(client.__dict__)]
    assert any("401" in t for t in texts)  # the wrong passwords were refused: there was something to leak
    fields = [str(v) for record in caplog.records for v in vars(record).values()]
    haystack = "\n".join(texts + fields + [caplog.text])
    for secret in secrets:
        assert secret not in haystack
    assert "eyJ" not in haystack  # no JWT either


# -- odd but valid answers ---------------------------------------------------------------------------------------

def test_manifest_digest_uses_the_body_when_the_registry_sends_no_header(make_client):
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()
    with ScriptedHTTPServer({"/v2/a/b/manifests/v1": [Reply(200, body, {"Content-Type": "application/json"})]}) as fake:
        answer = make_client().get_manifest(ref(f"{fake.host}/a/b:v1"), tls=INSECURE)
    assert answer.digest == "sha256:" + hashlib.sha256(body).hexdigest()
    assert answer.media_type == OCI_MANIFEST  # from the body when the header is generic


@pytest.mark.registry
def test_a_rejected_cached_token_is_replaced_in_the_same_call(registry_token, make_client):
    image = push_image(registry_token, repo(), "v1", files={"x": b"1"})
    client = make_client(registry_token)
    assert client.head_manifest(ref(image.tag_spec)).presence is Presence.PRESENT
    # As after a signing-key rotation: the cached token is no longer accepted.
    identity = server_auth(registry_token).lookup(ref(image.tag_spec)).identity
    client._authorizations.put(registry_token.host, f"repository:{image.repository}:pull", identity,
                               "Bearer not-a-valid-token", ttl=300)
    before = registry_token.token_server.count()
    assert client.head_manifest(ref(image.tag_spec)).presence is Presence.PRESENT
    assert registry_token.token_server.count() - before == 1
