"""`kmm-dtk run` refuses bad input with one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kmm_dtk", "run", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_missing_kubeconfig_is_one_line_and_exit_2(tmp_path):
    result = _run("--kubeconfig", str(tmp_path / "nope"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kmm-dtk run: cannot load cluster config")
    assert str(tmp_path / "nope") in lines[0]


@pytest.mark.parametrize("flag, value", [("--metrics-bind-address", "8080"),
                                         ("--health-probe-bind-address", "localhost")])
def test_bad_bind_address_is_refused(flag, value, tmp_path):
    result = _run(flag, value, "--kubeconfig", str(tmp_path / "unused"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"kmm-dtk run: bind address {value!r}: expected [HOST]:PORT, e.g. :8080"]


@pytest.mark.parametrize("args", [["--workers", "0"], ["--dtk-imagestream", "driver-toolkit"]])
def test_bad_flags_exit_2(args):
    result = _run(*args)
    assert result.returncode == 2
    assert "error:" in result.stderr


def test_help_names_the_registry_flags():
    result = subprocess.run([sys.executable, "-m", "kmm_dtk", "run", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for flag in ("--assume-missing", "--registry-config", "--ca-file", "--prebuild-upgrades", "--global-pull-secret"):
        assert flag in result.stdout


def test_unreadable_registry_config_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "auth.json"
    bad.write_text("{not json")
    result = _run("--registry-config", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and str(bad) in result.stderr


def test_missing_ca_file_is_one_line_naming_it(tmp_path):
    result = _run("--ca-file", str(tmp_path / "nope.pem"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "nope.pem" in result.stderr


def test_prebuild_upgrades_needs_registry_access():
    result = _run("--assume-missing", "--prebuild-upgrades")
    assert result.returncode == 2
    assert "--prebuild-upgrades" in result.stderr and result.stderr.count("\n") == 1
