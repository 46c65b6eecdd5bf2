"""Pure pieces of the metrics endpoint: product metrics from snapshots, malformed status, the
self-signed certificates, and the bearer-token parsing."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kmm_dtk.kube.delegated_auth import bearer_token
from kmm_dtk.observability.product_metrics import FinishedBuild, ProductCollector, ProductSnapshot
from kmm_dtk.observability.serving_cert import (
    ServingCert,
    ServingCertError,
    write_self_signed_cryptography,
    write_self_signed_openssl,
)
from kmm_dtk.operator.product_state import finished_build


def test_each_build_is_counted_once_and_a_standby_exports_only_the_leader_gauge():
    state = {"leading": True, "builds": [FinishedBuild("a", "Complete", 90.0)]}
    registry = CollectorRegistry()
    registry.register(ProductCollector(lambda: state["leading"],
                                       lambda: ProductSnapshot(finished_builds=state["builds"])))

    def count(phase: str) -> float | None:
        return registry.get_sample_value("kmm_dtk_build_duration_seconds_count", {"phase": phase})

    assert count("Complete") == 1
    state["builds"] = [FinishedBuild("a", "Complete", 90.0), FinishedBuild("b", "Failed", 4000.0)]
    assert count("Complete") == 1 and count("Failed") == 1
    assert registry.get_sample_value("kmm_dtk_build_duration_seconds_bucket", {"phase": "Failed", "le": "3600.0"}) == 0
    assert registry.get_sample_value("kmm_dtk_build_duration_seconds_bucket", {"phase": "Failed", "le": "+Inf"}) == 1
    state["leading"] = False
    text = generate_latest(registry).decode()
    assert "kmm_dtk_leader 0.0" in text and "kmm_dtk_build_duration_seconds" not in text


@pytest.mark.parametrize("status", [
    {"phase": "Complete"},  # no times
    {"phase": "Running", "startTimestamp": "2024-01-01T00:00:00Z"},  # still running
    {"phase": "Complete", "startTimestamp": "yesterday", "completionTimestamp": "2024-01-01T00:00:00Z"},
    {"phase": ["Complete"], "startTimestamp": 3},
])
def test_builds_without_usable_times_are_not_observed(status):
    assert finished_build({"metadata": {"uid": "u"}, "status": status}, lambda uid: False) is None


def test_a_completed_build_duration():
    build = {"metadata": {"uid": "u"}, "status": {"phase": "Failed", "startTimestamp": "2024-01-01T00:00:00Z",
                                                   "completionTimestamp": "2024-01-01T00:02:05Z"}}
    assert finished_build(build, lambda uid: False) == FinishedBuild("u", "Failed", 125.0)


@pytest.mark.parametrize("header, token", [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None),
                                           ("Bearer", None), ("", None), (None, None)])
def test_bearer_token(header, token):
    assert bearer_token(header) == token


@pytest.mark.parametrize("write", [write_self_signed_cryptography, write_self_signed_openssl])
def test_self_signed_certificates_verify_for_their_hosts(write, tmp_path: Path):
    if write is write_self_signed_openssl and not __import__("shutil").which("openssl"):
        pytest.skip("no openssl binary")
    write(tmp_path, ["localhost", "127.0.0.1"])
    cert = ServingCert.from_dir(tmp_path)
    assert cert.context().minimum_version == ssl.TLSVersion.TLSv1_2
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0


def test_a_half_written_rotation_keeps_the_previous_certificate(tmp_path: Path):
    write_self_signed_cryptography(tmp_path, ["localhost"])
    cert = ServingCert.from_dir(tmp_path)
    first = cert.context()
    (tmp_path / "tls.crt").write_text("not a certificate")
    assert cert.context() is first and cert.loads == 1
    write_self_signed_cryptography(tmp_path, ["localhost"])
    assert cert.context() is not first and cert.loads == 2


@pytest.mark.parametrize("setup, problem", [
    (lambda d: None, "tls.crt does not exist"),
    (lambda d: [(d / n).write_text("junk") for n in ("tls.crt", "tls.key")], "cannot load"),
])
def test_a_bad_cert_dir_is_one_line_naming_the_file(setup, problem, tmp_path: Path):
    setup(tmp_path)
    with pytest.raises(ServingCertError) as raised:
        ServingCert.from_dir(tmp_path)
    assert problem in str(raised.value) and str(tmp_path) in str(raised.value) and "\n" not in str(raised.value)


def test_no_openssl_binary_tells_to_pass_a_cert_dir(tmp_path: Path):
    with pytest.raises(ServingCertError, match="pass --metrics-cert-dir"):
        write_self_signed_openssl(tmp_path, ["localhost"], binary="no-such-openssl-binary")
