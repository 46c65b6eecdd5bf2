"""Resolving an RHCOS version to its driver-toolkit image through the DTK ImageStream.

The tag's current status entry (``status.tags[].items[0]``) is preferred: it is what the image
registry actually imported, by digest, and it moves when a z-stream DTK lands under the same tag,
which is what triggers a rebuild. ``spec.tags[].from`` is the fallback for tags not yet imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kmm_dtk.core.fields import as_mapping
from kmm_dtk.core.versions import parse_rhcos

DEFAULT_DTK_NAMESPACE = "openshift"
DEFAULT_DTK_NAME = "driver-toolkit"


@dataclass(frozen=True)
class DtkImage:
    tag: str
    image: str  # a pull spec, by digest when it came from status
    source: str  # "status" or "spec"


class DtkResolutionError(ValueError):
    """No DTK image for an RHCOS version; the message names the version, the stream and its tags."""


def _version_order(tag: str) -> tuple[int, tuple[int, ...], str]:
    try:
        return (0, parse_rhcos(tag).sort_key, tag)
    except ValueError:
        return (1, (), tag)


def is_alias_tag(name: str) -> bool:
    return name == "latest" or name.startswith("latest-")


@dataclass(frozen=True)
class DtkIndex:
    """The RHCOS tags of one DTK ImageStream, alias and unusable tags dropped."""

    namespace: str
    name: str
    images: Mapping[str, DtkImage]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def resolve(self, rhcos: str) -> DtkImage:
        found = self.images.get(rhcos)
        if found is not None:
            return found
        present = ", ".join(sorted(self.images, key=_version_order)) or "none"
        raise DtkResolutionError(
            f"no tag {rhcos} in ImageStream {self.ref} (RHCOS tags present: {present}); "
            "the DTK for this RHCOS build is not imported yet"
        )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def dtk_index(imagestream: Mapping[str, Any]) -> DtkIndex:
    """Index an ImageStream dict. Malformed entries are skipped, never raised on."""
    meta = as_mapping(imagestream.get("metadata"))
    namespace = str(meta.get("namespace") or DEFAULT_DTK_NAMESPACE)
    name = str(meta.get("name") or DEFAULT_DTK_NAME)
    spec = as_mapping(imagestream.get("spec"))
    status = as_mapping(imagestream.get("status"))

    images: dict[str, DtkImage] = {}
    for tag in _as_list(spec.get("tags")):
        if not isinstance(tag, Mapping):
            continue
        tag_name, source = tag.get("name"), tag.get("from")
        if not isinstance(tag_name, str) or not tag_name or is_alias_tag(tag_name):
            continue
        if not isinstance(source, Mapping) or source.get("kind", "DockerImage") != "DockerImage":
            continue
        pull_spec = source.get("name")
        if isinstance(pull_spec, str) and pull_spec:
            images[tag_name] = DtkImage(tag_name, pull_spec, "spec")

    for tag in _as_list(status.get("tags")):
        if not isinstance(tag, Mapping):
            continue
        tag_name = tag.get("tag")
        if not isinstance(tag_name, str) or not tag_name or is_alias_tag(tag_name):
            continue
        items = _as_list(tag.get("items"))
        current = as_mapping(items[0]) if items else {}
        reference = current.get("dockerImageReference")
        if isinstance(reference, str) and reference:
            images[tag_name] = DtkImage(tag_name, reference, "status")

    return DtkIndex(namespace, name, images)


def missing_imagestream_error(namespace: str, name: str) -> DtkResolutionError:
    return DtkResolutionError(
        f"ImageStream {namespace}/{name} not found; the driver-toolkit ImageStream is needed to "
        "resolve the DTK placeholder (set --dtk-imagestream if it lives elsewhere)"
    )
