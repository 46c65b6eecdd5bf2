"""Image references (``registry/repository[:tag][@digest]``), parsed with the docker reference grammar
and normalised the way container runtimes do, so that mirror and credential lookups compare like with like.

In the core because the planner refuses a Module whose image is not a reference (an upper-case
repository, say) before anything asks a registry about it; ``kmm_dtk.registry.reference`` re-exports it."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

DEFAULT_REGISTRY = "docker.io"
_LEGACY_DOCKER_HOSTS = ("index.docker.io", "registry-1.docker.io")
_NAME_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")


class ReferenceError(ValueError):
    """An image reference that does not follow the grammar; the message names the text and the problem,
    ``problem`` is the problem alone."""

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message


def _problem(text: str, problem: str) -> ReferenceError:
    return ReferenceError(f"invalid image reference {text!r}: {problem}", problem)


def _looks_like_domain(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost" or component != component.lower()


def _split_name(text: str, name: str) -> tuple[str, str]:
    """(registry, repository) of a name, defaults applied and each part validated."""
    first, sep, rest = name.partition("/")
    if sep and _looks_like_domain(first):
        registry, repository = first, rest
        if not _DOMAIN.fullmatch(registry):
            raise _problem(text, f"registry {registry!r} is not a valid host[:port]")
    else:
        registry, repository = DEFAULT_REGISTRY, name
    if registry in _LEGACY_DOCKER_HOSTS:
        registry = DEFAULT_REGISTRY
    if not repository:
        raise _problem(text, "no repository")
    for component in repository.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            if component.lower() != component and _PATH_COMPONENT.fullmatch(component.lower()):
                raise _problem(text, "repository name must be lowercase")
            raise _problem(text, f"repository path component {component!r} is not valid")
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    if len(registry) + 1 + len(repository) > _NAME_MAX:
        raise _problem(text, f"name longer than {_NAME_MAX} characters")
    return registry, repository


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        if not isinstance(text, str) or not text:
            raise _problem(str(text), "empty")
        if text != text.strip():
            raise _problem(text, "surrounding whitespace")
        if "://" in text:
            raise _problem(text, "a pull spec has no scheme")
        remainder, at, digest = text.partition("@")
        if at:
            if not _DIGEST.fullmatch(digest):
                raise _problem(text, f"digest {digest!r} is not sha256:<64 hex> (or sha512:<128 hex>)")
        tag = None
        slash = remainder.rfind("/")
        colon = remainder.rfind(":")
        if colon > slash:
            remainder, tag = remainder[:colon], remainder[colon + 1:]
            if not _TAG.fullmatch(tag):
                raise _problem(text, f"tag {tag!r} is not valid (letters, digits, '_', '.', '-'; at most 128)")
        registry, repository = _split_name(text, remainder)
        return cls(registry, repository, tag, digest if at else None)

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/`` in the registry API."""
        return self.digest or self.tag or "latest"

    def with_name(self, name: str) -> ImageRef:
        """The same tag and digest under another name (a mirror's, typically)."""
        if "@" in name or ":" in name.rpartition("/")[2]:
            raise _problem(name, "a name without tag or digest is expected")
        registry, repository = _split_name(name, name)
        return replace(self, registry=registry, repository=repository)

    def with_digest(self, digest: str) -> ImageRef:
        if not _DIGEST.fullmatch(digest or ""):
            raise _problem(f"{self.name}@{digest}", f"digest {digest!r} is not sha256:<64 hex>")
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
