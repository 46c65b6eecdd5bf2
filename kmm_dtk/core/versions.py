"""Kernel and RHCOS version strings as Nodes report them.

RHCOS changed its version scheme in OpenShift 4.19: ``418.94.202410260038-0`` (OCP 4.18, RHEL 9.4,
build timestamp YYYYMMDDHHMM) became ``9.6.20250715-0`` (RHEL 9.6, build date YYYYMMDD). Ordering by
the leading numbers would rank 418.94 above 9.6 and 10.2, so versions order by their build time
first, then the build counter, then the stream numbers. Every number compares as a number.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kmm_dtk.core.fields import field_at

NFD_OSTREE_LABEL = "feature.node.kubernetes.io/system-os_release.OSTREE_VERSION"

# A standalone token such as 410.84.202207262020-0, 9.6.20250715-12 or 10.2.20260328-0.
_RHCOS_TOKEN = re.compile(r"(?<![\w.])(\d{1,4})\.(\d{1,4})\.(\d{8}|\d{12})-(\d{1,6})(?![\w.])")


@dataclass(frozen=True, order=True)
class RhcosVersion:
    """A parsed RHCOS build version; ``str()`` gives back the exact tag name of the DTK ImageStream."""

    sort_key: tuple[int, ...] = field(repr=False)
    text: str = field(compare=False)

    @property
    def major(self) -> int:
        return int(self.text.split(".", 1)[0])

    def __str__(self) -> str:
        return self.text


def parse_rhcos(text: str) -> RhcosVersion:
    """Find the RHCOS version in an ``osImage`` or ``OSTREE_VERSION`` string.

    Raises ValueError with a reason when the string holds no RHCOS version, or more than one.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a string, got {type(text).__name__}")
    found = _RHCOS_TOKEN.findall(text)
    if not found:
        raise ValueError(
            f"no RHCOS version in {text!r} (expected e.g. '410.84.202207140725-0' or '9.6.20250715-0')"
        )
    if len(set(found)) > 1:
        raise ValueError(f"more than one RHCOS version in {text!r}")
    major, minor, stamp, build = found[0]
    # Date-only stamps (4.19+) sort as midnight of that day.
    stamp12 = int(stamp) * 10_000 if len(stamp) == 8 else int(stamp)
    key = (stamp12, int(build), int(major), int(minor))
    return RhcosVersion(sort_key=key, text=f"{major}.{minor}.{stamp}-{build}")


def kernel_key(kernel_version: str) -> str:
    """The kernel as KMM keys it: surrounding blanks and a bare trailing ``+`` trimmed.

    ``+rt`` and ``+64k`` are part of the kernel's identity (they need other headers) and stay.
    """
    key = kernel_version.strip()
    if key.endswith("+"):
        key = key[:-1]
    return key


@dataclass(frozen=True)
class NodeVersions:
    """What one Node says about its kernel and RHCOS; ``reason`` explains whatever is missing."""

    name: str
    kernel: str | None
    rhcos: RhcosVersion | None
    reason: str | None = None


def node_versions(node: Mapping[str, Any]) -> NodeVersions:
    """Read a Node object (a dict). Never raises: a Node it cannot read gets a reason instead."""
    labels = field_at(node, "metadata", "labels")
    return versions_of(field_at(node, "metadata", "name"), field_at(node, "status", "nodeInfo", "kernelVersion"),
                       field_at(node, "status", "nodeInfo", "osImage"), labels if isinstance(labels, Mapping) else {})


def versions_of(name: Any, raw_kernel: Any, os_image: Any, labels: Mapping[str, Any]) -> NodeVersions:
    """The same from a Node's fields (the operator caches a projection, not the object)."""
    name = name if isinstance(name, str) and name else "<unnamed>"
    if not isinstance(raw_kernel, str) or not kernel_key(raw_kernel):
        return NodeVersions(name, None, None, f"node {name}: status.nodeInfo.kernelVersion is missing or empty")
    kernel = kernel_key(raw_kernel)
    try:
        return NodeVersions(name, kernel, parse_rhcos(os_image))
    except ValueError as err:
        os_error = str(err)
    label = labels.get(NFD_OSTREE_LABEL)
    if isinstance(label, str):
        try:
            return NodeVersions(name, kernel, parse_rhcos(label))
        except ValueError:
            pass
    return NodeVersions(
        name,
        kernel,
        None,
        f"node {name}: status.nodeInfo.osImage: {os_error}; no usable {NFD_OSTREE_LABEL} label either",
    )
