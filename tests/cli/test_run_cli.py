"""`kmm-dtk run` refuses bad input with one line and exit status 2."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

# The endpoints are bound before anything else: free ports, unless a test names its own (argparse: the
# last occurrence of a flag wins), so a busy :8080 on the test machine changes no test's outcome.
FREE_PORTS = ("--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0")


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kmm_dtk", "run", *FREE_PORTS, *args], capture_output=True,
                          text=True, timeout=60, env=env)


def test_missing_kubeconfig_is_one_line_naming_it_and_exit_1(tmp_path):
    result = _run("--kubeconfig", str(tmp_path / "nope"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kmm-dtk: "), lines
    assert str(tmp_path / "nope") in lines[0]
    assert "Invalid kube-config file" not in lines[0]


@pytest.mark.parametrize("flag", ["--metrics-bind-address", "--health-probe-bind-address"])
@pytest.mark.parametrize("value, problem", [
    ("8080", "expected [HOST]:PORT, e.g. :8080 or [::1]:8080"),
    ("localhost", "expected [HOST]:PORT, e.g. :8080 or [::1]:8080"),
    ("[::]:99999", "port 99999 is out of range (0-65535)"),
    (":65536", "port 65536 is out of range (0-65535)"),
    ("no-such-host.invalid:8080", "cannot resolve host 'no-such-host.invalid'"),
    ("::1:8080", "an IPv6 address goes in brackets, e.g. [::1]:8080"),
])
def test_bad_bind_address_is_one_line_naming_the_flag(flag, value, problem, tmp_path):
    result = _run(flag, value, "--kubeconfig", str(tmp_path / "unused"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"kmm-dtk run: {flag}: bind address {value!r}: {problem}"]
    assert "Traceback" not in result.stderr


def test_an_address_in_use_is_one_line_before_anything_starts(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        address = f"127.0.0.1:{held.getsockname()[1]}"
        # An unreadable kubeconfig too: the bind address is what is reported, before the config is read.
        result = _run("--health-probe-bind-address", address, "--kubeconfig", str(tmp_path / "unused"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"kmm-dtk run: --health-probe-bind-address: bind address {address!r}: address already in use"]


def test_both_endpoints_on_one_port_conflict(tmp_path):
    with socket.socket() as probe:  # a port free now
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    result = _run("--metrics-bind-address", address, "--health-probe-bind-address", address,
                  "--kubeconfig", str(tmp_path / "unused"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"kmm-dtk run: --health-probe-bind-address: bind address {address!r}: address already in use"]


def test_a_privileged_port_is_permission_denied(tmp_path):
    command = [sys.executable, "-m", "kmm_dtk", "run", "--metrics-bind-address", "127.0.0.1:1",
               "--health-probe-bind-address", "127.0.0.1:0", "--kubeconfig", str(tmp_path / "unused")]
    if os.geteuid() == 0:  # root binds port 1: run without the capability that allows it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop CAP_NET_BIND_SERVICE")
        command = ["setpriv", "--bounding-set", "-net_bind_service", "--inh-caps", "-net_bind_service", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "kmm-dtk run: --metrics-bind-address: bind address '127.0.0.1:1': permission denied (port 1 needs privileges)"]


@pytest.mark.parametrize("content, problem", [
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)),
     "YAML aliases expand to more than"),
    ("a: &a [*a]\n", "recursive YAML alias"),
    ("[" * 5000 + "]" * 5000 + "\n", "nesting deeper than"),
])
def test_a_hostile_kubeconfig_is_one_line_and_exit_1(content, problem, tmp_path):
    """The kubeconfig loader reads through the bounded reader, so an alias bomb is refused at once
    rather than hanging it; like every kubeconfig problem, one 'kmm-dtk:' line naming the file."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(content)
    result = _run("--kubeconfig", str(kubeconfig))  # subprocess timeout: a hang fails the test
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kmm-dtk: {kubeconfig}: "), lines
    assert problem in lines[0]


def test_leader_election_timings_a_follower_could_overtake_are_refused(tmp_path):
    result = _run("--leader-elect", "--leader-elect-lease-duration", "5", "--kubeconfig", str(tmp_path / "unused"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "kmm-dtk run: the lease duration (5 s) must be greater than the renew deadline (10 s)"]
