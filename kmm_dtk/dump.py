"""Reading cluster dumps: YAML or JSON of single objects, multi-document streams, Lists or bare
lists, from the ``-f`` sources of :mod:`kmm_dtk.cmd.sources` (files, directories, stdin).

This is what ``oc get nodes,imagestreams,modules,configmaps -A -o yaml`` prints, optionally with
the cluster's mirror rules (``oc get imagecontentsourcepolicies,imagedigestmirrorsets,imagetagmirrorsets
-o yaml``) so that a disconnected cluster's images are looked up where its nodes pull them.
Structural problems (unreadable file, bad YAML, a document without apiVersion/kind) raise DumpError
with one line naming the file and document; object-level problems are left to the planner. Files
are read with the bounds of ``kmm_dtk.core.untrusted`` (``DUMP_LIMITS``: room for a dump of
thousands of Nodes, nothing that nests, expands or counts without end).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from kmm_dtk.cmd.sources import SourceError, read_sources
from kmm_dtk.core.untrusted import Limits, UntrustedInputError, load_json, load_yaml_all

# A 5,000-Node cluster dumps to about 100 MB; objects this tool ignores (CRDs) may nest deeper than its own.
DUMP_LIMITS = Limits(max_bytes=256 << 20, max_depth=128, max_documents=100_000)


class DumpError(Exception):
    """A file the CLI cannot read; ``str()`` is the one line to print."""


@dataclass
class ClusterObjects:
    nodes: list[dict[str, Any]] = field(default_factory=list)
    imagestreams: list[dict[str, Any]] = field(default_factory=list)
    modules: list[dict[str, Any]] = field(default_factory=list)
    configmaps: list[dict[str, Any]] = field(default_factory=list)
    mirror_sets: list[dict[str, Any]] = field(default_factory=list)  # ICSP, IDMS and ITMS, for MirrorPolicy
    ignored: int = 0

    def find_imagestream(self, namespace: str, name: str) -> dict[str, Any] | None:
        for stream in self.imagestreams:
            meta = stream.get("metadata")
            if not isinstance(meta, dict):
                continue
            if meta.get("name") == name and (meta.get("namespace") or namespace) == namespace:
                return stream
        return None


_KINDS = {
    ("v1", "Node"): "nodes",
    ("v1", "ConfigMap"): "configmaps",
    ("image.openshift.io/v1", "ImageStream"): "imagestreams",
    ("kmm.sigs.x-k8s.io/v1beta1", "Module"): "modules",
    ("operator.openshift.io/v1alpha1", "ImageContentSourcePolicy"): "mirror_sets",
    ("config.openshift.io/v1", "ImageDigestMirrorSet"): "mirror_sets",
    ("config.openshift.io/v1", "ImageTagMirrorSet"): "mirror_sets",
}


def _documents(what: str, text: str) -> list[Any]:
    try:
        if text.lstrip().startswith(("{", "[")):
            try:
                return [load_json(text, what=what, limits=DUMP_LIMITS)]
            except UntrustedInputError as err:
                if not err.syntax:
                    raise
                # maybe YAML flow style; let the YAML parser report
        return load_yaml_all(text, what=what, limits=DUMP_LIMITS)
    except UntrustedInputError as err:
        raise DumpError(str(err)) from None


def _expand(doc: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(doc, list):  # a bare JSON or YAML list of objects
        for i, item in enumerate(doc):
            yield from _expand(item, f"{where}, item {i}")
        return
    if not isinstance(doc, dict):
        raise DumpError(f"{where}: expected a Kubernetes object (a mapping), got {type(doc).__name__}")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not api_version or not isinstance(kind, str) or not kind:
        missing = " and ".join(k for k, v in (("apiVersion", api_version), ("kind", kind)) if not v)
        raise DumpError(f"{where}: document has no {missing or 'valid apiVersion/kind'}")
    if kind == "List" or (kind.endswith("List") and isinstance(doc.get("items"), list)):
        items = doc.get("items")
        if not isinstance(items, list):
            raise DumpError(f"{where}: {kind} has no items list")
        item_kind = kind[: -len("List")] if kind != "List" else None
        for i, item in enumerate(items):
            if isinstance(item, dict) and item_kind and "kind" not in item:
                item = {"apiVersion": api_version, "kind": item_kind, **item}  # typed lists omit them
            yield from _expand(item, f"{where}, item {i}")
        return
    yield where, doc


def load_files(paths: Sequence[str], *, recursive: bool = False, stdin: BinaryIO | None = None,
               namespace: str | None = None) -> ClusterObjects:
    """Every object of every ``-f`` source (see :mod:`kmm_dtk.cmd.sources`). With ``namespace``, the
    namespaced kinds read (Modules, ConfigMaps) that name none are in it, as ``kubectl apply -n``
    would put them, and only its Modules are kept."""
    objects = ClusterObjects()
    try:
        for source in read_sources(paths, recursive=recursive, stdin=stdin, max_bytes=DUMP_LIMITS.max_bytes,
                                   max_files=DUMP_LIMITS.max_documents):
            try:
                text = source.data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DumpError(f"{source.name}: cannot read: {err}") from None
            _collect(objects, source.name, text, namespace)
    except SourceError as err:
        raise DumpError(str(err)) from None
    return objects


def _collect(objects: ClusterObjects, name: str, text: str, namespace: str | None) -> None:
    for n, doc in enumerate(_documents(name, text), start=1):
        if doc is None:
            continue  # empty document between '---' separators
        for _, obj in _expand(doc, f"{name}: document {n}"):
            bucket = _KINDS.get((obj["apiVersion"], obj["kind"]))
            if bucket is None:
                objects.ignored += 1
                continue
            if namespace is not None and bucket in ("modules", "configmaps"):
                obj = _in_namespace(obj, namespace)
                meta = obj.get("metadata")
                if bucket == "modules" and not (isinstance(meta, dict) and meta.get("namespace") == namespace):
                    continue
            getattr(objects, bucket).append(obj)


def _in_namespace(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return {**obj, "metadata": {"namespace": namespace}} if meta is None else obj
    if meta.get("namespace"):
        return obj
    return {**obj, "metadata": {**meta, "namespace": namespace}}
