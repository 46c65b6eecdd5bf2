"""Reading cluster dumps: YAML or JSON files of single objects, multi-document streams or Lists.

This is what ``oc get nodes,imagestreams,modules,configmaps -A -o yaml`` prints, optionally with
the cluster's mirror rules (``oc get imagecontentsourcepolicies,imagedigestmirrorsets,imagetagmirrorsets
-o yaml``) so that a disconnected cluster's images are looked up where its nodes pull them.
Structural problems (unreadable file, bad YAML, a document without apiVersion/kind) raise DumpError
with one line naming the file and document; object-level problems are left to the planner. Files
are read with the bounds of ``kmm_dtk.core.untrusted`` (``DUMP_LIMITS``: room for a dump of
thousands of Nodes, nothing that nests, expands or counts without end).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _documents(path: Path, text: str) -> list[Any]:
    what = str(path)
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


def load_files(paths: list[str]) -> ClusterObjects:
    objects = ClusterObjects()
    for name in paths:
        path = Path(name)
        try:
            with path.open("rb") as handle:
                raw = handle.read(DUMP_LIMITS.max_bytes + 1)  # one byte over says "too large"
            if len(raw) > DUMP_LIMITS.max_bytes:
                raise DumpError(f"{path}: document larger than {DUMP_LIMITS.max_bytes} bytes")
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise DumpError(f"{path}: cannot read: {reason}") from None
        for n, doc in enumerate(_documents(path, text), start=1):
            if doc is None:
                continue  # empty document between '---' separators
            for _, obj in _expand(doc, f"{path}: document {n}"):
                bucket = _KINDS.get((obj["apiVersion"], obj["kind"]))
                if bucket is None:
                    objects.ignored += 1
                else:
                    getattr(objects, bucket).append(obj)
    return objects
