"""The manager on a real control plane: caches before workers, workers only while leading, a
lost Lease ends the process non-zero, a clean stop hands over at once."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client

from kmm_dtk.kube.client import KubeClient, Resource
from kmm_dtk.kube.controller import Controller
from kmm_dtk.kube.informer import EventHandler, Informer
from kmm_dtk.kube.manager import EXIT_LOST_LEASE, EXIT_OK, LeaderElectionConfig, Manager
from kmm_dtk.kube.workqueue import RateLimitingQueue
from tests.support.controlplane import wait_for
from tests.support.http import http_get

pytestmark = pytest.mark.integration

CONFIGMAPS = Resource("", "v1", "configmaps", kind="ConfigMap")
FAST_LEASE = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.3}


class Replica:
    """A manager with one ConfigMap informer and a controller recording what it reconciled."""

    def __init__(self, api, namespace: str, identity: str, log: list, lock: threading.Lock,
                 leader_election: bool = True, **manager_options) -> None:
        kube = KubeClient(api)
        self.identity = identity
        informer = Informer(kube, CONFIGMAPS, namespace=namespace, backoff_initial=0.05, backoff_max=0.5,
                            watchdog=3)
        queue = RateLimitingQueue(f"cm-{identity}")
        informer.add_handler(EventHandler(on_add=lambda o: queue.add(o["metadata"]["name"]),
                                          on_update=lambda _, o: queue.add(o["metadata"]["name"])))

        def reconcile(key):
            with lock:
                log.append((identity, key, time.monotonic()))

        config = LeaderElectionConfig("kmm-dtk-test", namespace, identity=identity, **FAST_LEASE) \
            if leader_election else None
        self.manager = Manager(kube, leader_election=config, **{"graceful_timeout": 5, **manager_options})
        self.manager.add_informer(informer)
        self.manager.add_controller(Controller(f"cm-{identity}", queue, reconcile))
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.exit_code = self.manager.run()

    def start(self) -> Replica:
        self.thread.start()
        return self

    def stop(self) -> int | None:
        self.manager.stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), f"{self.identity} did not stop"
        return self.exit_code


def test_without_leader_election_workers_run_after_sync_and_stop_cleanly(api, namespace):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "early"}})
    log: list = []
    replica = Replica(api, namespace, "solo", log, threading.Lock(), leader_election=False,
                      metrics_address="127.0.0.1:0", health_address="127.0.0.1:0").start()
    wait_for(lambda: ("solo", "early") in [(i, k) for i, k, _ in log], 15, "the pre-existing object reconciled")
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "late"}})
    wait_for(lambda: ("solo", "late") in [(i, k) for i, k, _ in log], 10, "a new object reconciled")

    metrics_port, health_port = replica.manager.server_ports()
    assert http_get(health_port, "/healthz") == (200, "ok\n")
    status, body = http_get(health_port, "/readyz?verbose")
    assert status == 200 and "[+]caches-synced ok" in body and "[i]leader-election disabled" in body
    scraped = http_get(metrics_port, "/metrics")[1]
    assert 'leader_election_master_status' in scraped

    assert replica.stop() == EXIT_OK
    assert all(not i.alive() for i in replica.manager.informers)
    assert not any(c.alive() for c in replica.manager.controllers)


def test_only_the_leader_reconciles_and_a_clean_stop_hands_over_at_once(api, namespace):
    core = client.CoreV1Api(api)
    log: list = []
    lock = threading.Lock()
    a = Replica(api, namespace, "a", log, lock).start()
    wait_for(lambda: a.manager.leader_state() == "leading", 10, "replica a to lead")
    b = Replica(api, namespace, "b", log, lock).start()
    wait_for(lambda: b.manager.synced() and b.manager.leader_state().startswith("standby"), 10,
             "replica b synced, standing by")

    core.create_namespaced_config_map(namespace, {"metadata": {"name": "first"}})
    wait_for(lambda: any(k == "first" for _, k, _ in log), 10, "the leader to reconcile")
    assert {i for i, k, _ in log} == {"a"}

    stopped_at = time.monotonic()
    assert a.stop() == EXIT_OK  # releases the Lease
    wait_for(lambda: b.manager.leader_state() == "leading", 5, "replica b to take over")
    takeover = time.monotonic() - stopped_at
    assert takeover < FAST_LEASE["lease_duration"], f"takeover took {takeover:.1f} s: the lease was not released"

    core.create_namespaced_config_map(namespace, {"metadata": {"name": "second"}})
    wait_for(lambda: ("b", "second") in [(i, k) for i, k, _ in log], 10, "the new leader to reconcile")
    assert ("a", "second") not in [(i, k) for i, k, _ in log]
    assert b.stop() == EXIT_OK


def test_a_leader_that_cannot_renew_stops_working_and_exits_non_zero(api, proxied_api, fault_proxy, namespace):
    log: list = []
    lock = threading.Lock()
    a = Replica(proxied_api, namespace, "cut-off", log, lock).start()
    wait_for(lambda: a.manager.leader_state() == "leading", 10, "the proxied replica to lead")
    renewed = a.manager.elector.last_renewed()

    fault_proxy.stall()
    a.thread.join(FAST_LEASE["renew_deadline"] + 5)
    assert not a.thread.is_alive(), "run() must return once the lease cannot be renewed"
    assert a.exit_code == EXIT_LOST_LEASE
    stopped_working = time.monotonic()
    assert stopped_working - renewed < FAST_LEASE["lease_duration"], "workers outlived the lease"
    assert not any(c.alive() for c in a.manager.controllers)
    fault_proxy.heal()


def test_a_clean_stop_stops_every_controller_taking_keys_at_once(api):
    """One controller still finishing a reconcile must not let the others take new keys meanwhile."""
    manager = Manager(KubeClient(api), graceful_timeout=10)
    slow_queue, fast_queue = RateLimitingQueue("slow"), RateLimitingQueue("fast")
    entered, release = threading.Event(), threading.Event()
    taken: list[str] = []
    manager.add_controller(Controller("slow", slow_queue, lambda key: (entered.set(), release.wait(10)) and None))
    manager.add_controller(Controller("fast", fast_queue, lambda key: taken.append(key)))
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("exit", manager.run()), daemon=True)
    thread.start()
    slow_queue.add("busy")
    assert entered.wait(10), "the slow reconcile did not start"
    manager.stop()
    wait_for(fast_queue.shutting_down, 5, "every queue shut while the slow reconcile still runs")
    fast_queue.add("after-stop")
    assert not release.is_set() and "after-stop" not in taken
    release.set()
    thread.join(20)
    assert result == {"exit": EXIT_OK} and "after-stop" not in taken


def test_a_lease_lost_while_stopping_exits_non_zero(api, proxied_api, fault_proxy, namespace):
    """Renewals that fail during the graceful window: the Lease was lost, whatever started the stop."""
    log: list = []
    lock = threading.Lock()
    replica = Replica(proxied_api, namespace, "stopping", log, lock, graceful_timeout=FAST_LEASE["lease_duration"] * 2)
    entered, release = threading.Event(), threading.Event()
    slow_queue = RateLimitingQueue("slow-stop")
    replica.manager.add_controller(Controller("slow-stop", slow_queue,
                                              lambda key: (entered.set(), release.wait(20)) and None))
    replica.start()
    wait_for(lambda: replica.manager.leader_state() == "leading", 10, "the replica to lead")
    slow_queue.add("busy")
    assert entered.wait(10)
    fault_proxy.stall()  # renewals now hang...
    replica.manager.stop()  # ...while the clean stop waits for the slow reconcile
    wait_for(lambda: replica.manager.elector is not None and replica.manager.elector.lost(),
             FAST_LEASE["renew_deadline"] + 5, "the elector to give up")
    release.set()
    replica.thread.join(20)
    fault_proxy.drop_all()
    assert replica.exit_code == EXIT_LOST_LEASE
