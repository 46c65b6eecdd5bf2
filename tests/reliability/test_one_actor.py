"""One actor at a time, proven from the API server's audit log.

Each replica runs as its own ServiceAccount, so the audit log says which replica wrote what and
when, by the server's clock. The claim checked in every scenario: once a replica has made its
first successful write (the Lease included), no other replica completes a write after it.
Handover times are measured and printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from kmm_dtk.kube.client import KubeClient
from kmm_dtk.kube.manager import EXIT_LOST_LEASE, LeaderElectionConfig
from kmm_dtk.operator.app import build_operator
from kmm_dtk.operator.options import OperatorOptions
from tests.support.audit import Write, successful
from tests.support.cluster import api_client_from
from tests.support.controlplane import wait_for
from tests.support.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

MODULES = 60
# Long enough that draining it takes longer than the lease: the old behaviour (stop renewing, then
# drain) fails this test with hundreds of overlapping writes.
LONG_QUEUE_MODULES = 300
FAST = (6.0, 4.0, 1.0)  # lease duration, renew deadline, retry period (seconds)


def assert_one_actor(writes: list[Write], first: str, second: str) -> tuple[Write, Write]:
    """``first`` wrote, then ``second``; nothing of ``first`` completed after ``second``'s first write.
    Returns (first's last write, second's first write)."""
    mine, theirs = successful(writes, first), successful(writes, second)
    assert mine, f"{first} made no write"
    assert theirs, f"{second} made no write"
    last, earliest = max(mine, key=lambda w: w.completed), min(theirs, key=lambda w: w.received)
    overlap = [w for w in mine if w.completed > earliest.received]
    assert not overlap, (f"{len(overlap)} writes of {first} completed after {second}'s first write "
                         f"({earliest.verb} {earliest.resource}); the last {last.completed - earliest.received:.3f} s "
                         f"after it: {overlap[:3]}")
    return last, earliest


def first_lease_acquisition(writes: list[Write], user: str) -> Write:
    return min((w for w in successful(writes, user) if w.is_lease), key=lambda w: w.received)


def with_server(kubeconfig: Path, server: str, path: Path) -> Path:
    """The same credentials for another address. (Overriding the host of a loaded configuration
    does not last with a token: the kubernetes client reloads the kubeconfig on every request.)"""
    raw = yaml.safe_load(kubeconfig.read_text())
    for entry in raw["clusters"]:
        entry["cluster"]["server"] = server
    path.write_text(yaml.safe_dump(raw))
    return path


def report(title: str, **figures: float) -> None:
    print(f"\n{title}: " + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in figures.items()))


def test_sigterm_mid_queue_hands_over_without_overlap(fleet):
    total = LONG_QUEUE_MODULES * len(fleet.kernels)
    a, user_a = fleet.replica("replica-a", lease=FAST)
    b, user_b = fleet.replica("replica-b", lease=FAST)
    a.start()
    a.wait_leading()
    b.start()
    b.wait_ready()
    assert not b.leading()
    fleet.create_modules(LONG_QUEUE_MODULES)
    wait_for(lambda: fleet.build_count() >= total // 10, 60, "the leader to be well into its queue")

    terminated = time.time()
    a.terminate()
    assert a.wait(30) == 0, a.log_tail()
    exited = time.time()
    b.wait_leading(timeout=30)
    wait_for(lambda: fleet.build_count() == total, 120, "the new leader to finish the queue")

    writes = fleet.writes(user_a, user_b)
    last_a, first_b = assert_one_actor(writes, user_a, user_b)
    released = max(w.completed for w in successful(writes, user_a) if w.is_lease)
    acquired = first_lease_acquisition(writes, user_b).completed
    b_work = successful(writes, user_b, leases=False)
    assert b_work, "the old leader finished the whole queue: the scenario did not test a handover mid-queue"
    first_b_work = min(w.received for w in b_work)
    report("SIGTERM mid-queue", sigterm_to_exit=exited - terminated, sigterm_to_release=released - terminated,
           release_to_takeover=acquired - released, sigterm_to_new_leaders_first_write=first_b_work - terminated)
    assert acquired - released <= 5.0, "a released Lease must be taken over within seconds"
    assert exited - terminated <= a.graceful_timeout + 5
    assert fleet.build_count() == total, "no Build created twice or lost"


def test_a_leader_whose_renewals_stall_stops_writing_before_the_other_starts(fleet, cluster, tmp_path):
    """Replica A renews its Lease through a fault proxy but writes directly: when the proxy stalls,
    its writes could still go through; the fence stops them at its renew deadline."""
    total = MODULES * len(fleet.kernels)
    kubeconfig_a, user_a = fleet.service_account("replica-a")
    b, user_b = fleet.replica("replica-b", lease=FAST)
    port = int(cluster.host.rsplit(":", 1)[1])
    with FaultProxy(port) as proxy:
        writer = api_client_from(kubeconfig_a)
        renewer = api_client_from(with_server(kubeconfig_a, proxy.url, tmp_path / "renewer.kubeconfig"))
        duration, deadline, retry = FAST
        election = LeaderElectionConfig("kmm-dtk", fleet.namespace, identity="replica-a_in-process",
                                        lease_duration=duration, renew_deadline=deadline, retry_period=retry,
                                        client=KubeClient(renewer))
        operator = build_operator(KubeClient(writer), OperatorOptions(
            namespaces=(fleet.namespace,), dtk_imagestream=(fleet.namespace, "driver-toolkit"), workers=4,
            metrics_address=None, health_address=None, identity="replica-a", leader_election=election),
            registry=CollectorRegistry())
        result: dict[str, int] = {}
        thread = threading.Thread(target=lambda: result.setdefault("exit", operator.run()), daemon=True)
        thread.start()
        try:
            wait_for(lambda: operator.manager.leader_state() == "leading", 30, "replica A to lead")
            b.start()
            b.wait_ready()
            fleet.create_modules(MODULES)
            wait_for(lambda: fleet.build_count() >= total // 5, 60, "replica A to be well into its queue")
            stalled = time.time()
            proxy.stall()
            thread.join(deadline + 10)
            assert not thread.is_alive(), "replica A must stop once it cannot renew"
            assert result["exit"] == EXIT_LOST_LEASE
        finally:
            operator.stop()
            thread.join(30)
            proxy.drop_all()  # a renewal still held in the stalled proxy must never arrive late
        b.wait_leading(timeout=30)
        wait_for(lambda: fleet.build_count() == total, 120, "replica B to finish the queue")

    writes = fleet.writes(user_a, user_b)
    last_a, first_b = assert_one_actor(writes, user_a, user_b)
    after_stall = [w for w in successful(writes, user_a, leases=False) if w.received > stalled]
    assert after_stall, "replica A's writes kept going through while its renewals hung"
    last_renewal = max(w.completed for w in successful(writes, user_a) if w.is_lease)
    report("renewals stalled", last_renewal_to_last_write=last_a.completed - last_renewal,
           last_write_to_new_leaders_first=first_b.received - last_a.completed,
           last_renewal_to_takeover=first_lease_acquisition(writes, user_b).completed - last_renewal)
    assert last_a.completed - last_renewal < duration, "a write outlived the Lease"


def test_two_replicas_on_one_host_never_both_lead(fleet):
    total = MODULES * len(fleet.kernels)
    a, user_a = fleet.replica("replica-a", pod_name="kmm-dtk-0", lease=FAST)
    b, user_b = fleet.replica("replica-b", pod_name="kmm-dtk-0", lease=FAST)
    a.start()
    b.start()
    wait_for(lambda: a.ready() and b.ready() and (a.leading() or b.leading()), 60, "one replica to lead")
    fleet.create_modules(MODULES)
    wait_for(lambda: fleet.build_count() == total, 120, "the leader to finish the queue")
    leading = [r.name for r in (a, b) if r.leading()]
    assert len(leading) == 1, f"both replicas lead: {leading}"
    holder = fleet.lease_holder()
    assert holder.startswith("kmm-dtk-0_") and len(holder) > len("kmm-dtk-0_"), holder

    writes = fleet.writes(user_a, user_b)
    writers = {w.user for w in writes if w.succeeded and not w.is_lease}
    assert len(writers) == 1, f"both replicas wrote: {writers}"


def test_sigkill_hands_over_within_lease_duration_plus_retry_period(fleet):
    """Default timings (15 s lease, 10 s renew deadline, 2 s retry): what a cluster runs."""
    a, user_a = fleet.replica("replica-a")
    b, user_b = fleet.replica("replica-b")
    a.start()
    a.wait_leading()
    b.start()
    b.wait_ready()
    fleet.create_modules(5)
    wait_for(lambda: fleet.build_count() == 5 * len(fleet.kernels), 60, "the leader's Builds")
    killed = time.time()
    a.kill()
    a.wait(10)
    b.wait_leading(timeout=40)

    writes = fleet.writes(user_a, user_b)
    assert_one_actor(writes, user_a, user_b)
    last_renewal = max(w.completed for w in successful(writes, user_a) if w.is_lease)
    acquired = first_lease_acquisition(writes, user_b).completed
    report("SIGKILL", last_renewal_to_takeover=acquired - last_renewal, sigkill_to_takeover=acquired - killed)
    assert acquired - last_renewal <= 15.0 + 2.0 + 0.5, "takeover later than lease duration + retry period"
