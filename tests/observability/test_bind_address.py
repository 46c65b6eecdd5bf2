"""Bind addresses for the metrics and health endpoints: IPv4, IPv6, dual stack and host names, scraped
over each family; and every way an address can be wrong gives one line naming the problem."""

from __future__ import annotations

import http.client
import socket

import pytest
from prometheus_client import CollectorRegistry, Counter

from kmm_dtk.observability.http import BindAddressError, bind_address, metrics_server, parse_bind_address


def ipv6_loopback() -> str | None:
    """Why this host cannot listen on ::1, or None when it can."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError as err:
        return f"no IPv6 loopback on this host ({err.strerror})"
    return None


needs_ipv6 = pytest.mark.skipif(ipv6_loopback() is not None, reason=str(ipv6_loopback()))


def scrape(host: str, port: int) -> tuple[int, str]:
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("kmm_dtk_bind_test", "a sample to find in the scrape", registry=registry).inc()
    return registry


def served(address: str, registry: CollectorRegistry):
    return metrics_server(address, registry).start()


def test_ipv4_loopback(registry):
    server = served("127.0.0.1:0", registry)
    try:
        status, body = scrape("127.0.0.1", server.port)
        assert status == 200 and "kmm_dtk_bind_test_total 1.0" in body
    finally:
        server.stop()


@needs_ipv6
def test_ipv6_loopback_is_scraped_over_ipv6_only(registry):
    server = served("[::1]:0", registry)
    try:
        status, body = scrape("::1", server.port)
        assert status == 200 and "kmm_dtk_bind_test_total 1.0" in body
        with pytest.raises(ConnectionRefusedError):
            scrape("127.0.0.1", server.port)
    finally:
        server.stop()


@needs_ipv6
@pytest.mark.parametrize("address", [":0", "[::]:0"])
def test_every_interface_means_ipv4_and_ipv6(registry, address):
    server = served(address, registry)
    try:
        for host in ("127.0.0.1", "::1"):
            status, body = scrape(host, server.port)
            assert status == 200 and "kmm_dtk_bind_test_total 1.0" in body, host
    finally:
        server.stop()


def test_every_interface_without_ipv6_falls_back_to_ipv4(registry, monkeypatch):
    monkeypatch.setattr(socket, "has_ipv6", False)  # a Python or host without IPv6
    server = served(":0", registry)
    try:
        assert server._httpd.socket.family == socket.AF_INET
        assert scrape("127.0.0.1", server.port)[0] == 200
    finally:
        server.stop()


def test_ipv4_any_is_ipv4_only():
    with bind_address("0.0.0.0:0") as sock:
        assert sock.family == socket.AF_INET


def test_a_host_name_is_resolved(registry):
    server = served("localhost:0", registry)
    try:
        host = "::1" if server._httpd.socket.family == socket.AF_INET6 else "127.0.0.1"
        assert scrape(host, server.port)[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("address, problem", [
    (":65536", "port 65536 is out of range (0-65535)"),
    ("[::1:8080", "an IPv6 address goes in brackets"),
    ("127.0.0.1", "expected [HOST]:PORT"),
    ("[zz::1]:8080", "[zz::1] is not an IPv6 address"),
    ("::1:8080", "an IPv6 address goes in brackets, e.g. [::1]:8080"),
    ("bad_host!:8080", "'bad_host!' is not an IP address or host name"),
    ("no-such-host.invalid:8080", "cannot resolve host 'no-such-host.invalid'"),
    ("192.0.2.1:8080", "cannot assign requested address"),  # TEST-NET: not an address of this host
])
def test_bad_addresses_name_the_problem(address, problem):
    with pytest.raises(BindAddressError) as raised:
        bind_address(address)
    message = str(raised.value)
    assert message.startswith(f"bind address {address!r}: ") and problem in message
    assert "\n" not in message


def test_an_address_in_use_is_refused():
    with bind_address("127.0.0.1:0") as held:
        port = held.getsockname()[1]
        with pytest.raises(BindAddressError, match=f"'127.0.0.1:{port}': address already in use"):
            bind_address(f"127.0.0.1:{port}")


def test_a_host_name_is_resolved_when_bound_not_when_parsed():
    assert parse_bind_address("metrics.example.com:8080") == ("metrics.example.com", 8080)
