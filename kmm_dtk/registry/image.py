"""Reading an image without pulling it: its config (labels, layers) through an index to one platform,
and a single file out of its layers, scanned top layer first with whiteouts honoured, the way an
overlay mount would show it."""

from __future__ import annotations

import logging
import posixpath
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import BinaryIO

from kmm_dtk.core.untrusted import Limits, UntrustedInputError, load_json
from kmm_dtk.registry.auth import AuthConfig
from kmm_dtk.registry.client import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    LinkAuth,
    Presence,
    RegistryClient,
    RegistryError,
)
from kmm_dtk.registry.reference import ImageRef
from kmm_dtk.registry.tls import TLSPolicy

log = logging.getLogger(__name__)

_INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
_IMAGE_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
_MAX_CONFIG = 8 << 20
# Manifests and configs as fetched (already size-capped by the client); OCI's own JSON nests a few levels.
_MANIFEST_LIMITS = Limits(max_bytes=_MAX_CONFIG)
_MAX_LINKS = 8
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


@dataclass(frozen=True)
class ImageConfig:
    ref: ImageRef  # the reference that answered
    digest: str  # manifest digest of the platform image
    labels: Mapping[str, str]
    layers: tuple[str, ...]  # layer digests, bottom first
    layer_media_types: tuple[str, ...]


def _document(body: bytes | None, ref: ImageRef) -> dict:
    try:
        doc = load_json(body or b"", what=f"manifest of {ref}", limits=_MANIFEST_LIMITS)
    except UntrustedInputError as err:
        raise RegistryError(f"manifest of {ref} is not JSON" if err.syntax else str(err)) from None
    if not isinstance(doc, dict):
        raise RegistryError(f"manifest of {ref} is not a JSON object")
    return doc


def _kind(media_type: str | None, doc: dict) -> str:
    media_type = doc.get("mediaType") or media_type
    if media_type in _INDEX_TYPES or (media_type is None and "manifests" in doc):
        return "index"
    if media_type in _IMAGE_TYPES or (media_type is None and "config" in doc and "layers" in doc):
        return "image"
    return str(media_type)


def _platform_digest(doc: dict, platform: tuple[str, ...]) -> str | None:
    os_name, architecture, *variant = platform
    candidates = []
    for entry in doc.get("manifests") or []:
        spec = entry.get("platform") or {} if isinstance(entry, dict) else {}
        if spec.get("os") == os_name and spec.get("architecture") == architecture:
            if variant and spec.get("variant") not in (variant[0], None):
                continue
            candidates.append(entry)
    # An exact variant match beats an entry that names none.
    candidates.sort(key=lambda e: 0 if variant and (e.get("platform") or {}).get("variant") == variant[0] else 1)
    return candidates[0].get("digest") if candidates else None


def image_config(client: RegistryClient, ref: ImageRef, *, platform: tuple[str, ...] = ("linux", "amd64"),
                 auth: AuthConfig | LinkAuth | None = None, tls: TLSPolicy = TLSPolicy()) -> ImageConfig | None:
    """None when the manifest is MISSING, or when an index has no image for ``platform``;
    RegistryError when the registry gave no definite answer, or one that makes no sense."""
    try:
        return _image_config(client, ref, platform, auth, tls)
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        # A malformed index or manifest (a bad digest, a platform that is not an object): the
        # registry's problem, reported like any other non-answer, never a crash of the caller.
        raise RegistryError(f"malformed manifest or config for {ref}: {type(err).__name__}: {err}") from None


def image_config_over(client: RegistryClient, ref: ImageRef, choices: Sequence[TLSPolicy], *,
                      platform: tuple[str, ...] = ("linux", "amd64"),
                      auth: AuthConfig | LinkAuth | None = None) -> tuple[ImageConfig | None, TLSPolicy]:
    """``image_config`` over the first of ``choices`` that gets through, and that choice (to read the
    layers the same way). For an insecure registry CRI-O tries HTTPS without verification, then plain
    HTTP, and falls back only when HTTPS could not be had at all (TLS or connection failures): an
    HTTPS answer such as a 401 is the answer. The first error is the one reported."""
    first: RegistryError | None = None
    for tls in choices:
        try:
            return image_config(client, ref, platform=platform, auth=auth, tls=tls), tls
        except RegistryError as err:
            first = first or err
            if not (err.unreachable or err.reason.startswith("TLS:")):
                break
    assert first is not None, "no TLS choice given"
    raise first


def _image_config(client: RegistryClient, ref: ImageRef, platform: tuple[str, ...], auth: AuthConfig | LinkAuth | None,
                  tls: TLSPolicy) -> ImageConfig | None:
    manifest = client.get_manifest(ref, auth=auth, tls=tls)
    if manifest.presence is Presence.MISSING:
        return None
    if manifest.presence is Presence.UNKNOWN:
        raise RegistryError(manifest.reason, unreachable=manifest.unreachable)
    doc = _document(manifest.body, ref)
    if _kind(manifest.media_type, doc) == "index":
        child = _platform_digest(doc, platform)
        if child is None:
            log.info("image index has no manifest for the platform",
                     extra={"image": str(ref), "platform": "/".join(platform)})
            return None
        child_ref = ref.with_digest(child)
        manifest = client.get_manifest(child_ref, auth=auth, tls=tls)
        if manifest.presence is not Presence.PRESENT:
            # The index names it: a 404 here is a broken or half-mirrored repository, not an absent image.
            raise RegistryError(f"{'/'.join(platform)} manifest {child} listed by {ref}: {manifest.reason}")
        doc = _document(manifest.body, child_ref)
    kind = _kind(manifest.media_type, doc)
    if kind != "image":
        raise RegistryError(f"manifest of {ref} has unsupported media type {kind}")
    try:
        config_digest = doc["config"]["digest"]
        layers = [(layer["digest"], layer.get("mediaType") or "") for layer in doc.get("layers") or []]
    except (KeyError, TypeError):
        raise RegistryError(f"manifest of {ref} lacks config or layer digests") from None
    raw = client.get_blob(ref, config_digest, auth=auth, tls=tls, max_bytes=_MAX_CONFIG)
    what = f"image config {config_digest} of {ref}"
    try:
        config = load_json(raw, what=what, limits=_MANIFEST_LIMITS)
    except UntrustedInputError as err:
        raise RegistryError(f"{what} is not a JSON image config" if err.syntax else str(err)) from None
    try:
        labels = (config.get("config") or {}).get("Labels") or {}
        labels = {str(k): str(v) for k, v in labels.items()}
    except AttributeError:
        raise RegistryError(f"{what} is not a JSON image config") from None
    assert manifest.digest is not None
    return ImageConfig(ref, manifest.digest, MappingProxyType(labels), tuple(d for d, _ in layers),
                       tuple(m for _, m in layers))


# -- files in layers -------------------------------------------------------------------------------

def _clean(path: str) -> str:
    """A tar member name or a path as a root-relative normal path: ``./etc/x`` and ``/etc/x`` -> ``etc/x``."""
    path = posixpath.normpath("/" + path.strip())
    return path.lstrip("/")


def _link_target(link_path: str, target: str) -> str:
    if target.startswith("/"):
        return _clean(target)
    return _clean(posixpath.join(posixpath.dirname("/" + link_path), target))


@dataclass
class _Scan:
    """What one layer says about a path."""
    content: bytes | None = None  # a regular file
    symlink: str | None = None  # the path a symlink points at (resolved against the root)
    hardlink: str | None = None  # a hard link's target, in this same layer
    other: bool = False  # a directory, device...: not a readable file
    hidden: bool = False  # whiteout (of it or a parent) or opaque parent: lower layers do not count
    parent_link: str | None = None  # the path through a symlinked parent directory
    parent_blocked: bool = False  # a parent is a regular file in this layer

    @property
    def decided(self) -> bool:
        return (self.content is not None or self.symlink is not None or self.hardlink is not None or self.other
                or self.hidden or self.parent_link is not None or self.parent_blocked)


def _scan_tar(stream: BinaryIO, target: str, max_bytes: int, where: str) -> _Scan:
    scan = _Scan()
    parents = [posixpath.join(*target.split("/")[:i]) for i in range(1, target.count("/") + 1)]
    parent_dirs = [""] + parents
    whiteouts = {posixpath.join(posixpath.dirname(p), _WHITEOUT + posixpath.basename(p)) for p in parents + [target]}
    opaque = {posixpath.join(d, _OPAQUE) if d else _OPAQUE for d in parent_dirs}
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            name = _clean(member.name)
            if name == target:
                scan.content = scan.symlink = scan.hardlink = None
                scan.other = False
                if member.isreg():
                    if member.size > max_bytes:
                        raise RegistryError(f"/{target} in {where} is larger than {max_bytes} bytes")
                    handle = tar.extractfile(member)
                    scan.content = handle.read() if handle else b""
                elif member.issym():
                    scan.symlink = _link_target(target, member.linkname)
                elif member.islnk():
                    scan.hardlink = _clean(member.linkname)
                else:
                    scan.other = True
            elif name in whiteouts or name in opaque:
                scan.hidden = True
            elif name in parents and not member.isdir():
                if member.issym():
                    rest = target[len(name) + 1:]
                    scan.parent_link = posixpath.join(_link_target(name, member.linkname), rest)
                else:
                    scan.parent_blocked = True
    return scan


def _read_layer(client: RegistryClient, config: ImageConfig, index: int, target: str, max_bytes: int,
                auth: AuthConfig | LinkAuth | None, tls: TLSPolicy) -> _Scan:
    digest, media_type = config.layers[index], config.layer_media_types[index]
    where = f"layer {digest} of {config.ref}"
    if "zstd" in media_type:
        raise RegistryError(f"{where}: zstd-compressed layers are not supported")
    with client.open_blob(config.ref, digest, auth=auth, tls=tls) as stream:
        problem: Exception | None = None
        scan = _Scan()
        try:
            scan = _scan_tar(stream, target, max_bytes, where)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            problem = err
        while stream.read(1 << 20):  # the rest of the blob, so its digest is checked
            pass
    if problem is not None:
        raise RegistryError(f"{where} is not a readable tar archive: {problem}")
    return scan


def read_file(client: RegistryClient, ref: ImageRef, path: str, *, config: ImageConfig | None = None,
              auth: AuthConfig | LinkAuth | None = None, tls: TLSPolicy = TLSPolicy(),
              max_bytes: int = 16 << 20) -> bytes | None:
    """The content of ``path`` in the image's filesystem, or None if it has none (or the image is missing).

    Layers are read top first and the scan stops at the first layer that decides the path, so a file
    in the last layer (a release image's ``image-references``) costs one layer download.
    """
    if config is None:
        config = image_config(client, ref, auth=auth, tls=tls)
        if config is None:
            return None
    target: str | None = _clean(path)  # a link may lead nowhere: then None or "", and no file
    start = len(config.layers) - 1
    for _ in range(_MAX_LINKS + 1):
        if not target:
            return None
        for index in range(start, -1, -1):
            scan = _read_layer(client, config, index, target, max_bytes, auth, tls)
            if scan.content is not None:
                log.debug("file found in image", extra={"image": str(config.ref), "path": "/" + target,
                                                        "layer": config.layers[index]})
                return scan.content
            if scan.symlink is not None or scan.parent_link is not None:
                target, start = scan.symlink or scan.parent_link, len(config.layers) - 1
                break
            if scan.hardlink is not None:
                target, start = scan.hardlink, index
                break
            if scan.decided:  # deleted, hidden, a directory or under a non-directory
                return None
        else:
            return None
    raise RegistryError(f"/{_clean(path)} in {config.ref}: too many links")
