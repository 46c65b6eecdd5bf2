"""Every per-key cache of the registry side is bounded: filled past its bound, it keeps the bound, drops
expired entries first, then the least recently used. Keys come from what tenants write (images, hosts,
repositories, namespaces), so an unbounded cache is a memory leak any Module author can drive."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from kmm_dtk.core.plan import Action, PlanEntry, Reason
from kmm_dtk.core.verdicts import ImageState
from kmm_dtk.observability.registry_metrics import RegistryMetrics
from kmm_dtk.operator.registry_access import _TTLCache
from kmm_dtk.registry.auth import AuthConfig
from kmm_dtk.registry.bounded import LRU
from kmm_dtk.registry.challenge import AuthorizationCache
from kmm_dtk.registry.check import RegistryChecker, UnreachableRegistries
from kmm_dtk.registry.client import RegistryClient
from kmm_dtk.registry.tls import TrustStore
from kmm_dtk.registry.transport import Transport
from tests.support.clock import FakeClock
from tests.support.objects import unique_name

KERNEL = "5.14.0-570.27.1.el9_6.x86_64"


def test_lru_keeps_the_most_recently_used():
    lru: LRU[str, int] = LRU(3)
    for i in range(3):
        lru.put(f"k{i}", i)
    assert lru.get("k0") == 0  # used: now the most recent
    dropped = lru.put("k3", 3)
    assert dropped == [("k1", 1)]
    assert lru.keys() == ["k2", "k0", "k3"] and len(lru) == 3
    assert lru.put("k2", 22) == []  # replacing a key is no growth
    assert lru.keys() == ["k0", "k3", "k2"]


def test_lru_drops_stale_entries_before_recent_ones():
    lru: LRU[str, int] = LRU(3)
    for key, value in (("old-but-fresh", 1), ("stale", -1), ("fresh", 2)):
        lru.put(key, value)
    lru.put("new", 3, stale=lambda _, v: v < 0)
    assert lru.keys() == ["old-but-fresh", "fresh", "new"]
    with pytest.raises(ValueError):
        LRU(0)


def test_unreachable_registries_hold_at_most_their_bound():
    clock = FakeClock()
    held = UnreachableRegistries(hold=30, clock=clock, max_entries=3)
    for i in range(3):
        held.mark(f"dead-{i}.example.com", "timed out")
    clock.now += 31  # dead-0..2's holds end; nobody asks them again
    held.mark("dead-3.example.com", "timed out")
    assert held.held() == ["dead-3.example.com"]  # ended holds go first, however recent
    for i in range(4, 8):
        held.mark(f"dead-{i}.example.com", "timed out")
    assert held.held() == ["dead-5.example.com", "dead-6.example.com", "dead-7.example.com"]
    assert held.reason("dead-7.example.com") == "timed out" and held.reason("dead-3.example.com") is None


def test_authorization_headers_are_bounded_expired_first():
    clock = FakeClock()
    cache = AuthorizationCache(clock=clock, max_entries=3)
    cache.put("reg", "repository:a:pull", "id", "Bearer a", ttl=10)
    cache.put("reg", "repository:b:pull", "id", "Bearer b", ttl=100)
    cache.put("reg", None, "id", "Basic c", ttl=None)
    clock.now += 20  # a's token expired
    cache.put("reg", "repository:d:pull", "id", "Bearer d", ttl=100)
    assert cache.keys() == [("reg", "repository:b:pull", "id"), ("reg", None, "id"),
                            ("reg", "repository:d:pull", "id")]
    for i in range(10):
        cache.put("reg", f"repository:x{i}:pull", "id", f"Bearer x{i}", ttl=100)
    assert cache.keys() == [("reg", f"repository:x{i}:pull", "id") for i in (7, 8, 9)]
    assert cache.get("reg", "repository:x9:pull", "id") == "Bearer x9"
    assert cache.get("reg", "repository:b:pull", "id") is None  # evicted: the next call asks for a token


def test_connection_pools_are_bounded_and_the_evicted_closed():
    transport = Transport(TrustStore(), timeout=1, user_agent="test", max_managers=2)
    first = transport._manager("https", "a.example.com:443", False)
    transport._manager("https", "b.example.com:443", False)
    transport._manager("https", "c.example.com:443", True)
    assert transport.pool_keys() == [("https", "b.example.com:443", False), ("https", "c.example.com:443", True)]
    assert len(first.pools) == 0  # closed, not leaked
    assert transport._manager("https", "a.example.com:443", False) is not first
    transport.close()
    assert transport.pool_keys() == []


def test_pull_secret_cache_is_bounded_expired_first():
    clock = FakeClock()
    cache = _TTLCache(ttl=60, clock=clock, max_entries=3)
    loads: list[str] = []

    def load(key: str):
        return lambda: loads.append(key) or key.upper()

    for key in ("ns-a", "ns-b"):
        cache.get(key, load(key))
    clock.now += 61
    cache.get("ns-c", load("ns-c"))
    cache.get("ns-d", load("ns-d"))  # full: ns-a and ns-b expired, dropped before ns-c
    assert cache.keys() == ["ns-c", "ns-d"]
    for i in range(5):
        cache.get(f"ns-{i}", load(f"ns-{i}"))
    assert cache.keys() == ["ns-2", "ns-3", "ns-4"]
    assert cache.get("ns-4", load("again")) == "NS-4" and "again" not in loads


def test_registry_metric_labels_are_the_first_hosts_seen_then_other():
    registry = CollectorRegistry()
    metrics = RegistryMetrics(registry, max_registries=3)
    for host in ("quay.io", "Mirror.local:5000", "registry.redhat.io", "tenant-1.example", "tenant-2.example",
                 "quay.io"):
        metrics.observe_request(host, "GET", "200", 0.01)
    series = {s.labels["registry"]: s.value for s in registry.collect() if s.name == "kmm_dtk_registry_requests"
              for s in s.samples if s.name.endswith("_total")}
    assert series == {"quay.io": 2.0, "mirror.local:5000": 1.0, "registry.redhat.io": 1.0, "other": 2.0}


@pytest.mark.registry
def test_checker_answers_are_bounded_expired_first_then_least_recently_used(registry_tls):
    clock = FakeClock()
    repo = unique_name("bounds")
    with RegistryClient(TrustStore(ca_paths=(str(registry_tls.ca_file),)),
                        AuthConfig.from_json(registry_tls.auth_json(), "test"), attempts=1) as client:
        checker = RegistryChecker(client, ttl=300, clock=clock, max_entries=3)

        def check(i: int) -> ImageState:
            image = f"{registry_tls.host}/{repo}/img-{i}:{KERNEL}"
            entry = PlanEntry("ns/m", KERNEL, Action.BUILD, Reason.BUILD_NEEDED, "build", image=image, hash="h")
            return checker.check(entry).state

        names = [f"{registry_tls.host}/{repo}/img-{i}:{KERNEL}" for i in range(8)]
        assert [check(i) for i in range(3)] == [ImageState.MISSING] * 3  # 404s: definite, cached
        check(0)  # from the cache: now the most recently used
        check(3)
        check(4)
        assert checker.cached_images() == [names[0], names[3], names[4]]
        clock.now += 301  # every answer expired
        check(5)
        assert checker.cached_images() == [names[5]]  # expired ones went first, not the bound
        for i in (6, 7, 0, 1):
            check(i)
        assert checker.cached_images() == [names[7], names[0], names[1]]
