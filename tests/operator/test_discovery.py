"""Which optional APIs the operator watches, found by discovery on the real control plane."""

from __future__ import annotations

import time

import pytest

from kmm_dtk.kube.client import ApiError, KubeClient, Resource
from kmm_dtk.operator.discovery import served
from kmm_dtk.operator.resources import CLUSTERVERSIONS, IDMSES
from tests.support.cluster import api_client_from
from tests.support.controlplane import free_port

pytestmark = pytest.mark.integration


def test_served_apis_are_found_and_absent_ones_are_not(api):
    kube = KubeClient(api)
    assert served(kube, IDMSES) and served(kube, CLUSTERVERSIONS)
    assert not served(kube, Resource("config.openshift.io", "v1", "nonexistents", namespaced=False))
    assert not served(kube, Resource("no.such.group.example.com", "v1", "things"))


def test_an_api_server_that_does_not_answer_is_retried_then_raised(cluster, tmp_path):
    api = api_client_from(cluster.kubeconfig_for(tmp_path / "dead.kubeconfig", f"https://127.0.0.1:{free_port()}"))
    started = time.monotonic()
    with pytest.raises(ApiError) as err:
        served(KubeClient(api), IDMSES, patience=1.5)
    assert err.value.status == 0
    assert time.monotonic() - started >= 1.5  # asked again until its patience ran out
    api.close()
