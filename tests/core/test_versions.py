"""Kernel and RHCOS version strings as Nodes report them (kmm_dtk.core.versions)."""

from __future__ import annotations

import pytest

from kmm_dtk.core.versions import (
    NFD_OSTREE_LABEL,
    NodeVersions,
    kernel_key,
    node_versions,
    parse_rhcos,
)


def make_node(name="worker-0", kernel="5.14.0-570.27.1.el9_6.x86_64",
              os_image="Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)", labels=None):
    node_info = {
        "architecture": "amd64",
        "containerRuntimeVersion": "cri-o://1.32.6-2.rhaos4.19.git3e4ac1b.el9",
        "kubeletVersion": "v1.32.6",
        "operatingSystem": "linux",
    }
    if kernel is not None:
        node_info["kernelVersion"] = kernel
    if os_image is not None:
        node_info["osImage"] = os_image
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "node-role.kubernetes.io/worker": "", **(labels or {})},
        },
        "status": {"nodeInfo": node_info},
    }


# -- parse_rhcos: every osImage format in the facts file ------------------------------------

@pytest.mark.parametrize(
    "os_image, expected",
    [
        ("Red Hat Enterprise Linux CoreOS 410.84.202207262020-0 (Ootpa)", "410.84.202207262020-0"),
        ("Red Hat Enterprise Linux CoreOS 413.92.202305041429-0 (Plow)", "413.92.202305041429-0"),
        ("Red Hat Enterprise Linux CoreOS 414.92.202312132152-0 (Plow)", "414.92.202312132152-0"),
        ("Red Hat Enterprise Linux CoreOS 416.94.202407251849-0", "416.94.202407251849-0"),
        ("Red Hat Enterprise Linux CoreOS 418.94.202410260038-0", "418.94.202410260038-0"),
        ("Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)", "9.6.20250715-0"),
        ("Red Hat Enterprise Linux CoreOS 9.6.20260303-1 (Plow)", "9.6.20260303-1"),
        ("Red Hat Enterprise Linux CoreOS 10.2.20260328-0 (Coughlan)", "10.2.20260328-0"),
        ("Red Hat Enterprise Linux CoreOS 10.2.20260328-0", "10.2.20260328-0"),
        ("Red Hat Enterprise Linux CoreOS 9.6.20250715-12 (Plow)", "9.6.20250715-12"),
        ("Red Hat Enterprise Linux CoreOS 418.94.202410260038-104", "418.94.202410260038-104"),
        # The bare OSTREE_VERSION, as the NFD label and the DTK tag names carry it.
        ("410.84.202207140725-0", "410.84.202207140725-0"),
        ("9.6.20250715-0", "9.6.20250715-0"),
    ],
)
def test_parse_rhcos_reads_every_known_os_image_format(os_image, expected):
    version = parse_rhcos(os_image)
    assert str(version) == expected
    assert version.text == expected


def test_parse_rhcos_major_is_the_stream_number():
    assert parse_rhcos("Red Hat Enterprise Linux CoreOS 410.84.202207262020-0 (Ootpa)").major == 410
    assert parse_rhcos("Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)").major == 9
    assert parse_rhcos("10.2.20260328-0").major == 10


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Red Hat Enterprise Linux CoreOS",
        "Ubuntu 22.04.4 LTS",
        "Fedora CoreOS 40.20240701.3.0",
        "Red Hat Enterprise Linux CoreOS 410.84 (Ootpa)",
        "Red Hat Enterprise Linux CoreOS 9.6.2025071-0 (Plow)",  # 7-digit date
        "Red Hat Enterprise Linux CoreOS 9.6.20250715 (Plow)",  # no build counter
        "Red Hat Enterprise Linux CoreOS 1.9.6.20250715-0",  # embedded in a longer dotted number
        "Red Hat Enterprise Linux CoreOS 9.6.20250715-0.1",
        "9.6.20250715-0 and 418.94.202410260038-0",  # two different versions
    ],
)
def test_parse_rhcos_rejects_garbage_with_value_error(text):
    with pytest.raises(ValueError) as excinfo:
        parse_rhcos(text)
    assert str(excinfo.value)  # always a reason


def test_parse_rhcos_error_quotes_the_input():
    with pytest.raises(ValueError, match="Ubuntu 22.04.4 LTS"):
        parse_rhcos("Ubuntu 22.04.4 LTS")


def test_parse_rhcos_reports_more_than_one_version():
    with pytest.raises(ValueError, match="more than one"):
        parse_rhcos("9.6.20250715-0 / 9.6.20250716-0")


def test_parse_rhcos_same_version_twice_is_fine():
    assert str(parse_rhcos("9.6.20250715-0 (9.6.20250715-0)")) == "9.6.20250715-0"


@pytest.mark.parametrize("value", [None, 410, 9.6, b"9.6.20250715-0", ["9.6.20250715-0"], {}])
def test_parse_rhcos_non_string_is_value_error(value):
    with pytest.raises(ValueError, match="expected a string"):
        parse_rhcos(value)


# -- ordering ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "older, newer",
    [
        ("9.6.20250715-9", "9.6.20250715-10"),  # numeric build counter, not string order
        ("9.6.20250715-2", "9.6.20250715-12"),
        ("418.94.202410260038-0", "9.6.20250715-0"),  # 4.18 -> 4.19 scheme change
        ("418.94.202509010000-0", "10.2.20260328-0"),
        ("9.6.20250715-0", "10.2.20260328-0"),
        ("410.84.202207140725-0", "411.86.202207260413-0"),  # the design document's upgrade
        ("410.84.202207140725-0", "410.84.202207262020-0"),  # later timestamp, same stream
        ("9.6.20250715-5", "9.6.20250716-0"),  # later day beats a higher counter
        ("416.94.202407251849-0", "418.94.202410260038-0"),
    ],
)
def test_rhcos_versions_order_by_build_time_then_counter(older, newer):
    a, b = parse_rhcos(older), parse_rhcos(newer)
    assert a < b
    assert b > a
    assert max([b, a]) is b
    assert max([a, b]) is b
    assert a != b


def test_sorting_a_realistic_tag_list():
    tags = [
        "10.2.20260328-0",
        "9.6.20250715-10",
        "410.84.202207140725-0",
        "9.6.20250715-9",
        "418.94.202410260038-0",
        "411.86.202207260413-0",
        "9.6.20260303-1",
    ]
    assert [str(v) for v in sorted(parse_rhcos(t) for t in tags)] == [
        "410.84.202207140725-0",
        "411.86.202207260413-0",
        "418.94.202410260038-0",
        "9.6.20250715-9",
        "9.6.20250715-10",
        "9.6.20260303-1",
        "10.2.20260328-0",
    ]


def test_equal_versions_from_different_os_image_strings_compare_equal():
    a = parse_rhcos("Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)")
    b = parse_rhcos("9.6.20250715-0")
    assert a == b
    assert not a < b and not b < a


# -- kernel keys ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "raw, key",
    [
        ("5.14.0-570.27.1.el9_6.x86_64", "5.14.0-570.27.1.el9_6.x86_64"),
        ("4.18.0-305.57.1.el8_4.x86_64", "4.18.0-305.57.1.el8_4.x86_64"),
        ("4.18.0-305.49.1.rt7.121.el8_4.x86_64", "4.18.0-305.49.1.rt7.121.el8_4.x86_64"),
        ("5.14.0-427.68.1.el9_4.x86_64+rt", "5.14.0-427.68.1.el9_4.x86_64+rt"),
        ("5.14.0-570.73.1.el9_6.aarch64+64k", "5.14.0-570.73.1.el9_6.aarch64+64k"),
        ("6.12.0-211.4.el10nv.aarch64+64k", "6.12.0-211.4.el10nv.aarch64+64k"),
        ("6.1.85+", "6.1.85"),  # GKE COS: bare trailing '+' trimmed
        ("  5.14.0-570.27.1.el9_6.x86_64\n", "5.14.0-570.27.1.el9_6.x86_64"),
    ],
)
def test_kernel_key(raw, key):
    assert kernel_key(raw) == key


def test_kernel_key_trims_only_one_bare_plus():
    assert kernel_key("6.1.85++") == "6.1.85+"


# -- node_versions ----------------------------------------------------------------------------

def test_node_versions_reads_kernel_and_os_image():
    nv = node_versions(make_node())
    assert nv == NodeVersions(
        "worker-0", "5.14.0-570.27.1.el9_6.x86_64", parse_rhcos("9.6.20250715-0"), None
    )
    assert str(nv.rhcos) == "9.6.20250715-0"


def test_node_versions_keys_the_kernel():
    nv = node_versions(make_node(kernel="5.14.0-427.68.1.el9_4.x86_64+rt",
                                 os_image="Red Hat Enterprise Linux CoreOS 418.94.202410260038-0"))
    assert nv.kernel == "5.14.0-427.68.1.el9_4.x86_64+rt"
    nv = node_versions(make_node(kernel="6.1.85+"))
    assert nv.kernel == "6.1.85"


def test_node_versions_falls_back_to_the_nfd_label():
    node = make_node(os_image="Red Hat Enterprise Linux CoreOS", labels={NFD_OSTREE_LABEL: "9.6.20260303-1"})
    nv = node_versions(node)
    assert nv.reason is None
    assert str(nv.rhcos) == "9.6.20260303-1"
    node = make_node(os_image=None, labels={NFD_OSTREE_LABEL: "418.94.202410260038-0"})
    assert str(node_versions(node).rhcos) == "418.94.202410260038-0"


def test_node_versions_prefers_os_image_over_the_label():
    node = make_node(os_image="Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)",
                     labels={NFD_OSTREE_LABEL: "9.6.20240101-0"})
    assert str(node_versions(node).rhcos) == "9.6.20250715-0"


def test_node_versions_unusable_os_image_and_label_gives_a_reason():
    node = make_node(name="worker-7", os_image="Ubuntu 22.04.4 LTS", labels={NFD_OSTREE_LABEL: "garbage"})
    nv = node_versions(node)
    assert nv.kernel == "5.14.0-570.27.1.el9_6.x86_64"  # the kernel is still known
    assert nv.rhcos is None
    assert "worker-7" in nv.reason
    assert "osImage" in nv.reason
    assert NFD_OSTREE_LABEL in nv.reason


def test_node_versions_missing_kernel_gives_a_reason():
    nv = node_versions(make_node(name="worker-3", kernel=None))
    assert nv.kernel is None and nv.rhcos is None
    assert "worker-3" in nv.reason and "kernelVersion" in nv.reason


@pytest.mark.parametrize(
    "node",
    [
        None,
        "worker-0",
        42,
        [],
        [make_node()],
        {},
        {"metadata": None, "status": None},
        {"metadata": "worker-0", "status": "Ready"},
        {"metadata": {"name": 5}, "status": {"nodeInfo": []}},
        {"metadata": {"name": "n"}, "status": {"nodeInfo": {"kernelVersion": 5}}},
        {"metadata": {"name": "n"}, "status": {"nodeInfo": {"kernelVersion": "   "}}},
        {"metadata": {"name": "n"}, "status": {"nodeInfo": {"kernelVersion": "+"}}},
        {"metadata": {"name": "n", "labels": "x"},
         "status": {"nodeInfo": {"kernelVersion": "5.14.0", "osImage": ["9.6.20250715-0"]}}},
        {"metadata": {"name": "n", "labels": {NFD_OSTREE_LABEL: 9.6}},
         "status": {"nodeInfo": {"kernelVersion": "5.14.0", "osImage": None}}},
    ],
)
def test_node_versions_never_raises_and_explains(node):
    nv = node_versions(node)
    assert isinstance(nv, NodeVersions)
    assert nv.rhcos is None
    assert isinstance(nv.reason, str) and nv.reason.startswith("node ")
    assert isinstance(nv.name, str) and nv.name


def test_node_versions_unnamed_node_gets_a_placeholder_name():
    nv = node_versions({"status": {"nodeInfo": {}}})
    assert nv.name == "<unnamed>"
    assert "<unnamed>" in nv.reason
