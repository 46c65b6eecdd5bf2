"""How the operator is run: what ``kmm-dtk run``'s flags become."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kmm_dtk.kube.manager import DEFAULT_GRACEFUL_TIMEOUT, LeaderElectionConfig
from kmm_dtk.operator.build_gc import DEFAULT_GRACE_PERIOD, DEFAULT_HISTORY_LIMIT
from kmm_dtk.operator.recheck import DEFAULT_RATE as DEFAULT_RECHECK_RATE


@dataclass(frozen=True)
class RegistryOptions:
    """How the operator asks registries whether images exist (``None`` in OperatorOptions: it never does)."""

    auth_file: str | None = None  # containers auth.json, e.g. a mounted copy of the global pull secret
    ca_paths: tuple[str, ...] = ()  # CA files or directories trusted for every registry
    global_pull_secret: tuple[str, str] | None = ("openshift-config", "pull-secret")
    cache_ttl: float = 300.0  # seconds an answer about an image is reused
    recheck_rate: float = DEFAULT_RECHECK_RATE  # re-checks (every cache_ttl) a second at most, per registry host
    retry_after: float = 60.0  # seconds before a silent registry is asked again
    timeout: float = 10.0
    attempts: int = 3


@dataclass(frozen=True)
class OperatorOptions:
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    dtk_imagestream: tuple[str, str] = ("openshift", "driver-toolkit")
    workers: int = 4
    max_concurrent_writes: int = 16  # one reconcile's Builds are created side by side, this many in the process
    dry_run: bool = False
    build_gc_grace: float = DEFAULT_GRACE_PERIOD  # seconds before a completed Build out of use is deleted
    build_history_limit: int = DEFAULT_HISTORY_LIMIT  # completed Builds kept per (Module, kernel) in use
    identity: str = "kmm-dtk"
    metrics_address: str | None = ":8080"  # None: no metrics endpoint (--metrics-bind-address=0)
    # HTTPS, each scrape authenticated (TokenReview) and authorized (SubjectAccessReview for GET /metrics)
    metrics_secure: bool = False
    metrics_cert_dir: str | None = None  # tls.crt/tls.key, reloaded when they change; None and secure: self-signed
    health_address: str | None = ":8081"
    leader_election: LeaderElectionConfig | None = None
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT  # seconds reconciles in flight get on SIGTERM
    informer_options: Mapping[str, Any] = field(default_factory=dict)  # tests shorten timeouts
    registry: RegistryOptions | None = None  # None: --assume-missing, no registry access at all
    prebuild_upgrades: bool = False  # build for the desired release's kernels before nodes reboot
    # Build the Modules that carry build sections of their own: only where kmm-dtk is the sole builder
    # (the standalone overlay); beside the KMM operator, KMM builds those and kmm-dtk only ModuleBuilds.
    build_module_sections: bool = True
