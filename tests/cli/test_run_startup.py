"""`kmm-dtk run` at start: waiting for the API server with progress, kubeconfig problems as one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kmm_dtk.cmd.api_wait import ApiServerUnreachable, clean_message, transport_reason, wait_for_api_server
from kmm_dtk.kube.client import KubeClient, load_api_client

FREE_PORTS = ("--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0")
OBJECT_REPR = "object at 0x"


def _closed_port() -> int:
    """A local port nothing listens on (bound, then let go: connecting to it is refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


def _env(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def test_unreachable_api_server_prints_progress_then_one_clean_line_and_exits_1(tmp_path):
    server = f"https://127.0.0.1:{_closed_port()}"
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig", server)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "kmm_dtk", "run", *FREE_PORTS, "--kubeconfig", str(kubeconfig),
         "--api-wait-timeout", "6", "--assume-missing"],
        capture_output=True, text=True, timeout=40)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    # The kubeconfig asks for insecure-skip-tls-verify, which the loader rightly warns about once.
    lines = [line for line in result.stderr.splitlines() if "(insecure-skip-tls-verify)" not in line]
    progress = [line for line in lines if line.startswith(f"kmm-dtk run: waiting for the API server at {server}: ")]
    assert len(progress) >= 2, lines  # the first failure, then every few seconds
    assert all("connection refused (retrying" in line for line in progress), progress
    assert lines[-1] == f"kmm-dtk run: the API server at {server} did not answer within 6 s: connection refused"
    assert len(lines) == len(progress) + 1, lines  # nothing else: no log of library internals
    assert OBJECT_REPR not in result.stderr and "Traceback" not in result.stderr
    assert elapsed < 30, elapsed  # bounded by --api-wait-timeout, not the minute of the operator's retries


def test_api_wait_timeout_must_be_positive(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kmm_dtk", "run", "--api-wait-timeout", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "kmm-dtk run: error: argument --api-wait-timeout: expected a positive number of seconds, got '0'")


def test_no_kubeconfig_anywhere_names_the_path_tried_and_what_to_do(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "kmm_dtk", "run", *FREE_PORTS], capture_output=True, text=True, timeout=30,
        env=_env(HOME=str(home), KUBECONFIG=None, KUBERNETES_SERVICE_HOST=None, KUBERNETES_SERVICE_PORT=None))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("kmm-dtk: "), lines
    assert str(home / ".kube" / "config") in lines[0]
    assert "--kubeconfig" in lines[0] and "KUBECONFIG" in lines[0]
    assert "No configuration found" not in lines[0]


# -- the wait itself, on a real transport ---------------------------------------------------------

class _Clock:
    """Time that moves only when the wait sleeps, so the deadline logic is exact."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_reports_every_few_seconds_and_gives_up_at_the_deadline(tmp_path):
    server = f"https://127.0.0.1:{_closed_port()}"
    client = KubeClient(load_api_client(str(_kubeconfig(tmp_path / "kubeconfig", server))))
    clock, reports = _Clock(), []
    with pytest.raises(ApiServerUnreachable) as raised:
        wait_for_api_server(client, timeout=20, report=reports.append, progress_every=5, clock=clock,
                            sleep=clock.sleep)
    assert str(raised.value) == f"the API server at {server} did not answer within 20 s: connection refused"
    assert clock.now == pytest.approx(20)
    assert 4 <= len(reports) <= 5, reports  # at 0 s, then every 5 s
    assert reports[0] == f"waiting for the API server at {server}: connection refused (retrying for 20 s more)"
    assert max(clock.sleeps) <= 2.0  # asked again at least every 2 s


@pytest.mark.integration
def test_wait_returns_at_once_when_the_api_server_answers(cluster):
    client = KubeClient(load_api_client(str(cluster.kubeconfig)))
    reports: list[str] = []
    started = time.monotonic()
    wait_for_api_server(client, timeout=30, report=reports.append)
    assert reports == []
    assert time.monotonic() - started < 10


@pytest.mark.integration
def test_an_http_error_counts_as_an_answer(cluster, tmp_path):
    """A server that refuses the credentials is up: the wait ends, the calls that follow say what is wrong."""
    client = KubeClient(load_api_client(str(_kubeconfig(tmp_path / "kubeconfig", cluster.host))))
    reports: list[str] = []
    wait_for_api_server(client, timeout=30, report=reports.append)
    assert reports == []


# -- messages without library internals ----------------------------------------------------------

@pytest.mark.parametrize("message, expected", [
    ("<urllib3.connection.HTTPSConnection object at 0x7f3a2c1b2d90>: Failed to establish a new connection: "
     "[Errno 111] Connection refused", "Failed to establish a new connection: [Errno 111] Connection refused"),
    ("HTTPSConnectionPool(host='h', port=1): Max retries exceeded (Caused by <X object at 0xABC>: boom)",
     "HTTPSConnectionPool(host='h', port=1): Max retries exceeded (Caused by boom)"),
    ("two\nlines", "two lines"),
    ("<a object at 0x1>", "no detail given"),
])
def test_clean_message_drops_object_reprs(message, expected):
    assert clean_message(message) == expected


@pytest.mark.parametrize("message, expected", [
    ("<urllib3.connection.HTTPSConnection object at 0x7f>: Failed to establish a new connection: "
     "[Errno 111] Connection refused", "connection refused"),
    ("Failed to resolve 'nope.invalid' ([Errno -2] Name or service not known)", "cannot resolve the host name"),
    ("Read timed out. (read timeout=5)", "timed out"),
    ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate "
     "verify failed"),
])
def test_transport_reason_is_short(message, expected):
    assert transport_reason(message) == expected
