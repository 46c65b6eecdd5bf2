"""Release and DTK lookups against a real registry: synthetic release and DTK images pushed by the test."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from kmm_dtk.registry.auth import AuthConfig
from kmm_dtk.registry.client import RegistryClient, RegistryError
from kmm_dtk.registry.mirrors import MirrorPolicy
from kmm_dtk.registry.reference import ImageRef
from kmm_dtk.registry.release import (
    DTK_RELEASE_FILE,
    DtkInspector,
    DtkKernels,
    DtkKernelUnknown,
    ReleaseInfo,
    ReleaseLookupError,
    release_info,
    release_kernels,
)
from kmm_dtk.registry.tls import TLSPolicy, TrustStore
from tests.support.controlplane import free_port
from tests.support.registry import PushedImage, RegistryServer, push_image

pytestmark = pytest.mark.registry

KERNEL = "5.14.0-427.68.1.el9_4.x86_64"
RT_KERNEL = "5.14.0-427.68.1.el9_4.x86_64+rt"
RHCOS = "418.94.202501221327-0"
PLAIN = TLSPolicy(insecure=True)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class CountingClient(RegistryClient):
    """A real client that counts the requests its callers make (manifests and blobs)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, str]] = []
        self._count_lock = threading.Lock()

    def _note(self, kind: str, what: str) -> None:
        with self._count_lock:
            self.calls.append((kind, what))

    def get_manifest(self, ref, **kwargs):
        self._note("manifest", str(ref))
        return super().get_manifest(ref, **kwargs)

    def head_manifest(self, ref, **kwargs):
        self._note("manifest", str(ref))
        return super().head_manifest(ref, **kwargs)

    def get_blob(self, ref, digest, **kwargs):
        self._note("blob", digest)
        return super().get_blob(ref, digest, **kwargs)

    def open_blob(self, ref, digest, **kwargs):
        self._note("blob", digest)
        return super().open_blob(ref, digest, **kwargs)

    def blobs(self) -> list[str]:
        return [what for kind, what in self.calls if kind == "blob"]


def client_for(server: RegistryServer, *, counting: bool = False) -> RegistryClient:
    trust = TrustStore(ca_paths=[server.ca_file]) if server.ca_file else TrustStore()
    auth = AuthConfig.from_json(server.auth_json(), "test auth.json")
    cls = CountingClient if counting else RegistryClient
    return cls(trust, auth, attempts=1, timeout=5)


def policy(server: RegistryServer) -> TLSPolicy:
    return PLAIN if server.mode == "plain" else TLSPolicy()


def release_json(*kernel_rt: str, kernel: str = KERNEL) -> bytes:
    doc = {"KERNEL_VERSION": kernel, "RHEL_VERSION": "9.4"}
    if kernel_rt:
        doc["RT_KERNEL_VERSION"] = kernel_rt[0]
    return (json.dumps(doc) + "\n").encode()


def push_dtk(server: RegistryServer, repository: str | None = None, *, json_file: bytes | None = None,
             labels: dict[str, str] | None = None, lower_layers: int = 1, **kwargs) -> PushedImage:
    """A DTK-shaped image: RPM-ish lower layers, the release file (if any) in the last layer, as built."""
    lower = [{f"usr/src/kernels/{KERNEL}/Makefile{i}": b"# kernel-devel\n" * 64} for i in range(lower_layers)]
    last: dict = {"usr/bin/kmod": b"\x7fELF"}
    if json_file is not None:
        last["etc/driver-toolkit-release.json"] = json_file
    return push_image(server, repository or unique("ocp/dtk"), "latest", files=[*lower, last],
                      labels={"name": "driver-toolkit", **(labels or {})}, **kwargs)


def image_references(dtk_pull_spec: str | None, *, version: str = "4.18.1", rhcos: str = RHCOS) -> bytes:
    tags = [{"name": "cli", "from": {"kind": "DockerImage", "name": "quay.io/ocp/art@sha256:" + "b" * 64}}]
    if dtk_pull_spec:
        tags.append({"name": "driver-toolkit", "annotations": {"io.openshift.build.commit.id": "abc"},
                     "from": {"kind": "DockerImage", "name": dtk_pull_spec}, "referencePolicy": {"type": "Source"}})
    annotations = {"io.openshift.build.versions": f"machine-os={rhcos}",
                   "io.openshift.build.version-display-names": "machine-os=Red Hat Enterprise Linux CoreOS"}
    tags.append({"name": "rhel-coreos", "annotations": annotations,
                 "from": {"kind": "DockerImage", "name": "quay.io/ocp/art@sha256:" + "c" * 64}})
    doc = {"kind": "ImageStream", "apiVersion": "image.openshift.io/v1",
           "metadata": {"name": version, "creationTimestamp": "2025-02-05T10:11:12Z"},
           "spec": {"lookupPolicy": {"local": False}, "tags": tags}}
    return json.dumps(doc, indent=2).encode()


def push_release(server: RegistryServer, references: bytes | None, repository: str | None = None,
                 *, stale: bytes | None = None, **kwargs) -> PushedImage:
    """A release image: a base layer, the cluster-version-operator, then release-manifests/ last."""
    layers: list[dict] = [{"etc/os-release": b'ID="rhel"\n'}]
    if stale is not None:  # an older image-references in a lower layer, overridden by the last one
        layers.append({"release-manifests/image-references": stale})
    layers.append({"usr/bin/cluster-version-operator": b"\x7fELF"})
    manifests: dict = {"release-manifests/release-metadata": b'{"kind": "cincinnati-metadata-v0", "version": "4.18.1"}',
                       "release-manifests/0000_50_cluster.yaml": b"kind: Namespace\n"}
    if references is not None:
        manifests["release-manifests/image-references"] = references
    layers.append(manifests)
    return push_image(server, repository or unique("ocp/release"), "4.18.1-x86_64", files=layers,
                      labels={"io.openshift.release": "4.18.1"}, **kwargs)


def closed_host() -> str:
    """A loopback port nothing listens on: a registry that cannot be reached."""
    return f"127.0.0.1:{free_port()}"


def idms(source: str, *mirrors: str, name: str = "release") -> dict:
    return {"apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet", "metadata": {"name": name},
            "spec": {"imageDigestMirrors": [{"source": source, "mirrors": list(mirrors)}]}}


# -- release_info ----------------------------------------------------------------------------------

def test_release_info_finds_the_dtk(registry_tls):
    dtk = push_dtk(registry_tls, json_file=release_json(RT_KERNEL))
    release = push_release(registry_tls, image_references(dtk.pull_spec))
    with client_for(registry_tls) as client:
        for spec in (release.pull_spec, release.tag_spec):
            info = release_info(client, ImageRef.parse(spec))
            assert info == ReleaseInfo(spec, dtk.pull_spec, RHCOS, "4.18.1")


def test_last_layer_wins(registry_tls):
    dtk = push_dtk(registry_tls, json_file=release_json())
    stale = image_references("quay.io/stale/dtk@sha256:" + "0" * 64, version="4.18.0")
    release = push_release(registry_tls, image_references(dtk.pull_spec), stale=stale)
    with client_for(registry_tls) as client:
        info = release_info(client, ImageRef.parse(release.pull_spec))
    assert (info.dtk_image, info.version) == (dtk.pull_spec, "4.18.1")


def test_release_index_is_followed_to_the_platform(registry_plain):
    dtk = push_dtk(registry_plain, json_file=release_json(), media="oci")
    release = push_release(registry_plain, image_references(dtk.pull_spec), media="oci", index=True)
    with client_for(registry_plain) as client:
        info = release_info(client, ImageRef.parse(release.pull_spec), tls=PLAIN)
    assert info.dtk_image == dtk.pull_spec


def test_release_through_token_auth(registry_token):
    dtk = push_dtk(registry_token, json_file=release_json())
    release = push_release(registry_token, image_references(dtk.pull_spec))
    with client_for(registry_token) as client:
        info, kernels = release_kernels(client, ImageRef.parse(release.pull_spec))
    assert info.dtk_image == dtk.pull_spec
    assert kernels.kernel == KERNEL


def test_release_without_driver_toolkit_tag(registry_tls):
    release = push_release(registry_tls, image_references(None))
    with client_for(registry_tls) as client, pytest.raises(ReleaseLookupError) as err:
        release_info(client, ImageRef.parse(release.pull_spec))
    assert str(err.value).startswith(
        f'release {release.pull_spec}: no image tag "driver-toolkit" in release-manifests/image-references')


def test_image_that_is_no_release(registry_tls):
    release = push_release(registry_tls, None)
    with client_for(registry_tls) as client, pytest.raises(ReleaseLookupError, match="not an OpenShift release"):
        release_info(client, ImageRef.parse(release.pull_spec))


def test_release_not_found(registry_tls):
    ref = ImageRef.parse(f"{registry_tls.host}/{unique('ocp/release')}:4.99.0")
    with client_for(registry_tls) as client, pytest.raises(ReleaseLookupError) as err:
        release_info(client, ref)
    assert str(err.value).startswith(f"release {ref}: not found")


def test_release_registry_unreachable(registry_tls):
    ref = ImageRef.parse(f"{closed_host()}/ocp/release:4.18.1")
    with client_for(registry_tls) as client, pytest.raises(RegistryError) as err:
        release_info(client, ref)
    assert str(err.value).startswith(f"release {ref}: ")
    assert not isinstance(err.value, ReleaseLookupError)


def test_release_and_dtk_through_mirrors(registry_tls):
    """Disconnected: quay.io-like source unreachable, the mirror holds both images under other names."""
    source = closed_host()
    dtk_repo, release_repo = unique("mirror/dtk"), unique("mirror/release")
    dtk = push_dtk(registry_tls, dtk_repo, json_file=release_json(RT_KERNEL))
    source_dtk = f"{source}/ocp/dtk@{dtk.digest}"
    release = push_release(registry_tls, image_references(source_dtk), release_repo)
    mirrors, problems = MirrorPolicy.from_objects([
        idms(f"{source}/ocp/release", f"{registry_tls.host}/{release_repo}", name="release"),
        idms(f"{source}/ocp/dtk", f"{registry_tls.host}/{dtk_repo}", name="dtk"),
    ])
    assert problems == []
    ref = ImageRef.parse(f"{source}/ocp/release@{release.digest}")
    with client_for(registry_tls, counting=True) as client:
        info, kernels = release_kernels(client, ref, mirrors=mirrors)
        assert info == ReleaseInfo(str(ref), source_dtk, RHCOS, "4.18.1")  # as the release names it
        assert kernels == DtkKernels(KERNEL, RT_KERNEL, DTK_RELEASE_FILE, "9.4")
        assert all(source not in what for _, what in client.calls)  # the mirror answered first


def test_first_present_source_wins(registry_tls):
    """An unreachable mirror, then one without the image, then the source: like a node, the source answers."""
    dtk = push_dtk(registry_tls, json_file=release_json())
    ref = ImageRef.parse(dtk.pull_spec)
    mirrors, _ = MirrorPolicy.from_objects([idms(ref.name, f"{closed_host()}/down", f"{registry_tls.host}/empty/dtk")])
    sources = mirrors.pull_sources(ref)
    assert [s.mirror is None for s in sources] == [False, False, True]
    with client_for(registry_tls) as client:
        assert DtkInspector(client).kernels(ref, sources=sources).kernel == KERNEL


def test_all_sources_unreachable_is_a_registry_error(registry_tls):
    ref = ImageRef.parse(f"{closed_host()}/ocp/dtk@sha256:" + "d" * 64)
    mirrors, _ = MirrorPolicy.from_objects([idms(ref.name, f"{closed_host()}/mirror/dtk")])
    with client_for(registry_tls) as client, pytest.raises(RegistryError) as err:
        DtkInspector(client).kernels(ref, sources=mirrors.pull_sources(ref))
    assert str(err.value).startswith(f"DTK image {ref}: ")
    assert str(err.value).count("; ") == 1  # both places named


def test_never_contact_source_without_mirrors_asks_nobody(registry_tls):
    ref = ImageRef.parse(f"{registry_tls.host}/ocp/dtk@sha256:" + "d" * 64)
    with client_for(registry_tls, counting=True) as client, pytest.raises(RegistryError, match="no mirror or source"):
        DtkInspector(client).kernels(ref, sources=[])
    assert client.calls == []


# -- DtkInspector ----------------------------------------------------------------------------------

def test_kernels_from_the_release_file_cached_by_digest(registry_tls):
    dtk = push_dtk(registry_tls, json_file=release_json(RT_KERNEL), lower_layers=3,
                   labels={"kernel-version": "9.9.9-label.x86_64"})  # the file wins over labels
    with client_for(registry_tls, counting=True) as client:
        inspector = DtkInspector(client)
        by_digest = ImageRef.parse(dtk.pull_spec)
        assert inspector.kernels(by_digest) == DtkKernels(KERNEL, RT_KERNEL, DTK_RELEASE_FILE, "9.4")
        assert client.blobs() == [dtk.config_digest, dtk.layers[-1]]  # config + the last layer only
        client.calls.clear()
        assert inspector.kernels(by_digest).kernel == KERNEL
        assert client.calls == []  # by digest: answered from the cache, no request at all
        assert inspector.kernels(ImageRef.parse(dtk.tag_spec)).kernel == KERNEL
        assert client.blobs() == [dtk.config_digest]  # by tag: the manifest and config say which digest
        assert inspector.cached(dtk.manifest_digest) is not None


def test_kernels_of_an_index_cached_under_the_index_digest(registry_plain):
    dtk = push_dtk(registry_plain, json_file=release_json(), index=True, media="oci")
    with client_for(registry_plain, counting=True) as client:
        inspector = DtkInspector(client)
        ref = ImageRef.parse(dtk.pull_spec)
        assert inspector.kernels(ref, tls=PLAIN).kernel == KERNEL
        client.calls.clear()
        assert inspector.kernels(ref, tls=PLAIN).kernel == KERNEL
        assert client.calls == []


def test_label_fallback(registry_tls):
    dtk = push_dtk(registry_tls, labels={"kernel-version": KERNEL, "kernel-rt-version": RT_KERNEL})
    with client_for(registry_tls) as client:
        assert DtkInspector(client).kernels(ImageRef.parse(dtk.pull_spec)) == DtkKernels(KERNEL, RT_KERNEL, "labels")


def test_malformed_release_file_falls_back_to_labels(registry_tls):
    dtk = push_dtk(registry_tls, json_file=b'{ "KERNEL_VERSION": ', labels={"kernel-version": KERNEL})
    with client_for(registry_tls) as client:
        kernels = DtkInspector(client).kernels(ImageRef.parse(dtk.pull_spec))
    assert (kernels.kernel, kernels.source) == (KERNEL, "labels")


@pytest.mark.parametrize("json_file, labels, problem", [
    (None, {}, f"no {DTK_RELEASE_FILE} and no kernel-version label"),
    (None, {"kernel-version": ""}, f"no {DTK_RELEASE_FILE} and no kernel-version label"),  # empty build arg
    (b"[]", {}, f"{DTK_RELEASE_FILE} is a JSON list, expected an object and no kernel-version label"),
])
def test_no_kernel_anywhere_is_permanent_and_cached(registry_tls, json_file, labels, problem):
    dtk = push_dtk(registry_tls, json_file=json_file, labels=labels)
    with client_for(registry_tls, counting=True) as client:
        inspector = DtkInspector(client)
        ref = ImageRef.parse(dtk.pull_spec)
        with pytest.raises(DtkKernelUnknown) as err:
            inspector.kernels(ref)
        assert str(err.value) == f"DTK image {registry_tls.host}/{dtk.repository}@{dtk.digest}: {problem}"
        assert isinstance(err.value, ValueError) and not isinstance(err.value, RegistryError)
        client.calls.clear()
        with pytest.raises(DtkKernelUnknown):
            inspector.kernels(ref)
        assert client.calls == []


def test_only_the_last_layers_are_searched(registry_tls):
    """The release file is written by the DTK's last RUN; the layers below hold gigabytes of RPMs."""
    files = [{"etc/driver-toolkit-release.json": release_json()}, {"a": b"1"}, {"b": b"2"}]
    dtk = push_image(registry_tls, unique("ocp/dtk"), "latest", files=files,
                     labels={"kernel-version": "4.18.0-1.el8.x86_64"})
    with client_for(registry_tls, counting=True) as client:
        kernels = DtkInspector(client).kernels(ImageRef.parse(dtk.pull_spec))
        assert (kernels.kernel, kernels.source) == ("4.18.0-1.el8.x86_64", "labels")
        assert dtk.layers[0] not in client.blobs()
        assert DtkInspector(client, scan_layers=None).kernels(ImageRef.parse(dtk.pull_spec)).kernel == KERNEL


def test_concurrent_asks_read_the_image_once(registry_tls):
    dtk = push_dtk(registry_tls, json_file=release_json())
    with client_for(registry_tls, counting=True) as client:
        inspector = DtkInspector(client)
        ref = ImageRef.parse(dtk.tag_spec)  # by tag: every thread must ask for the manifest
        barrier = threading.Barrier(8)
        results: list[DtkKernels] = []

        def ask() -> None:
            barrier.wait()
            results.append(inspector.kernels(ref))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [k.kernel for k in results] == [KERNEL] * 8
        assert client.blobs().count(dtk.layers[-1]) == 1


def test_missing_dtk_image_is_a_registry_error(registry_tls):
    ref = ImageRef.parse(f"{registry_tls.host}/{unique('ocp/dtk')}@sha256:" + "d" * 64)
    with client_for(registry_tls) as client, pytest.raises(RegistryError, match="manifest unknown"):
        DtkInspector(client).kernels(ref)


def test_release_kernels_with_missing_dtk(registry_tls, tmp_path: Path):
    missing = f"{registry_tls.host}/{unique('ocp/dtk')}@sha256:" + "d" * 64
    release = push_release(registry_tls, image_references(missing))
    with client_for(registry_tls) as client, pytest.raises(RegistryError) as err:
        release_kernels(client, ImageRef.parse(release.pull_spec))
    assert str(err.value).startswith(f"DTK image {missing}: ")
