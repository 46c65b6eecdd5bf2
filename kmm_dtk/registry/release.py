"""Which kernel does a driver-toolkit image carry, and which DTK does an OpenShift release ship?

Both answers come straight from the registry, the way ``oc adm release info`` and a node find them,
without pulling whole images:

- A DTK image names its kernels in ``/etc/driver-toolkit-release.json`` (written by the last
  ``RUN`` of openshift/driver-toolkit's Dockerfile, so found in the last layer) and, on newer
  builds, in the labels ``kernel-version`` / ``kernel-rt-version``.
- A release image carries ``release-manifests/image-references`` in its last layer: an
  ``image.openshift.io/v1`` ImageStream whose tags name every component of the payload
  (``driver-toolkit``, ``rhel-coreos``, ...) by digest.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from kmm_dtk.core.untrusted import UntrustedInputError, load_json
from kmm_dtk.registry.client import RegistryClient, RegistryError
from kmm_dtk.registry.image import ImageConfig, image_config_over, read_file
from kmm_dtk.registry.reference import ImageRef, ReferenceError
from kmm_dtk.registry.tls import TLSPolicy

log = logging.getLogger(__name__)

DTK_RELEASE_FILE = "/etc/driver-toolkit-release.json"
IMAGE_REFERENCES = "release-manifests/image-references"
DTK_TAG = "driver-toolkit"
KERNEL_LABEL = "kernel-version"
RT_KERNEL_LABEL = "kernel-rt-version"
RELEASE_LABEL = "io.openshift.release"
DEFAULT_PLATFORM = ("linux", "amd64")

# A kernel release as uname -r spells it: "5.14.0-427.68.1.el9_4.x86_64+rt", "4.18.0-305.49.1.rt7.121.el8_4.x86_64".
_KERNEL_RE = re.compile(r"^[0-9][0-9A-Za-z._+~^-]*$")
# What `rpm -q --qf ... kernel-rt-core` prints into the json on architectures without an RT kernel.
_NOT_INSTALLED_RE = re.compile(r"^package \S+ is not installed$")
# The tags whose io.openshift.build.versions carry the release's RHCOS ("machine-os=..."), best first.
_RHCOS_TAGS = ("rhel-coreos", "rhel-coreos-8", "machine-os-content")


class _HasRef(Protocol):
    @property
    def ref(self) -> ImageRef: ...  # read-only: PullSource is frozen


class DtkKernelUnknown(ValueError):
    """The DTK image is there but names no usable kernel: its release file is absent or malformed and it has
    no ``kernel-version`` label. Permanent for that digest (and cached), unlike a ``RegistryError``."""


@dataclass(frozen=True)
class DtkKernels:
    """The kernels a DTK image was built for; ``source`` says where that was read."""

    kernel: str | None
    rt_kernel: str | None
    source: str  # DTK_RELEASE_FILE or "labels"
    rhel_version: str | None = None


def _kernel_value(value: Any, key: str, where: str, *, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValueError(f"{where}: no {key}")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key} is a {type(value).__name__}, expected a string")
    value = value.strip()
    if not required and _NOT_INSTALLED_RE.match(value):
        return None  # non-x86 DTKs record rpm's complaint instead of an RT kernel
    if not _KERNEL_RE.match(value):
        raise ValueError(f"{where}: {key} {value[:80]!r} is not a kernel version")
    return value


def _json_object(data: bytes | str, where: str, error: type[Exception], expected: str) -> dict[str, Any]:
    """``data`` as a JSON object; otherwise ``error`` saying what ``where`` holds instead. Read with the
    default bounds of ``kmm_dtk.core.untrusted``: both files are a few KB in every real image."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = data.decode("utf-8")  # UTF-8 only
        except UnicodeDecodeError as err:
            raise error(f"{where} is not valid JSON: not UTF-8 text ({err.reason})") from None
    try:
        doc = load_json(data, what=where)
    except UntrustedInputError as err:
        raise error(f"{where} is not valid JSON: {err.detail}" if err.syntax else str(err)) from None
    if not isinstance(doc, dict):
        raise error(f"{where} is a JSON {type(doc).__name__}, expected {expected}")
    return doc


def parse_dtk_release_json(data: bytes, image: str) -> DtkKernels:
    """Reads ``/etc/driver-toolkit-release.json``; ``ValueError`` names the image and the problem."""
    where = f"DTK image {image}: {DTK_RELEASE_FILE}"
    doc = _json_object(data, where, ValueError, "an object")
    kernel = _kernel_value(doc.get("KERNEL_VERSION"), "KERNEL_VERSION", where, required=True)
    rt_kernel = _kernel_value(doc.get("RT_KERNEL_VERSION"), "RT_KERNEL_VERSION", where, required=False)
    rhel = doc.get("RHEL_VERSION")
    rhel_version = (rhel.strip() or None) if isinstance(rhel, str) else None
    return DtkKernels(kernel, rt_kernel, DTK_RELEASE_FILE, rhel_version)


def kernels_from_labels(labels: dict[str, str] | Any, image: str) -> DtkKernels | None:
    """The ``kernel-version`` / ``kernel-rt-version`` labels, or None when the kernel one is absent or empty
    (the DTK Dockerfile sets them from build args that are often left empty)."""
    where = f"DTK image {image}: label"
    kernel = _kernel_value((labels or {}).get(KERNEL_LABEL), KERNEL_LABEL, where, required=False)
    if kernel is None:
        return None
    rt_kernel = _kernel_value((labels or {}).get(RT_KERNEL_LABEL), RT_KERNEL_LABEL, where, required=False)
    return DtkKernels(kernel, rt_kernel, "labels")


class DtkInspector:
    """Reads DTK kernels through the registry, cached by manifest digest (an image by digest never changes).

    Shared by the operator's workers: the cache is locked, and concurrent asks for one digest read the
    image once. Only the last ``scan_layers`` layers are searched for the release file (it is written by
    the Dockerfile's last ``RUN``; the others hold gigabytes of RPMs); ``None`` searches them all.
    Permanent outcomes are cached, failures to reach a registry are not.
    """

    def __init__(self, client: RegistryClient, *, scan_layers: int | None = 2, max_entries: int = 1024) -> None:
        self._client = client
        self._scan_layers = scan_layers
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, DtkKernels | str] = OrderedDict()  # manifest digest -> kernels | problem
        self._aliases: dict[tuple[str, tuple[str, str]], str] = {}  # (asked digest, platform) -> manifest digest
        self._inflight: dict[str, threading.Lock] = {}

    def kernels(self, ref: ImageRef, *, auth: Any = None, tls: TLSPolicy = TLSPolicy(),
                sources: Sequence[_HasRef] | None = None,
                platform: tuple[str, str] = DEFAULT_PLATFORM,
                tls_for: Callable[[ImageRef], Sequence[TLSPolicy]] | None = None) -> DtkKernels:
        """The kernels of ``ref``, asking ``sources`` (mirror PullSources) in order like a node: the first
        that has the image answers. ``RegistryError`` when no source has it or could be asked (worth asking
        again later); ``DtkKernelUnknown`` (a ``ValueError``) when the image names no kernel."""
        if ref.digest:
            hit = self._lookup_alias(ref.digest, platform)
            if hit is not None:
                return _result(hit)
        problems: list[str] = []
        unreachable = True  # every place asked gave no answer at all
        for candidate in _candidates(ref, sources):
            try:
                config, tls = image_config_over(self._client, candidate, tls_for(candidate) if tls_for else (tls,),
                                                platform=platform, auth=auth)
            except RegistryError as err:
                problems.append(_problem(candidate, ref, str(err)))
                unreachable = unreachable and err.unreachable
                continue
            unreachable = False
            if config is None:
                problems.append(_problem(candidate, ref, "manifest unknown"))
                continue
            try:
                outcome = self._inspect_once(candidate, config, auth, tls)
            except RegistryError as err:
                problems.append(_problem(candidate, ref, str(err)))
                continue
            if ref.digest:
                with self._lock:
                    self._aliases[(ref.digest, platform)] = config.digest
            return _result(outcome)
        raise RegistryError(f"DTK image {ref}: " + ("; ".join(problems) or "no mirror or source may be asked"),
                            unreachable=unreachable and bool(problems))

    def cached(self, digest: str) -> DtkKernels | None:
        with self._lock:
            hit = self._cache.get(digest)
        return hit if isinstance(hit, DtkKernels) else None

    def _lookup_alias(self, digest: str, platform: tuple[str, str]) -> DtkKernels | str | None:
        with self._lock:
            manifest = self._aliases.get((digest, platform))
            if manifest is None:
                return self._cache.get(digest)  # asked by the platform manifest's own digest
            return self._cache.get(manifest)

    def _inspect_once(self, ref: ImageRef, config: ImageConfig, auth: Any, tls: TLSPolicy) -> DtkKernels | str:
        with self._lock:
            hit = self._cache.get(config.digest)
            if hit is not None:
                self._cache.move_to_end(config.digest)
                return hit
            flight = self._inflight.setdefault(config.digest, threading.Lock())
        with flight:
            with self._lock:
                hit = self._cache.get(config.digest)
            if hit is not None:
                return hit
            try:
                outcome = self._inspect(ref, config, auth, tls)  # RegistryError: not cached, asked again
                with self._lock:
                    self._cache[config.digest] = outcome
                    while len(self._cache) > self._max_entries:
                        old, _ = self._cache.popitem(last=False)
                        for key in [k for k, v in self._aliases.items() if v == old]:
                            del self._aliases[key]
            finally:
                with self._lock:
                    self._inflight.pop(config.digest, None)
            return outcome

    def _inspect(self, ref: ImageRef, config: ImageConfig, auth: Any, tls: TLSPolicy) -> DtkKernels | str:
        image = f"{ref.name}@{config.digest}"
        scanned = config
        if self._scan_layers is not None and len(config.layers) > self._scan_layers:
            n = self._scan_layers
            scanned = replace(config, layers=config.layers[-n:], layer_media_types=config.layer_media_types[-n:])
        data = read_file(self._client, ref, DTK_RELEASE_FILE, config=scanned, auth=auth, tls=tls, max_bytes=1 << 20)
        file_problem = f"no {DTK_RELEASE_FILE}"
        if data is not None:
            try:
                found = parse_dtk_release_json(data, image)
                log.debug("read DTK kernels", extra={"image": image, "kernel": found.kernel,
                                                    "rt_kernel": found.rt_kernel, "source": found.source})
                return found
            except ValueError as err:
                file_problem = str(err).removeprefix(f"DTK image {image}: ")
        try:
            labelled = kernels_from_labels(config.labels, image)
        except ValueError as err:
            return f"DTK image {image}: {file_problem}, and {str(err).removeprefix(f'DTK image {image}: ')}"
        if labelled is None:
            return f"DTK image {image}: {file_problem} and no {KERNEL_LABEL} label"
        log.debug("read DTK kernels from labels", extra={"image": image, "kernel": labelled.kernel,
                                                          "rt_kernel": labelled.rt_kernel, "problem": file_problem})
        return labelled


def _candidates(ref: ImageRef, sources: Sequence[_HasRef] | None) -> list[ImageRef]:
    """None: ask ``ref`` itself. An empty list (NeverContactSource with no usable mirror) asks nobody."""
    return [ref] if sources is None else [s.ref for s in sources]


def _problem(candidate: ImageRef, ref: ImageRef, text: str) -> str:
    """What one place said; prefixed with the place when it is a mirror (the message already names ``ref``)."""
    return text if candidate == ref else f"{candidate}: {text}"


def _result(outcome: DtkKernels | str) -> DtkKernels:
    if isinstance(outcome, DtkKernels):
        return outcome
    raise DtkKernelUnknown(outcome)


# -- release images ------------------------------------------------------------------------------


class ReleaseLookupError(Exception):
    """A release image that answers, but not with a usable DTK: no image-references, a malformed one,
    no ``driver-toolkit`` tag, or the release not found at all. The message names the release."""


@dataclass(frozen=True)
class ReleaseInfo:
    release: str
    dtk_image: str  # the pull spec of the tag, by digest in every real release
    rhcos_version: str | None  # "418.94.202410090804-0", "9.6.20250715-0"
    version: str | None  # "4.18.1"


def _build_versions(annotations: Any) -> dict[str, str]:
    """``io.openshift.build.versions``: "machine-os=418.94.202410090804-0[,kernel=...]"."""
    if not isinstance(annotations, dict):
        return {}
    text = annotations.get("io.openshift.build.versions")
    if not isinstance(text, str):
        return {}
    versions = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() and value.strip():
            versions[key.strip()] = value.strip()
    return versions


def _rhcos_tags(tag: str) -> tuple[str, ...]:
    suffix = tag.removeprefix(DTK_TAG)
    if suffix and tag.startswith(DTK_TAG):  # "driver-toolkit-10" ships with "rhel-coreos-10"
        return (f"rhel-coreos{suffix}",)
    return _RHCOS_TAGS


def parse_image_references(data: bytes, release: str, *, tag: str = DTK_TAG) -> ReleaseInfo:
    """Reads a release's ``release-manifests/image-references``; ``ReleaseLookupError`` names the release
    and what is missing."""
    where = f"release {release}: {IMAGE_REFERENCES}"
    doc = _json_object(data, where, ReleaseLookupError, "an ImageStream object")
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if kind != "ImageStream" or not isinstance(api_version, str) or not (
            api_version.startswith("image.openshift.io/") or api_version == "v1"):
        raise ReleaseLookupError(f"{where} is {api_version or '(no apiVersion)'} {kind or '(no kind)'}, "
                                 "expected image.openshift.io/v1 ImageStream")
    spec = doc.get("spec")
    tags = spec.get("tags") if isinstance(spec, dict) else None
    if not isinstance(tags, list):
        raise ReleaseLookupError(f"{where} has no spec.tags list")
    by_name = {tag_name: t for t in tags if isinstance(t, dict) and isinstance(tag_name := t.get("name"), str)}
    entry = by_name.get(tag)
    if entry is None:
        similar = sorted(n for n in by_name if n.startswith(DTK_TAG))
        hint = f" (it has {', '.join(similar)})" if similar else f" ({len(by_name)} other tags)"
        raise ReleaseLookupError(f'release {release}: no image tag "{tag}" in {IMAGE_REFERENCES}{hint}')
    source = entry.get("from")
    if not isinstance(source, dict) or not source.get("name"):
        raise ReleaseLookupError(f'{where}: tag "{tag}" has no from.name')
    if source.get("kind", "DockerImage") != "DockerImage":
        raise ReleaseLookupError(f'{where}: tag "{tag}" is from a {source.get("kind")}, expected DockerImage')
    pull_spec = source["name"]
    if not isinstance(pull_spec, str):
        raise ReleaseLookupError(f'{where}: tag "{tag}" from.name is not a string')
    try:
        ImageRef.parse(pull_spec)
    except ReferenceError as err:
        raise ReleaseLookupError(f'{where}: tag "{tag}": {err}') from None
    rhcos = None
    for name in _rhcos_tags(tag):
        rhcos = _build_versions(by_name.get(name, {}).get("annotations")).get("machine-os")
        if rhcos:
            break
    metadata = doc.get("metadata")
    version = metadata.get("name") if isinstance(metadata, dict) else None
    return ReleaseInfo(release, pull_spec, rhcos, version if isinstance(version, str) and version else None)


def release_info(client: RegistryClient, ref: ImageRef, *, auth: Any = None, tls: TLSPolicy = TLSPolicy(),
                 sources: Sequence[_HasRef] | None = None, tag: str = DTK_TAG,
                 platform: tuple[str, str] = DEFAULT_PLATFORM,
                 tls_for: Callable[[ImageRef], Sequence[TLSPolicy]] | None = None) -> ReleaseInfo:
    """What ``oc adm release info --image-for=driver-toolkit`` answers, read from the release image's
    layers (last first). ``ReleaseLookupError`` when the answer is "no"; ``RegistryError`` when no
    source could be asked (unreachable, refused, timed out)."""
    release = str(ref)
    problems: list[str] = []
    unknown = False
    for candidate in _candidates(ref, sources):
        try:
            config, asked_tls = image_config_over(client, candidate, tls_for(candidate) if tls_for else (tls,),
                                                  platform=platform, auth=auth)
            if config is None:
                problems.append(_problem(candidate, ref, "manifest unknown"))
                continue
            data = read_file(client, candidate, IMAGE_REFERENCES, config=config, auth=auth, tls=asked_tls)
        except RegistryError as err:
            unknown = True
            problems.append(_problem(candidate, ref, str(err)))
            continue
        if data is None:
            raise ReleaseLookupError(f"release {release}: no {IMAGE_REFERENCES} in the image "
                                     "(not an OpenShift release image?)")
        info = parse_image_references(data, release, tag=tag)
        if info.version is None and config.labels.get(RELEASE_LABEL):
            info = replace(info, version=config.labels[RELEASE_LABEL])
        log.debug("read release", extra={"release": release, "dtk_image": info.dtk_image,
                                        "rhcos": info.rhcos_version, "version": info.version,
                                        "via": str(candidate)})
        return info
    detail = "; ".join(problems) or "no mirror or source may be asked"
    if unknown or not problems:
        raise RegistryError(f"release {release}: {detail}")
    raise ReleaseLookupError(f"release {release}: not found ({detail})")


def release_kernels(client: RegistryClient, ref: ImageRef, *, auth: Any = None, tls: TLSPolicy = TLSPolicy(),
                    mirrors: Any = None, inspector: DtkInspector | None = None, tag: str = DTK_TAG,
                    platform: tuple[str, str] = DEFAULT_PLATFORM,
                    tls_for: Callable[[ImageRef], Sequence[TLSPolicy]] | None = None) -> tuple[ReleaseInfo, DtkKernels]:
    """The release's DTK and that DTK's kernels; ``mirrors`` (a MirrorPolicy) maps both pull specs."""
    sources = mirrors.pull_sources(ref) if mirrors else None
    info = release_info(client, ref, auth=auth, tls=tls, sources=sources, tag=tag, platform=platform,
                        tls_for=tls_for)
    dtk = ImageRef.parse(info.dtk_image)
    inspector = inspector or DtkInspector(client)
    kernels = inspector.kernels(dtk, auth=auth, tls=tls, platform=platform, tls_for=tls_for,
                                sources=mirrors.pull_sources(dtk) if mirrors else None)
    return info, kernels


__all__ = [
    "DTK_RELEASE_FILE", "IMAGE_REFERENCES", "DTK_TAG", "DtkKernels", "parse_dtk_release_json",
    "kernels_from_labels", "DtkInspector", "DtkKernelUnknown", "ReleaseLookupError", "ReleaseInfo",
    "parse_image_references",
    "release_info", "release_kernels",
]
