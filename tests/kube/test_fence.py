"""The write fence: writes only while the Lease is held and the process is not stopping; a
closing fence waits for the writes it granted. Unit tests on a fake clock, and one on the real
control plane showing that a refused write never reaches the API server."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client

from kmm_dtk.kube.client import ApiError, FencedWrite, KubeClient, Resource
from kmm_dtk.kube.fence import WriteFence
from tests.support.clock import FakeClock

CONFIGMAPS = Resource("", "v1", "configmaps", kind="ConfigMap")


def test_an_unelected_process_writes_freely_until_the_fence_closes():
    fence = WriteFence.always_open()
    with fence.write("POST /x") as budget:
        assert budget is None
    assert fence.close(timeout=0)
    with pytest.raises(FencedWrite, match="shutting down"):
        with fence.write("POST /x"):
            pass
    assert fence.refused == 1


def test_writes_are_granted_only_before_the_renew_deadline_with_a_bounded_budget():
    clock = FakeClock(100.0)
    deadline: list[float | None] = [None]
    fence = WriteFence(lambda: deadline[0], margin=4.0, clock=clock)
    with pytest.raises(FencedWrite, match="not the leader"):
        with fence.write("PATCH /m"):
            pass
    deadline[0] = clock.now + 10.0  # renewed just now, 10 s renew deadline
    with fence.write("PATCH /m") as budget:
        assert budget == pytest.approx(14.0)  # it must end before a follower can see the Lease expire
    clock.now += 9.5
    with fence.write("PATCH /m") as budget:
        assert budget == pytest.approx(4.5)
    clock.now += 0.5  # the renew deadline passed without a renewal
    assert not fence.allows()
    with pytest.raises(FencedWrite):
        with fence.write("PATCH /m"):
            pass
    assert fence.refused == 2


def test_close_waits_for_the_writes_it_granted():
    fence = WriteFence.always_open()
    granted, release, finished = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:
        with fence.write("POST /slow"):
            granted.set()
            release.wait(10)
        finished.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    assert granted.wait(5)
    assert fence.in_flight == 1
    assert not fence.close(timeout=0.05), "a write is still in flight"
    with pytest.raises(FencedWrite):  # closed already: nothing new is granted meanwhile
        with fence.write("POST /other"):
            pass
    release.set()
    assert fence.close(timeout=5)
    assert finished.is_set() and fence.in_flight == 0
    thread.join(5)


def test_a_failed_write_gives_its_grant_back():
    fence = WriteFence.always_open()
    with pytest.raises(RuntimeError):
        with fence.write("POST /x"):
            raise RuntimeError("transport failed")
    assert fence.in_flight == 0
    assert fence.close(timeout=0)


@pytest.mark.integration
def test_a_fenced_client_sends_no_write_but_still_reads(api, namespace):
    deadline: list[float | None] = [None]
    fence = WriteFence(lambda: deadline[0])
    kube = KubeClient(api).fenced(fence)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fenced"}}
    with pytest.raises(FencedWrite) as refused:
        kube.create(CONFIGMAPS, body, namespace)
    assert isinstance(refused.value, ApiError) and refused.value.reason == "Fenced"
    with pytest.raises(ApiError) as missing:
        kube.get(CONFIGMAPS, "fenced", namespace)  # reads pass; the write never reached the server
    assert missing.value.status == 404
    assert kube.list(CONFIGMAPS, namespace)["items"] == []

    deadline[0] = time.monotonic() + 10  # now leading
    kube.create(CONFIGMAPS, body, namespace)
    assert client.CoreV1Api(api).read_namespaced_config_map("fenced", namespace).metadata.name == "fenced"
    fence.close(timeout=1)
    with pytest.raises(FencedWrite):
        kube.delete(CONFIGMAPS, "fenced", namespace)
    assert client.CoreV1Api(api).read_namespaced_config_map("fenced", namespace).metadata.name == "fenced"
