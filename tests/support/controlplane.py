"""A real kube-apiserver backed by a real etcd, started on loopback for tests and local runs.

etcd and kube-apiserver run as two processes so a test can restart kube-apiserver while etcd keeps
its data (what a control-plane upgrade or an apiserver crash looks like to a client). Both die with
the process that started them (PR_SET_PDEATHSIG), so a killed test run leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import json
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import yaml

from tests.support.binaries import Assets
from tests.support.pki import Pki, make_controlplane_pki

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as err:  # noqa: BLE001 - any failure means "not yet"
            last_error = err
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.002) -> bool:
    """Like wait_for, but answers True/False, for tests that assert on it."""
    try:
        wait_for(predicate, timeout, "a condition", interval)
        return True
    except TimeoutError:
        return False


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def write_kubeconfig(path: Path, server: str, ca_file: Path, *, client_cert: Path | None = None,
                     client_key: Path | None = None, token: str | None = None, user: str = "admin",
                     namespace: str | None = None) -> Path:
    credentials: dict[str, str] = {}
    if client_cert and client_key:
        credentials = {"client-certificate": str(client_cert), "client-key": str(client_key)}
    if token:
        credentials["token"] = token
    context: dict[str, str] = {"cluster": "kmm-dtk-test", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmm-dtk-test", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class ControlPlane:
    """One etcd + one kube-apiserver in ``workdir``; ``start()`` returns once /readyz says ok."""

    def __init__(self, workdir: Path, assets: Assets, *, watch_cache: bool = True,
                 extra_apiserver_args: Iterable[str] = ()) -> None:
        self.workdir = workdir
        self.assets = assets
        self.watch_cache = watch_cache
        self.extra_apiserver_args = list(extra_apiserver_args)
        self.pki: Pki | None = None
        self.etcd_port = 0
        self.apiserver_port = 0
        self._etcd: subprocess.Popen | None = None
        self._apiserver: subprocess.Popen | None = None
        self.kubeconfig = workdir / "admin.kubeconfig"
        self.audit_log = workdir / "audit.log"  # writes made with ServiceAccount tokens (tests.support.audit)

    # -- addresses -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    def admin_kubeconfig(self, path: Path, server: str | None = None) -> Path:
        assert self.pki is not None
        return write_kubeconfig(path, server or self.host, self.pki.ca_cert,
                                client_cert=self.pki.admin_cert, client_key=self.pki.admin_key)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> ControlPlane:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = make_controlplane_pki(self.workdir / "pki")
        self.etcd_port, self.apiserver_port = free_port(), free_port()
        self._start_etcd(timeout)
        self.start_apiserver(timeout)
        self.admin_kubeconfig(self.kubeconfig)
        return self

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen:
        log_file = open(self.workdir / log_name, "ab")
        try:
            return subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.workdir, preexec_fn=_die_with_parent)
        finally:
            log_file.close()

    def _start_etcd(self, timeout: float) -> None:
        peer_port = free_port()
        self._etcd = self._spawn([
            str(self.assets.etcd),
            "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", self.etcd_url,
            "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",
        ], "etcd.log")

        def healthy() -> bool:
            self._check_alive(self._etcd, "etcd", "etcd.log")
            with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp:
                return json.load(resp).get("health") == "true"

        wait_for(healthy, timeout, "etcd health")

    def _apiserver_args(self) -> list[str]:
        assert self.pki is not None
        args = [
            str(self.assets.kube_apiserver),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.apiserver_port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={self.pki.serving_cert}",
            f"--tls-private-key-file={self.pki.serving_key}",
            f"--client-ca-file={self.pki.ca_cert}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={self.pki.sa_public_key}",
            f"--service-account-signing-key-file={self.pki.sa_private_key}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
            f"--audit-policy-file={self._audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking",
            "--v=1",
        ]
        if not self.watch_cache:
            args.append("--watch-cache=false")
        return args + self.extra_apiserver_args

    def _audit_policy(self) -> Path:
        from tests.support.audit import POLICY

        path = self.workdir / "audit-policy.yaml"
        path.write_text(yaml.safe_dump(POLICY))
        return path

    def start_apiserver(self, timeout: float = 60) -> None:
        self._apiserver = self._spawn(self._apiserver_args(), "apiserver.log")
        wait_for(self._apiserver_ready, timeout, "kube-apiserver /readyz")

    def stop_apiserver(self) -> None:
        self._terminate(self._apiserver)
        self._apiserver = None

    def restart_apiserver(self, timeout: float = 60) -> None:
        """Stop and start kube-apiserver on the same port; etcd and its data stay."""
        self.stop_apiserver()
        self.start_apiserver(timeout)

    def stop(self) -> None:
        self.stop_apiserver()
        self._terminate(self._etcd)
        self._etcd = None

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @staticmethod
    def _terminate(proc: subprocess.Popen | None, grace: float = 15) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _check_alive(self, proc: subprocess.Popen | None, name: str, log_name: str) -> None:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{_tail(self.workdir / log_name)}")

    def processes(self) -> list[int]:
        return [p.pid for p in (self._etcd, self._apiserver) if p is not None and p.poll() is None]

    # -- probes and admin operations -------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        assert self.pki is not None
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        ctx.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return ctx

    def _apiserver_ready(self) -> bool:
        self._check_alive(self._apiserver, "kube-apiserver", "apiserver.log")
        with urllib.request.urlopen(f"{self.host}/readyz", timeout=2, context=self._ssl_context()) as resp:
            return resp.status == 200 and resp.read().strip() == b"ok"

    def etcd_revision(self) -> int:
        body = json.dumps({"key": "AA=="}).encode()  # any key: we only want the header revision
        req = urllib.request.Request(f"{self.etcd_url}/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(json.load(resp)["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision, so every older resourceVersion is gone (410 on watch
        when the watch cache is off). Returns the revision compacted to."""
        revision = self.etcd_revision()
        body = json.dumps({"revision": str(revision), "physical": True}).encode()
        req = urllib.request.Request(f"{self.etcd_url}/v3/kv/compaction", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
        return revision
