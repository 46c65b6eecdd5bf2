"""ConfigMapCache on a real kube-apiserver: metadata from the informer, data read with a GET once
per resourceVersion, missing as before, failures raised rather than read as missing, and bounded."""

from __future__ import annotations

import pytest
from kubernetes import client

from kmm_dtk.core.kernel_map import KernelMap
from kmm_dtk.kube.client import ApiError, KubeClient
from kmm_dtk.kube.decode import METADATA_ONLY, MetadataDecoder
from kmm_dtk.kube.informer import Informer
from kmm_dtk.operator.caches import Cache, ClusterView
from kmm_dtk.operator.configmap_data import ConfigMapCache
from kmm_dtk.operator.resources import CONFIGMAPS
from tests.support.controlplane import wait_for

pytestmark = pytest.mark.integration

FAST = {"backoff_initial": 0.05, "backoff_max": 0.5, "watchdog": 3.0}


@pytest.fixture
def make_cache(api, namespace):
    made: list[Informer] = []

    def make(reader_api=None, **options) -> ConfigMapCache:
        informer = Informer(KubeClient(api), CONFIGMAPS, namespace=namespace, decoder=MetadataDecoder(),
                            accept=METADATA_ONLY, name=f"configmaps/{namespace}", **FAST)
        cache = ConfigMapCache([informer], KubeClient(reader_api or api, timeout=(2.0, 5.0)), **options)
        made.append(informer.start())
        assert informer.wait_for_sync(20)
        return cache

    yield make
    for informer in made:
        informer.stop()


def _create(api, namespace: str, name: str, data: dict[str, str]) -> str:
    created = client.CoreV1Api(api).create_namespaced_config_map(namespace, {"metadata": {"name": name},
                                                                             "data": data})
    return created.metadata.resource_version


def _seen(cache: ConfigMapCache, key: str, resource_version: str | None) -> None:
    """Wait until the metadata cache holds ``key`` at ``resource_version`` (None: gone)."""
    def current():
        found = cache.get(key)
        return (found["metadata"]["resourceVersion"] if found else None) == resource_version
    wait_for(current, 10, f"{key} at {resource_version} in the metadata cache")


def _snapshot_configmaps(cache: ConfigMapCache):
    """What the planner reads: ``snapshot().configmaps``."""
    view = ClusterView(Cache([]), Cache([]), cache, Cache([]), Cache([]), KernelMap(), ("openshift", "dtk"))
    return view.snapshot().configmaps


def test_data_is_read_once_per_resource_version(api, namespace, make_cache):
    rv = _create(api, namespace, "dockerfile", {"dockerfile": "FROM one"})
    cache = make_cache()
    _seen(cache, f"{namespace}/dockerfile", rv)
    assert "data" not in cache.get(f"{namespace}/dockerfile")
    assert cache.data(namespace, "dockerfile") == {"dockerfile": "FROM one"}
    assert cache.data(namespace, "dockerfile") == {"dockerfile": "FROM one"}
    assert _snapshot_configmaps(cache)[(namespace, "dockerfile")] == {"dockerfile": "FROM one"}
    assert cache.fetches == 1, "an unchanged ConfigMap is not read again"

    core = client.CoreV1Api(api)
    rv = core.patch_namespaced_config_map("dockerfile", namespace, {"data": {"dockerfile": "FROM two"}}) \
        .metadata.resource_version
    _seen(cache, f"{namespace}/dockerfile", rv)
    assert cache.data(namespace, "dockerfile") == {"dockerfile": "FROM two"}
    assert cache.fetches == 2
    # A label edit is a new resourceVersion too: one more read, the same data.
    rv = core.patch_namespaced_config_map("dockerfile", namespace, {"metadata": {"labels": {"a": "b"}}}) \
        .metadata.resource_version
    _seen(cache, f"{namespace}/dockerfile", rv)
    assert cache.data(namespace, "dockerfile") == {"dockerfile": "FROM two"}
    assert cache.fetches == 3 and cache.cached_keys() == [f"{namespace}/dockerfile"]


def test_never_created_or_deleted_reads_as_missing(api, namespace, make_cache):
    rv = _create(api, namespace, "dockerfile", {"dockerfile": "FROM one"})
    _create(api, namespace, "empty", {})
    cache = make_cache()
    _seen(cache, f"{namespace}/dockerfile", rv)
    configmaps = _snapshot_configmaps(cache)
    assert cache.data(namespace, "not-yet") is None and configmaps.get((namespace, "not-yet")) is None
    assert cache.fetches == 0, "what the cache does not hold is not asked for"
    assert cache.data(namespace, "empty") == {}  # exists, no data: not missing
    assert configmaps.get((namespace, "dockerfile")) == {"dockerfile": "FROM one"}
    assert (namespace, "dockerfile") in set(configmaps)

    client.CoreV1Api(api).delete_namespaced_config_map("dockerfile", namespace)
    _seen(cache, f"{namespace}/dockerfile", None)
    assert configmaps.get((namespace, "dockerfile")) is None
    assert f"{namespace}/dockerfile" not in cache.cached_keys(), "the data of a deleted ConfigMap is dropped"


def test_deleted_behind_a_stale_cache_reads_as_missing(api, namespace, make_cache):
    rv = _create(api, namespace, "dockerfile", {"dockerfile": "FROM one"})
    cache = make_cache()
    _seen(cache, f"{namespace}/dockerfile", rv)
    cache.informers[0].stop()  # the cache still holds it; the server will not
    client.CoreV1Api(api).delete_namespaced_config_map("dockerfile", namespace)
    assert cache.get(f"{namespace}/dockerfile") is not None
    assert cache.data(namespace, "dockerfile") is None  # the GET's 404
    assert cache.fetches == 1 and cache.cached_keys() == []


def test_a_failed_read_raises_and_is_never_read_as_missing(api, namespace, make_cache, proxied_api, fault_proxy):
    rv = _create(api, namespace, "dockerfile", {"dockerfile": "FROM one"})
    cache = make_cache(reader_api=proxied_api)  # the informer stays connected; the reads go through the proxy
    _seen(cache, f"{namespace}/dockerfile", rv)
    configmaps = _snapshot_configmaps(cache)
    fault_proxy.refuse()
    with pytest.raises(ApiError) as err:
        cache.data(namespace, "dockerfile")
    assert err.value.status == 0
    with pytest.raises(ApiError):
        configmaps.get((namespace, "dockerfile"))  # not None: the reconcile fails and is retried
    assert cache.cached_keys() == []
    fault_proxy.heal()
    assert configmaps.get((namespace, "dockerfile")) == {"dockerfile": "FROM one"}


def test_the_data_kept_is_bounded(api, namespace, make_cache):
    for name in ("a", "b", "c", "big"):
        _create(api, namespace, name, {"k": ("x" * 400 if name == "big" else name * 100)})
    cache = make_cache(max_entries=2, max_bytes=300)
    wait_for(lambda: len(cache.list()) == 4, 10, "the four ConfigMaps in the metadata cache")
    for name in ("a", "b", "c"):
        assert cache.data(namespace, name) == {"k": name * 100}
    assert cache.cached_keys() == [f"{namespace}/b", f"{namespace}/c"]  # the least recently read went
    assert cache.cached_bytes == 2 * 101
    assert cache.data(namespace, "b") == {"k": "b" * 100}
    assert cache.fetches == 3
    assert cache.data(namespace, "big") == {"k": "x" * 400}  # over max_bytes: read, not kept
    assert cache.data(namespace, "big") == {"k": "x" * 400}
    assert cache.fetches == 5 and f"{namespace}/big" not in cache.cached_keys()
    assert cache.cached_bytes <= 300
