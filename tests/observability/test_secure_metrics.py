"""The operator's metrics endpoint as OpenShift monitoring scrapes it, on the real control plane:
HTTPS with a certificate directory that is reloaded when it changes, a bearer token reviewed by the
API server (TokenReview, then SubjectAccessReview for GET /metrics), and the product metrics read
from the caches for a known set of objects."""

from __future__ import annotations

import http.client
import shutil
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from kmm_dtk.kube.client import KubeClient
from kmm_dtk.observability.serving_cert import write_self_signed_cryptography
from kmm_dtk.operator.app import Operator, build_operator
from kmm_dtk.operator.options import OperatorOptions
from tests.operator.conftest import (
    BUILD_GROUP,
    BUILD_PLURAL,
    BUILD_VERSION,
    DOCKERFILE,
    FAST_INFORMERS,
    module_body,
    os_image,
)
from tests.support.controlplane import wait_for
from tests.support.design import DTK_410, K84, K86, R410, R411
from tests.support.objects import MODULE_GROUP, MODULE_PLURAL, MODULE_VERSION, create_imagestream, create_node

pytestmark = pytest.mark.integration


def token_for(api: client.ApiClient, namespace: str, name: str) -> str:
    core = client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    request = core.create_namespaced_service_account_token(name, namespace, {"spec": {"expirationSeconds": 3600}})
    return request.status.token


@pytest.fixture
def metrics_reader(api: client.ApiClient, namespace: str) -> Iterator[str]:
    """A ClusterRole allowing GET on the non-resource URL /metrics, bound to the ServiceAccount
    ``scraper`` of the test namespace (deleted afterwards: both are cluster-scoped)."""
    rbac = client.RbacAuthorizationV1Api(api)
    name = f"{namespace}-metrics-reader"
    rbac.create_cluster_role({"metadata": {"name": name},
                              "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]})
    rbac.create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "scraper", "namespace": namespace}]})
    try:
        yield name
    finally:
        for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
            try:
                delete(name)
            except ApiException as err:
                if err.status != 404:
                    raise


class Scraper:
    def __init__(self, port: int, ca_file: Path) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def get(self, token: str | None = None, path: str = "/metrics") -> tuple[int, str]:
        connection = http.client.HTTPSConnection("localhost", self.port, context=self.context, timeout=10)
        try:
            connection.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def peer_certificate(self) -> bytes:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection("localhost", self.port, context=context, timeout=10)
        try:
            connection.connect()
            return connection.sock.getpeercert(binary_form=True)
        finally:
            connection.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, metric: str, /, **labels: str) -> float | None:
    return samples(text).get((metric, tuple(sorted(labels.items()))))


def start(api: client.ApiClient, **options) -> Operator:
    operator = build_operator(KubeClient(api), OperatorOptions(**options), registry=CollectorRegistry())
    thread = threading.Thread(target=operator.run, daemon=True)
    thread.start()
    operator.thread = thread  # type: ignore[attr-defined]
    wait_for(operator.manager.synced, 20, "the operator's caches to sync")
    return operator


def stop(operator: Operator) -> None:
    operator.stop()
    operator.thread.join(30)  # type: ignore[attr-defined]


def test_secure_metrics_review_every_scrape_and_show_the_product(api, namespace, metrics_reader, new_node_name,
                                                                 tmp_path):
    # One DTK tag (RHCOS 410): kernel K84 is built, K86 (RHCOS 411) has no DTK tag.
    create_imagestream(api, namespace, "driver-toolkit", {R410: DTK_410})
    client.CoreV1Api(api).create_namespaced_config_map(namespace, {"metadata": {"name": "dockerfile"},
                                                                   "data": {"dockerfile": DOCKERFILE}})
    for rhcos, kernel in ((R410, K84), (R411, K86)):
        create_node(api, new_node_name("worker"), kernel, os_image(rhcos), {"kmm-dtk-test/ns": namespace})
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(MODULE_GROUP, MODULE_VERSION, namespace, MODULE_PLURAL,
                                           module_body(namespace))
    certs = tmp_path / "certs"
    certs.mkdir()
    write_self_signed_cryptography(certs, ["localhost"])
    scraper_token, other_token = token_for(api, namespace, "scraper"), token_for(api, namespace, "nobody")

    operator = start(api, namespaces=(namespace,), dtk_imagestream=(namespace, "driver-toolkit"), workers=2,
                     metrics_address="127.0.0.1:0", health_address=None, metrics_secure=True,
                     metrics_cert_dir=str(certs), informer_options=FAST_INFORMERS)
    try:
        assert operator.metrics_endpoint is not None
        scrape = Scraper(operator.metrics_endpoint.port, certs / "tls.crt")
        assert scrape.get()[0] == 401  # no token
        assert scrape.get("not-a-token")[0] == 401  # a token the API server does not know
        status, body = scrape.get(other_token)
        assert status == 403 and f"system:serviceaccount:{namespace}:nobody" in body
        status, body = scrape.get(scraper_token)
        assert status == 200 and "controller_runtime_reconcile_total" in body
        assert "_created" not in body

        # The Build for K84 finishes after 125 s; K86 stays without a DTK tag.
        def build_for(kernel: str) -> dict | None:
            builds = custom.list_namespaced_custom_object(BUILD_GROUP, BUILD_VERSION, namespace, BUILD_PLURAL)
            return next((b for b in builds["items"]
                         if b["metadata"]["annotations"].get("kmm-dtk.io/kernel") == kernel), None)

        build = wait_for(lambda: build_for(K84), 20, "the Build for K84")
        started = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=200)
        build["status"] = {"phase": "Complete", "startTimestamp": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "completionTimestamp": (started + timedelta(seconds=125)).strftime("%Y-%m-%dT%H:%M:%SZ")}
        custom.replace_namespaced_custom_object_status(BUILD_GROUP, BUILD_VERSION, namespace, BUILD_PLURAL,
                                                       build["metadata"]["name"], build)

        def product() -> str | None:
            text = scrape.get(scraper_token)[1]
            done = value(text, "kmm_dtk_kernel_records", kind="Module", phase="Succeeded") == 1
            return text if done and value(text, "kmm_dtk_build_duration_seconds_count", phase="Complete") else None

        text = wait_for(product, 20, "the finished Build in the product metrics")
        assert value(text, "kmm_dtk_leader") == 1
        assert value(text, "kmm_dtk_kernel_without_dtk_tag", kernel=K86, rhcos=R411) == 1
        assert value(text, "kmm_dtk_kernel_without_dtk_tag", kernel=K84, rhcos=R410) is None
        assert value(text, "kmm_dtk_kernels_running") >= 2
        assert value(text, "kmm_dtk_build_duration_seconds_count", phase="Complete") == 1
        assert value(text, "kmm_dtk_build_duration_seconds_sum", phase="Complete") == 125
        assert value(text, "kmm_dtk_build_duration_seconds_bucket", phase="Complete", le="120.0") == 0
        assert value(text, "kmm_dtk_build_duration_seconds_bucket", phase="Complete", le="180.0") == 1
        assert value(text, "kmm_dtk_module_conditions", kind="Module", type="Degraded", status="True") == 1
        assert value(text, "kmm_dtk_module_conditions", kind="Module", type="Ready", status="False") == 1
        assert value(text, "kmm_dtk_module_conditions", kind="Module", type="Ready", status="True") == 0
        assert value(text, "kmm_dtk_registry_checks_waiting") == 0
        assert value(text, "workqueue_adds_total", controller="module", name="module") >= 1
        # Scraped again: the Build is counted once.
        again = scrape.get(scraper_token)[1]
        assert value(again, "kmm_dtk_build_duration_seconds_count", phase="Complete") == 1

        # The service-ca rotates the Secret: the next connection gets the new certificate.
        before = scrape.peer_certificate()
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        write_self_signed_cryptography(fresh, ["localhost"])
        for name in ("tls.key", "tls.crt"):
            shutil.copy(fresh / name, certs / f".{name}.new")
        for name in ("tls.key", "tls.crt"):
            (certs / f".{name}.new").replace(certs / name)
        assert scrape.peer_certificate() != before
        assert Scraper(scrape.port, fresh / "tls.crt").get(scraper_token)[0] == 200
    finally:
        stop(operator)


def test_metrics_bind_address_0_serves_nothing(api, namespace):
    operator = start(api, namespaces=(namespace,), dtk_imagestream=(namespace, "driver-toolkit"),
                     metrics_address=None, health_address=None, metrics_secure=True,
                     informer_options=FAST_INFORMERS)
    try:
        assert operator.serve_metrics is None and operator.metrics_endpoint is None
    finally:
        stop(operator)
