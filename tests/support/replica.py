"""An operator replica as a real process: ``kmm-dtk run --leader-elect`` with its own kubeconfig
(one ServiceAccount per replica, so the audit log tells them apart), signalled like a kubelet does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.cluster import REPO
from tests.support.controlplane import _die_with_parent, free_port, wait_for
from tests.support.http import http_get


class Replica:
    def __init__(self, name: str, kubeconfig: Path, namespace: str, workdir: Path, *, pod_name: str | None = None,
                 lease: tuple[float, float, float] = (15.0, 10.0, 2.0), graceful_timeout: float = 10.0,
                 workers: int = 4) -> None:
        self.name = name
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = workdir / f"{name}.log"
        self.pod_name = pod_name or name
        self.lease = lease
        self.graceful_timeout = graceful_timeout
        self.workers = workers
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> Replica:
        duration, deadline, retry = self.lease
        argv = [sys.executable, "-m", "kmm_dtk", "run", "--kubeconfig", str(self.kubeconfig),
                "--namespace", self.namespace, "--dtk-imagestream", f"{self.namespace}/driver-toolkit",
                "--assume-missing", "--workers", str(self.workers),
                "--leader-elect", "--leader-election-namespace", self.namespace,
                "--leader-elect-lease-duration", str(duration), "--leader-elect-renew-deadline", str(deadline),
                "--leader-elect-retry-period", str(retry), "--graceful-shutdown-timeout", str(self.graceful_timeout),
                "--metrics-bind-address", f"127.0.0.1:{self.metrics_port}",
                "--health-probe-bind-address", f"127.0.0.1:{self.health_port}",
                "--log-format", "json", "--log-level", "info"]
        env = {**os.environ, "POD_NAME": self.pod_name}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=REPO, env=env, preexec_fn=_die_with_parent)
        return self

    # -- observation -----------------------------------------------------------------------------

    def leading(self) -> bool:
        status, body = http_get(self.metrics_port, "/metrics")
        return status == 200 and any(line.startswith("leader_election_master_status{") and line.endswith(" 1.0")
                                     for line in body.splitlines())

    def ready(self) -> bool:
        return http_get(self.health_port, "/readyz")[0] == 200

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(lambda: self._alive() and self.ready(), timeout, f"{self.name} to sync its caches")

    def wait_leading(self, timeout: float = 60) -> None:
        wait_for(lambda: self._alive() and self.leading(), timeout, f"{self.name} to lead")

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
        return True

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- signals -----------------------------------------------------------------------------------

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        """Test teardown: SIGTERM, then SIGKILL if it does not exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
