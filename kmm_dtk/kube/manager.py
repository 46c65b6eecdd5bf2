"""The manager: starts informers, waits for their caches, and runs controllers while leading.

After controller-runtime's Manager. Informers run on every replica (a standby's caches are warm
when it takes over); controllers run only while this replica holds the Lease, and every API write
goes through one :class:`~kmm_dtk.kube.fence.WriteFence` that refuses it unless this replica
leads and is not shutting down. So two replicas never act at once:

* **Lost Lease** (renewals failed until the renew deadline, or another holder seen): the fence is
  already shut (it follows the elector's own clock), workers stop taking keys at once, and
  ``run()`` returns 1 so the process exits and the pod restarts. The Lease is not released.
* **Clean stop** (SIGTERM, e.g. a rolling update): workers stop taking keys at once; the
  reconciles in flight get ``graceful_timeout`` seconds to finish while the elector keeps
  renewing; then the fence is shut, the writes in flight are waited for, and only then is the
  Lease released, so that a successor takes over at its next retry. ``run()`` returns 0.
* **Takeover**: the prestart hooks (priming the kernel map from the caches) run each time this
  replica starts leading, before any worker, so a new leader never plans from a map older than
  the events its caches have received.

Keys dropped when workers stop are not lost: every replica's informers queue every object at
sync and on every change, so whoever leads next reconciles them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from kmm_dtk.kube import defaults
from kmm_dtk.kube.client import KubeClient
from kmm_dtk.kube.controller import Controller, K
from kmm_dtk.kube.fence import WriteFence
from kmm_dtk.kube.informer import Informer
from kmm_dtk.kube.leaderelection import (
    DEFAULT_LEASE_DURATION,
    DEFAULT_RENEW_DEADLINE,
    DEFAULT_RETRY_PERIOD,
    LeaderElector,
    validate_timing,
)
from kmm_dtk.observability.http import Checks, EndpointServer, health_server, metrics_server

log = logging.getLogger(__name__)

EXIT_OK, EXIT_LOST_LEASE = 0, 1
DEFAULT_GRACEFUL_TIMEOUT = defaults.GRACEFUL_TIMEOUT
FENCE_SAFETY = 1.0  # seconds a granted write must end before a follower could see the Lease expire
_LOST_STOP_TIMEOUT = 2.0  # on a lost Lease: how long to wait for workers (their writes are refused)


@dataclass(frozen=True)
class LeaderElectionConfig:
    name: str
    namespace: str
    identity: str | None = None
    lease_duration: float = DEFAULT_LEASE_DURATION
    renew_deadline: float = DEFAULT_RENEW_DEADLINE
    retry_period: float = DEFAULT_RETRY_PERIOD
    client: KubeClient | None = None  # the elector's own client; None: one on a separate connection pool

    def validate(self) -> None:
        """Raise ValueError (one line) for timings the elector would refuse."""
        validate_timing(self.lease_duration, self.renew_deadline, self.retry_period)


class Manager:
    def __init__(
        self,
        client: KubeClient,
        *,
        registry: CollectorRegistry | None = None,
        metrics_address: str | None = None,
        health_address: str | None = None,
        leader_election: LeaderElectionConfig | None = None,
        graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT,
    ) -> None:
        # With leader election, nothing may be written before the Lease is ours.
        self.fence = WriteFence() if leader_election is None else WriteFence(lambda: None)
        self.client = client.fenced(self.fence)  # what controllers write with: through the fence
        self._raw_client = client
        self.registry = registry or CollectorRegistry()
        self.metrics_address = metrics_address
        self.health_address = health_address
        self.leader_election = leader_election
        self.graceful_timeout = graceful_timeout
        self.informers: list[Informer[Any]] = []
        self.controllers: list[Controller[Any]] = []
        self.elector: LeaderElector | None = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._controllers_lock = threading.Lock()  # guards _running only; never held while stopping
        self._running: list[Controller[Any]] = []
        self._servers: list[EndpointServer] = []
        self._prestart_hooks: list[Callable[[], None]] = []
        self._drain_hooks: list[Callable[[float], object]] = []
        self._leader_gauge = Gauge("leader_election_master_status",
                                   "1 if this replica leads the named lease, else 0 (client-go's metric)",
                                   ["name"], registry=self.registry)

    def add_informer(self, informer: Informer[Any]) -> Informer[Any]:
        self.informers.append(informer)
        return informer

    def add_controller(self, controller: Controller[K]) -> Controller[K]:
        self.controllers.append(controller)
        return controller

    def add_prestart_hook(self, hook: Callable[[], None]) -> None:
        """Run each time the controllers are about to start (after the caches synced, and on every
        takeover), e.g. to rebuild derived state from the caches as they are at that moment."""
        self._prestart_hooks.append(hook)

    def add_drain_hook(self, hook: Callable[[float], object]) -> None:
        """Run on a clean stop, after the reconciles ended and while writes are still allowed, with
        the seconds left of the graceful window: e.g. to send the Events still queued."""
        self._drain_hooks.append(hook)

    def stop(self) -> None:
        """Ask ``run()`` to shut down (e.g. from a SIGTERM handler)."""
        self._stop.set()

    # -- health --------------------------------------------------------------------------------

    def alive(self) -> bool:
        informers_ok = all(i.alive() for i in self.informers)
        with self._controllers_lock:
            running = list(self._running)
        controllers_ok = all(c.alive() for c in running)
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
            if self.leader_election is None:
                self._start_controllers()
            else:
                self._campaign()
            while not self._stop.wait(1.0):  # timed: an untimed wait can hold off signal handlers
                pass
        finally:
            self._shutdown()
        # A Lease lost while stopping (renewals failing during the graceful window) counts too.
        lost = self._lost.is_set() or (self.elector is not None and self.elector.lost())
        return EXIT_LOST_LEASE if lost else EXIT_OK

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
        # Renewals on a pool of their own: busy workers must never delay them.
        client = config.client or KubeClient(self._raw_client.api_client, metrics=self._raw_client.metrics)
        self.elector = LeaderElector(
            client, config.name, config.namespace, identity=config.identity,
            lease_duration=config.lease_duration, renew_deadline=config.renew_deadline,
            retry_period=config.retry_period,
            on_started_leading=self._start_controllers,
            on_stopped_leading=self._on_stopped_leading,
            on_new_leader=lambda who: log.info("leader is now", extra={"leader": who, "lease": config.name}),
            on_status=lambda leading: self._leader_gauge.labels(config.name).set(1 if leading else 0),
        )
        margin = max(0.0, config.lease_duration - config.renew_deadline - FENCE_SAFETY)
        self.fence.set_permit(self.elector.write_deadline, margin)
        self.elector.start()

    def _on_stopped_leading(self) -> None:
        if self._stop.is_set():
            return  # a clean stop: _shutdown has stopped the controllers already
        log.error("lost the leader lease; stopping at once so that no two replicas act at once",
                  extra={"lease": self.leader_election.name if self.leader_election else ""})
        self._lost.set()
        self._stop.set()
        self._stop_controllers(self._LOST)

    def _start_controllers(self) -> None:
        with self._controllers_lock:
            if self._running or self._stop.is_set():
                return
            for hook in self._prestart_hooks:
                hook()
            self._running = list(self.controllers)
            for controller in self._running:
                controller.start()
        log.info("controllers started", extra={"controllers": [c.name for c in self.controllers]})

    _LOST, _GRACEFUL = "lost", "graceful"

    def _stop_controllers(self, how: str) -> None:
        """Stop taking keys at once; wait for the reconciles in flight (a lost Lease: briefly, their
        writes are refused anyway; a clean stop: up to ``graceful_timeout``, while still leading)."""
        with self._controllers_lock:
            running, self._running = self._running, []
        if not running:
            return
        started = time.monotonic()
        deadline = started + (_LOST_STOP_TIMEOUT if how == self._LOST else self.graceful_timeout)
        for controller in running:  # every controller stops taking keys before any is waited for
            controller.stop_taking_keys()
        for controller in running:
            controller.stop(drain=False, timeout=max(0.0, deadline - time.monotonic()))
        log.info("controllers stopped", extra={"how": how, "seconds": round(time.monotonic() - started, 3)})

    def _start_servers(self) -> None:
        if self.metrics_address:
            self._servers.append(metrics_server(self.metrics_address, self.registry).start())
        if self.health_address:
            liveness = Checks({"informers-and-workers": self.alive})
            readiness = Checks({"caches-synced": self.synced}, {"leader-election": self.leader_state})
            self._servers.append(health_server(self.health_address, liveness, readiness).start())

    def _shutdown(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + self.graceful_timeout
        self._stop_controllers(self._LOST if self._lost.is_set() else self._GRACEFUL)
        if not self._lost.is_set():
            for hook in self._drain_hooks:
                hook(max(0.0, deadline - time.monotonic()))
        quiet = self.fence.close(timeout=max(0.0, deadline - time.monotonic()))
        if not quiet:
            log.warning("writes still in flight at shutdown; the Lease is left to expire",
                        extra={"writes": self.fence.in_flight})
        if self.elector is not None:
            # Release only once nothing of ours can still be written; never after a loss.
            self.elector.stop(release=quiet and not self._lost.is_set())
            self.elector.join(self.elector.renew_deadline + 1)
        for informer in self.informers:
            informer.stop()
        for server in self._servers:
            server.stop()
        log.info("manager stopped", extra={"lost_lease": self._lost.is_set(), "writes_refused": self.fence.refused})

    def server_ports(self) -> list[int]:
        return [server.port for server in self._servers]
