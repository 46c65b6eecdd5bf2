"""Leader election on a ``coordination.k8s.io/v1`` Lease, through the raw JSON :class:`KubeClient`.

The behaviour follows client-go's ``tools/leaderelection`` (``LeaderElector`` + ``LeaseLock``):

* Every write is a PUT guarded by the ``resourceVersion`` last read or written; a 409 Conflict
  means somebody else wrote the Lease in between, so nothing is ever overwritten blindly.
* A follower judges expiry only by its own monotonic clock: the record is expired once
  ``leaseDurationSeconds`` have passed since this process last saw the record *change*. The
  ``renewTime`` written by the holder is never compared with the local clock (clocks of two
  machines are not comparable; the monotonic clock of one process is).
* A leader that has not renewed within ``renew_deadline`` of its last successful renewal stops
  leading at once — even while a request is still hanging — which is before any follower can see
  the lease expire (``renew_deadline < lease_duration``, and followers count from a moment after
  the renewal was sent). Once it has stopped leading the elector is finished: the process is
  expected to stop its work and exit, as controller-runtime does.
* A clean ``stop(release=True)`` calls ``on_stopped_leading`` and then releases the Lease
  (``holderIdentity: ""``, ``leaseDurationSeconds: 1``, still resourceVersion-guarded) so that a
  successor takes over at its next retry instead of waiting for the lease to expire.

Where this deviates from client-go, on purpose:

* The renew deadline is counted from the *sending* of the last successful renewal, not from the
  start of the current renew round, so the leader stops up to one retry period earlier.
* A leader that reads a record naming another holder (or nobody) stops leading immediately
  instead of retrying until the renew deadline.
* A follower watching a live holder polls every ``retry_period`` without jitter and wakes up
  right at the moment it judges the lease expired, so it takes over within ``lease_duration +
  retry_period`` of the holder's last renewal; jitter spreads the retries after conflicts and
  errors, where candidates race.
* Followers honour the ``leaseDurationSeconds`` written by the holder (what it promised), falling
  back to their own ``lease_duration`` when the record has none; client-go uses its own setting.
* A leader that *lost* the lease does not release it: its work may still be winding down, and the
  remaining ``lease_duration - renew_deadline`` is the margin that keeps two replicas from acting
  at once.
* ``on_stopped_leading`` is only called by an elector that was leading.

Every request runs with a short ``(connect, read)`` timeout *and* under a wall-clock guard: the
``kubernetes`` client's urllib3 pool retries timed-out GETs and PUTs (three times by default), so
one stalled request can take four read timeouts; the guard abandons it at the deadline instead.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from kmm_dtk.kube import defaults
from kmm_dtk.kube.client import ApiError, KubeClient, Resource

log = logging.getLogger(__name__)

LEASES = Resource("coordination.k8s.io", "v1", "leases", namespaced=True, kind="Lease")

DEFAULT_LEASE_DURATION = defaults.LEASE_DURATION
DEFAULT_RENEW_DEADLINE = defaults.RENEW_DEADLINE
DEFAULT_RETRY_PERIOD = defaults.RETRY_PERIOD
JITTER_FACTOR = 1.2  # client-go's leaderelection.JitterFactor
_MAX_REQUEST_TIMEOUT = 5.0


def validate_timing(lease_duration: float, renew_deadline: float, retry_period: float,
                    jitter_factor: float = JITTER_FACTOR) -> None:
    """client-go's rules: the leader must give up before a follower can take over, and retry
    (with jitter) more than once before it gives up."""
    if min(lease_duration, renew_deadline, retry_period) <= 0 or jitter_factor < 0:
        raise ValueError("lease duration, renew deadline and retry period must be positive")
    if lease_duration <= renew_deadline:
        raise ValueError(f"the lease duration ({lease_duration:g} s) must be greater than the renew deadline "
                         f"({renew_deadline:g} s)")
    if renew_deadline <= jitter_factor * retry_period:
        raise ValueError(f"the renew deadline ({renew_deadline:g} s) must be greater than {jitter_factor:g} x "
                         f"the retry period ({retry_period:g} s)")


def default_identity() -> str:
    """``hostname_<random>``: unique per process even when two replicas share a hostname."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:12]}"


def micro_time(moment: datetime | None = None) -> str:
    """A ``metav1.MicroTime``: RFC 3339 in UTC with exactly six fractional digits."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaderElectionRecord:
    """The election fields of a Lease's spec, as compared to detect a change."""

    holder_identity: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    lease_transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaderElectionRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder_identity=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            lease_transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder_identity,
            "leaseDurationSeconds": self.lease_duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.lease_transitions,
        }


class _Attempt(Enum):
    """How one acquire-or-renew attempt ended."""

    ACQUIRED = "acquired"  # acquired or renewed: we hold the lease as of the write
    FAILED = "failed"      # could not write (conflict, API error): retry with jitter
    HELD = "held"          # another holder's lease has not expired: look again at the retry period or at expiry
    LOST = "lost"          # we were leading and the record now names someone else


class LeaderElector:
    """Campaigns for one Lease in a daemon thread; see the module docstring for the semantics.

    Callbacks run synchronously in the elector's thread and must return quickly (start or stop
    your workers, then return) — except ``on_stopped_leading`` during ``stop(release=True)``,
    which may block until the work has stopped: the lease is released only after it returns.
    A callback that raises is logged and otherwise ignored.

    ``clock`` (``time.monotonic`` by default) is read for every judgement of time: expiry, the
    renew deadline, when a write was sent. Waits between attempts are real time in seconds.
    """

    def __init__(
        self,
        client: KubeClient,
        name: str,
        namespace: str,
        *,
        identity: str | None = None,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        renew_deadline: float = DEFAULT_RENEW_DEADLINE,
        retry_period: float = DEFAULT_RETRY_PERIOD,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        on_status: Callable[[bool], None] | None = None,
        request_timeout: tuple[float, float] | None = None,
        jitter_factor: float = JITTER_FACTOR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not name or not namespace:
            raise ValueError("the Lease needs a name and a namespace")
        validate_timing(lease_duration, renew_deadline, retry_period, jitter_factor)
        half = renew_deadline / 2
        if request_timeout is None:
            request_timeout = (min(_MAX_REQUEST_TIMEOUT, half), min(_MAX_REQUEST_TIMEOUT, half))
        if request_timeout[0] <= 0 or request_timeout[1] <= 0 or request_timeout[1] > half:
            raise ValueError(f"request_timeout {request_timeout}: the read timeout must be in (0, renew_deadline/2]")
        self.client = client
        self.name = name
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.lease_duration = float(lease_duration)
        self.renew_deadline = float(renew_deadline)
        self.retry_period = float(retry_period)
        self.request_timeout = (float(request_timeout[0]), float(request_timeout[1]))
        self.jitter_factor = float(jitter_factor)
        self._clock = clock
        # leaseDurationSeconds is whole seconds; round up so followers never wait less than we promise.
        self._lease_seconds = max(1, math.ceil(self.lease_duration))
        self._on_started_leading = on_started_leading
        self._on_stopped_leading = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._on_status = on_status

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._release_on_stop = False
        self._thread: threading.Thread | None = None
        self._lease: dict[str, Any] | None = None  # the last Lease read or written (its resourceVersion guards writes)
        self._observed: LeaderElectionRecord | None = None
        self._observed_at = 0.0  # clock time at which _observed was first seen
        self._leading = False
        self._renewed_at: float | None = None  # clock time the last successful acquire/renew was sent
        self._reported_leader = ""
        self._lost = False
        self._held_until = 0.0  # clock time another holder's lease expires, as last judged
        self._random = random.Random()

    # -- public API -------------------------------------------------------------------------------

    @property
    def lease_key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def start(self) -> LeaderElector:
        """Start campaigning in a daemon thread. An elector runs once: after it stops (or loses
        the lease) make a new one."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("this LeaderElector was already started")
            self._thread = threading.Thread(target=self._run, name=f"leader-election-{self.name}", daemon=True)
        self._emit_status(False)
        self._thread.start()
        return self

    def stop(self, release: bool = True) -> None:
        """Stop campaigning; returns at once (``join()`` waits). A leader stops leading (calls
        ``on_stopped_leading``) and, with ``release``, then hands the Lease back so that a
        successor takes over at its next retry. A request in flight finishes first; it is
        bounded by the request timeouts."""
        with self._lock:
            self._release_on_stop = self._release_on_stop or release
        self._stopping.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the elector's thread to end; True if it has ended (or was never started)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def is_leader(self) -> bool:
        """True while this process leads. Turns False by itself once the renew deadline has
        passed since the last successful renewal, even if the elector's thread is blocked."""
        with self._lock:
            return (self._leading and self._renewed_at is not None
                    and self._clock() < self._renewed_at + self.renew_deadline)

    def write_deadline(self) -> float | None:
        """The elector's clock time until which this process may write as the leader (its renew
        deadline), or None when it does not lead: what the write fence asks before every write."""
        with self._lock:
            if not self._leading or self._renewed_at is None:
                return None
            return self._renewed_at + self.renew_deadline

    def leader_identity(self) -> str:
        """The holder named by the last record seen ("" if none seen, or released)."""
        with self._lock:
            return self._observed.holder_identity if self._observed else ""

    def last_renewed(self) -> float | None:
        """The elector's clock time at which the last successful acquire/renew request was sent."""
        with self._lock:
            return self._renewed_at

    def lost(self) -> bool:
        """True once this elector led and then failed to renew (or saw another holder): the
        process must stop its work and exit non-zero."""
        with self._lock:
            return self._lost

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        extra = self._extra()
        log.info("attempting to acquire leader lease", extra=extra)
        try:
            if not self._acquire():
                return
            self._renew_until_lost_or_stopped()
        except Exception:  # a bug here must end leadership, never leave it dangling
            log.exception("leader election failed", extra=extra)
            self._stop_leading(lost=True, reason="internal error")
        finally:
            if self._leading:  # stop requested
                self._stop_leading(lost=False, reason="stopped")
                if self._release_on_stop:
                    self._release()
            log.info("leader election ended", extra=self._extra(lost=self._lost))

    def _acquire(self) -> bool:
        """Retry with jitter until acquired (True) or stopped (False)."""
        while not self._stopping.is_set():
            outcome = self._try_acquire_or_renew(self._clock() + self.renew_deadline)
            if outcome is _Attempt.ACQUIRED:
                self._start_leading()
                return True
            if outcome is _Attempt.HELD:
                # No jitter while watching a live holder, and a wake-up right at expiry: a
                # successor then takes over within lease duration + retry period of the last renewal.
                delay = min(self.retry_period, max(0.0, self._held_until - self._clock()))
            else:
                delay = self.retry_period * (1 + self._random.random() * self.jitter_factor)
            if self._stopping.wait(delay):
                break
        return False

    def _renew_until_lost_or_stopped(self) -> None:
        while True:
            with self._lock:
                assert self._renewed_at is not None
                deadline = self._renewed_at + self.renew_deadline
            remaining = deadline - self._clock()
            if remaining <= 0:
                self._stop_leading(lost=True, reason="renew deadline exceeded")
                return
            if self._stopping.wait(min(self.retry_period, remaining)):
                return
            if self._clock() >= deadline:
                self._stop_leading(lost=True, reason="renew deadline exceeded")
                return
            outcome = self._try_acquire_or_renew(deadline)
            if outcome is _Attempt.LOST:
                self._stop_leading(lost=True, reason=f"lease now held by {self.leader_identity() or 'nobody'!r}")
                return
            if outcome is _Attempt.FAILED:
                log.info("failed to renew lease, retrying until the renew deadline",
                         extra=self._extra(seconds_left=round(deadline - self._clock(), 3)))

    # -- one attempt (client-go tryAcquireOrRenew) ------------------------------------------------

    def _try_acquire_or_renew(self, deadline: float) -> _Attempt:
        path = LEASES.path(self.namespace, self.name)
        if self._leading and self._lease is not None:
            # Fast path: the leader writes over the version it wrote last time.
            previous = LeaderElectionRecord.from_lease(self._lease)
            record = LeaderElectionRecord(self.identity, self._lease_seconds, previous.acquire_time,
                                          micro_time(), previous.lease_transitions)
            sent = self._clock()
            try:
                written = self._call("PUT", path, self._with_record(self._lease, record), deadline)
                self._wrote(written, sent)
                return _Attempt.ACQUIRED
            except ApiError as err:
                if err.status != 409:
                    log.warning("failed to renew lease", extra=self._extra(status=err.status, error=str(err)))
                    return _Attempt.FAILED
                log.info("lease changed since our last write, re-reading it", extra=self._extra())

        # Slow path: read, decide, write.
        try:
            lease = self._call("GET", path, None, deadline)
        except ApiError as err:
            if err.status == 404:
                return self._create(deadline)
            log.warning("failed to read lease", extra=self._extra(status=err.status, error=str(err)))
            return _Attempt.FAILED
        seen_at = self._clock()
        current = LeaderElectionRecord.from_lease(lease)
        with self._lock:
            self._lease = lease
            if current != self._observed:
                self._observed = current
                self._observed_at = seen_at
            observed_at = self._observed_at
        self._report_leader(current.holder_identity)

        if current.holder_identity != self.identity:
            if self._leading:
                return _Attempt.LOST
            if current.holder_identity:
                duration = current.lease_duration_seconds or self.lease_duration
                if seen_at < observed_at + duration:
                    log.debug("lease is held and has not expired", extra=self._extra(
                        holder=current.holder_identity,
                        expires_in=round(observed_at + duration - seen_at, 3)))
                    self._held_until = observed_at + duration
                    return _Attempt.HELD
            now = micro_time()
            record = LeaderElectionRecord(self.identity, self._lease_seconds, now, now,
                                          current.lease_transitions + 1)
        else:
            # The record already names us (our own write we did not see answered, or a restart
            # with the same identity): renew it, keeping acquireTime and the transition count.
            record = LeaderElectionRecord(self.identity, self._lease_seconds, current.acquire_time,
                                          micro_time(), current.lease_transitions)
        sent = self._clock()
        try:
            written = self._call("PUT", path, self._with_record(lease, record), deadline)
        except ApiError as err:
            level = logging.INFO if err.status == 409 else logging.WARNING
            log.log(level, "failed to update lease", extra=self._extra(status=err.status, error=str(err)))
            return _Attempt.FAILED
        self._wrote(written, sent)
        return _Attempt.ACQUIRED

    def _create(self, deadline: float) -> _Attempt:
        now = micro_time()
        record = LeaderElectionRecord(self.identity, self._lease_seconds, now, now, 0)
        body = {"apiVersion": LEASES.api_version, "kind": LEASES.kind,
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": record.to_spec()}
        sent = self._clock()
        try:
            written = self._call("POST", LEASES.path(self.namespace), body, deadline)
        except ApiError as err:
            if err.status == 409:
                log.info("another candidate created the lease first", extra=self._extra())
            else:
                log.warning("failed to create lease", extra=self._extra(status=err.status, error=str(err)))
            return _Attempt.FAILED
        self._wrote(written, sent)
        return _Attempt.ACQUIRED

    def _release(self) -> None:
        """Hand the lease back (client-go ReleaseOnCancel), only over a version we hold."""
        path = LEASES.path(self.namespace, self.name)
        deadline = self._clock() + self.renew_deadline
        for _ in range(2):
            lease = self._lease
            if lease is None or LeaderElectionRecord.from_lease(lease).holder_identity != self.identity:
                return
            now = micro_time()
            record = LeaderElectionRecord("", 1, now, now, LeaderElectionRecord.from_lease(lease).lease_transitions)
            try:
                released = self._call("PUT", path, self._with_record(lease, record), deadline)
            except ApiError as err:
                if err.status != 409:
                    log.warning("failed to release lease", extra=self._extra(status=err.status, error=str(err)))
                    return
                # Changed since we wrote it: re-read; release only if it still names us.
                try:
                    self._lease = self._call("GET", path, None, deadline)
                except ApiError as err2:
                    log.warning("failed to release lease", extra=self._extra(status=err2.status, error=str(err2)))
                    return
                continue
            with self._lock:
                self._lease = released
                self._observed = LeaderElectionRecord.from_lease(released)
                self._observed_at = self._clock()
            log.info("released leader lease", extra=self._extra())
            return

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _with_record(lease: Mapping[str, Any], record: LeaderElectionRecord) -> dict[str, Any]:
        """The Lease as read (metadata incl. resourceVersion, other spec fields) with our record."""
        body = dict(lease)
        body["spec"] = {**(lease.get("spec") or {}), **record.to_spec()}
        return body

    def _wrote(self, lease: dict[str, Any], sent: float) -> None:
        with self._lock:
            self._lease = lease
            self._observed = LeaderElectionRecord.from_lease(lease)
            self._observed_at = self._clock()
            self._renewed_at = sent
        self._report_leader(self.identity)

    def _call(self, method: str, path: str, body: Any, deadline: float) -> Any:
        """One request, abandoned at ``deadline`` whatever the transport does (see module doc)."""
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise ApiError(0, "Timeout", f"{method} {path}: no time left before the deadline")
        timeout = (min(self.request_timeout[0], remaining), min(self.request_timeout[1], remaining))
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = self.client.request(method, path, body=body, timeout=timeout)
            except ApiError as err:
                box["error"] = err
            except Exception as err:  # noqa: BLE001 - e.g. an undecodable body
                box["error"] = ApiError(0, type(err).__name__, str(err))
            finally:
                done.set()

        threading.Thread(target=run, name=f"leader-election-{self.name}-{method.lower()}", daemon=True).start()
        if not done.wait(remaining):
            raise ApiError(0, "Timeout", f"{method} {path}: no answer within {remaining:.2f} s, abandoned")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _start_leading(self) -> None:
        with self._lock:
            self._leading = True
        log.info("became leader", extra=self._extra())
        self._emit_status(True)
        self._callback("on_started_leading", self._on_started_leading)

    def _stop_leading(self, lost: bool, reason: str) -> None:
        with self._lock:
            was_leading, self._leading = self._leading, False
            if lost and was_leading:
                self._lost = True
        if not was_leading:
            return
        (log.error if lost else log.info)("stopped leading", extra=self._extra(reason=reason, lost=lost))
        self._emit_status(False)
        self._callback("on_stopped_leading", self._on_stopped_leading)

    def _report_leader(self, holder: str) -> None:
        if not holder or holder == self._reported_leader:
            return
        self._reported_leader = holder
        log.info("new leader observed", extra=self._extra(holder=holder))
        self._callback("on_new_leader", self._on_new_leader, holder)

    def _emit_status(self, leading: bool) -> None:
        self._callback("on_status", self._on_status, leading)

    def _callback(self, what: str, fn: Callable[..., None] | None, *args: Any) -> None:
        if fn is None:
            return
        started = self._clock()
        try:
            fn(*args)
        except Exception:
            log.exception("leader election callback failed", extra=self._extra(callback=what))
        took = self._clock() - started
        if took > self.retry_period and what != "on_stopped_leading":
            log.warning("leader election callback is slow; it delays renewals",
                        extra=self._extra(callback=what, seconds=round(took, 3)))

    def _extra(self, **fields: Any) -> dict[str, Any]:
        return {"lease": self.lease_key, "identity": self.identity, **fields}
