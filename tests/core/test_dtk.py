"""Resolving an RHCOS version to its driver-toolkit image (kmm_dtk.core.dtk)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kmm_dtk.core.dtk import (
    DtkImage,
    DtkResolutionError,
    dtk_index,
    is_alias_tag,
    missing_imagestream_error,
)

DATA = Path(__file__).resolve().parents[1] / "data"

DIGEST_410 = "sha256:84edddb4322cfe50d8545c41014a8f5595a4260a20d9a269e144909c5949582b"
DIGEST_411 = "sha256:484c9fe9900020e9b8f5601cbe86d054fe47a6f16e8d9dc6ecbfd58bffd1ad4b"
IMAGE_410 = f"quay.io/openshift-release-dev/ocp-v4.0-art-dev@{DIGEST_410}"
IMAGE_411 = f"registry.ci.openshift.org/ocp/4.11-2022-07-27-013908@{DIGEST_411}"
ART = "quay.io/openshift-release-dev/ocp-v4.0-art-dev"


@pytest.fixture
def design_stream() -> dict:
    """The design document's ImageStream, a fresh copy per test."""
    return yaml.safe_load((DATA / "design-imagestream.yaml").read_text())


def spec_tag(name, pull_spec, kind="DockerImage"):
    return {"annotations": None, "from": {"kind": kind, "name": pull_spec}, "generation": 1,
            "importPolicy": {"scheduled": True}, "name": name, "referencePolicy": {"type": "Source"}}


def status_tag(name, *refs):
    return {"tag": name, "items": [
        {"created": "2025-07-16T08:00:00Z", "dockerImageReference": ref, "generation": 1,
         "image": ref.rsplit("@", 1)[-1]} for ref in refs
    ]}


def stream(spec_tags=(), status_tags=(), namespace="openshift", name="driver-toolkit", with_status=True):
    obj = {"apiVersion": "image.openshift.io/v1", "kind": "ImageStream",
           "metadata": {"name": name, "namespace": namespace}, "spec": {"tags": list(spec_tags)}}
    if with_status:
        obj["status"] = {
            "dockerImageRepository": f"image-registry.openshift-image-registry.svc:5000/{namespace}/{name}",
            "tags": list(status_tags),
        }
    return obj


def test_design_stream_resolves_both_rhcos_tags_to_status_digests(design_stream):
    index = dtk_index(design_stream)
    assert index.ref == "openshift/driver-toolkit"
    assert index.resolve("410.84.202207140725-0") == DtkImage("410.84.202207140725-0", IMAGE_410, "status")
    assert index.resolve("411.86.202207260413-0") == DtkImage("411.86.202207260413-0", IMAGE_411, "status")
    assert set(index.images) == {"410.84.202207140725-0", "411.86.202207260413-0"}


def test_latest_alias_is_not_an_rhcos_tag(design_stream):
    index = dtk_index(design_stream)
    assert "latest" not in index.images
    with pytest.raises(DtkResolutionError):
        index.resolve("latest")


@pytest.mark.parametrize("tag, alias", [
    ("latest", True), ("latest-rhel-10", True), ("latest-rhel-9", True),
    ("9.6.20250715-0", False), ("410.84.202207140725-0", False), ("10.2.20260328-0", False),
])
def test_is_alias_tag(tag, alias):
    assert is_alias_tag(tag) is alias


def test_status_is_preferred_over_spec():
    moved = f"{ART}@sha256:{'1' * 64}"
    original = f"{ART}@sha256:{'0' * 64}"
    index = dtk_index(stream(
        [spec_tag("9.6.20250715-0", original)],
        # A z-stream DTK landed under the same tag: newest first in the status history.
        [status_tag("9.6.20250715-0", moved, original)],
    ))
    image = index.resolve("9.6.20250715-0")
    assert image.image == moved
    assert image.source == "status"


def test_spec_is_the_fallback_without_status():
    pull = f"{ART}@sha256:{'2' * 64}"
    index = dtk_index(stream([spec_tag("9.6.20250715-0", pull)], with_status=False))
    assert index.resolve("9.6.20250715-0") == DtkImage("9.6.20250715-0", pull, "spec")


def test_spec_is_the_fallback_for_a_tag_not_yet_imported(design_stream):
    pull = f"{ART}@sha256:{'3' * 64}"
    design_stream["spec"]["tags"].append(spec_tag("412.86.202208101039-0", pull))
    index = dtk_index(design_stream)
    assert index.resolve("412.86.202208101039-0").source == "spec"
    assert index.resolve("412.86.202208101039-0").image == pull
    assert index.resolve("411.86.202207260413-0").source == "status"


def test_status_with_empty_items_falls_back_to_spec():
    pull = f"{ART}@sha256:{'4' * 64}"
    index = dtk_index(stream([spec_tag("9.6.20250715-0", pull)], [{"tag": "9.6.20250715-0", "items": []}]))
    assert index.resolve("9.6.20250715-0").image == pull


def test_status_only_tag_is_usable():
    pull = f"{ART}@sha256:{'5' * 64}"
    index = dtk_index(stream([], [status_tag("10.2.20260328-0", pull)]))
    assert index.resolve("10.2.20260328-0") == DtkImage("10.2.20260328-0", pull, "status")


def test_rhel10_stream_aliases_are_ignored_and_rhcos_tags_kept():
    p96 = f"{ART}@sha256:{'6' * 64}"
    p102 = f"{ART}@sha256:{'7' * 64}"
    index = dtk_index(stream(
        [spec_tag("9.6.20250715-0", p96), spec_tag("10.2.20260328-0", p102),
         spec_tag("latest", p96), spec_tag("latest-rhel-10", p102)],
        [status_tag("9.6.20250715-0", p96), status_tag("10.2.20260328-0", p102),
         status_tag("latest", p96), status_tag("latest-rhel-10", p102)],
    ))
    assert set(index.images) == {"9.6.20250715-0", "10.2.20260328-0"}
    assert index.resolve("10.2.20260328-0").image == p102


def test_malformed_tags_are_ignored():
    good = f"{ART}@sha256:{'8' * 64}"
    index = dtk_index(stream(
        [
            spec_tag("", f"{ART}@sha256:{'9' * 64}"),  # empty name
            {"name": "418.94.202410260038-0", "from": None},  # null from
            spec_tag("416.94.202407251849-0", "driver-toolkit:418.94.202410260038-0", kind="ImageStreamTag"),
            {"name": "417.94.202409120353-0", "from": {"kind": "DockerImage", "name": ""}},
            {"name": None, "from": {"kind": "DockerImage", "name": good}},
            "not-a-tag",
            None,
            spec_tag("9.6.20250715-0", good),
        ],
        [
            {"tag": "", "items": [{"dockerImageReference": good}]},
            {"tag": "413.92.202305041429-0", "items": None},
            {"tag": "414.92.202312132152-0", "items": ["not-an-item"]},
            {"tag": "415.92.202402201450-0", "items": [{"dockerImageReference": None}]},
            {"items": [{"dockerImageReference": good}]},
            42,
        ],
    ))
    assert set(index.images) == {"9.6.20250715-0"}
    assert index.resolve("9.6.20250715-0").image == good


@pytest.mark.parametrize("broken", [
    {},
    {"metadata": None, "spec": None, "status": None},
    {"metadata": "x", "spec": [], "status": "y"},
    {"spec": {"tags": "410.84.202207140725-0"}, "status": {"tags": {"tag": "x"}}},
])
def test_dtk_index_tolerates_broken_objects(broken):
    index = dtk_index(broken)
    assert index.images == {}
    assert index.ref == "openshift/driver-toolkit"


def test_missing_tag_error_names_version_stream_and_tags(design_stream):
    design_stream["metadata"] = {"name": "my-dtk", "namespace": "dtk-mirror"}
    with pytest.raises(DtkResolutionError) as excinfo:
        dtk_index(design_stream).resolve("9.6.20260616-0")
    message = str(excinfo.value)
    assert "9.6.20260616-0" in message
    assert "dtk-mirror/my-dtk" in message
    assert "410.84.202207140725-0" in message and "411.86.202207260413-0" in message
    assert "latest" not in message  # aliases are not offered as tags


def test_missing_tag_error_on_empty_stream_says_none():
    with pytest.raises(DtkResolutionError, match="none"):
        dtk_index(stream()).resolve("9.6.20250715-0")


def test_resolution_error_is_a_value_error():
    assert issubclass(DtkResolutionError, ValueError)


def test_missing_imagestream_error_names_the_stream():
    err = missing_imagestream_error("openshift", "driver-toolkit")
    assert isinstance(err, DtkResolutionError)
    assert "openshift/driver-toolkit" in str(err)


def test_dtk_index_does_not_mutate_its_input(design_stream):
    before = copy.deepcopy(design_stream)
    dtk_index(design_stream)
    assert design_stream == before
