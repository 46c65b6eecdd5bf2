"""Trust (kmm_dtk.registry.tls): CA files and directories, per-registry CAs as OpenShift spells them."""

from __future__ import annotations

import pytest

from kmm_dtk.registry.client import Presence
from kmm_dtk.registry.reference import ImageRef
from kmm_dtk.registry.tls import TrustStore
from tests.registry.conftest import repo
from tests.support.pki import make_ca
from tests.support.registry import push_image


@pytest.mark.parametrize("key, host", [
    ("reg.example.com..5000", "reg.example.com:5000"),
    ("reg.example.com", "reg.example.com"),
    ("Reg.Example.com..443", "reg.example.com:443"),
    ("reg.example.com:5000", "reg.example.com:5000"),
    ("a..b", "a..b"),  # not a port: left alone
])
def test_host_from_configmap_key(key, host):
    assert TrustStore.host_from_configmap_key(key) == host


def test_bad_ca_files_are_named(tmp_path):
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError, match=f"CA file {garbage}: not a valid PEM"):
        TrustStore(ca_paths=[garbage])
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    with pytest.raises(ValueError, match=f"CA file {empty}: no PEM certificate"):
        TrustStore(ca_paths=[empty])
    with pytest.raises(ValueError, match=f"CA file {tmp_path / 'absent.crt'}: cannot read"):
        TrustStore(ca_paths=[tmp_path / "absent.crt"])
    with pytest.raises(ValueError, match="CA bundle #2: no PEM"):
        TrustStore(ca_pems=[make_ca(tmp_path, "ok")[0].read_text(), "junk"])
    with pytest.raises(ValueError, match="CA for registry reg.example.com:5000: no PEM"):
        TrustStore(per_host={"reg.example.com..5000": "junk"})


def test_a_directory_of_pem_files(tmp_path):
    make_ca(tmp_path, "one")
    make_ca(tmp_path, "two")
    (tmp_path / "README").write_text("not a certificate, not read")
    store = TrustStore(ca_paths=[tmp_path])
    assert "extra_bundles=2" in repr(store)
    assert len(store.ssl_context("x").get_ca_certs()) >= 2


def test_contexts_are_cached_per_registry_ca_and_mode_not_per_host(tmp_path):
    ca = make_ca(tmp_path, "ca")[0]
    store = TrustStore(ca_paths=[ca], per_host={"own.example.com": ca.read_text()})
    assert store.ssl_context("a:5000") is store.ssl_context("a:5000")
    assert store.ssl_context("a:5000") is store.ssl_context("b:5000")  # neither has a CA of its own
    assert store.ssl_context("own.example.com:5000") is not store.ssl_context("a:5000")
    assert store.ssl_context("a:5000", skip_verify=True) is store.ssl_context("b", skip_verify=True)
    assert store.ssl_context("a:5000", skip_verify=True).check_hostname is False
    for i in range(500):  # hosts a tenant writes: no context each
        store.ssl_context(f"host-{i}.example.com")
    assert store.context_count() == 3


@pytest.mark.registry
def test_per_registry_ca_applies_to_its_registry_only(registry_tls, make_client):
    image = push_image(registry_tls, repo(), "v1", files={"x": b"1"})
    pem = registry_tls.ca_file.read_text()
    port = registry_tls.host.rsplit(":", 1)[1]

    def presence(store: TrustStore) -> Presence:
        return make_client(registry_tls, trust=store).head_manifest(ImageRef.parse(image.tag_spec)).presence

    assert presence(TrustStore(per_host={f"127.0.0.1..{port}": pem})) is Presence.PRESENT
    assert presence(TrustStore(per_host={registry_tls.host: pem})) is Presence.PRESENT
    assert presence(TrustStore(per_host={"127.0.0.1": pem})) is Presence.PRESENT  # a bare host: every port
    assert presence(TrustStore(per_host={f"127.0.0.1..{int(port) + 1}": pem})) is Presence.UNKNOWN
    assert presence(TrustStore(per_host={"localhost": pem})) is Presence.UNKNOWN

    base = TrustStore()
    added = base.with_per_host({f"127.0.0.1..{port}": pem})
    assert presence(added) is Presence.PRESENT
    assert presence(base) is Presence.UNKNOWN  # the original is unchanged
