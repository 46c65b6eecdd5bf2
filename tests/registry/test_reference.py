"""Image references (kmm_dtk.registry.reference): the docker grammar and its normalisation."""

from __future__ import annotations

import pytest

from kmm_dtk.registry.reference import ImageRef, ReferenceError

D = "sha256:" + "ab" * 32
D512 = "sha512:" + "cd" * 64


@pytest.mark.parametrize("text, registry, repository, tag, digest", [
    ("quay.io/ns/repo:v1", "quay.io", "ns/repo", "v1", None),
    ("quay.io/ns/repo", "quay.io", "ns/repo", None, None),
    (f"quay.io/ns/repo@{D}", "quay.io", "ns/repo", None, D),
    (f"quay.io/ns/repo:v1@{D}", "quay.io", "ns/repo", "v1", D),
    (f"quay.io/a/b/c/d:tag_1.2-3@{D512}", "quay.io", "a/b/c/d", "tag_1.2-3", D512),
    ("127.0.0.1:5000/kmm/driver:5.14.0-284.13.1.el9_2.x86_64", "127.0.0.1:5000", "kmm/driver",
     "5.14.0-284.13.1.el9_2.x86_64", None),
    ("localhost/driver", "localhost", "driver", None, None),
    ("localhost:5000/driver:1", "localhost:5000", "driver", "1", None),
    ("registry.example.com:443/x", "registry.example.com:443", "x", None, None),
    ("[::1]:5000/x/y:z", "[::1]:5000", "x/y", "z", None),
    ("Registry.Example.com/x", "Registry.Example.com", "x", None, None),  # uppercase: a domain
    # docker.io defaults
    ("busybox", "docker.io", "library/busybox", None, None),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
    ("library/busybox", "docker.io", "library/busybox", None, None),
    ("user/repo:tag", "docker.io", "user/repo", "tag", None),
    ("docker.io/busybox", "docker.io", "library/busybox", None, None),
    ("index.docker.io/busybox", "docker.io", "library/busybox", None, None),
    ("registry-1.docker.io/user/repo", "docker.io", "user/repo", None, None),
    # separators
    ("quay.io/a__b/c-d/e.f/g---h", "quay.io", "a__b/c-d/e.f/g---h", None, None),
])
def test_parse_valid(text, registry, repository, tag, digest):
    ref = ImageRef.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize("text, problem", [
    ("", "empty"),
    (" quay.io/x", "whitespace"),
    ("https://quay.io/x", "scheme"),
    ("quay.io/Ns/repo", "lowercase"),
    ("Busybox", "lowercase"),
    ("quay.io/ns/repo:", "tag"),
    ("quay.io/ns/repo:-bad", "tag"),
    ("quay.io/ns/repo:" + "t" * 129, "tag"),
    ("quay.io/ns/repo@sha256:abc", "digest"),
    ("quay.io/ns/repo@md5:" + "a" * 32, "digest"),
    ("quay.io/ns/repo@sha256:" + "A" * 64, "digest"),
    ("quay.io/ns/repo@", "digest"),
    ("quay.io//repo", "path component"),
    ("quay.io/ns/", "path component"),
    ("quay.io/-ns/repo", "path component"),
    ("quay.io/ns/repo-", "path component"),
    ("quay.io/ns/re..po", "path component"),
    ("quay.io/ns/re___po", "path component"),
    ("bad_host.io/ns/repo", "registry"),
    ("-host.io/ns/repo", "registry"),
    ("quay.io:port/ns", "registry"),
    ("quay.io/" + "a" * 250, "longer than 255"),
])
def test_parse_errors_name_text_and_problem(text, problem):
    with pytest.raises(ReferenceError) as caught:
        ImageRef.parse(text)
    message = str(caught.value)
    assert problem in message
    assert repr(text) in message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("text", [
    "quay.io/ns/repo:v1",
    f"quay.io/ns/repo@{D}",
    f"quay.io/ns/repo:v1@{D}",
    "127.0.0.1:5000/kmm/driver",
    "docker.io/library/busybox:latest",
])
def test_str_round_trips(text):
    assert str(ImageRef.parse(text)) == text
    assert ImageRef.parse(str(ImageRef.parse(text))) == ImageRef.parse(text)


def test_short_names_print_in_full():
    assert str(ImageRef.parse("busybox:1")) == "docker.io/library/busybox:1"


@pytest.mark.parametrize("text, name, reference", [
    ("quay.io/ns/repo:v1", "quay.io/ns/repo", "v1"),
    (f"quay.io/ns/repo:v1@{D}", "quay.io/ns/repo", D),  # the digest wins: it is what is pulled
    ("quay.io/ns/repo", "quay.io/ns/repo", "latest"),
])
def test_name_and_reference(text, name, reference):
    ref = ImageRef.parse(text)
    assert (ref.name, ref.reference) == (name, reference)


def test_with_name_keeps_tag_and_digest_and_normalises():
    ref = ImageRef.parse(f"registry.redhat.io/product/repo:v1@{D}")
    mirrored = ref.with_name("mirror.local:5000/redhat/product/repo")
    assert mirrored == ImageRef("mirror.local:5000", "redhat/product/repo", "v1", D)
    assert ref.with_name("busybox").name == "docker.io/library/busybox"


@pytest.mark.parametrize("name", ["mirror.local/repo:v1", f"mirror.local/repo@{D}", "mirror.local/Repo", ""])
def test_with_name_rejects_references_and_bad_names(name):
    with pytest.raises(ReferenceError):
        ImageRef.parse("quay.io/x/y:v1").with_name(name)


def test_with_digest():
    ref = ImageRef.parse("quay.io/x/y:v1")
    assert ref.with_digest(D) == ImageRef("quay.io", "x/y", "v1", D)
    assert ref.with_digest(D).reference == D
    with pytest.raises(ReferenceError, match="digest"):
        ref.with_digest("sha256:short")


def test_refs_are_hashable_values():
    assert len({ImageRef.parse("busybox"), ImageRef.parse("docker.io/library/busybox")}) == 1
