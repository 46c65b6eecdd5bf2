"""What ``kustomize build`` emits for the fields manifests/ uses, without a kustomize binary.

The manifest tests and the OLM bundle generator both read the overlays through this one renderer, so
the checks and the bundle see the same objects. It follows each kustomization's ``resources``,
applies inline JSON 6902 ``add`` patches and the ``images:`` transformer (``newName``, ``newTag``,
``digest``), and refuses anything else rather than ignoring it: a field it does not apply would make
its output differ from kustomize's. ``tests/test_manifests.py`` compares it with a real kustomize
when one is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class RenderError(ValueError):
    """A kustomization this renderer cannot reproduce faithfully; the message names the file."""


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file."""
    try:
        with path.open() as stream:
            return [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    except OSError as err:
        raise RenderError(f"{path}: cannot read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise RenderError(f"{path}: not YAML: {' '.join(str(err).split())}") from err


def kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def read_kustomization(directory: Path) -> dict[str, Any]:
    path = kustomization_file(directory)
    if path is None:
        raise RenderError(f"{directory}: no kustomization.yaml")
    docs = load_documents(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise RenderError(f"{path}: expected one mapping, found {len(docs)} documents")
    return docs[0]


def render(directory: Path, seen: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """What ``kustomize build directory`` emits, for the fields this layout uses."""
    directory = directory.resolve()
    if directory in seen:
        raise RenderError(f"{directory}: kustomization cycle")
    kustomization = read_kustomization(directory)
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources") or []:
        target = (directory / entry).resolve()
        if target.is_dir():
            objects.extend(render(target, seen + (directory,)))
        elif target.is_file():
            objects.extend(load_documents(target))
        else:
            raise RenderError(f"{kustomization_file(directory)}: resource {entry} does not exist")
    for entry in kustomization.get("patches") or []:
        apply_json6902(objects, entry, kustomization_file(directory))
    for image in kustomization.get("images") or []:
        set_image(objects, image)
    return objects


def set_image(objects: list[dict[str, Any]], image: dict[str, Any]) -> None:
    """kustomize's ``images:`` entry: a digest replaces tag and digest, else ``newTag`` the tag."""
    for obj in objects:
        for container in pod_containers(obj):
            name, tag, digest = split_image(container["image"])
            if name != image["name"]:
                continue
            new_name = image.get("newName", name)
            if image.get("digest"):
                container["image"] = f"{new_name}@{image['digest']}"
            elif image.get("newTag"):
                container["image"] = f"{new_name}:{image['newTag']}"
            else:
                container["image"] = new_name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def apply_json6902(objects: list[dict[str, Any]], entry: dict[str, Any], source: Path | None = None) -> None:
    """An inline JSON 6902 patch on its target (kind and name): the ``add`` operation only, which is
    all the overlays use; anything else is an error rather than being ignored."""
    target = entry["target"]
    matches = [o for o in objects if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
    if len(matches) != 1:
        raise RenderError(f"{source}: patch target {target} matches {len(matches)} objects")
    for op in yaml.safe_load(entry["patch"]):
        if op["op"] != "add":
            raise RenderError(f"{source}: render() applies only add operations, not {op['op']}")
        *parents, last = (p.replace("~1", "/").replace("~0", "~") for p in op["path"].strip("/").split("/"))
        node: Any = matches[0]
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if last == "-":
            node.append(op["value"])
        elif isinstance(node, list):
            node.insert(int(last), op["value"])
        else:
            node[last] = op["value"]


def split_image(image: str) -> tuple[str, str, str]:
    """``registry:5000/repo:tag@sha256:...`` -> (``registry:5000/repo``, ``tag``, ``sha256:...``)."""
    image, _, digest = image.partition("@")
    head, _, last = image.rpartition("/")
    name, _, tag = last.partition(":")
    return (f"{head}/{name}" if head else name), tag, digest


def pod_containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    yield from spec.get("containers") or []
    yield from spec.get("initContainers") or []
