"""Compiling KMM kernel-mapping regexps (Go RE2 syntax) with Python's ``re``, or refusing to.

KMM matches with Go's ``regexp.MatchString``: RE2 syntax, unanchored, ASCII ``\\d \\w \\s \\b``.
Most RE2 patterns mean the same in Python; the ones that would silently mean something else, or
that RE2 itself rejects (so KMM would reject the Module), get a reason instead of a guess.
"""

from __future__ import annotations

import re
from functools import lru_cache

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}

_RE2_FLAGS = set("imsU")


class Re2Error(ValueError):
    """A pattern that RE2 rejects or that Python would read differently."""


def _translate(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise Re2Error("trailing backslash")
            e = pattern[i + 1]
            if e.isdigit() and e != "0":
                raise Re2Error(f"\\{e} at offset {i}: backreferences are not RE2 syntax")
            if e in "pP":
                raise Re2Error(f"\\{e} at offset {i}: Unicode classes are not supported; use an explicit class")
            if e in "QE":
                raise Re2Error(f"\\{e} at offset {i}: quoted literals are not supported; escape each character")
            if e == "C":
                raise Re2Error(f"\\C at offset {i}: not supported")
            if e == "Z":
                raise Re2Error(f"\\Z at offset {i}: not RE2 syntax; use \\z or $ for the end of text")
            if e == "z":
                out.append("\\Z")  # RE2's end of text is spelled \Z in Python
            else:
                out.append(c + e)
            i += 2
            continue
        if in_class:
            if pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2 : end] if end != -1 else ""
                negated = name.startswith("^")
                if end != -1 and name.lstrip("^") in _POSIX_CLASSES and not negated:
                    out.append(_POSIX_CLASSES[name])
                    i = end + 2
                    continue
                raise Re2Error(f"[:{name}:] at offset {i}: use an explicit character range instead")
            if c == "]":
                in_class = False
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            # A leading ']' (after an optional '^') is a literal in both dialects.
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":
                out.append("\\]")
                i += 1
            continue
        if c == "(" and pattern.startswith("(?", i):
            i = _translate_group(pattern, i, out)
            continue
        if c in "*+?}" and i + 1 < n and pattern[i + 1] == "+":
            raise Re2Error(f"possessive quantifier {c}+ at offset {i}: not RE2 syntax")
        if c == "{":
            m = re.match(r"\{(\d+)(,(\d*))?\}", pattern[i:])
            if m and max(int(m.group(1)), int(m.group(3) or 0)) > 1000:
                raise Re2Error(f"repeat count {m.group(0)} at offset {i}: RE2 allows at most 1000")
        out.append(c)
        i += 1
    if in_class:
        raise Re2Error("missing closing ]")
    return "".join(out)


def _translate_group(pattern: str, i: int, out: list[str]) -> int:
    rest = pattern[i + 2 :]
    if rest.startswith(("=", "!", "<=", "<!")):
        raise Re2Error(f"lookaround (?{rest[:2].rstrip('(')}... at offset {i}: not RE2 syntax")
    if rest.startswith("P<") or rest.startswith(":"):
        out.append("(?" + rest[0])
        return i + 3
    if rest.startswith("<"):
        out.append("(?P<")  # Go 1.22+ accepts (?<name>); Python 3.11 needs (?P<name>
        return i + 3
    if rest.startswith("P="):
        raise Re2Error(f"(?P=...) at offset {i}: backreferences are not RE2 syntax")
    m = re.match(r"([a-zA-Z]*)(?:-([a-zA-Z]*))?([:)])", rest)
    if not m:
        raise Re2Error(f"group syntax (?{rest[:3]} at offset {i}: not RE2 syntax")
    flags = (m.group(1) or "") + (m.group(2) or "")
    bad = sorted(set(flags) - _RE2_FLAGS)
    if bad:
        raise Re2Error(f"flag {''.join(bad)!r} at offset {i}: RE2 knows only i, m, s and U")
    if "U" in flags:
        raise Re2Error(f"flag U (ungreedy) at offset {i}: Python has no equivalent; use lazy quantifiers")
    if m.group(3) == ")" and i != 0:
        # RE2 applies (?i) to the rest of the group; Python 3.11 accepts only leading global flags.
        raise Re2Error(f"flags {m.group(0)[:-1]!r} at offset {i}: write them as (?{flags}:...) around the part they apply to")
    out.append("(?" + m.group(0))
    return i + 2 + len(m.group(0))


@lru_cache(maxsize=512)
def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 pattern for unanchored ``search``; raises Re2Error with a reason."""
    translated = _translate(pattern)
    try:
        return re.compile(translated, re.ASCII)
    except re.error as err:
        raise Re2Error(str(err)) from None
    except (RecursionError, OverflowError) as err:  # pathological nesting
        raise Re2Error(f"too complex: {err}") from None
