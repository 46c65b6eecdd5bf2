"""Leader election on a real Lease: one leader at a time, takeover on expiry and on release, a
leader cut off from the apiserver stopping before its lease can expire, expiry by the local
monotonic clock, and the create race."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from kmm_dtk.kube.client import ApiError, KubeClient
from kmm_dtk.kube.leaderelection import JITTER_FACTOR, LEASES, LeaderElector
from tests.support.controlplane import wait_for
from tests.support.objects import unique_name

pytestmark = pytest.mark.integration

LEASE = 2.0
RENEW = 1.5
RETRY = 0.2
MAX_RETRY_WAIT = RETRY * (1 + JITTER_FACTOR)  # the longest jittered pause between two attempts
SLACK = 0.5  # scheduling and request time, for upper bounds only; lower bounds get no slack


class RecordingClient(KubeClient):
    """A KubeClient that logs (method, HTTP status) of every request; optionally holds each
    candidate's first POST at a barrier so that two creates hit the apiserver together."""

    def __init__(self, api, barrier: threading.Barrier | None = None) -> None:
        super().__init__(api)
        self.calls: list[tuple[str, int]] = []
        self._barrier = barrier
        self._lock = threading.Lock()

    def request(self, method, path, query=None, body=None, content_type=None, timeout=None):
        if method == "POST" and self._barrier is not None:
            barrier, self._barrier = self._barrier, None
            barrier.wait(10)
        try:
            result = super().request(method, path, query, body, content_type, timeout)
        except ApiError as err:
            with self._lock:
                self.calls.append((method, err.status))
            raise
        with self._lock:
            self.calls.append((method, 200))
        return result

    def count(self, method: str, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for m, s in self.calls if m == method and (status is None or s == status))


class HangingClient(KubeClient):
    """A transport that ignores its timeouts once ``hang`` is set (as urllib3's own retries or a
    trickling connection can): every request blocks until ``release`` is set."""

    def __init__(self, api) -> None:
        super().__init__(api)
        self.hang = threading.Event()
        self.release = threading.Event()

    def request(self, *args, **kwargs):
        if self.hang.is_set():
            self.release.wait(30)
            raise ApiError(0, "Hung", "the transport hung past every timeout")
        return super().request(*args, **kwargs)


class Candidate:
    """An elector plus a record of its callbacks, stamped with time.monotonic()."""

    def __init__(self, client: KubeClient, lease: str, namespace: str, identity: str) -> None:
        self.client = client
        self.identity = identity
        self.started_at: list[float] = []
        self.stopped_at: list[float] = []
        self.new_leaders: list[str] = []
        self.statuses: list[bool] = []
        self.on_stop: list[Callable[[], None]] = []  # extra work done inside on_stopped_leading
        self.elector = LeaderElector(
            client, lease, namespace, identity=identity,
            lease_duration=LEASE, renew_deadline=RENEW, retry_period=RETRY,
            on_started_leading=lambda: self.started_at.append(time.monotonic()),
            on_stopped_leading=self._stopped,
            on_new_leader=self.new_leaders.append,
            on_status=self.statuses.append,
        )

    def _stopped(self) -> None:
        self.stopped_at.append(time.monotonic())
        for hook in self.on_stop:
            hook()

    def start(self) -> Candidate:
        self.elector.start()
        return self

    def leading(self) -> bool:
        return bool(self.started_at) and len(self.stopped_at) < len(self.started_at)

    def intervals(self) -> list[tuple[float, float]]:
        ends = self.stopped_at + [float("inf")] * (len(self.started_at) - len(self.stopped_at))
        return list(zip(self.started_at, ends, strict=True))


class OverlapSampler:
    """Polls is_leader() of all candidates every few ms and counts moments with two leaders."""

    def __init__(self, *candidates: Candidate) -> None:
        self.candidates = candidates
        self.samples = 0
        self.overlaps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            leaders = sum(1 for c in self.candidates if c.elector.is_leader())
            self.samples += 1
            self.overlaps += leaders > 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def assert_never_both_leading(*candidates: Candidate) -> None:
    spans = [(c.identity, span) for c in candidates for span in c.intervals()]
    for i, (who_a, (start_a, end_a)) in enumerate(spans):
        for who_b, (start_b, end_b) in spans[i + 1:]:
            assert end_a <= start_b or end_b <= start_a, (
                f"{who_a} led {start_a:.3f}..{end_a:.3f} while {who_b} led {start_b:.3f}..{end_b:.3f}")


def read_lease(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    return client.get(LEASES, name, namespace)


@pytest.fixture
def lease_name() -> str:
    return unique_name("lease")


@pytest.fixture
def candidates():
    """Makes Candidates and stops them all (without release) at the end of the test."""
    made: list[Candidate] = []

    def make(client: KubeClient, lease: str, namespace: str, identity: str) -> Candidate:
        made.append(Candidate(client, lease, namespace, identity))
        return made[-1]

    yield make
    for candidate in made:
        candidate.elector.stop(release=False)
    for candidate in made:
        assert candidate.elector.join(10), f"{candidate.identity}'s elector thread did not end"


# -- 1. one leader at a time -----------------------------------------------------------------------

def test_two_candidates_exactly_one_leads(api, namespace, lease_name, candidates):
    a_client, b_client = RecordingClient(api), RecordingClient(api)
    a = candidates(a_client, lease_name, namespace, "a").start()
    b = candidates(b_client, lease_name, namespace, "b").start()
    sampler = OverlapSampler(a, b)
    try:
        wait_for(lambda: a.leading() or b.leading(), 5, "a leader")
        leader, follower = (a, b) if a.leading() else (b, a)
        wait_for(lambda: follower.elector.leader_identity() == leader.identity, 5, "the follower to see the leader")
        # Observation window: until the leader has renewed several times and the follower polled.
        puts, gets = leader.client.count("PUT", 200), follower.client.count("GET", 200)
        wait_for(lambda: leader.client.count("PUT", 200) >= puts + 6 and follower.client.count("GET", 200) >= gets + 4,
                 5, "renewals and follower polls")
    finally:
        sampler.stop()

    assert leader.elector.is_leader() and not follower.elector.is_leader()
    assert len(leader.started_at) == 1 and not leader.stopped_at, "the leader flapped"
    assert not follower.started_at, "the follower led at some point"
    assert follower.new_leaders == [leader.identity]
    assert leader.statuses == [False, True] and follower.statuses == [False]
    assert sampler.samples > 50 and sampler.overlaps == 0
    assert_never_both_leading(a, b)
    spec = read_lease(leader.client, namespace, lease_name)["spec"]
    assert spec["holderIdentity"] == leader.identity
    assert spec["leaseDurationSeconds"] == int(LEASE)
    assert spec["renewTime"] > spec["acquireTime"], "the leader never renewed"
    assert spec["renewTime"].endswith("Z") and len(spec["renewTime"]) == len("2026-11-25T12:00:00.000000Z")


# -- 2. takeover after the leader stops without releasing ------------------------------------------

def test_takeover_after_leader_stops_without_release(api, namespace, lease_name, candidates):
    client = KubeClient(api)
    a = candidates(client, lease_name, namespace, "a").start()
    wait_for(a.leading, 5, "a to lead")
    b = candidates(client, lease_name, namespace, "b").start()
    wait_for(lambda: b.elector.leader_identity() == "a", 5, "b to see a")
    sampler = OverlapSampler(a, b)
    before = read_lease(client, namespace, lease_name)["spec"]

    stop_at = time.monotonic()
    a.elector.stop(release=False)
    assert a.elector.join(5)
    assert a.stopped_at and a.stopped_at[0] - stop_at < 0.5, "stop() did not end leadership promptly"
    last_renew = a.elector.last_renewed()
    assert last_renew is not None and last_renew <= stop_at
    assert read_lease(client, namespace, lease_name)["spec"]["holderIdentity"] == "a", "stop(release=False) released"

    wait_for(b.leading, LEASE + 2 * MAX_RETRY_WAIT + 2, "b to take over")
    sampler.stop()
    took = b.started_at[0] - last_renew
    # Never before the lease could have expired, and no later than the follower's polling allows
    # (it sees a's last renewal up to one poll late, then notices expiry up to one poll late).
    assert took >= LEASE, f"b took over {took:.3f} s after a's last renewal, before the lease expired"
    assert took <= LEASE + 2 * MAX_RETRY_WAIT + SLACK, f"takeover took {took:.3f} s"
    after = read_lease(client, namespace, lease_name)["spec"]
    assert after["holderIdentity"] == "b"
    assert after["leaseTransitions"] == before.get("leaseTransitions", 0) + 1
    assert after["acquireTime"] != before["acquireTime"]
    assert sampler.overlaps == 0
    assert_never_both_leading(a, b)
    assert a.statuses == [False, True, False]


# -- 3. release on clean shutdown -------------------------------------------------------------------

def test_release_lets_the_successor_take_over_at_once(api, namespace, lease_name, candidates):
    client = KubeClient(api)
    a = candidates(client, lease_name, namespace, "a").start()
    wait_for(a.leading, 5, "a to lead")
    b = candidates(client, lease_name, namespace, "b").start()
    wait_for(lambda: b.elector.leader_identity() == "a", 5, "b to see a")
    before = read_lease(client, namespace, lease_name)["spec"]

    stop_at = time.monotonic()
    a.elector.stop(release=True)
    wait_for(b.leading, LEASE, "b to take over")
    took = b.started_at[0] - stop_at
    assert took <= MAX_RETRY_WAIT + SLACK, f"takeover after release took {took:.3f} s"
    assert took < LEASE / 2
    assert a.elector.join(5)
    assert a.stopped_at[0] <= b.started_at[0]
    assert_never_both_leading(a, b)
    after = read_lease(client, namespace, lease_name)["spec"]
    assert after["holderIdentity"] == "b"
    assert after["leaseTransitions"] == before.get("leaseTransitions", 0) + 1


def test_release_writes_an_empty_holder_and_keeps_the_count(api, namespace, lease_name, candidates):
    client = KubeClient(api)
    a = candidates(client, lease_name, namespace, "a").start()
    wait_for(a.leading, 5, "a to lead")
    held = read_lease(client, namespace, lease_name)
    holder_during_callback: list[str] = []
    a.on_stop.append(lambda: holder_during_callback.append(
        read_lease(client, namespace, lease_name)["spec"].get("holderIdentity", "")))
    a.elector.stop(release=True)
    assert a.elector.join(5)
    released = read_lease(client, namespace, lease_name)
    assert released["metadata"]["resourceVersion"] != held["metadata"]["resourceVersion"]
    assert released["spec"].get("holderIdentity", "") == ""
    assert released["spec"]["leaseDurationSeconds"] == 1
    assert released["spec"].get("leaseTransitions", 0) == held["spec"].get("leaseTransitions", 0)
    assert a.stopped_at and not a.elector.is_leader() and not a.elector.lost()
    assert holder_during_callback == ["a"], "released before on_stopped_leading returned"

    start = time.monotonic()
    b = candidates(client, lease_name, namespace, "b").start()
    wait_for(b.leading, LEASE, "b to acquire the released lease")
    assert b.started_at[0] - start < 1.0, "a released lease was not acquired on the first attempt"
    assert read_lease(client, namespace, lease_name)["spec"]["leaseTransitions"] == \
        held["spec"].get("leaseTransitions", 0) + 1


def test_release_never_overwrites_someone_elses_write(api, namespace, lease_name, candidates):
    client = KubeClient(api)
    a = candidates(client, lease_name, namespace, "a").start()
    wait_for(a.leading, 5, "a to lead")
    lease = read_lease(client, namespace, lease_name)
    lease["spec"]["holderIdentity"] = "intruder"
    client.replace(LEASES, lease, namespace)  # guarded by the resourceVersion just read
    a.elector.stop(release=True)
    assert a.elector.join(5)
    assert len(a.stopped_at) == 1
    assert read_lease(client, namespace, lease_name)["spec"]["holderIdentity"] == "intruder"


def test_leader_that_sees_another_holder_stops_at_once(api, namespace, lease_name, candidates):
    client = KubeClient(api)
    a = candidates(client, lease_name, namespace, "a").start()
    wait_for(a.leading, 5, "a to lead")
    lease = read_lease(client, namespace, lease_name)
    lease["spec"]["holderIdentity"] = "intruder"
    written_at = time.monotonic()
    client.replace(LEASES, lease, namespace)
    wait_for(lambda: a.stopped_at, RENEW, "a to stop leading")
    assert a.stopped_at[0] - written_at <= RETRY + SLACK, "a kept leading after seeing another holder"
    assert a.elector.lost() and a.elector.join(2)
    assert a.elector.leader_identity() == "intruder" and a.new_leaders == ["a", "intruder"]
    assert read_lease(client, namespace, lease_name)["spec"]["holderIdentity"] == "intruder"


# -- 4. a leader cut off from the apiserver --------------------------------------------------------

@pytest.mark.parametrize("fault", ["stall", "refuse", "hung-transport"])
def test_leader_that_cannot_renew_stops_before_its_lease_expires(
        fault, api, proxied_api, fault_proxy, namespace, lease_name, candidates):
    a_client = HangingClient(proxied_api)
    a = candidates(a_client, lease_name, namespace, "a").start()
    wait_for(a.leading, 5, "a to lead through the proxy")
    b = candidates(KubeClient(api), lease_name, namespace, "b").start()
    wait_for(lambda: b.elector.leader_identity() == "a", 5, "b to see a")
    renewed = a.elector.last_renewed()
    wait_for(lambda: a.elector.last_renewed() != renewed, 2, "a to renew through the proxy")
    sampler = OverlapSampler(a, b)

    fault_at = time.monotonic()
    if fault == "hung-transport":
        a_client.hang.set()
    else:
        getattr(fault_proxy, fault)()
    wait_for(lambda: a.stopped_at, RENEW + RETRY + 2, "a to stop leading")
    stopped = a.stopped_at[0]
    last_renew = a.elector.last_renewed()
    assert last_renew is not None
    assert stopped - last_renew <= RENEW + SLACK, f"a stopped {stopped - last_renew:.3f} s after its last renewal"
    assert stopped - last_renew < LEASE, "a was still leading when its lease could expire for others"
    assert stopped - fault_at <= RENEW + RETRY + SLACK
    assert a.elector.lost() and not a.elector.is_leader()
    assert not b.started_at, "b took over while a still led"

    wait_for(b.leading, LEASE + 2 * MAX_RETRY_WAIT + 2, "b to take over")
    sampler.stop()
    took_over = b.started_at[0]
    assert took_over >= last_renew + LEASE, "b acquired before a's lease had expired"
    assert took_over > stopped
    assert took_over - fault_at <= LEASE + 2 * MAX_RETRY_WAIT + SLACK
    assert sampler.overlaps == 0
    assert_never_both_leading(a, b)
    assert a.elector.join(RENEW + 1), "a's elector did not end after losing the lease"
    a_client.release.set()


# -- 5. expiry by the local monotonic clock ----------------------------------------------------------

@pytest.mark.parametrize("renew_time", ["2099-01-01T00:00:00.000000Z", "2001-01-01T00:00:00.000000Z"],
                         ids=["renewTime-in-the-future", "renewTime-in-the-past"])
def test_expiry_is_judged_by_the_local_clock_not_renew_time(renew_time, api, namespace, lease_name, candidates):
    client = KubeClient(api)
    spec = {"holderIdentity": "other", "leaseDurationSeconds": int(LEASE), "acquireTime": renew_time,
            "renewTime": renew_time, "leaseTransitions": 3}
    client.create(LEASES, {"apiVersion": LEASES.api_version, "kind": "Lease",
                           "metadata": {"name": lease_name}, "spec": spec}, namespace)
    e_client = RecordingClient(api)
    e = candidates(e_client, lease_name, namespace, "e").start()
    wait_for(lambda: e.elector.leader_identity() == "other", 5, "e to see the other holder")
    # The other holder "renews" once more (a change, with an equally meaningless renewTime) after
    # e has polled the first record a few times; expiry must count from this last change.
    wait_for(lambda: e_client.count("GET", 200) >= 4, 5, "e to poll a few times")
    lease = read_lease(client, namespace, lease_name)
    lease["spec"]["renewTime"] = renew_time.replace(":00.000000Z", ":01.000000Z")
    bump_sent = time.monotonic()
    client.replace(LEASES, lease, namespace)
    bump_done = time.monotonic()
    assert not e.started_at, "e took over a lease that had not been unchanged for its duration"

    wait_for(e.leading, LEASE + 2 * MAX_RETRY_WAIT + 2, "e to take over the expired lease")
    took = e.started_at[0]
    assert took >= bump_sent + LEASE, f"e took over {took - bump_sent:.3f} s after the last change"
    assert took <= bump_done + LEASE + 2 * MAX_RETRY_WAIT + SLACK, f"e took over {took - bump_done:.3f} s late"
    assert e.new_leaders == ["other", "e"]
    after = read_lease(client, namespace, lease_name)["spec"]
    assert after["holderIdentity"] == "e"
    assert after["leaseTransitions"] == 4
    assert after["acquireTime"] != renew_time


# -- 6. the create race ----------------------------------------------------------------------------

def test_two_candidates_racing_to_create_the_lease(api, namespace, candidates):
    for round_ in range(3):
        race_to_create(api, namespace, candidates, round_)


def race_to_create(api, namespace, candidates, round_: int) -> None:
    lease = unique_name(f"race{round_}")
    barrier = threading.Barrier(2)
    clients = {"a": RecordingClient(api, barrier), "b": RecordingClient(api, barrier)}
    racers = {who: candidates(c, lease, namespace, who).start() for who, c in clients.items()}
    wait_for(lambda: all(c.count("POST") for c in clients.values()), 5, "both creates")
    posts = sorted(s for c in clients.values() for m, s in c.calls if m == "POST")
    assert posts == [200, 409], f"round {round_}: create results {posts}"
    winner = next(who for who, c in clients.items() if c.count("POST", 200))
    loser = "b" if winner == "a" else "a"
    wait_for(racers[winner].leading, 5, "the winner to lead")
    wait_for(lambda: racers[loser].elector.leader_identity() == winner, 5, "the loser to see the winner")
    gets = clients[loser].count("GET", 200)
    wait_for(lambda: clients[loser].count("GET", 200) >= gets + 2, 5, "the loser to keep polling")
    assert not racers[loser].started_at, f"round {round_}: the loser led"
    assert racers[winner].elector.is_leader() and not racers[loser].elector.is_leader()
    assert clients[loser].count("POST") == 1 and clients[loser].count("PUT") == 0
    spec = read_lease(clients[winner], namespace, lease)["spec"]
    assert spec["holderIdentity"] == winner and spec.get("leaseTransitions", 0) == 0
    for racer in racers.values():
        racer.elector.stop(release=False)
