"""KMM ``Module`` objects (``kmm.sigs.x-k8s.io/v1beta1``): the parts a build controller reads.

``parse_module`` validates everything up front and names the offending field, the way KMM's
admission webhook would, so a bad Module gets one clear reason instead of failing per kernel.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kmm_dtk.core.kernel import image_name_components, image_name_form
from kmm_dtk.core.re2 import Matcher, Re2Error, compile_re2
from kmm_dtk.core.reference import ImageRef, ReferenceError

MODULE_API_VERSION = "kmm.sigs.x-k8s.io/v1beta1"
MODULE_KIND = "Module"
DOCKERFILE_KEY = "dockerfile"

CONTAINER_PATH = "spec.moduleLoader.container"


class ModuleError(ValueError):
    """A Module that cannot be used as written; the message names the field and the fix."""


@dataclass(frozen=True)
class RegistryTLS:
    insecure: bool = False
    insecure_skip_tls_verify: bool = False


@dataclass(frozen=True)
class BuildConfig:
    dockerfile_configmap: str | None = None
    build_args: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()
    base_image_registry_tls: RegistryTLS | None = None
    selector: Mapping[str, str] | None = None

    def merged_with(self, override: BuildConfig | None) -> BuildConfig:
        """KMM's merge: the mapping's ConfigMap wins, args override by name, secrets append."""
        if override is None:
            return self
        args = dict(self.build_args)
        args.update(dict(override.build_args))
        secrets = list(self.secrets) + [s for s in override.secrets if s not in self.secrets]
        return BuildConfig(
            dockerfile_configmap=override.dockerfile_configmap or self.dockerfile_configmap,
            build_args=tuple(args.items()),
            secrets=tuple(secrets),
            base_image_registry_tls=override.base_image_registry_tls or self.base_image_registry_tls,
            selector=override.selector if override.selector is not None else self.selector,
        )


@dataclass(frozen=True)
class KernelMapping:
    index: int
    literal: str | None
    regexp: Matcher | None
    container_image: str | None
    build: BuildConfig | None
    registry_tls: RegistryTLS | None

    @property
    def path(self) -> str:
        return f"{CONTAINER_PATH}.kernelMappings[{self.index}]"

    def matches(self, kernel: str) -> bool:
        if self.literal is not None:
            return self.literal == kernel
        assert self.regexp is not None
        return self.regexp.search(kernel) is not None


@dataclass(frozen=True)
class Module:
    namespace: str
    name: str
    uid: str | None
    generation: int | None
    selector: Mapping[str, str]
    image_repo_secret: str | None
    rebuild_trigger_generation: int | None
    container_image: str | None
    build: BuildConfig | None
    registry_tls: RegistryTLS | None
    mappings: tuple[KernelMapping, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def selects(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(labels.get(k) == v for k, v in self.selector.items())

    def mapping_for(self, kernel: str) -> KernelMapping | None:
        """First match wins, as in KMM."""
        for mapping in self.mappings:
            if mapping.matches(kernel):
                return mapping
        return None


# -- parsing --------------------------------------------------------------------------------


def _mapping_at(obj: Any, path: str, required: bool = False) -> Mapping[str, Any] | None:
    if obj is None:
        if required:
            raise ModuleError(f"{path} is required")
        return None
    if not isinstance(obj, Mapping):
        raise ModuleError(f"{path} must be an object, got {type(obj).__name__}")
    return obj


def _str_at(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ModuleError(f"{path}.{key} must be a string, got {type(value).__name__}")
    return value


def _labels_at(obj: Any, path: str) -> Mapping[str, str]:
    mapping = _mapping_at(obj, path) or {}
    for k, v in mapping.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ModuleError(f"{path} must map label names to string values (offending key {k!r})")
    return dict(mapping)


def _name_ref(obj: Any, path: str) -> str | None:
    ref = _mapping_at(obj, path)
    if ref is None:
        return None
    name = ref.get("name")
    if not isinstance(name, str) or not name:
        raise ModuleError(f"{path}.name must be a non-empty string")
    return name


def _tls(obj: Any, path: str) -> RegistryTLS | None:
    tls = _mapping_at(obj, path)
    if tls is None:
        return None
    for key in ("insecure", "insecureSkipTLSVerify"):
        if not isinstance(tls.get(key, False), bool):
            raise ModuleError(f"{path}.{key} must be true or false")
    return RegistryTLS(bool(tls.get("insecure", False)), bool(tls.get("insecureSkipTLSVerify", False)))


def _build(obj: Any, path: str) -> BuildConfig | None:
    build = _mapping_at(obj, path)
    if build is None:
        return None
    args: dict[str, str] = {}
    raw_args = build.get("buildArgs") or []
    if not isinstance(raw_args, list):
        raise ModuleError(f"{path}.buildArgs must be a list of {{name, value}}")
    for i, arg in enumerate(raw_args):
        if not isinstance(arg, Mapping) or not isinstance(arg.get("name"), str) or not arg["name"]:
            raise ModuleError(f"{path}.buildArgs[{i}].name must be a non-empty string")
        value = arg.get("value", "")
        if not isinstance(value, str):
            raise ModuleError(f"{path}.buildArgs[{i}].value must be a string (quote it in YAML)")
        args[arg["name"]] = value
    raw_secrets = build.get("secrets") or []
    if not isinstance(raw_secrets, list):
        raise ModuleError(f"{path}.secrets must be a list of {{name}}")
    secrets: list[str] = []
    for i, secret in enumerate(raw_secrets):
        name = _name_ref(secret, f"{path}.secrets[{i}]")
        if name and name not in secrets:
            secrets.append(name)
    selector = build.get("selector")
    return BuildConfig(
        dockerfile_configmap=_name_ref(build.get("dockerfileConfigMap"), f"{path}.dockerfileConfigMap"),
        build_args=tuple(args.items()),
        secrets=tuple(secrets),
        base_image_registry_tls=_tls(build.get("baseImageRegistryTLS"), f"{path}.baseImageRegistryTLS"),
        selector=_labels_at(selector, f"{path}.selector") if selector is not None else None,
    )


def _image_at(obj: Mapping[str, Any], path: str) -> str | None:
    """A ``containerImage`` template, None when unset or empty (KMM reads both alike)."""
    image = _str_at(obj, "containerImage", path)
    if image:
        _require_tag_or_digest(image, f"{path}.containerImage")
    return image or None


def _require_tag_or_digest(template: str, path: str) -> None:
    """Refuse an image with neither a tag nor a digest, as KMM's webhook does: every kernel would push
    to, and every node pull, the one ``:latest``. Checked as written, since no variable's value holds
    ``/``, ``:`` or ``@``. KMM accepts any ``:``; a registry's port is not a tag, so it is refused here."""
    if "@" in template or ":" in template.rsplit("/", 1)[-1]:
        return
    port = " (its ':' is the registry's port)" if ":" in template else ""
    raise ModuleError(
        f"{path} '{template}' has neither a tag nor a digest{port}: every kernel would push to the same "
        "image; add a tag such as ':${KERNEL_FULL_VERSION}'"
    )


def _int_or_none(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModuleError(f"{path} must be an integer")
    return value


def parse_module(obj: Mapping[str, Any]) -> Module:
    """Validate a Module dict; raises ModuleError naming the field and what to write instead."""
    meta = _mapping_at(obj.get("metadata"), "metadata", required=True)
    assert meta is not None
    name, namespace = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not name:
        raise ModuleError("metadata.name is required")
    if not isinstance(namespace, str):
        raise ModuleError(f"metadata.namespace must be a string, got {type(namespace).__name__}")
    spec = _mapping_at(obj.get("spec"), "spec", required=True)
    assert spec is not None
    if spec.get("selector") is None:
        raise ModuleError("spec.selector is required: the labels of the nodes this Module targets")
    selector = _labels_at(spec.get("selector"), "spec.selector")
    loader = _mapping_at(spec.get("moduleLoader"), "spec.moduleLoader", required=True)
    assert loader is not None
    container = _mapping_at(loader.get("container"), CONTAINER_PATH, required=True)
    assert container is not None
    container_image = _image_at(container, CONTAINER_PATH)

    raw_mappings = container.get("kernelMappings")
    if not isinstance(raw_mappings, list) or not raw_mappings:
        raise ModuleError(f"{CONTAINER_PATH}.kernelMappings must list at least one mapping")
    mappings = []
    for i, raw in enumerate(raw_mappings):
        path = f"{CONTAINER_PATH}.kernelMappings[{i}]"
        m = _mapping_at(raw, path, required=True)
        assert m is not None
        # Empty reads as unset, as in KMM: {literal: "", regexp: "..."} is a regexp mapping.
        literal, regexp = _str_at(m, "literal", path) or None, _str_at(m, "regexp", path) or None
        if (literal is None) == (regexp is None):
            raise ModuleError(f"{path}: set exactly one of literal or regexp, non-empty")
        compiled = None
        if regexp is not None:
            try:
                compiled = compile_re2(regexp)
            except Re2Error as err:
                raise ModuleError(f"{path}.regexp '{regexp}': {err}") from None
        image = _image_at(m, path)
        if image is None and container_image is None:
            # Module-wide, as in KMM's webhook: not only once some node's kernel matches this mapping.
            raise ModuleError(f"{path} has no containerImage and {CONTAINER_PATH}.containerImage is not set "
                              "either: set one of them")
        mappings.append(
            KernelMapping(
                index=i,
                literal=literal,
                regexp=compiled,
                container_image=image,
                build=_build(m.get("build"), f"{path}.build"),
                registry_tls=_tls(m.get("registryTLS"), f"{path}.registryTLS"),
            )
        )

    return Module(
        namespace=namespace,
        name=name,
        uid=meta.get("uid") if isinstance(meta.get("uid"), str) else None,
        generation=meta.get("generation") if isinstance(meta.get("generation"), int) else None,
        selector=selector,
        image_repo_secret=_name_ref(spec.get("imageRepoSecret"), "spec.imageRepoSecret"),
        rebuild_trigger_generation=_int_or_none(
            spec.get("imageRebuildTriggerGeneration"), "spec.imageRebuildTriggerGeneration"
        ),
        container_image=container_image,
        build=_build(container.get("build"), f"{CONTAINER_PATH}.build"),
        registry_tls=_tls(container.get("registryTLS"), f"{CONTAINER_PATH}.registryTLS"),
        mappings=tuple(mappings),
    )


# -- per-kernel resolution ---------------------------------------------------------------------

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_TEMPLATE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
COMPONENT_VARIABLES = ("KERNEL_XYZ", "KERNEL_X", "KERNEL_Y", "KERNEL_Z")


def template_variables(module: Module, kernel: str) -> dict[str, str]:
    """What KMM substitutes into ``containerImage`` for this kernel, all from the kernel's image-name form
    (``...x86_64+rt`` gives ``...x86_64_rt``: the tag KMM pushes and pulls). The component variables are
    absent when that form has fewer than three components (see ``missing_components``)."""
    name_form = image_name_form(kernel)
    variables = {"KERNEL_FULL_VERSION": name_form, "KERNEL_VERSION": name_form}
    parts = image_name_components(kernel)
    if len(parts) >= 3:
        variables.update(zip(COMPONENT_VARIABLES, (".".join(parts[:3]), *parts[:3]), strict=True))
    variables.update({"MOD_NAME": module.name, "MOD_NAMESPACE": module.namespace})
    return variables


def missing_components(kernel: str) -> dict[str, str]:
    """Why each component variable has no value for this kernel (empty when all have one). KMM fails such
    a kernel ("expected at least three components") rather than tag images with empty parts."""
    parts = image_name_components(kernel)
    if len(parts) >= 3:
        return {}
    form = image_name_form(kernel)
    written = f"kernel {kernel}" + (f" (written {form} in image names)" if form != kernel else "")
    why = (f"{written} has {len(parts)} component{'s' if len(parts) != 1 else ''} separated by '.' or '-', "
           "expected at least three")
    return dict.fromkeys(COMPONENT_VARIABLES, why)


def render_image(template: str, variables: Mapping[str, str], path: str,
                 unavailable: Mapping[str, str] | None = None) -> str:
    """Substitute ``${VAR}`` / ``$VAR``; an unknown variable is an error, not an empty string, and so is a
    known one with no value for this kernel (``unavailable`` says why)."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in variables:
            return variables[name]
        if unavailable and name in unavailable:
            raise ModuleError(f"{path} {template!r}: ${{{name}}} has no value: {unavailable[name]}")
        known = ", ".join(f"${{{k}}}" for k in (*variables, *(unavailable or {})))
        raise ModuleError(f"{path} {template!r}: unknown variable ${{{name}}} (known: {known})")

    image = _TEMPLATE_VAR.sub(sub, template)
    if not image or any(c.isspace() for c in image):
        raise ModuleError(f"{path} renders to '{image}', which is not an image reference")
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    if ":" in last:
        tag = last.split(":", 1)[1]
        if not _TAG.fullmatch(tag):
            raise ModuleError(
                f"{path} renders to '{image}', whose tag '{tag}' a registry would refuse (tags allow "
                "letters, digits, '_', '.' and '-', at most 128, and do not start with '.' or '-')"
            )
    try:  # after substitution: a template is valid when what it renders to is
        ImageRef.parse(image)
    except ReferenceError as err:
        # No registry could ever answer for it: an invalid Module, not a registry to wait for.
        raise ModuleError(f"{path} renders to '{image}', which is not a valid image reference: "
                          f"{err.problem}") from None
    return image


@dataclass(frozen=True)
class KernelTarget:
    """What a Module asks for on one kernel: the target image and the merged build config."""

    mapping: KernelMapping
    image: str
    build: BuildConfig | None
    registry_tls: RegistryTLS | None


def target_for(module: Module, kernel: str) -> KernelTarget | None:
    """None when no mapping matches; raises ModuleError when the matching mapping is unusable."""
    mapping = module.mapping_for(kernel)
    if mapping is None:
        return None
    if mapping.container_image:
        template, path = mapping.container_image, f"{mapping.path}.containerImage"
    elif module.container_image:
        template, path = module.container_image, f"{CONTAINER_PATH}.containerImage"
    else:
        raise ModuleError(
            f"{mapping.path} matches kernel {kernel} but neither it nor {CONTAINER_PATH} sets containerImage"
        )
    image = render_image(template, template_variables(module, kernel), path, missing_components(kernel))
    build = module.build.merged_with(mapping.build) if module.build else mapping.build
    return KernelTarget(mapping, image, build, mapping.registry_tls or module.registry_tls)
