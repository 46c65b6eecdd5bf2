"""The DTK placeholder in driver Dockerfiles.

KMM spells it ``DTK_AUTO``; the design document spells it ``DTK-AUTO``. In Dockerfile variable
syntax ``${DTK-AUTO}`` means "variable DTK, default AUTO", so a builder handed that text would try
to pull an image named ``AUTO``. Every ``FROM`` that names the placeholder is therefore rewritten to
the DTK image itself, and any other mention is normalised to ``DTK_AUTO`` (also passed as a build
arg), so neither spelling ever reaches a builder unresolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DTK_BUILD_ARG = "DTK_AUTO"

# ${DTK_AUTO}, ${DTK-AUTO}, $DTK_AUTO, $DTK-AUTO (the last as the design document's readers write it).
_REF = re.compile(r"\$\{DTK[_-]AUTO\}|\$DTK[_-]AUTO(?![A-Za-z0-9_])")
_ARG = re.compile(r"^(\s*ARG\s+)DTK[_-]AUTO(?=\s|=|$)", re.IGNORECASE)
_DIRECTIVE = re.compile(r"^#\s*escape\s*=\s*(\S)\s*$", re.IGNORECASE)


class DockerfileError(ValueError):
    pass


@dataclass(frozen=True)
class RenderedDockerfile:
    text: str
    uses_dtk: bool
    rewritten_from_lines: int


def _escape_char(lines: list[str]) -> str:
    # Parser directives come first, before any comment, blank line or instruction.
    for line in lines:
        m = _DIRECTIVE.match(line)
        if m:
            return m.group(1)
        if not re.match(r"^#\s*\w+\s*=", line):
            break
    return "\\"


def _logical_lines(text: str) -> list[list[str]]:
    """Group physical lines into instructions joined by the escape character at line end."""
    lines = text.split("\n")
    escape = _escape_char(lines)
    groups: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        current.append(line)
        stripped = line.rstrip()
        if stripped.lstrip().startswith("#") and len(current) == 1:
            groups.append(current)
            current = []
        elif stripped.endswith(escape):
            continue
        else:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def _is_comment(group: list[str]) -> bool:
    return len(group) == 1 and group[0].lstrip().startswith("#")


def uses_placeholder(text: str) -> bool:
    for group in _logical_lines(text):
        if _is_comment(group):
            continue
        joined = "\n".join(group)
        if _REF.search(joined) or _ARG.match(joined):
            return True
    return False


def _rewrite_from(group: list[str], escape: str, image: str) -> str | None:
    """Return the FROM instruction naming ``image`` if this group is a FROM on the placeholder."""
    joined = " ".join(line.rstrip().removesuffix(escape) for line in group)
    words = joined.split()
    if not words or words[0].upper() != "FROM":
        return None
    flags = [w for w in words[1:] if w.startswith("--")]
    rest = [w for w in words[1:] if not w.startswith("--")]
    if not rest or not _REF.fullmatch(rest[0]):
        return None
    indent = group[0][: len(group[0]) - len(group[0].lstrip())]
    line_end = "\r" if group[-1].endswith("\r") else ""  # keep CRLF files CRLF
    return indent + " ".join([words[0], *flags, image, *rest[1:]]) + line_end


def render(text: str, dtk_image: str | None) -> RenderedDockerfile:
    """Resolve the placeholder to ``dtk_image``; a Dockerfile without one comes back unchanged.

    Raises DockerfileError when the placeholder is used and no DTK image is known.
    """
    if not uses_placeholder(text):
        return RenderedDockerfile(text, False, 0)
    if not dtk_image:
        raise DockerfileError("the Dockerfile uses the DTK placeholder but no DTK image is known for this kernel")
    escape = _escape_char(text.split("\n"))
    out: list[str] = []
    rewritten = 0
    for group in _logical_lines(text):
        if _is_comment(group):
            out.extend(group)
            continue
        new_from = _rewrite_from(group, escape, dtk_image)
        if new_from is not None:
            out.append(new_from)
            rewritten += 1
            continue
        for line in group:
            line = _ARG.sub(lambda m: m.group(1) + DTK_BUILD_ARG, line)
            out.append(_REF.sub("${" + DTK_BUILD_ARG + "}", line))
    return RenderedDockerfile("\n".join(out), True, rewritten)
