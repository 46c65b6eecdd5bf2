"""Where a node would pull an image from on a disconnected cluster: ICSP, IDMS and ITMS rules.

kmm-dtk asks registries whether images exist (driver images, DTKs, releases). On a disconnected
cluster the nodes never ask the source registry but its mirrors, so asking the source would answer
"unknown" or "missing" and trigger needless builds. ``MirrorPolicy`` reproduces what CRI-O does with
the ``registries.conf`` the machine-config operator renders from these objects
(containers-registries.conf(5)): pick the one most specific rule for the reference, try its mirrors
in order, then the source unless ``NeverContactSource``. Pure logic, no I/O.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from kmm_dtk.registry.reference import ImageRef, ReferenceError

NEVER_CONTACT_SOURCE = "NeverContactSource"
ALLOW_CONTACTING_SOURCE = "AllowContactingSource"


@dataclass(frozen=True)
class _Kind:
    """How one of the three mirror kinds spells its rules, and which references they apply to."""

    field: str
    digest: bool  # digest references (ICSP, IDMS) or tag references (ITMS)
    has_policy: bool  # mirrorSourcePolicy exists (not in ICSP)


KINDS: Mapping[tuple[str | None, str | None], _Kind] = {  # (apiVersion, kind)
    ("operator.openshift.io/v1alpha1", "ImageContentSourcePolicy"): _Kind("repositoryDigestMirrors", True, False),
    ("config.openshift.io/v1", "ImageDigestMirrorSet"): _Kind("imageDigestMirrors", True, True),
    ("config.openshift.io/v1", "ImageTagMirrorSet"): _Kind("imageTagMirrors", False, True),
}

# The openshift/api CRD patterns for sources and mirrors (ICSP has none, so we check them ourselves),
# rewritten without nested optional repeats: same language, but no catastrophic backtracking in `re`.
_LABEL = r"[a-zA-Z0-9]+(?:-+[a-zA-Z0-9]+)*"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?"
_PATH = r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
_SCOPE_RE = re.compile(rf"{_HOST}{_PATH}")
_WILDCARD_RE = re.compile(rf"\*(?:\.{_LABEL})+")


@dataclass(frozen=True)
class PullSource:
    """One place to ask for an image, in the order a node would."""

    ref: ImageRef  # what to ask
    mirror: str | None  # the mirror prefix used ("mirror.local/redhat"), None for the source itself
    origin: str | None  # "ImageDigestMirrorSet/name" etc., None for the source

    def describe(self) -> str:
        """``ref`` plus where it came from, for log lines."""
        return f"{self.ref} (mirror {self.mirror} from {self.origin})" if self.mirror else f"{self.ref} (source)"


@dataclass(frozen=True)
class MirrorRule:
    """All mirrors for one source, merged across objects of the same reference class."""

    source: str  # "host[:port][/path]" or "*.host"
    mirrors: tuple[tuple[str, str], ...]  # (mirror, "Kind/name" that first named it), in order
    never_contact_source: bool = False

    @property
    def wildcard(self) -> bool:
        return self.source.startswith("*.")

    def matched_prefix(self, ref: ImageRef) -> str | None:
        """The part of ``ref.name`` this rule replaces, or None if it does not apply.

        Compared with the name (not the full reference) so that ``example.com`` does not match
        ``example.com:5000/x``: containers-image lets a ``:`` after the host match, which its own
        docs call unintended. Equal-or-followed-by-``/`` on the name is the same as followed by
        ``/``, ``:`` or ``@`` on the full reference for every valid source. A wildcard matches a
        registry without a port whose host ends with ``.host``; the prefix is then that host.
        """
        if self.wildcard:
            host = ref.registry
            return host if ":" not in host and host.endswith(self.source[1:]) else None
        name = ref.name
        return self.source if name == self.source or name.startswith(self.source + "/") else None

    def rank(self) -> tuple[bool, int]:
        """Sort key, highest wins: any exact source beats any wildcard, then the longest."""
        return (not self.wildcard, len(self.source))

    def describe(self) -> str:
        targets = ", ".join(f"{m} ({o})" for m, o in self.mirrors)
        tail = ", never the source" if self.never_contact_source else ", then the source"
        return f"{self.source} -> {targets}{tail}"


@dataclass(frozen=True)
class MirrorPolicy:
    """The cluster's mirror rules: ICSP + IDMS for digest references, ITMS for tag references."""

    digest_rules: tuple[MirrorRule, ...] = ()
    tag_rules: tuple[MirrorRule, ...] = ()

    EMPTY: ClassVar[MirrorPolicy]

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]]) -> tuple[MirrorPolicy, list[str]]:
        """Build the policy from ICSP/IDMS/ITMS objects (others are ignored).

        Malformed entries are skipped (one problem each, naming ``Kind/name`` and the field) while
        the valid ones still apply: one typo must not switch off every mirror of a cluster.
        """
        builder = _Builder()
        for obj in objects:
            if not isinstance(obj, Mapping):
                continue
            kind = KINDS.get((obj.get("apiVersion"), obj.get("kind")))
            if kind is not None:
                builder.add_object(obj, kind)
        return cls(builder.rules(digest=True), builder.rules(digest=False)), builder.problems

    def rule_for(self, ref: ImageRef) -> tuple[MirrorRule, str] | None:
        """The one rule a node would use for ``ref`` and the prefix it replaces; None if none applies."""
        rules = self.digest_rules if ref.digest else self.tag_rules
        matches = [(rule, prefix) for rule in rules if (prefix := rule.matched_prefix(ref)) is not None]
        return max(matches, key=lambda m: m[0].rank(), default=None)

    def pull_sources(self, ref: ImageRef) -> list[PullSource]:
        """Where to ask for ``ref``, in order: the mirrors of the best rule, then the source.

        The source is left out under ``NeverContactSource`` (and when a mirror is the source
        itself, which then keeps its place). A reference with both a tag and a digest is a digest
        reference; its mirrors are asked by digest alone, as CRI-O does. Empty only when
        ``NeverContactSource`` applies and no mirror yields a usable name.
        """
        match = self.rule_for(ref)
        if match is None:
            return [PullSource(ref, None, None)]
        rule, prefix = match
        sources = [s for mirror, origin in rule.mirrors if (s := _mirrored(ref, prefix, mirror, origin))]
        if not rule.never_contact_source and all(s.ref.name != ref.name for s in sources):
            sources.append(PullSource(ref, None, None))
        return sources

    def describe(self) -> list[str]:
        """One line per rule, for logs and ``--verbose`` output."""
        return ([f"digest: {r.describe()}" for r in self.digest_rules]
                + [f"tag: {r.describe()}" for r in self.tag_rules])

    def __bool__(self) -> bool:
        return bool(self.digest_rules or self.tag_rules)


MirrorPolicy.EMPTY = MirrorPolicy()


def _mirrored(ref: ImageRef, prefix: str, mirror: str, origin: str) -> PullSource | None:
    """``ref`` with ``prefix`` replaced by ``mirror``; None when that is no canonical image name.

    CRI-O parses the rewritten name strictly and skips the mirror when it fails, e.g. a host-only
    mirror for a source naming a whole repository (just a host is left), or a name that would be
    normalised to something else ("docker.io/x" -> "docker.io/library/x").
    """
    name = mirror + ref.name[len(prefix):]
    base = dataclasses.replace(ref, tag=None) if ref.digest and ref.tag else ref
    try:
        mirrored = base.with_name(name)
    except ReferenceError:
        return None
    return PullSource(mirrored, mirror, origin) if mirrored.name == name else None


def _quote(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def scope_problem(value: Any, *, wildcard_ok: bool) -> str | None:
    """Why ``value`` is not a valid source (``wildcard_ok``) or mirror; None when it is valid."""
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if not value:
        return ""
    if "://" in value:
        return "expected host[:port][/path], not a URL"
    if "@" in value or ":" in value.partition("/")[2]:
        return "a tag or digest is not allowed"
    if "*" in value:
        if not wildcard_ok:
            return "wildcards are allowed only in sources"
        if not _WILDCARD_RE.fullmatch(value):
            return "a wildcard source must be *.host, without port or path"
        return None
    if not _SCOPE_RE.fullmatch(value):
        return "expected host[:port][/path]" + (" or *.host" if wildcard_ok else "")
    if not _is_host(value.partition("/")[0]):
        return "the first component is no registry host (it needs a '.', a ':port' or to be 'localhost'), " \
               "so image names never start with it"
    return None


def _is_host(component: str) -> bool:
    """The docker reference grammar's test for "this first component is a registry, not docker.io/<it>"."""
    return "." in component or ":" in component or component == "localhost" or component != component.lower()


@dataclass
class _Entry:
    mirrors: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    never_contact_source: bool = False


class _Builder:
    """Collects valid entries, merged per (reference class, source) in first-seen order."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self._entries: dict[tuple[bool, str], _Entry] = {}

    def rules(self, *, digest: bool) -> tuple[MirrorRule, ...]:
        return tuple(MirrorRule(source, tuple(e.mirrors), e.never_contact_source)
                     for (d, source), e in self._entries.items() if d == digest)

    def add_object(self, obj: Mapping[str, Any], kind: _Kind) -> None:
        meta = obj.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        label = f"{obj['kind']}/{name or '<unnamed>'}"
        spec = obj.get("spec")
        if not isinstance(spec, Mapping):
            self.problems.append(f"{label}: spec: expected a mapping, got {type(spec).__name__}")
            return
        entries = spec.get(kind.field)
        if entries is None:
            return
        if not isinstance(entries, list):
            self.problems.append(f"{label}: spec.{kind.field}: expected a list, got {type(entries).__name__}")
            return
        for i, entry in enumerate(entries):
            self._add_entry(entry, kind, label, f"spec.{kind.field}[{i}]")

    def _problem(self, label: str, path: str, message: str) -> None:
        self.problems.append(f"{label}: {path}: {message}")

    def _add_entry(self, entry: Any, kind: _Kind, label: str, path: str) -> None:
        if not isinstance(entry, Mapping):
            self._problem(label, path, f"expected a mapping, got {type(entry).__name__}")
            return
        source = entry.get("source")
        if source is None:
            self._problem(label, f"{path}.source", "is required")
            return
        if (why := scope_problem(source, wildcard_ok=True)) is not None:
            self._problem(label, f"{path}.source", _invalid(source, "source", why))
            return
        never = self._never_contact_source(entry, kind, label, path)
        mirrors = self._mirrors(entry.get("mirrors"), label, f"{path}.mirrors")
        if never is None or mirrors is None:
            return
        if not any(m != source for m in mirrors):
            if never:  # openshift/api: the policy is valid only with at least one mirror
                self._problem(label, f"{path}.mirrorSourcePolicy",
                              f"{NEVER_CONTACT_SOURCE} needs at least one valid mirror")
            return  # no mirror other than the source: not a mirror set (as the MCO renders it)
        merged = self._entries.setdefault((kind.digest, source), _Entry())
        known = {m for m, _ in merged.mirrors}
        merged.mirrors.extend((m, label) for m in mirrors if m not in known)
        merged.never_contact_source |= never

    def _never_contact_source(self, entry: Mapping[str, Any], kind: _Kind, label: str, path: str) -> bool | None:
        """True/False, or None (reported) when the value is not one of the two known policies."""
        if not kind.has_policy:
            return False  # ICSP: the source is always tried last
        policy = entry.get("mirrorSourcePolicy")
        if policy in (None, "", ALLOW_CONTACTING_SOURCE):
            return False
        if policy == NEVER_CONTACT_SOURCE:
            return True
        self._problem(label, f"{path}.mirrorSourcePolicy", f"{_quote(policy)} is not one of "
                      f"{ALLOW_CONTACTING_SOURCE}, {NEVER_CONTACT_SOURCE}")
        return None

    def _mirrors(self, value: Any, label: str, path: str) -> list[str] | None:
        """The valid mirrors, deduplicated; bad ones are reported and dropped, keeping the rest."""
        if value is None:
            return []
        if not isinstance(value, list):
            self._problem(label, path, f"expected a list, got {type(value).__name__}")
            return None
        mirrors: list[str] = []
        for j, mirror in enumerate(value):
            if (why := scope_problem(mirror, wildcard_ok=False)) is not None:
                self._problem(label, f"{path}[{j}]", _invalid(mirror, "mirror", why))
            elif mirror not in mirrors:
                mirrors.append(mirror)
        return mirrors


def _invalid(value: Any, what: str, why: str) -> str:
    return f"{_quote(value)} is not a valid {what}" + (f" ({why})" if why else "")
