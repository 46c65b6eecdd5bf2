"""The manager: starts informers, waits for their caches, and runs controllers while leading.

After controller-runtime's Manager. Informers run on every replica (a standby's caches are warm
when it takes over); controllers run only while this replica holds the Lease. Losing the Lease
stops the controllers and makes ``run()`` return non-zero, so the process exits and the pod
restarts: two replicas never act at once. A clean stop drains the queues, then releases the
Lease so a successor takes over at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Gauge

from kmm_dtk.kube.client import KubeClient
from kmm_dtk.kube.controller import Controller
from kmm_dtk.kube.informer import Informer
from kmm_dtk.kube.leaderelection import (
    DEFAULT_LEASE_DURATION,
    DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD,
    LeaderElector,
)
from kmm_dtk.observability.http import Checks, EndpointServer, health_server, metrics_server

log = logging.getLogger(__name__)

EXIT_OK, EXIT_LOST_LEASE = 0, 1


@dataclass(frozen=True)
class LeaderElectionConfig:
    name: str
    namespace: str
    identity: str | None = None
    lease_duration: float = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD


class Manager:
    def __init__(
        self,
        client: KubeClient,
        *,
        registry: CollectorRegistry | None = None,
        metrics_address: str | None = None,
        health_address: str | None = None,
        leader_election: LeaderElectionConfig | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.registry = registry or CollectorRegistry()
        self.metrics_address = metrics_address
        self.health_address = health_address
        self.leader_election = leader_election
        self.shutdown_timeout = shutdown_timeout
        self.informers: list[Informer[Any]] = []
        self.controllers: list[Controller] = []
        self.elector: LeaderElector | None = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._controllers_lock = threading.Lock()
        self._controllers_started = False
        self._servers: list[EndpointServer] = []
        self._synced_hooks: list[Callable[[], None]] = []
        self._leader_gauge = Gauge("leader_election_master_status",
                                   "1 if this replica leads the named lease, else 0 (client-go's metric)",
                                   ["name"], registry=self.registry)

    def add_informer(self, informer: Informer[Any]) -> Informer[Any]:
        self.informers.append(informer)
        return informer

    def add_controller(self, controller: Controller) -> Controller:
        self.controllers.append(controller)
        return controller

    def add_synced_hook(self, hook: Callable[[], None]) -> None:
        """Run once the caches have synced, before any controller starts (e.g. to prime state)."""
        self._synced_hooks.append(hook)

    def stop(self) -> None:
        """Ask ``run()`` to shut down (e.g. from a SIGTERM handler)."""
        self._stop.set()

    # -- health --------------------------------------------------------------------------------

    def alive(self) -> bool:
        informers_ok = all(i.alive() for i in self.informers)
        with self._controllers_lock:
            controllers_ok = not self._controllers_started or all(c.alive() for c in self.controllers)
        elector_ok = self.elector is None or self._stop.is_set() or not self.elector.join(0)
        return informers_ok and controllers_ok and elector_ok

    def synced(self) -> bool:
        return all(i.has_synced() for i in self.informers)

    def leader_state(self) -> str:
        if self.leader_election is None:
            return "disabled"
        if self.elector is not None and self.elector.is_leader():
            return "leading"
        holder = self.elector.leader_identity() if self.elector else ""
        return f"standby (leader: {holder or 'none'})"

    # -- run -------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until ``stop()`` or a lost Lease; returns the process exit status."""
        try:
            self._start_servers()
            for informer in self.informers:
                informer.start()
            if not self._wait_for_sync():
                return EXIT_OK  # stopped before the caches synced
            for hook in self._synced_hooks:
                hook()
            if self.leader_election is None:
                self._start_controllers()
            else:
                self._campaign()
            while not self._stop.wait(1.0):  # timed: an untimed wait can hold off signal handlers
                pass
            return EXIT_LOST_LEASE if self._lost.is_set() else EXIT_OK
        finally:
            self._shutdown()

    def _wait_for_sync(self) -> bool:
        """Informers retry by themselves; until they sync, /readyz says so."""
        for informer in self.informers:
            while not informer.wait_for_sync(0.5):
                if self._stop.is_set():
                    return False
        log.info("caches synced", extra={"informers": [i.name for i in self.informers]})
        return True

    def _campaign(self) -> None:
        config = self.leader_election
        assert config is not None
        self.elector = LeaderElector(
            self.client, config.name, config.namespace, identity=config.identity,
            lease_duration=config.lease_duration, renew_deadline=config.renew_deadline,
            retry_period=config.retry_period,
            on_started_leading=self._start_controllers,
            on_stopped_leading=self._on_stopped_leading,
            on_new_leader=lambda who: log.info("leader is now", extra={"leader": who, "lease": config.name}),
            on_status=lambda leading: self._leader_gauge.labels(config.name).set(1 if leading else 0),
        ).start()

    def _on_stopped_leading(self) -> None:
        self._stop_controllers()
        if not self._stop.is_set():
            log.error("lost the leader lease; stopping so that no two replicas act at once",
                      extra={"lease": self.leader_election.name if self.leader_election else ""})
            self._lost.set()
            self._stop.set()

    def _start_controllers(self) -> None:
        with self._controllers_lock:
            if self._controllers_started:
                return
            self._controllers_started = True
            for controller in self.controllers:
                controller.start()
        log.info("controllers started", extra={"controllers": [c.name for c in self.controllers]})

    def _stop_controllers(self) -> None:
        with self._controllers_lock:
            if not self._controllers_started:
                return
            self._controllers_started = False
            for controller in self.controllers:
                controller.stop(drain=True, timeout=self.shutdown_timeout)

    def _start_servers(self) -> None:
        if self.metrics_address:
            self._servers.append(metrics_server(self.metrics_address, self.registry).start())
        if self.health_address:
            liveness = Checks({"informers-and-workers": self.alive})
            readiness = Checks({"caches-synced": self.synced}, {"leader-election": self.leader_state})
            self._servers.append(health_server(self.health_address, liveness, readiness).start())

    def _shutdown(self) -> None:
        self._stop.set()
        if self.elector is not None:
            self.elector.stop(release=not self._lost.is_set())  # stops controllers via the callback
            self.elector.join(self.shutdown_timeout)
        self._stop_controllers()
        for informer in self.informers:
            informer.stop()
        for server in self._servers:
            server.stop()
        log.info("manager stopped")

    def server_ports(self) -> list[int]:
        return [server.port for server in self._servers]
