"""Leader election's judgements of time on a fake clock, against an in-memory Lease: a follower
counts expiry from the last change it saw, a leader stops leading at its renew deadline whatever
its thread is doing. The behaviour against a real API server is in test_leaderelection.py."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest

from kmm_dtk.kube.client import ApiError
from kmm_dtk.kube.leaderelection import LEASES, LeaderElector, _Attempt
from tests.support.clock import FakeClock

NAMESPACE, NAME = "ns", "lease"
PATH = LEASES.path(NAMESPACE, NAME)
DEADLINE = 5.0  # seconds: an upper bound for things that happen at once


class FakeLeases:
    """One Lease with the API server's optimistic concurrency: a write must carry the
    resourceVersion it read, else 409. ``refuse_puts`` answers every PUT with a 500."""

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        self.lock = threading.Lock()
        self.version = 0
        self.lease: dict[str, Any] | None = None
        self.refuse_puts = False
        self.calls: list[str] = []
        if spec is not None:
            self._store({"metadata": {"name": NAME, "namespace": NAMESPACE}, "spec": spec})

    def _store(self, lease: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(lease)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    def change(self, **spec: Any) -> None:
        """Another holder writes the record."""
        with self.lock:
            assert self.lease is not None
            self._store({**self.lease, "spec": {**self.lease["spec"], **spec}})

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        with self.lock:
            self.calls.append(method)
            if method == "POST":
                if self.lease is not None:
                    raise ApiError(409, "AlreadyExists", "exists")
                return self._store(body)
            if path != PATH:
                raise ApiError(404, "NotFound", path)
            if self.lease is None:
                raise ApiError(404, "NotFound", "no lease")
            if method == "GET":
                return copy.deepcopy(self.lease)
            assert method == "PUT"
            if self.refuse_puts:
                raise ApiError(500, "InternalError", "refused")
            if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "the object has been modified")
            return self._store(body)

    def spec(self) -> dict[str, Any]:
        assert self.lease is not None
        return dict(self.lease["spec"])


def held_by(holder: str, seconds: int) -> dict[str, Any]:
    # renewTime far in the future: expiry must not be read from it
    return {"holderIdentity": holder, "leaseDurationSeconds": seconds, "acquireTime": "2099-01-01T00:00:00.000000Z",
            "renewTime": "2099-01-01T00:00:00.000000Z", "leaseTransitions": 3}


def elector(leases: FakeLeases, clock: FakeClock, **kw: Any) -> LeaderElector:
    timing = {"lease_duration": 15.0, "renew_deadline": 10.0, "retry_period": 2.0, **kw}
    return LeaderElector(leases, NAME, NAMESPACE, identity="me", clock=clock, **timing)  # type: ignore[arg-type]


def attempt(e: LeaderElector, clock: FakeClock) -> _Attempt:
    return e._try_acquire_or_renew(clock() + 60)


def test_a_follower_counts_expiry_from_the_last_change_it_saw_on_its_own_clock():
    clock, leases = FakeClock(), FakeLeases(held_by("other", 10))
    e = elector(leases, clock)
    assert attempt(e, clock) is _Attempt.HELD
    assert e.leader_identity() == "other"
    clock.advance(6)
    leases.change(renewTime="2099-01-01T00:00:06.000000Z")  # the holder renews
    assert attempt(e, clock) is _Attempt.HELD
    clock.advance(9.999)  # 15.999 s after the first sight: expired had it counted from there
    assert attempt(e, clock) is _Attempt.HELD
    assert leases.spec()["holderIdentity"] == "other"
    clock.advance(0.001)  # 10 s unchanged
    assert attempt(e, clock) is _Attempt.ACQUIRED
    spec = leases.spec()
    assert spec["holderIdentity"] == "me" and spec["leaseTransitions"] == 4
    assert spec["leaseDurationSeconds"] == 15 and spec["acquireTime"] != held_by("other", 10)["acquireTime"]
    assert e.last_renewed() == clock()


def test_a_record_without_a_duration_expires_after_the_followers_own():
    clock, leases = FakeClock(), FakeLeases(held_by("other", 0))
    e = elector(leases, clock, lease_duration=4.0, renew_deadline=3.0, retry_period=1.0)
    assert attempt(e, clock) is _Attempt.HELD
    clock.advance(3.999)
    assert attempt(e, clock) is _Attempt.HELD
    clock.advance(0.001)
    assert attempt(e, clock) is _Attempt.ACQUIRED


def test_a_released_lease_is_taken_at_once():
    clock, leases = FakeClock(), FakeLeases({**held_by("", 1)})
    e = elector(leases, clock)
    assert attempt(e, clock) is _Attempt.ACQUIRED
    assert leases.spec()["holderIdentity"] == "me"


def test_a_write_over_a_stale_version_fails_and_takes_nothing():
    clock, leases = FakeClock(), FakeLeases(held_by("other", 10))
    e = elector(leases, clock)
    assert attempt(e, clock) is _Attempt.HELD
    clock.advance(10)
    real_request = leases.request

    def racing(method: str, path: str, body: Any = None, **kw: Any) -> Any:
        if method == "PUT":  # another candidate wins between our read and our write
            leases.change(holderIdentity="third")
        return real_request(method, path, body, **kw)

    leases.request = racing  # type: ignore[method-assign]
    assert attempt(e, clock) is _Attempt.FAILED
    assert leases.spec()["holderIdentity"] == "third" and e.last_renewed() is None


def test_the_leader_stops_at_its_renew_deadline_by_the_clock_even_while_renewals_fail():
    clock, leases = FakeClock(), FakeLeases()
    started, stopped = threading.Event(), threading.Event()
    e = elector(leases, clock, lease_duration=15.0, renew_deadline=10.0, retry_period=0.05,
                on_started_leading=started.set, on_stopped_leading=stopped.set)
    e.start()
    try:
        assert started.wait(DEADLINE)
        acquired_at = e.last_renewed()
        assert acquired_at == clock() and leases.spec()["holderIdentity"] == "me"
        leases.refuse_puts = True  # no renewal can succeed from here on
        assert e.is_leader() and e.write_deadline() == acquired_at + 10.0
        clock.advance(9.999)
        assert e.is_leader(), "stopped leading before the renew deadline"
        clock.advance(0.001)
        assert not e.is_leader(), "still leading at the renew deadline"  # whatever the thread is doing
        assert stopped.wait(DEADLINE), "the elector's thread did not notice the renew deadline"
        assert e.lost() and e.write_deadline() is None
        assert e.last_renewed() == acquired_at
        assert e.join(DEADLINE)
    finally:
        e.stop(release=False)
        e.join(DEADLINE)
    assert leases.spec()["holderIdentity"] == "me"  # a lost lease is never released


@pytest.mark.parametrize("release", [True, False])
def test_stop_ends_leadership_and_releases_only_when_asked(release):
    clock, leases = FakeClock(), FakeLeases()
    started = threading.Event()
    e = elector(leases, clock, on_started_leading=started.set)
    e.start()
    assert started.wait(DEADLINE)
    e.stop(release=release)
    assert e.join(DEADLINE)
    assert not e.is_leader() and not e.lost()
    assert leases.spec()["holderIdentity"] == ("" if release else "me")
