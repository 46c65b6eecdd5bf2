"""``WWW-Authenticate`` challenges, and the Authorization headers they earn, cached so a registry is not
asked twice (one anonymous round trip per registry, one token per scope and credential until it expires)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kmm_dtk.registry.bounded import LRU

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(header: str | None) -> list[Challenge]:
    """RFC 7235 challenges, enough for registries: ``Bearer realm="...",service="...",scope="..."``."""
    challenges: list[Challenge] = []
    if not header:
        return challenges
    i, n = 0, len(header)
    while i < n:
        while i < n and header[i] in " \t,":
            i += 1
        match = _TOKEN.match(header, i)
        if not match:
            break
        word, j = match.group(), match.end()
        k = j
        while k < n and header[k] in " \t":
            k += 1
        if k < n and header[k] == "=" and challenges:
            k += 1
            while k < n and header[k] in " \t":
                k += 1
            quoted = _QUOTED.match(header, k)
            if quoted:
                value, i = re.sub(r"\\(.)", r"\1", quoted.group(1)), quoted.end()
            else:
                value_match = re.compile(r"[^,\s]*").match(header, k)
                assert value_match is not None
                value, i = value_match.group(), value_match.end()
            challenges[-1].params[word.lower()] = value
        elif k < n and header[k] == "=":
            break  # a parameter before any scheme: not a challenge we can use
        else:
            challenges.append(Challenge(word.lower(), {}))
            i = j
    return challenges


class AuthorizationCache:
    """Authorization headers keyed by (registry, scope, credential identity); scope None for Basic.

    At most ``max_entries`` (4,096 by default: a token per repository asked, and Modules name any
    number of repositories): when full, expired tokens are dropped first, then the least recently used
    (which costs one token request if it is needed again)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_entries: int = 4096) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: LRU[tuple[str, str | None, str], tuple[str, float]] = LRU(max_entries)

    def get(self, registry: str, scope: str, identity: str) -> str | None:
        now = self._clock()
        with self._lock:
            for key in ((registry, scope, identity), (registry, None, identity)):
                entry = self._entries.get(key)
                if entry is not None:
                    if entry[1] > now:
                        return entry[0]
                    self._entries.pop(key)
        return None

    def put(self, registry: str, scope: str | None, identity: str, header: str, ttl: float | None) -> None:
        now = self._clock()
        expires = float("inf") if ttl is None else now + ttl
        with self._lock:
            self._entries.put((registry, scope, identity), (header, expires), stale=lambda _, entry: entry[1] <= now)

    def forget(self, registry: str, scope: str, identity: str) -> None:
        with self._lock:
            self._entries.pop((registry, scope, identity))
            self._entries.pop((registry, None, identity))

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> list[tuple[str, str | None, str]]:
        """(registry, scope, identity) of the headers kept, least recently used first."""
        with self._lock:
            return self._entries.keys()

    def __repr__(self) -> str:
        return f"AuthorizationCache(entries={len(self._entries)})"
