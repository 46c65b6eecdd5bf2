"""Images recorded as in the registry are asked about again every ``--registry-cache-ttl``: one a
registry cleanup deleted is rebuilt with an ``ImageVanished`` Event, one still there costs no write,
and a registry that stops answering changes nothing. The real control plane, a real docker-registry,
the operator in-process with a one-second re-check period."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kmm_dtk.core.plan import IMAGE_HASH_LABEL
from tests.operator.test_registry_operator import module_in_registry, registry_options, settled
from tests.support.controlplane import wait_for
from tests.support.design import K84, K86
from tests.support.registry import RegistryServer, delete_manifest, push_image

pytestmark = [pytest.mark.integration, pytest.mark.registry]

PERIOD = 1.0  # seconds between re-checks of one image (the cache TTL)
DEADLINE = 30.0


def image_checks(running, result: str) -> float:
    """Registry answers about driver images that were not from the cache: first checks and re-checks."""
    return running.registry.get_sample_value("kmm_dtk_image_checks_total",
                                             {"result": result, "cached": "false"}) or 0.0


def test_an_image_deleted_from_the_registry_is_rebuilt_with_an_event(reg, run_operator):
    body = module_in_registry(reg)
    hashes = reg.planned_hashes(body)
    pushed = push_image(reg.registry, reg.repository(), K84, labels={IMAGE_HASH_LABEL: hashes[K84]})
    run_operator(registry=registry_options(reg, cache_ttl=PERIOD))
    reg.create_module(body)
    records = settled(reg, {K84, K86}, {"Exists", "Pending"})
    assert records[K84]["phase"] == "Exists" and set(reg.builds_by_kernel()) == {K86}
    existed_since = records[K84]["lastTransitionTime"]

    delete_manifest(reg.registry, reg.repository(), pushed.digest)  # a registry cleanup
    wait_for(lambda: K84 in reg.builds_by_kernel(), DEADLINE, "a Build for the kernel whose image went")
    event = wait_for(lambda: next(iter(reg.events("ImageVanished")), None), DEADLINE, "an ImageVanished Event")
    assert event.type == "Warning"
    assert f"image {reg.image(K84)} for kernel {K84} was in the registry on " in event.message
    assert event.message.endswith("is gone; rebuilding")
    assert existed_since <= event.message.split(" on ", 1)[1].split(" and ", 1)[0]  # when it was last found
    build = reg.builds_by_kernel()[K84][0]
    assert build["spec"]["output"]["to"]["name"] == reg.image(K84)
    assert build["metadata"]["labels"]["kmm-dtk.io/hash"] == hashes[K84]  # the same inputs, built again
    wait_for(lambda: reg.kernel_status()[K84]["phase"] == "Pending", DEADLINE, "the record to say it is building")
    assert len(reg.events("ImageVanished")) == 1 and len(reg.builds_by_kernel()[K84]) == 1


def test_a_built_image_deleted_from_the_registry_replaces_its_completed_build(reg, run_operator):
    """Succeeded with its Build still there: the completed Build makes way for the rebuild (same name)."""
    body = module_in_registry(reg)
    hashes = reg.planned_hashes(body)
    run_operator(registry=registry_options(reg, cache_ttl=PERIOD))
    reg.create_module(body)
    first = wait_for(lambda: reg.builds_by_kernel().get(K84), DEADLINE, "a Build for the missing image")[0]
    pushed = push_image(reg.registry, reg.repository(), K84, labels={IMAGE_HASH_LABEL: hashes[K84]})  # the push
    reg.set_build_phase(first, "Complete")
    settled(reg, {K84}, {"Succeeded"})

    delete_manifest(reg.registry, reg.repository(), pushed.digest)
    rebuilt = wait_for(lambda: [b for b in reg.builds_by_kernel().get(K84, ())
                                if b["metadata"]["uid"] != first["metadata"]["uid"]], DEADLINE,
                       "the completed Build replaced by a new one")
    assert [b["metadata"]["name"] for b in rebuilt] == [first["metadata"]["name"]]
    assert (rebuilt[0].get("status") or {}).get("phase") != "Complete"
    event = wait_for(lambda: next(iter(reg.events("ImageVanished")), None), DEADLINE, "an ImageVanished Event")
    assert reg.image(K84) in event.message and "is gone; rebuilding" in event.message
    wait_for(lambda: reg.kernel_status()[K84]["phase"] == "Pending", DEADLINE, "the record to say it is building")


def test_an_image_still_there_is_rechecked_without_any_write(reg, run_operator):
    body = module_in_registry(reg)
    hashes = reg.planned_hashes(body)
    for kernel in (K84, K86):
        push_image(reg.registry, reg.repository(), kernel, labels={IMAGE_HASH_LABEL: hashes[kernel]})
    running = run_operator(registry=registry_options(reg, cache_ttl=PERIOD))
    reg.create_module(body)
    settled(reg, {K84, K86}, {"Exists"})
    wait_for(lambda: reg.condition("Ready").get("reason") == "AllImagesBuilt", DEADLINE, "Ready")
    version = reg.module()["metadata"]["resourceVersion"]
    asked = image_checks(running, "Current")

    # Two re-check periods: each kernel's image asked about twice more, and found.
    wait_for(lambda: image_checks(running, "Current") >= asked + 4, DEADLINE, "two rounds of re-checks")
    assert reg.module()["metadata"]["resourceVersion"] == version  # no status write
    assert reg.builds() == [] and reg.events("ImageVanished") == []
    assert image_checks(running, "Missing") == 0


@pytest.fixture
def lone_registry(tmp_path) -> Iterator[RegistryServer]:
    """A plain-HTTP registry of this test's own, to be stopped in the middle of it."""
    server = RegistryServer(tmp_path / "registry", "plain").start()
    yield server
    server.stop()


def test_a_registry_gone_silent_keeps_the_record(reg, lone_registry, run_operator):
    """Silence is never a reason to build: the record stays Exists and nothing is written."""
    body = module_in_registry(reg, image_prefix=f"{lone_registry.host}/{reg.namespace}", secret=None)
    body["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["registryTLS"] = {"insecure": True}
    hashes = reg.planned_hashes(body)
    for kernel in (K84, K86):
        push_image(lone_registry, reg.repository(), kernel, labels={IMAGE_HASH_LABEL: hashes[kernel]})
    running = run_operator(registry=registry_options(reg, cache_ttl=PERIOD))
    reg.create_module(body)
    settled(reg, {K84, K86}, {"Exists"})
    wait_for(lambda: reg.condition("Ready").get("reason") == "AllImagesBuilt", DEADLINE, "Ready")
    version = reg.module()["metadata"]["resourceVersion"]

    lone_registry.stop()
    wait_for(lambda: image_checks(running, "Unknown") >= 4, DEADLINE, "re-checks that get no answer")
    assert {r["phase"] for r in reg.kernel_status().values()} == {"Exists"}
    assert reg.module()["metadata"]["resourceVersion"] == version
    assert reg.builds() == [] and reg.events("ImageVanished") == []
