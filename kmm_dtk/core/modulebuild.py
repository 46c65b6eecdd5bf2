"""``ModuleBuild`` (``kmm-dtk.io/v1alpha1``): the build half of a KMM Module, kept by kmm-dtk.

Where the KMM operator is installed it builds every Module that has a ``build`` section, and so
would kmm-dtk: two builders pushing one image, in whichever order they finish. The split removes
the race. The Module keeps what KMM needs to load (selector, mappings, ``containerImage``,
``registryTLS``) and no ``build`` section, so KMM waits for the image and never builds it; a
ModuleBuild in the same namespace names the Module and carries what its ``build`` sections would:

    spec:
      moduleName: simple-kmod          # the Module, same namespace
      build: {...}                     # as spec.moduleLoader.container.build
      kernelMappings:                  # per-mapping build sections, matched by regexp or literal
      - regexp: '^.+\\.el9_4\\..+$'
        build: {...}

kmm-dtk plans the Module as if those sections were in it (:func:`module_with_builds`), so it
builds exactly the image KMM will pull, and keeps its status and Events on the ModuleBuild.
:func:`split_module` turns a Module with ``build`` sections into the pair (``kmm-dtk migrate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kmm_dtk.core.fields import as_mapping, field_at

GROUP = "kmm-dtk.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModuleBuild"


class ModuleBuildError(ValueError):
    """A ModuleBuild that cannot apply to its Module; ``str()`` names the field and the fix."""


def plain(obj: Any) -> Any:
    """A mutable deep copy made of dicts and lists (cached objects are read-only)."""
    if isinstance(obj, Mapping):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def _container(module: Mapping[str, Any]) -> Mapping[str, Any]:
    found = field_at(module, "spec", "moduleLoader", "container")
    return found if isinstance(found, Mapping) else {}


def _mappings(container: Mapping[str, Any]) -> list[Any]:
    found = container.get("kernelMappings")
    return list(found) if isinstance(found, (list, tuple)) else []


def _matcher(mapping: Any) -> tuple[str, str] | None:
    """``("regexp", ...)`` or ``("literal", ...)``: what pairs a ModuleBuild's mapping with the Module's."""
    if not isinstance(mapping, Mapping):
        return None
    for kind in ("regexp", "literal"):
        value = mapping.get(kind)
        if isinstance(value, str) and value:
            return (kind, value)
    return None


def has_build_sections(module: Mapping[str, Any]) -> bool:
    container = _container(module)
    return container.get("build") is not None or any(
        isinstance(m, Mapping) and m.get("build") is not None for m in _mappings(container))


def module_name(module_build: Mapping[str, Any]) -> str:
    name = field_at(module_build, "spec", "moduleName")
    if not isinstance(name, str) or not name:
        raise ModuleBuildError("spec.moduleName is required: the name of the Module (same namespace) to build for")
    return name


def module_with_builds(module: Mapping[str, Any], module_build: Mapping[str, Any]) -> dict[str, Any]:
    """The Module as the planner should read it: its own spec with the ModuleBuild's build sections."""
    meta = as_mapping(module.get("metadata"))
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    if has_build_sections(module):
        raise ModuleBuildError(f"Module {name} has build sections of its own, so KMM builds it: remove them from "
                               "the Module (kmm-dtk migrate prints it without them), or delete this ModuleBuild")
    spec = as_mapping(module_build.get("spec"))
    merged: dict[str, Any] = plain(module)
    container = field_at(merged, "spec", "moduleLoader", "container")
    if not isinstance(container, dict):
        raise ModuleBuildError(f"Module {name} has no spec.moduleLoader.container to build for")
    if spec.get("build") is not None:
        container["build"] = plain(spec["build"])
    targets: dict[tuple[str, str], dict[str, Any]] = {}
    for mapping in container.get("kernelMappings") or ():
        matched = _matcher(mapping)
        if matched is not None and isinstance(mapping, dict):
            targets[matched] = mapping
    overrides = spec.get("kernelMappings")
    for i, override in enumerate(overrides if isinstance(overrides, (list, tuple)) else ()):
        field = f"spec.kernelMappings[{i}]"
        key = _matcher(override)
        if key is None:
            raise ModuleBuildError(f"{field}: needs the regexp or literal of the Module's mapping it builds for")
        if key not in targets:
            raise ModuleBuildError(f"{field}: Module {name} has no kernel mapping with {key[0]} {key[1]!r}")
        if not isinstance(override, Mapping) or override.get("build") is None:
            raise ModuleBuildError(f"{field}.build is required")
        targets[key]["build"] = plain(override["build"])
    if spec.get("build") is None and not overrides:
        raise ModuleBuildError("spec.build or spec.kernelMappings[].build is required: there is nothing to build")
    return merged


def split_module(module: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Module without build sections, the ModuleBuild carrying them), for ``kmm-dtk migrate``."""
    meta = as_mapping(module.get("metadata"))
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not name:
        raise ModuleBuildError("metadata.name is required")
    if not has_build_sections(module):
        raise ModuleBuildError(f"Module {name} has no build section: KMM does not build it, nothing to move")
    stripped: dict[str, Any] = plain(module)
    for key in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"):
        stripped.get("metadata", {}).pop(key, None)
    stripped.pop("status", None)
    container = field_at(stripped, "spec", "moduleLoader", "container")
    assert isinstance(container, dict)
    spec: dict[str, Any] = {"moduleName": name}
    if container.get("build") is not None:
        spec["build"] = container.pop("build")
    mappings = []
    for i, mapping in enumerate(container.get("kernelMappings") or ()):
        if not isinstance(mapping, dict) or mapping.get("build") is None:
            continue
        matched = _matcher(mapping)
        if matched is None:
            raise ModuleBuildError(f"spec.moduleLoader.container.kernelMappings[{i}] has a build section but neither "
                                   "regexp nor literal to match it by")
        mappings.append({matched[0]: matched[1], "build": mapping.pop("build")})
    if mappings:
        spec["kernelMappings"] = mappings
    metadata: dict[str, Any] = {"name": name}
    if isinstance(namespace, str) and namespace:
        metadata["namespace"] = namespace
    return stripped, {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
