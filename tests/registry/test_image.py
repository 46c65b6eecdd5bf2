"""Reading images without pulling them (kmm_dtk.registry.image): configs through indexes, and files out of
layers with overlay semantics (last layer wins, whiteouts, links), against the real registry."""

from __future__ import annotations

import json

import pytest

from kmm_dtk.registry.client import RegistryClient, RegistryError
from kmm_dtk.registry.image import image_config, read_file
from kmm_dtk.registry.reference import ImageRef
from tests.registry.conftest import repo, server_auth
from tests.support.registry import OTHER_PLATFORM_LABEL, Directory, Hardlink, Symlink, push_image

pytestmark = pytest.mark.registry

DTK_RELEASE = json.dumps({"KERNEL_VERSION": "5.14.0-427.28.1.el9_4.x86_64",
                          "RT_KERNEL_VERSION": "5.14.0-427.28.1.el9_4.x86_64+rt", "RHEL_VERSION": "9.4"}).encode()


def ref(text: str) -> ImageRef:
    return ImageRef.parse(text)


class CountingClient(RegistryClient):
    """Records which blobs were streamed, to show which layers a read cost."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.opened: list[str] = []

    def open_blob(self, ref, digest, **kwargs):
        self.opened.append(digest)
        return super().open_blob(ref, digest, **kwargs)


@pytest.fixture
def client(registry_tls, make_client) -> RegistryClient:
    return make_client(registry_tls)


def push(registry, files, **kwargs):
    return push_image(registry, repo(), "v1", files=files, **kwargs)


# -- image_config ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("media", ["docker", "oci"])
def test_config_of_a_plain_manifest(registry_tls, client, media):
    image = push(registry_tls, [{"a": b"1"}, {"b": b"2"}], labels={"kernel-version": "5.14.0-427.28.1.el9_4.x86_64"},
                 media=media)
    config = image_config(client, ref(image.tag_spec))
    assert config is not None
    assert dict(config.labels) == {"kernel-version": "5.14.0-427.28.1.el9_4.x86_64"}
    assert config.digest == image.digest
    assert config.layers == image.layers and len(config.layers) == 2
    assert all(m.endswith("gzip") for m in config.layer_media_types)
    assert config.ref == ref(image.tag_spec)


@pytest.mark.parametrize("media", ["docker", "oci"])
def test_config_through_an_index_picks_the_platform(registry_tls, client, media):
    image = push(registry_tls, {"a": b"1"}, labels={"hash": "abc"}, media=media, index=True)
    amd64 = image_config(client, ref(image.tag_spec))
    assert amd64 is not None
    assert dict(amd64.labels) == {"hash": "abc"}
    assert amd64.digest == image.platform_digests["linux/amd64"] != image.digest
    arm64 = image_config(client, ref(image.pull_spec), platform=("linux", "arm64"))
    assert arm64 is not None
    assert arm64.labels[OTHER_PLATFORM_LABEL] == "linux/arm64"
    assert arm64.digest == image.platform_digests["linux/arm64"]
    assert image_config(client, ref(image.tag_spec), platform=("linux", "s390x")) is None


def test_config_without_labels(registry_tls, client):
    image = push(registry_tls, {"a": b"1"})
    config = image_config(client, ref(image.tag_spec))
    assert config is not None and dict(config.labels) == {}


def test_config_of_a_missing_image_is_none(registry_tls, client):
    image = push(registry_tls, {"a": b"1"})
    assert image_config(client, ref(f"{registry_tls.host}/{image.repository}:absent")) is None
    assert image_config(client, ref(f"{registry_tls.host}/{repo()}:v1")) is None


def test_config_when_the_registry_refuses_is_an_error(registry_tls, make_client):
    image = push(registry_tls, {"a": b"1"})
    refused = make_client(registry_tls, auth=server_auth(registry_tls, "wrong"))
    with pytest.raises(RegistryError, match="401"):
        image_config(refused, ref(image.tag_spec))


def test_config_blob_that_fails_its_digest_is_an_error(registry_tls, client):
    image = push(registry_tls, {"a": b"1"}, labels={"unique": repo()})
    path = registry_tls.blob_path(image.config_digest)
    path.write_bytes(path.read_bytes().replace(b"amd64", b"AMD64"))
    with pytest.raises(RegistryError, match="does not match its digest"):
        image_config(client, ref(image.tag_spec))


# -- read_file ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/etc/driver-toolkit-release.json", "etc/driver-toolkit-release.json",
                                  "./etc/driver-toolkit-release.json", "//etc/./driver-toolkit-release.json"])
def test_reads_a_dtk_release_file(registry_tls, client, path):
    image = push(registry_tls, [{"usr/bin/gcc": b"\x7fELF"}, {"etc/driver-toolkit-release.json": DTK_RELEASE}],
                 index=True)
    assert read_file(client, ref(image.tag_spec), path) == DTK_RELEASE


def test_a_file_in_the_last_layer_costs_one_layer(registry_tls, make_client):
    references = b'{"kind": "ImageStream", "spec": {"tags": []}}'
    image = push(registry_tls, [{"usr/bin/cluster-version-operator": b"\x7fELF" * 1000},
                                {"release-manifests/0000_00_cvo.yaml": b"kind: List"},
                                {"release-manifests/image-references": references}])
    counting = CountingClient(make_client(registry_tls).trust, server_auth(registry_tls))
    try:
        assert read_file(counting, ref(image.pull_spec), "release-manifests/image-references") == references
        assert counting.opened == [image.layers[-1]]
    finally:
        counting.close()


def test_last_layer_wins(registry_tls, client):
    image = push(registry_tls, [{"etc/f": b"bottom", "etc/g": b"only below"}, {"etc/f": b"middle"}, {"etc/f": b"top"}])
    assert read_file(client, ref(image.tag_spec), "etc/f") == b"top"
    assert read_file(client, ref(image.tag_spec), "etc/g") == b"only below"


def test_within_a_layer_the_last_entry_wins(registry_tls, client):
    image = push(registry_tls, [{"etc/f": b"first", "./etc/f": b"second"}])
    assert read_file(client, ref(image.tag_spec), "etc/f") == b"second"


@pytest.mark.parametrize("layers, path, expected", [
    ([{"etc/f": b"1"}, {"etc/.wh.f": b""}], "etc/f", None),  # the file deleted
    ([{"etc/d/f": b"1"}, {"etc/.wh.d": b""}], "etc/d/f", None),  # its directory deleted
    ([{"etc/d/f": b"1"}, {".wh.etc": b""}], "etc/d/f", None),  # a top-level directory deleted
    ([{"etc/d/f": b"1"}, {"etc/d/.wh..wh..opq": b"", "etc/d/g": b"2"}], "etc/d/f", None),  # opaque directory
    ([{"etc/d/f": b"1"}, {"etc/d/.wh..wh..opq": b"", "etc/d/g": b"2"}], "etc/d/g", b"2"),  # ... keeps its own
    ([{"etc/f": b"1"}, {"etc/.wh.f": b""}, {"etc/f": b"3"}], "etc/f", b"3"),  # deleted, then added again
    ([{"etc/f": b"1"}, {"etc/.wh.ff": b""}], "etc/f", b"1"),  # a whiteout of another name
    ([{"etc/f": b"1"}, {"etc/.wh.f": b""}], "etc/fx", None),
    ([{"etc/f": b"1"}, {"other/.wh.f": b""}], "etc/f", b"1"),  # a whiteout in another directory
])
def test_whiteouts(registry_tls, client, layers, path, expected):
    image = push(registry_tls, layers)
    assert read_file(client, ref(image.tag_spec), path) == expected


@pytest.mark.parametrize("layers, path, expected", [
    ([{"usr/share/real.json": b"x"}, {"etc/link.json": Symlink("../usr/share/real.json")}], "etc/link.json", b"x"),
    ([{"usr/share/real.json": b"x", "etc/link.json": Symlink("/usr/share/real.json")}], "etc/link.json", b"x"),
    ([{"usr/etc/x": b"v", "etc": Symlink("usr/etc")}], "etc/x", b"v"),  # a symlinked parent directory
    ([{"etc": Symlink("usr/etc")}, {"usr/etc/x": b"upper"}], "etc/x", b"upper"),  # resolved from the top again
    ([{"a/orig": b"data", "a/link": Hardlink("a/orig")}], "a/link", b"data"),
    ([{"etc/loop": Symlink("loop")}], "etc/loop", "error"),
    ([{"etc/dangling": Symlink("/nowhere")}], "etc/dangling", None),
    ([{"etc/x": b"1"}, {"etc": b"not a directory"}], "etc/x", None),  # a parent replaced by a file
    ([{"etc/x": Directory()}], "etc/x", None),
])
def test_links_and_non_files(registry_tls, client, layers, path, expected):
    image = push(registry_tls, layers)
    if expected == "error":
        with pytest.raises(RegistryError, match="too many links"):
            read_file(client, ref(image.tag_spec), path)
    else:
        assert read_file(client, ref(image.tag_spec), path) == expected


def test_missing_file_and_missing_image_give_none(registry_tls, client):
    image = push(registry_tls, [{"etc/os-release": b"ID=rhcos"}])
    assert read_file(client, ref(image.tag_spec), "etc/driver-toolkit-release.json") is None
    assert read_file(client, ref(image.tag_spec), "etc") is None  # a directory is not a file
    assert read_file(client, ref(f"{registry_tls.host}/{image.repository}:absent"), "etc/os-release") is None


def test_uncompressed_layers_and_a_given_config(registry_tls, client):
    image = push(registry_tls, [{"etc/f": b"plain tar"}], compress=False, media="oci")
    config = image_config(client, ref(image.tag_spec))
    assert config is not None and config.layer_media_types == ("application/vnd.oci.image.layer.v1.tar",)
    assert read_file(client, ref(image.tag_spec), "etc/f", config=config) == b"plain tar"


def test_file_larger_than_the_limit_is_an_error(registry_tls, client):
    image = push(registry_tls, [{"big": b"x" * 5000}])
    with pytest.raises(RegistryError, match="larger than 4096 bytes"):
        read_file(client, ref(image.tag_spec), "big", max_bytes=4096)
    assert read_file(client, ref(image.tag_spec), "big", max_bytes=5000) == b"x" * 5000


@pytest.mark.parametrize("compress", [True, False])
def test_layer_that_fails_its_digest_is_an_error(registry_tls, client, compress):
    image = push(registry_tls, [{"etc/f": b"a unique file " + repo().encode()}], compress=compress)
    path = registry_tls.blob_path(image.layers[0])
    data = path.read_bytes()
    path.write_bytes(data.replace(b"unique", b"UNIQUE") if not compress else bytes(b ^ 0x55 for b in data))
    with pytest.raises(RegistryError, match="does not match its digest"):
        read_file(client, ref(image.tag_spec), "etc/f")
