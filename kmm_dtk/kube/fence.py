"""The write fence: every API write of the process asks it first, and it says no unless this
process holds the leader Lease and is not shutting down.

Leader election alone does not keep two replicas from acting at once: a replica that has lost
the Lease (or is past its renew deadline without knowing it yet) still has workers with keys in
hand. The fence turns "am I the leader?" from something each reconcile must remember to check into
a property of the client: :class:`~kmm_dtk.kube.client.KubeClient` refuses to send a POST, PUT,
PATCH or DELETE while the fence is closed, and raises :class:`FencedWrite` instead.

A write is granted only while ``permit()`` returns a deadline in the future (for a leader: the
moment its renew deadline passes), and the request's timeouts are cut so that the client gives
up on it before ``deadline + margin`` (for a leader: before any follower can see the Lease
expire). ``close()`` shuts the fence and waits for the writes already granted to finish, so that
when it returns (and the Lease is released) no write of this process is still on the wire.
A request the client gave up on may still be applied by a server slower than its own timeout;
nothing on the client side can prevent that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kmm_dtk.kube.client import FencedWrite

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Permit = Callable[[], "float | None"]  # the monotonic deadline until which writes are allowed, or None


class WriteFence:
    """Grants writes while ``permit()`` says so and the fence is open; counts those in flight."""

    def __init__(self, permit: Permit | None = None, *, margin: float = 0.0, clock: Clock = time.monotonic) -> None:
        self._permit = permit
        self.margin = margin
        self._clock = clock
        self._cond = threading.Condition()
        self._closed = False
        self._in_flight = 0
        self.refused = 0  # writes refused since the start: a stale replica that kept trying

    @classmethod
    def always_open(cls) -> WriteFence:
        """For a process that runs without leader election: it is the only actor."""
        return cls(None)

    def set_permit(self, permit: Permit, margin: float) -> None:
        """Tie the fence to a leader elector (set before the first write)."""
        with self._cond:
            self._permit = permit
            self.margin = margin

    @contextmanager
    def write(self, what: str) -> Iterator[float | None]:
        """Hold a grant for one write; yields the seconds the request may still take (None: no
        limit), or raises :class:`FencedWrite`."""
        with self._cond:
            budget = self._budget()
            if budget is not None and budget <= 0:
                self.refused += 1
                reason = "shutting down" if self._closed else "not the leader"
                log.info("write refused by the fence", extra={"request": what, "reason": reason})
                raise FencedWrite(what, reason)
            self._in_flight += 1
        try:
            yield budget
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def allows(self) -> bool:
        with self._cond:
            budget = self._budget()
            return budget is None or budget > 0

    def close(self, timeout: float | None = None) -> bool:
        """Refuse every later write and wait for those granted; True if none is left in flight."""
        with self._cond:
            self._closed = True
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout)

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def _budget(self) -> float | None:
        """Seconds a write granted now may take; <= 0 means refused. Caller holds the lock."""
        if self._closed:
            return 0.0
        if self._permit is None:
            return None
        deadline = self._permit()
        now = self._clock()
        if deadline is None or deadline <= now:
            return 0.0
        return deadline - now + self.margin
