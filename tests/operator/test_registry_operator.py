"""The operator asking a real registry (docker-registry on loopback, TLS + htpasswd) before it
builds: images that exist are not rebuilt, outdated ones are, a silent registry builds nothing, a
DTK for another kernel is refused, mirrors are asked as nodes would ask them (a disconnected
cluster), and a ClusterVersion moving to a new release builds for its kernel before any Node moves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
import yaml
from kubernetes import client

from kmm_dtk.core.plan import IMAGE_HASH_LABEL, plan_module, snapshot_from_objects
from kmm_dtk.operator.options import RegistryOptions
from tests.operator.conftest import DOCKERFILE, Scenario, module_body, os_image
from tests.support.controlplane import free_port, wait_for
from tests.support.design import K84, K86, R410, R411
from tests.support.objects import create_imagestream, create_node, unique_name
from tests.support.registry import auth_json, dtk_release_files, push_image
from tests.support.registry import pull_secret as registry_pull_secret

pytestmark = [pytest.mark.integration, pytest.mark.registry]

K88 = "4.18.0-477.10.1.el8_8.x86_64"
K88_RT = "4.18.0-477.10.1.rt7.274.el8_8.x86_64"
R413 = "413.86.202307250857-0"


def dtk_files(kernel: str, rt_kernel: str | None = None) -> dict[str, bytes]:
    return dtk_release_files(kernel, rt_kernel, RHEL_VERSION="8.6", OCP_VERSION="4.11")


def pull_secret(namespace: str, name: str, host: str, username: str, password: str) -> dict:
    return registry_pull_secret(namespace, name, auth_json(host, username, password))


@dataclass
class RegistryScenario(Scenario):
    registry: object = None
    dtk: dict[str, str] | None = None  # RHCOS -> DTK pull spec in the test registry

    def image(self, kernel: str) -> str:
        return f"{self.registry.host}/{self.namespace}/simple-kmod:{kernel}"

    def repository(self) -> str:
        return f"{self.namespace}/simple-kmod"

    def retag(self, images: dict[str, str]) -> None:
        """Point DTK tags (RHCOS -> digest pull spec) at other images, as an import would."""
        custom = client.CustomObjectsApi(self.api)
        stream = custom.get_namespaced_custom_object("image.openshift.io", "v1", self.namespace, "imagestreams",
                                                     "driver-toolkit")
        for tag in stream["status"]["tags"]:
            if tag["tag"] in images:
                tag["items"][0]["dockerImageReference"] = images[tag["tag"]]
                tag["items"][0]["image"] = images[tag["tag"]].rsplit("@", 1)[1]
        custom.replace_namespaced_custom_object_status("image.openshift.io", "v1", self.namespace, "imagestreams",
                                                       "driver-toolkit", stream)

    def planned_hashes(self, module: dict) -> dict[str, str]:
        """The hash the operator will plan for each kernel: the same pure planner, from the same objects."""
        core = client.CoreV1Api(self.api)
        nodes = [core.read_node(n).to_dict() for n in self.nodes]
        nodes = [{"metadata": {"name": n["metadata"]["name"], "labels": n["metadata"]["labels"]},
                  "status": {"nodeInfo": {"kernelVersion": n["status"]["node_info"]["kernel_version"],
                                          "osImage": n["status"]["node_info"]["os_image"]}}} for n in nodes]
        stream = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            "image.openshift.io", "v1", self.namespace, "imagestreams", "driver-toolkit")
        cm = {"metadata": {"name": "dockerfile", "namespace": self.namespace}, "data": {"dockerfile": DOCKERFILE}}
        snapshot, _ = snapshot_from_objects(nodes, stream, [cm], (self.namespace, "driver-toolkit"))
        module = {**module, "metadata": {**module["metadata"], "namespace": self.namespace}}
        return {e.kernel: e.hash for e in plan_module(module, snapshot) if e.hash}


@pytest.fixture
def reg(api, namespace, new_node_name, registry_tls) -> RegistryScenario:
    """The design cluster with its DTKs, driver images and pull secret in the test registry."""
    dtk = {}
    for rhcos, kernel in ((R410, K84), (R411, K86)):
        pushed = push_image(registry_tls, f"{namespace}/dtk", rhcos, files=dtk_files(kernel))
        dtk[rhcos] = pushed.pull_spec
    create_imagestream(api, namespace, "driver-toolkit", dtk)
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "dockerfile"},
                                                  "data": {"dockerfile": DOCKERFILE}})
    core.create_namespaced_secret(namespace, pull_secret(namespace, "push", registry_tls.host, registry_tls.username,
                                                         registry_tls.password))
    nodes = {}
    for rhcos, kernel in ((R410, K84), (R411, K86)):
        name = new_node_name("worker")
        create_node(api, name, kernel, os_image(rhcos), {"node-role.kubernetes.io/worker": "",
                                                         "kmm-dtk-test/ns": namespace})
        nodes[name] = kernel
    return RegistryScenario(api, namespace, nodes, registry=registry_tls, dtk=dtk)


def module_in_registry(s: RegistryScenario, image_prefix: str | None = None, secret: str | None = "push") -> dict:
    prefix = image_prefix or f"{s.registry.host}/{s.namespace}"
    body = module_body(s.namespace, kernelMappings=[{
        "regexp": r"^.+\.el8_\d+\.x86_64$",
        "containerImage": f"{prefix}/simple-kmod:${{KERNEL_FULL_VERSION}}",
        "build": {"dockerfileConfigMap": {"name": "dockerfile"}},
    }])
    if secret:
        body["spec"]["imageRepoSecret"] = {"name": secret}
    else:
        del body["spec"]["imageRepoSecret"]
    return body


def registry_options(s: RegistryScenario, **kw) -> RegistryOptions:
    return RegistryOptions(ca_paths=(str(s.registry.ca_file),), global_pull_secret=(s.namespace, "push"),
                           retry_after=0.5, **kw)


def settled(s: RegistryScenario, kernels: set[str], phases: set[str] | None = None) -> dict[str, dict]:
    """The kernel records, once every kernel in ``kernels`` has one (in one of ``phases``)."""
    found: dict[str, dict] = {}

    def ready() -> bool:
        found.clear()
        found.update(s.kernel_status())
        return kernels <= set(found) and (phases is None or all(found[k]["phase"] in phases for k in kernels))

    wait_for(ready, 30, f"status records for {sorted(kernels)}")
    return found


def test_up_to_date_and_foreign_images_are_not_rebuilt(reg, run_operator):
    body = module_in_registry(reg)
    hashes = reg.planned_hashes(body)
    push_image(reg.registry, reg.repository(), K84, labels={IMAGE_HASH_LABEL: hashes[K84]})
    push_image(reg.registry, reg.repository(), K86, labels={"vendor": "built by hand"})
    run_operator(registry=registry_options(reg))
    reg.create_module(body)

    records = settled(reg, {K84, K86}, {"Exists"})
    assert "is up to date" in records[K84]["message"]
    assert "built elsewhere" in records[K86]["message"]
    assert reg.builds() == []
    wait_for(lambda: reg.condition("Ready").get("reason") == "AllImagesBuilt", 20, "Ready")


def test_outdated_and_missing_images_are_built(reg, run_operator):
    body = module_in_registry(reg)
    push_image(reg.registry, reg.repository(), K84, labels={IMAGE_HASH_LABEL: "0" * 20})
    run_operator(registry=registry_options(reg))
    reg.create_module(body)

    wait_for(lambda: set(reg.builds_by_kernel()) == {K84, K86}, 30, "Builds for both kernels")
    created = wait_for(lambda: " ".join(e.message for e in reg.events("BuildimageCreated")), 20,
                       "a BuildimageCreated Event")
    assert "built from other inputs" in created and "0" * 20 in created


def test_registry_refusing_us_builds_nothing_and_says_so(reg, run_operator):
    body = module_in_registry(reg, secret="wrong")
    client.CoreV1Api(reg.api).create_namespaced_secret(reg.namespace, pull_secret(
        reg.namespace, "wrong", reg.registry.host, reg.registry.username, "not-the-password"))
    run_operator(registry=registry_options(reg))  # the global pull secret is not used for driver images
    reg.create_module(body)

    records = settled(reg, {K84, K86}, {"Waiting"})
    assert all(r["reason"] == "RegistryUnavailable" for r in records.values())
    assert "401" in records[K84]["message"]
    wait_for(lambda: reg.condition("Progressing").get("reason") == "WaitingForRegistry", 20, "Progressing")
    assert reg.builds() == []
    everything = json.dumps(reg.module()) + " ".join(e.message for e in reg.events())
    assert "not-the-password" not in everything and reg.registry.password not in everything


def test_dtk_for_another_kernel_is_refused_naming_both_kernels(api, reg, run_operator):
    wrong = push_image(reg.registry, f"{reg.namespace}/dtk", "okd-wrong", files=dtk_files(K84))
    reg.retag({R411: wrong.pull_spec})  # R411's tag now points at a DTK carrying K84's headers
    run_operator(registry=registry_options(reg))
    reg.create_module(module_in_registry(reg))

    records = settled(reg, {K84, K86})
    wait_for(lambda: reg.kernel_status()[K86]["phase"] == "Error", 20, "the K86 record to be an error")
    record = reg.kernel_status()[K86]
    assert record["reason"] == "DTKKernelMismatch"
    assert K84 in record["message"] and K86 in record["message"]
    wait_for(lambda: reg.events("DTKKernelMismatch"), 20, "a DTKKernelMismatch Event")
    assert set(reg.builds_by_kernel()) == {K84}
    assert reg.condition("Degraded").get("reason") == "DTKKernelMismatch"
    assert records  # both kernels got a record


@pytest.fixture
def mirror_sets(api) -> Iterator[list[tuple[str, str]]]:
    """Cluster-scoped mirror sets made by a test, deleted after it."""
    made: list[tuple[str, str]] = []
    yield made
    custom = client.CustomObjectsApi(api)
    for plural, name in made:
        custom.delete_cluster_custom_object("config.openshift.io", "v1", plural, name)


def test_disconnected_cluster_finds_images_and_dtks_through_mirrors(api, reg, run_operator, mirror_sets):
    """The source registry cannot be reached; IDMS (DTK digests) and ITMS (driver tags) point at the
    mirror, NeverContactSource: K84's image is found there, K86's is missing there and gets built."""
    source = f"127.0.0.1:{free_port()}"
    mirror = f"{reg.registry.host}/mirror"
    custom = client.CustomObjectsApi(api)
    dtk = {}
    for rhcos, kernel in ((R410, K84), (R411, K86)):
        pushed = push_image(reg.registry, f"mirror/{reg.namespace}/dtk", rhcos, files=dtk_files(kernel))
        dtk[rhcos] = f"{source}/{reg.namespace}/dtk@{pushed.digest}"
    reg.retag(dtk)
    for plural, kind, field in (("imagedigestmirrorsets", "ImageDigestMirrorSet", "imageDigestMirrors"),
                                ("imagetagmirrorsets", "ImageTagMirrorSet", "imageTagMirrors")):
        name = unique_name("mirrors")
        custom.create_cluster_custom_object("config.openshift.io", "v1", plural, {
            "apiVersion": "config.openshift.io/v1", "kind": kind, "metadata": {"name": name},
            "spec": {field: [{"source": f"{source}/{reg.namespace}", "mirrors": [f"{mirror}/{reg.namespace}"],
                              "mirrorSourcePolicy": "NeverContactSource"}]}})
        mirror_sets.append((plural, name))

    body = module_in_registry(reg, image_prefix=f"{source}/{reg.namespace}")
    hashes = reg.planned_hashes(body)
    push_image(reg.registry, f"mirror/{reg.namespace}/simple-kmod", K84, labels={IMAGE_HASH_LABEL: hashes[K84]})
    run_operator(registry=registry_options(reg))
    reg.create_module(body)

    records = settled(reg, {K84, K86}, {"Exists", "Pending"})
    assert records[K84]["phase"] == "Exists"
    assert f"through mirror {mirror}/{reg.namespace}" in records[K84]["message"]
    assert set(reg.builds_by_kernel()) == {K86}
    build = reg.builds_by_kernel()[K86][0]
    assert build["spec"]["output"]["to"]["name"] == f"{source}/{reg.namespace}/simple-kmod:{K86}"


def test_cluster_version_moving_builds_for_the_new_kernel_before_any_node(api, reg, run_operator):
    dtk = push_image(reg.registry, f"{reg.namespace}/dtk", R413, files=dtk_files(K88, K88_RT))
    references = {
        "kind": "ImageStream", "apiVersion": "image.openshift.io/v1", "metadata": {"name": "4.13.10"},
        "spec": {"tags": [
            {"name": "driver-toolkit", "from": {"kind": "DockerImage", "name": dtk.pull_spec}},
            {"name": "rhel-coreos-8", "annotations": {"io.openshift.build.versions": f"machine-os={R413}"},
             "from": {"kind": "DockerImage", "name": dtk.pull_spec}},
        ]},
    }
    release = push_image(reg.registry, f"{reg.namespace}/release", "4.13.10",
                         files={"release-manifests/image-references": json.dumps(references).encode()})
    custom = client.CustomObjectsApi(api)
    cv = custom.create_cluster_custom_object("config.openshift.io", "v1", "clusterversions", {
        "apiVersion": "config.openshift.io/v1", "kind": "ClusterVersion", "metadata": {"name": "version"},
        "spec": {"clusterID": "00000000-0000-0000-0000-000000000000"}})
    try:
        run_operator(registry=registry_options(reg), prebuild_upgrades=True)
        reg.create_module(module_in_registry(reg))
        wait_for(lambda: set(reg.builds_by_kernel()) == {K84, K86}, 30, "Builds for the running kernels")

        cv["status"] = {"desired": {"version": "4.13.10", "image": release.pull_spec}, "availableUpdates": None,
                        "observedGeneration": 1, "versionHash": "test"}
        custom.replace_cluster_custom_object_status("config.openshift.io", "v1", "clusterversions", "version", cv)
        wait_for(lambda: K88 in reg.builds_by_kernel(), 30, "a Build for the release's kernel")
        build = reg.builds_by_kernel()[K88][0]
        assert build["spec"]["source"]["dockerfile"].splitlines()[1] == f"FROM {dtk.pull_spec} AS builder"
        record = settled(reg, {K88})[K88]
        assert record["release"].startswith("4.13.10") and record["rhcos"] == R413
        assert K88_RT not in reg.builds_by_kernel()  # no real-time node selected
        wait_for(lambda: any("4.13.10" in e.message and K88 in e.message for e in reg.events("BuildimageCreated")),
                   20, "an Event naming the release and kernel")
        assert {n.status.node_info.kernel_version for n in client.CoreV1Api(api).list_node(
            label_selector=f"kmm-dtk-test/ns={reg.namespace}").items} == {K84, K86}
    finally:
        custom.delete_cluster_custom_object("config.openshift.io", "v1", "clusterversions", "version")


def test_registry_checks_work_on_the_manifest_rbac(cluster, api, reg, run_operator, tmp_path):
    """As the ServiceAccount with manifests/rbac's rules only: discovery of the mirror APIs, the mirror
    informers, the image config, the pull secret by name; an existing image is found, a missing one built."""
    from tests.operator.test_rbac import RBAC, _apply, _ensure_namespace
    from tests.support.cluster import api_client_from
    from tests.support.objects import service_account_kubeconfig
    _ensure_namespace(api, "kmm-dtk-system")
    _ensure_namespace(api, "openshift")
    docs = [doc for path in sorted(RBAC.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    _apply(api, docs)
    # The manifests' ImageStream Role is for `openshift`; the test's DTK stream lives in its namespace.
    client.RbacAuthorizationV1Api(api).create_namespaced_role(reg.namespace, {
        "metadata": {"name": "imagestreams"},
        "rules": [{"apiGroups": ["image.openshift.io"], "resources": ["imagestreams"],
                   "verbs": ["get", "list", "watch"]}]})
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(reg.namespace, {
        "metadata": {"name": "imagestreams"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "imagestreams"},
        "subjects": [{"kind": "ServiceAccount", "name": "kmm-dtk", "namespace": "kmm-dtk-system"}]})
    sa_api = api_client_from(service_account_kubeconfig(api, "kmm-dtk-system", "kmm-dtk", tmp_path / "sa.kubeconfig",
                                                        cluster.host, cluster.ca_file))
    body = module_in_registry(reg)
    hashes = reg.planned_hashes(body)
    push_image(reg.registry, reg.repository(), K84, labels={IMAGE_HASH_LABEL: hashes[K84]})
    running = run_operator(sa_api, identity="sa-registry", registry=registry_options(reg))
    reg.create_module(body)

    records = settled(reg, {K84, K86}, {"Exists", "Pending"})
    assert records[K84]["phase"] == "Exists" and records[K86]["phase"] == "Pending"
    assert set(reg.builds_by_kernel()) == {K86}
    assert running.stop() == 0
    sa_api.close()


@pytest.fixture
def cluster_config(api) -> Iterator[dict]:
    """Makes the cluster-scoped image config and ConfigMaps in shared namespaces; removes them after."""
    from tests.operator.test_rbac import _ensure_namespace

    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    made: dict = {"configmaps": [], "image": False}

    def configmap(namespace: str, name: str, data: dict) -> None:
        _ensure_namespace(api, namespace)
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": data})
        made["configmaps"].append((namespace, name))

    def image(spec: dict) -> None:
        custom.create_cluster_custom_object("config.openshift.io", "v1", "images", {
            "apiVersion": "config.openshift.io/v1", "kind": "Image", "metadata": {"name": "cluster"}, "spec": spec})
        made["image"] = True

    yield {"configmap": configmap, "image": image}
    for namespace, name in made["configmaps"]:
        core.delete_namespaced_config_map(name, namespace)
    if made["image"]:
        custom.delete_cluster_custom_object("config.openshift.io", "v1", "images", "cluster")


def _trust_and_checker(kube_api, reg, **trust_kw):
    from kmm_dtk.kube.client import KubeClient
    from kmm_dtk.operator.registry_access import ClusterTrust
    from kmm_dtk.registry.auth import AuthConfig
    from kmm_dtk.registry.check import RegistryChecker
    from kmm_dtk.registry.client import RegistryClient
    from kmm_dtk.registry.tls import TrustStore

    registry = RegistryClient(TrustStore(), AuthConfig.from_json(reg.registry.auth_json(), "test"), attempts=1)
    trust = ClusterTrust(KubeClient(kube_api), registry, TrustStore(), **trust_kw)
    checker = RegistryChecker(registry, ttl=0, insecure_registries=lambda: trust.insecure_registries)
    return registry, trust, checker


def _k84_entry(reg):
    body = module_in_registry(reg)
    return next(e for e in plan_module({**body, "metadata": {**body["metadata"], "namespace": reg.namespace}},
                                       _snapshot(reg)) if e.kernel == K84)


def test_cluster_trust_follows_additional_trusted_ca(api, reg, cluster_config):
    """image.config.openshift.io/cluster names a ConfigMap in openshift-config whose keys are registry
    hosts (``host..port``); once read, connections to that registry trust its CA."""
    from kmm_dtk.core.verdicts import ImageState

    name = unique_name("registry-cas")
    host, port = reg.registry.host.split(":")
    cluster_config["configmap"]("openshift-config", name, {f"{host}..{port}": reg.registry.ca_file.read_text()})
    push_image(reg.registry, reg.repository(), K84, labels={IMAGE_HASH_LABEL: "x" * 20})
    entry = _k84_entry(reg)
    registry, trust, checker = _trust_and_checker(api, reg, ttl=0)
    with registry:
        trust.refresh()  # no image config yet: only the system CAs
        assert checker.check(entry).state is ImageState.UNKNOWN
        cluster_config["image"]({"additionalTrustedCA": {"name": name}})
        trust.refresh()
        assert checker.check(entry).state is ImageState.OUTDATED  # TLS verified: a definite answer


def test_cluster_trust_has_the_internal_registry_ca(api, reg, cluster_config):
    """openshift-image-registry/image-registry-certificates: the service CA node-ca gives the nodes."""
    from kmm_dtk.core.verdicts import ImageState

    host, port = reg.registry.host.split(":")
    cluster_config["configmap"]("openshift-image-registry", "image-registry-certificates",
                                {f"{host}..{port}": reg.registry.ca_file.read_text()})
    push_image(reg.registry, reg.repository(), K84, labels={IMAGE_HASH_LABEL: "x" * 20})
    registry, trust, checker = _trust_and_checker(api, reg)
    with registry:
        trust.refresh()
        assert checker.check(_k84_entry(reg)).state is ImageState.OUTDATED


def test_insecure_registries_of_the_cluster_reach_the_checks(api, reg, registry_plain, cluster_config):
    from kmm_dtk.core.verdicts import ImageState

    cluster_config["image"]({"registrySources": {"insecureRegistries": [registry_plain.host, "*.example.com"]}})
    push_image(registry_plain, reg.repository(), K84, labels={IMAGE_HASH_LABEL: "x" * 20})
    entry = replace(_k84_entry(reg), image=f"{registry_plain.host}/{reg.repository()}:{K84}")
    registry, trust, checker = _trust_and_checker(api, reg)
    with registry:
        trust.refresh()
        assert trust.insecure_registries == {registry_plain.host, "*.example.com"}
        assert checker.check(entry).state is ImageState.OUTDATED  # plain HTTP, as CRI-O would


def test_cluster_trust_keeps_its_cas_while_the_api_fails(proxied_api, fault_proxy, reg, cluster_config):
    from kmm_dtk.core.verdicts import ImageState

    class Clock:
        now = 0.0

        def __call__(self):
            return self.now

    clock = Clock()
    host, port = reg.registry.host.split(":")
    cluster_config["configmap"]("openshift-image-registry", "image-registry-certificates",
                                {f"{host}..{port}": reg.registry.ca_file.read_text()})
    push_image(reg.registry, reg.repository(), K84, labels={IMAGE_HASH_LABEL: "x" * 20})
    entry = _k84_entry(reg)
    registry, trust, checker = _trust_and_checker(proxied_api, reg, ttl=300, retry=30, clock=clock)
    with registry:
        trust.refresh()
        assert checker.check(entry).state is ImageState.OUTDATED
        fault_proxy.refuse()
        clock.now = 301  # time to re-read: the API does not answer
        trust.refresh()
        assert checker.check(entry).state is ImageState.OUTDATED  # the CAs in force stayed
        fault_proxy.heal()


def _snapshot(s: RegistryScenario):
    core = client.CoreV1Api(s.api)
    nodes = [{"metadata": {"name": n, "labels": core.read_node(n).metadata.labels},
              "status": {"nodeInfo": {"kernelVersion": k, "osImage": core.read_node(n).status.node_info.os_image}}}
             for n, k in s.nodes.items()]
    stream = client.CustomObjectsApi(s.api).get_namespaced_custom_object(
        "image.openshift.io", "v1", s.namespace, "imagestreams", "driver-toolkit")
    cm = {"metadata": {"name": "dockerfile", "namespace": s.namespace}, "data": {"dockerfile": DOCKERFILE}}
    return snapshot_from_objects(nodes, stream, [cm], (s.namespace, "driver-toolkit"))[0]


def test_a_dtk_that_names_no_kernel_is_built_on(api, reg, run_operator):
    """Older DTKs carry neither the release file nor the labels: they cannot say no, so the Build is made."""
    old = push_image(reg.registry, f"{reg.namespace}/dtk", "old-dtk", labels={"vendor": "Red Hat"})
    reg.retag({R411: old.pull_spec})
    run_operator(registry=registry_options(reg))
    reg.create_module(module_in_registry(reg))
    wait_for(lambda: set(reg.builds_by_kernel()) == {K84, K86}, 30, "Builds for both kernels")
    assert reg.builds_by_kernel()[K86][0]["spec"]["source"]["dockerfile"].splitlines()[1].startswith(
        f"FROM {old.pull_spec}")


def test_registry_metrics_count_requests_and_checks(reg, run_operator):
    body = module_in_registry(reg)
    push_image(reg.registry, reg.repository(), K84, labels={IMAGE_HASH_LABEL: reg.planned_hashes(body)[K84]})
    running = run_operator(registry=registry_options(reg))
    reg.create_module(body)
    settled(reg, {K84, K86}, {"Exists", "Pending"})
    sample = running.registry.get_sample_value
    host = reg.registry.host
    assert sample("kmm_dtk_image_checks_total", {"result": "Current", "cached": "false"}) >= 1
    assert sample("kmm_dtk_image_checks_total", {"result": "Missing", "cached": "false"}) >= 1
    assert sample("kmm_dtk_dtk_checks_total", {"result": "Matches"}) >= 1
    assert sample("kmm_dtk_registry_requests_total", {"registry": host, "method": "GET", "outcome": "200"}) >= 3
    assert sample("kmm_dtk_registry_requests_total", {"registry": host, "method": "GET", "outcome": "404"}) >= 1
    assert sample("kmm_dtk_registry_request_duration_seconds_count", {"registry": host}) >= 4


def test_a_malformed_mirror_set_gets_an_event_naming_the_field_and_the_rest_applies(api, reg, run_operator,
                                                                                   mirror_sets):
    source = f"127.0.0.1:{free_port()}"
    name = unique_name("bad-mirrors")
    client.CustomObjectsApi(api).create_cluster_custom_object("config.openshift.io", "v1", "imagetagmirrorsets", {
        "apiVersion": "config.openshift.io/v1", "kind": "ImageTagMirrorSet", "metadata": {"name": name},
        "spec": {"imageTagMirrors": [
            {"source": "registry/ns", "mirrors": ["mirror.example.com/x"]},  # valid for the API, no host
            {"source": f"{source}/{reg.namespace}", "mirrors": [f"{reg.registry.host}/mirror/{reg.namespace}"],
             "mirrorSourcePolicy": "NeverContactSource"}]}})
    mirror_sets.append(("imagetagmirrorsets", name))
    body = module_in_registry(reg, image_prefix=f"{source}/{reg.namespace}")
    push_image(reg.registry, f"mirror/{reg.namespace}/simple-kmod", K84,
               labels={IMAGE_HASH_LABEL: reg.planned_hashes(body)[K84]})
    run_operator(registry=registry_options(reg))
    reg.create_module(body)

    records = settled(reg, {K84, K86}, {"Exists", "Pending"})
    assert records[K84]["phase"] == "Exists"  # the valid entry applies
    core = client.CoreV1Api(api)
    event = wait_for(lambda: next((e for e in core.list_namespaced_event("default").items
                                   if e.involved_object.name == name and e.reason == "InvalidMirrorSet"), None),
                     20, "an InvalidMirrorSet Event")
    assert event.type == "Warning" and "spec.imageTagMirrors[0].source" in event.message
    assert event.involved_object.kind == "ImageTagMirrorSet"


@pytest.mark.parametrize("weakened, expected", [(False, "Pending"), (True, "Waiting")],
                         ids=["verified-tls-uses-the-global-pull-secret", "weakened-tls-never-gets-it"])
def test_the_global_pull_secret_is_used_for_dtks_only_over_verified_tls(api, reg, registry_plain, run_operator,
                                                                        weakened, expected):
    """The driver image is on an anonymous plain-HTTP registry; the DTKs need the credentials that only
    the cluster's global pull secret holds (the Module has no secret). A Module that weakens TLS for its
    base images does not get the cluster's credentials sent over that link."""
    client.CoreV1Api(api).create_namespaced_secret(reg.namespace, pull_secret(
        reg.namespace, "global", reg.registry.host, reg.registry.username, reg.registry.password))
    body = module_in_registry(reg, image_prefix=f"{registry_plain.host}/{reg.namespace}", secret=None)
    mapping = body["spec"]["moduleLoader"]["container"]["kernelMappings"][0]
    mapping["registryTLS"] = {"insecure": True}
    if weakened:
        mapping["build"]["baseImageRegistryTLS"] = {"insecureSkipTLSVerify": True}
    run_operator(registry=RegistryOptions(ca_paths=(str(reg.registry.ca_file),),
                                          global_pull_secret=(reg.namespace, "global"), retry_after=0.5))
    reg.create_module(body)
    records = settled(reg, {K84, K86}, {expected})
    if weakened:
        assert "401" in records[K84]["message"] and reg.builds() == []
    else:
        assert set(reg.builds_by_kernel()) == {K84, K86}
