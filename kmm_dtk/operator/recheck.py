"""When to ask the registry again about an image already recorded as there (``Exists``, ``Succeeded``).

A registry cleanup or an ephemeral registry can delete a driver image long after it was built; the
plan hash does not change, so only asking again finds out. Three parts, on an injectable clock:

- :func:`next_slot`: each (Module, kernel) is asked at its own offset within the period, derived
  from its name, so 4,000 records come due spread over the period instead of together, and stay
  spread across restarts.
- :class:`RegistryLimiter`: a token bucket per registry host, so re-checks never ask one registry
  more than ``rate`` times a second however many records come due; a record whose registry has no
  token now books the next one and comes back for it.
- :class:`Rechecks`: when each record is due and when its image was last found, in memory only.
  Nothing of it is written to the Module (a re-check that finds the image is not a status change);
  after a restart every record is asked once, at its slot.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from kmm_dtk.kube.ratelimit import BucketRateLimiter
from kmm_dtk.operator.status import now_rfc3339
from kmm_dtk.registry.bounded import LRU

log = logging.getLogger(__name__)

DEFAULT_RATE = 10.0  # re-checks a second per registry host: a few requests each (manifest, config, token)
Clock = Callable[[], float]


def slot_offset(module: str, kernel: str, period: float) -> float:
    """Where in each period this record is asked, in [0, period): a stable hash of its names, not a
    random draw, so a restart keeps the spread it had."""
    digest = hashlib.blake2b(f"{module}\0{kernel}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * period


def next_slot(after: float, offset: float, period: float) -> float:
    """The first time ``offset + k * period`` (k an integer) strictly after ``after``."""
    slot = offset + (math.floor((after - offset) / period) + 1) * period
    return slot if slot > after else slot + period


class RegistryLimiter:
    """A token bucket per registry host (:class:`~kmm_dtk.kube.ratelimit.BucketRateLimiter`): ``burst``
    tokens, refilled at ``rate`` a second. With the default burst of one, two re-checks of one
    registry are at least ``1 / rate`` seconds apart.

    ``reserve`` never blocks (a worker waiting for a token would hold up other Modules): it takes the
    next token, there now or to come, and says how long until it is there. At most ``max_hosts``
    buckets are kept (Modules may name any host), the least recently used dropped first."""

    def __init__(self, rate: float, clock: Clock = time.monotonic, burst: int = 1, max_hosts: int = 1024) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate} and {burst}")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._lock = threading.Lock()
        self._buckets: LRU[str, BucketRateLimiter] = LRU(max_hosts)

    def reserve(self, host: str) -> float:
        """Take a token for ``host``: 0 when one was there, else the seconds until the one taken is."""
        with self._lock:
            bucket = self._buckets.get(host)
            if bucket is None:
                bucket = BucketRateLimiter(self.rate, self.burst, clock=self.clock)
                self._buckets.put(host, bucket)
        return bucket.when(host)


@dataclass
class _Record:
    hash: str
    due: float  # clock time of the next re-check
    seen: str | None = None  # RFC 3339 time the image was last found by this process
    booked: bool = False  # a registry token is reserved for ``due``: take no other
    rebuilding: str | None = None  # the image went: "" or the uid of the completed Build being replaced


class Rechecks:
    """The re-check memory of the module reconciler, keyed by (Module, kernel), for one plan hash each.

    At most ``max_modules`` Modules are remembered (the least recently reconciled go first: one
    forgotten is asked once more at its slot, as after a restart); a Module's kernels are pruned to
    the ones it still records on each reconcile (:meth:`next_in`)."""

    def __init__(self, period: float, limiter: RegistryLimiter, clock: Clock = time.monotonic,
                 wall: Callable[[], str] = now_rfc3339, max_modules: int = 10_000) -> None:
        if period <= 0:
            raise ValueError(f"period must be > 0, got {period}")
        self.period, self.limiter, self.clock, self.wall = period, limiter, clock, wall
        self._lock = threading.Lock()
        self._modules: LRU[str, dict[str, _Record]] = LRU(max_modules)

    def _record(self, module: str, kernel: str, hash_: str, now: float) -> _Record:
        """The record for these inputs; a new one (first due at its slot) for a kernel not known or
        known with another hash. Called with the lock held."""
        kernels = self._modules.get(module)
        if kernels is None:
            kernels = {}
            self._modules.put(module, kernels)
        record = kernels.get(kernel)
        if record is None or record.hash != hash_:
            record = kernels[kernel] = _Record(hash_, self._next(module, kernel, now))
        return record

    def _next(self, module: str, kernel: str, now: float) -> float:
        return next_slot(now, slot_offset(module, kernel, self.period), self.period)

    def due(self, module: str, kernel: str, hash_: str, registry: str) -> bool:
        """Is it this record's turn to ask ``registry`` now? True takes the registry's token; the caller
        asks and reports with :meth:`checked` or :meth:`vanished`. A record not known yet (a restart,
        a new hash) gets its first turn at its slot; one whose registry has no token left books the
        next one and comes due when it is there."""
        now = self.clock()
        with self._lock:
            record = self._record(module, kernel, hash_, now)
            if now < record.due:
                return False
            if record.booked:
                record.booked = False
                return True
            wait = self.limiter.reserve(registry)
            if wait > 0:
                record.due, record.booked = now + wait, True
                return False
            return True

    def checked(self, module: str, kernel: str, hash_: str, found: bool) -> None:
        """The registry answered a re-check (or a first check): the image is there (``found``), or it
        gave no definite answer and the record stays as it is. Either way, the next turn is at its slot."""
        now = self.clock()
        with self._lock:
            record = self._record(module, kernel, hash_, now)
            record.due, record.booked = self._next(module, kernel, now), False
            if found:
                record.seen, record.rebuilding = self.wall(), None

    def seen(self, module: str, kernel: str, hash_: str) -> str | None:
        """When this process last found the image (RFC 3339), or None."""
        with self._lock:
            record = (self._modules.get(module) or {}).get(kernel)
            return record.seen if record is not None and record.hash == hash_ else None

    def vanished(self, module: str, kernel: str, hash_: str, replacing: str = "") -> None:
        """A re-check found the image gone: it is being rebuilt, replacing the completed Build with uid
        ``replacing`` (whose name the new Build takes) if there is one. Until a Build for these inputs
        shows up, a record still saying the image is there is not believed."""
        now = self.clock()
        with self._lock:
            record = self._record(module, kernel, hash_, now)
            record.due, record.booked, record.rebuilding = self._next(module, kernel, now), False, replacing

    def rebuilding(self, module: str, kernel: str, hash_: str) -> str | None:
        """None, or the image is being rebuilt: "" or the uid of the Build it replaces."""
        with self._lock:
            record = (self._modules.get(module) or {}).get(kernel)
            return record.rebuilding if record is not None and record.hash == hash_ else None

    def building(self, module: str, kernel: str, hash_: str, uid: str) -> None:
        """A Build for these inputs exists (``uid``): a rebuild that replaced another one is under way."""
        with self._lock:
            record = (self._modules.get(module) or {}).get(kernel)
            if record is not None and record.hash == hash_ and record.rebuilding not in (None, uid):
                record.rebuilding = None

    def next_in(self, module: str, recorded: Mapping[str, str], done: Collection[str]) -> float | None:
        """Seconds until the next re-check among the kernels in ``done`` (those the Module records in
        ``Exists`` or ``Succeeded``), None if there is none. ``recorded`` maps every kernel the Module
        records to its hash: what is remembered for other kernels or hashes is forgotten."""
        now = self.clock()
        with self._lock:
            kernels = self._modules.get(module)
            if kernels is None:
                return None
            for kernel in [k for k, r in kernels.items() if recorded.get(k) != r.hash]:
                del kernels[kernel]
            dues = [r.due for k, r in kernels.items() if k in done]
        return max(0.0, min(dues) - now) if dues else None
