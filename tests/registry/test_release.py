"""Reading a release's image-references and a DTK's driver-toolkit-release.json (no registry)."""

from __future__ import annotations

import json

import pytest

from kmm_dtk.registry.release import (
    DTK_RELEASE_FILE,
    DtkKernels,
    ReleaseInfo,
    ReleaseLookupError,
    kernels_from_labels,
    parse_dtk_release_json,
    parse_image_references,
)

RELEASE = "quay.io/openshift-release-dev/ocp-release@sha256:" + "1" * 64
ART = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:"
DTK = ART + "d" * 64
DTK10 = ART + "e" * 64


def tag(name: str, digest_char: str, versions: str | None = None) -> dict:
    """One spec.tags entry the way `oc adm release new` writes it."""
    annotations = {
        "io.openshift.build.commit.id": "0f2b3c4d",
        "io.openshift.build.commit.ref": "",
        "io.openshift.build.source-location": f"https://github.com/openshift/{name}",
    }
    if versions:
        annotations["io.openshift.build.versions"] = versions
        annotations["io.openshift.build.version-display-names"] = "machine-os=Red Hat Enterprise Linux CoreOS"
    return {
        "name": name,
        "annotations": annotations,
        "from": {"kind": "DockerImage", "name": ART + digest_char * 64},
        "generation": None,
        "importPolicy": {},
        "referencePolicy": {"type": "Source"},
    }


def image_references(*tags: dict, version: str = "4.18.1", **overrides) -> bytes:
    doc = {
        "kind": "ImageStream",
        "apiVersion": "image.openshift.io/v1",
        "metadata": {
            "name": version,
            "creationTimestamp": "2025-02-05T10:11:12Z",
            "annotations": {"release.openshift.io/from-image-stream": "ocp/4.18-art-latest-2025-02-05-101112"},
        },
        "spec": {"lookupPolicy": {"local": False}, "tags": list(tags)},
        "status": {"dockerImageRepository": ""},
    }
    doc.update(overrides)
    return json.dumps(doc, indent=2).encode()


def release_418() -> bytes:
    return image_references(
        tag("agent-installer-api-server", "a"),
        tag("cli", "b"),
        tag("driver-toolkit", "d"),
        tag("rhel-coreos", "c", "machine-os=418.94.202501221327-0"),
        tag("rhel-coreos-extensions", "f", "machine-os=418.94.202501221327-0"),
        tag("tools", "9"),
    )


# -- image-references ------------------------------------------------------------------------------

def test_realistic_release():
    info = parse_image_references(release_418(), RELEASE)
    assert info == ReleaseInfo(RELEASE, DTK, "418.94.202501221327-0", "4.18.1")


def test_old_release_reads_rhcos_from_machine_os_content():
    data = image_references(
        tag("driver-toolkit", "d"),
        tag("machine-os-content", "c", "machine-os=410.84.202207140725-0"),
        version="4.10.25",
    )
    info = parse_image_references(data, RELEASE)
    assert (info.rhcos_version, info.version) == ("410.84.202207140725-0", "4.10.25")


def test_rhel_coreos_wins_over_machine_os_content():
    data = image_references(
        tag("machine-os-content", "a", "machine-os=412.86.202301311551-0"),
        tag("driver-toolkit", "d"),
        tag("rhel-coreos-8", "b", "machine-os=412.86.202301311551-1"),
    )
    assert parse_image_references(data, RELEASE).rhcos_version == "412.86.202301311551-1"


def test_release_with_rhel10_stream():
    """4.21+ ship a second DTK for RHEL 10 nodes: tag driver-toolkit-10, RHCOS from rhel-coreos-10."""
    data = image_references(
        tag("driver-toolkit", "d"),
        tag("driver-toolkit-10", "e"),
        tag("rhel-coreos", "c", "machine-os=9.6.20260327-0"),
        tag("rhel-coreos-10", "f", "machine-os=10.2.20260328-0"),
        version="4.21.0",
    )
    assert parse_image_references(data, RELEASE) == ReleaseInfo(RELEASE, DTK, "9.6.20260327-0", "4.21.0")
    assert parse_image_references(data, RELEASE, tag="driver-toolkit-10") == ReleaseInfo(
        RELEASE, DTK10, "10.2.20260328-0", "4.21.0")


def test_versions_annotation_with_several_components():
    data = image_references(tag("driver-toolkit", "d"),
                            tag("rhel-coreos", "c", "kernel=5.14.0-570.27.1.el9_6, machine-os=9.6.20250715-0"))
    assert parse_image_references(data, RELEASE).rhcos_version == "9.6.20250715-0"


def test_no_rhcos_tag_and_no_version_are_none():
    data = image_references(tag("driver-toolkit", "d"), metadata={})
    assert parse_image_references(data, RELEASE) == ReleaseInfo(RELEASE, DTK, None, None)


def test_missing_driver_toolkit_tag_names_release_and_tag():
    data = image_references(tag("cli", "b"), tag("rhel-coreos", "c", "machine-os=9.6.20250715-0"))
    with pytest.raises(ReleaseLookupError) as err:
        parse_image_references(data, RELEASE)
    message = str(err.value)
    assert message.startswith(
        f'release {RELEASE}: no image tag "driver-toolkit" in release-manifests/image-references')
    assert "\n" not in message


def test_missing_tag_hints_at_other_dtk_tags():
    data = image_references(tag("driver-toolkit-10", "e"))
    with pytest.raises(ReleaseLookupError, match=r'no image tag "driver-toolkit" .*\(it has driver-toolkit-10\)'):
        parse_image_references(data, RELEASE)


@pytest.mark.parametrize("overrides, problem", [
    ({"kind": "Deployment", "apiVersion": "apps/v1"},
     "is apps/v1 Deployment, expected image.openshift.io/v1 ImageStream"),
    ({"kind": "ImageStream", "apiVersion": "apps/v1"}, "expected image.openshift.io/v1 ImageStream"),
    ({"kind": None}, "(no kind)"),
    ({"spec": {}}, "has no spec.tags list"),
    ({"spec": {"tags": {"driver-toolkit": DTK}}}, "has no spec.tags list"),
])
def test_wrong_shape(overrides, problem):
    data = image_references(tag("driver-toolkit", "d"), **overrides)
    with pytest.raises(ReleaseLookupError) as err:
        parse_image_references(data, RELEASE)
    assert str(err.value).startswith(f"release {RELEASE}: release-manifests/image-references ")
    assert problem in str(err.value)


@pytest.mark.parametrize("data, problem", [
    (b'{"kind": "ImageStream", "spec": {"tags": [', "is not valid JSON"),
    (b"", "is not valid JSON"),
    (b"\xff\xfe", "is not valid JSON"),
    (b'["driver-toolkit"]', "is a JSON list, expected an ImageStream object"),
])
def test_malformed_json(data, problem):
    with pytest.raises(ReleaseLookupError) as err:
        parse_image_references(data, RELEASE)
    assert str(err.value).startswith(f"release {RELEASE}: release-manifests/image-references {problem}")


@pytest.mark.parametrize("source, problem", [
    (None, 'tag "driver-toolkit" has no from.name'),
    ({"kind": "DockerImage"}, 'tag "driver-toolkit" has no from.name'),
    ({"kind": "ImageStreamTag", "name": "driver-toolkit:latest"}, "is from a ImageStreamTag, expected DockerImage"),
    ({"kind": "DockerImage", "name": "Not A Pull Spec"}, "invalid image reference"),
    ({"kind": "DockerImage", "name": 42}, "from.name is not a string"),
])
def test_unusable_tag_source(source, problem):
    entry = tag("driver-toolkit", "d")
    entry["from"] = source
    with pytest.raises(ReleaseLookupError) as err:
        parse_image_references(image_references(entry), RELEASE)
    assert str(err.value).startswith(f"release {RELEASE}: ")
    assert problem in str(err.value)


def test_tag_pull_spec_is_kept_as_written():
    entry = tag("driver-toolkit", "d")
    entry["from"]["name"] = "registry.example.com:5000/ocp/driver-toolkit:4.18"
    info = parse_image_references(image_references(entry), RELEASE)
    assert info.dtk_image == "registry.example.com:5000/ocp/driver-toolkit:4.18"


def test_odd_tag_entries_are_skipped():
    data = image_references("not a tag", {"name": None}, {"from": {}}, tag("driver-toolkit", "d"),
                            {"name": "rhel-coreos", "annotations": "nonsense"})
    assert parse_image_references(data, RELEASE) == ReleaseInfo(RELEASE, DTK, None, "4.18.1")


# -- driver-toolkit-release.json -------------------------------------------------------------------

IMAGE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "d" * 64


def test_dtk_release_json_x86_64():
    data = (b'{ "KERNEL_VERSION": "5.14.0-427.68.1.el9_4.x86_64", '
            b'"RT_KERNEL_VERSION": "5.14.0-427.68.1.el9_4.x86_64+rt", "RHEL_VERSION": "9.4" }\n')
    assert parse_dtk_release_json(data, IMAGE) == DtkKernels(
        "5.14.0-427.68.1.el9_4.x86_64", "5.14.0-427.68.1.el9_4.x86_64+rt", DTK_RELEASE_FILE, "9.4")


def test_dtk_release_json_old_rt_spelling():
    data = json.dumps({"KERNEL_VERSION": "4.18.0-305.57.1.el8_4.x86_64",
                       "RT_KERNEL_VERSION": "4.18.0-305.49.1.rt7.121.el8_4.x86_64",
                       "RHEL_VERSION": "8.4"}).encode()
    kernels = parse_dtk_release_json(data, IMAGE)
    assert (kernels.kernel, kernels.rt_kernel) == ("4.18.0-305.57.1.el8_4.x86_64",
                                                   "4.18.0-305.49.1.rt7.121.el8_4.x86_64")


@pytest.mark.parametrize("doc", [
    {"KERNEL_VERSION": "5.14.0-284.13.1.el9_2.aarch64", "RHEL_VERSION": "9.2"},  # older branches: no RT key
    {"KERNEL_VERSION": "5.14.0-284.13.1.el9_2.aarch64", "RT_KERNEL_VERSION": "", "RHEL_VERSION": "9.2"},
    {"KERNEL_VERSION": "5.14.0-284.13.1.el9_2.aarch64", "RT_KERNEL_VERSION": None},
    # what `rpm -q --qf ... kernel-rt-core` writes where there is no RT kernel
    {"KERNEL_VERSION": "5.14.0-284.13.1.el9_2.aarch64", "RT_KERNEL_VERSION": "package kernel-rt-core is not installed"},
])
def test_dtk_release_json_without_rt_kernel(doc):
    kernels = parse_dtk_release_json(json.dumps(doc).encode(), IMAGE)
    assert (kernels.kernel, kernels.rt_kernel) == ("5.14.0-284.13.1.el9_2.aarch64", None)


def test_dtk_release_json_extra_keys_ignored_and_whitespace_trimmed():
    data = json.dumps({"KERNEL_VERSION": " 5.14.0-570.27.1.el9_6.x86_64\n", "OCP_VERSION": "4.19",
                       "RHEL_VERSION": ""}).encode()
    assert parse_dtk_release_json(data, IMAGE) == DtkKernels("5.14.0-570.27.1.el9_6.x86_64", None,
                                                             DTK_RELEASE_FILE, None)


@pytest.mark.parametrize("data, problem", [
    (b'{ "KERNEL_VERSION": "5.14.0-427.68.1.el9_4.x86_64", ', "is not valid JSON"),
    (b"\xff", "is not valid JSON"),
    (b'"5.14.0"', "is a JSON str, expected an object"),
    (b'{"RT_KERNEL_VERSION": "5.14.0-427.68.1.el9_4.x86_64+rt"}', "no KERNEL_VERSION"),
    (b'{"KERNEL_VERSION": ""}', "no KERNEL_VERSION"),
    (b'{"KERNEL_VERSION": 5.14}', "KERNEL_VERSION is a float, expected a string"),
    (b'{"KERNEL_VERSION": "package kernel-core is not installed"}', "is not a kernel version"),
    (b'{"KERNEL_VERSION": "5.14.0-427.el9.x86_64", "RT_KERNEL_VERSION": "oops; rm -rf"}',
     "RT_KERNEL_VERSION 'oops; rm -rf' is not a kernel version"),
])
def test_dtk_release_json_malformed(data, problem):
    with pytest.raises(ValueError) as err:
        parse_dtk_release_json(data, IMAGE)
    assert str(err.value).startswith(f"DTK image {IMAGE}: {DTK_RELEASE_FILE}")
    assert problem in str(err.value)


def test_kernels_from_labels():
    labels = {"kernel-version": "5.14.0-570.27.1.el9_6.x86_64", "kernel-rt-version": "5.14.0-570.27.1.el9_6.x86_64+rt",
              "name": "driver-toolkit"}
    assert kernels_from_labels(labels, IMAGE) == DtkKernels(
        "5.14.0-570.27.1.el9_6.x86_64", "5.14.0-570.27.1.el9_6.x86_64+rt", "labels")
    assert kernels_from_labels({"kernel-version": "", "kernel-rt-version": ""}, IMAGE) is None  # empty build args
    assert kernels_from_labels({}, IMAGE) is None
    with pytest.raises(ValueError, match="label: kernel-version 'a b' is not a kernel version"):
        kernels_from_labels({"kernel-version": "a b"}, IMAGE)
