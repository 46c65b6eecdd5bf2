"""Compiling KMM kernel-mapping regexps with RE2 itself, as KMM's Go ``regexp`` does.

Python's ``re`` reads many RE2 patterns differently (``$`` before a trailing newline, ``x{,3}``,
``\\s`` and ``\\v``, POSIX classes) and backtracks, so one Module regexp such as ``^(.|.)*X$``
could freeze the operator. ``google-re2`` is the RE2 engine: the same syntax as Go's ``regexp``,
linear-time matching, and RE2's own error messages for what Go would also refuse.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Protocol

import re2 as _re2


class Re2Error(ValueError):
    """A pattern Go's regexp would refuse; the message is RE2's reason."""


class Matcher(Protocol):
    def search(self, text: str) -> object | None: ...


def _options() -> _re2.Options:
    options = _re2.Options()
    options.log_errors = False  # errors go into our reasons, not onto the operator's stderr
    options.max_mem = 8 << 20  # a hostile pattern fails to compile rather than eat memory
    return options


_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def _check_go_only_rules(pattern: str) -> None:
    """The few things C++ RE2 accepts and Go's regexp refuses: ``\\C``, and repeat counts so long
    that C++ RE2 reads them as literal text while Go reports an invalid repeat size."""
    escaped, in_class = False, False
    for i, char in enumerate(pattern):
        if escaped:
            if char == "C":
                raise Re2Error(f"invalid escape sequence: \\C (any byte; not supported by Go) at offset {i - 1}")
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "{" and not in_class:
            m = _REPEAT.match(pattern, i)
            if m and any(len(n) > 4 or int(n) > 1000 for n in m.groups() if n):
                raise Re2Error(f"invalid repetition size: {m.group(0)[:20]}{'...' if len(m.group(0)) > 20 else ''}")


@lru_cache(maxsize=1024)
def compile_re2(pattern: str) -> Matcher:
    """Compile for unanchored search (Go's ``MatchString``); raises Re2Error with a reason."""
    if not isinstance(pattern, str):
        raise Re2Error(f"expected a string, got {type(pattern).__name__}")
    _check_go_only_rules(pattern)
    try:
        matcher: Matcher = _re2.compile(pattern, _options())  # google-re2 ships no type information
        return matcher
    except _re2.error as err:
        reason = err.args[0] if err.args else err
        raise Re2Error(reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)) from None
    except (UnicodeError, ValueError, TypeError) as err:  # e.g. lone surrogates cannot become UTF-8
        raise Re2Error(f"not a valid UTF-8 pattern: {err}") from None
