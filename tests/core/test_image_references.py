"""Modules whose images are not image references: the planner refuses them (``InvalidModule``, naming
the field) instead of leaving a registry to be asked, forever, about a name no registry can hold."""

from __future__ import annotations

import pytest

from kmm_dtk.core.module import ModuleError, render_image
from kmm_dtk.core.plan import Action, Reason, plan_module, snapshot_from_objects
from kmm_dtk.core.reference import ImageRef, ReferenceError
from tests.core.test_plan import DTK_REF, TARGET, by_kernel, configmap, design_stream, module, node, snapshot
from tests.support.design import K84, K86, R410

MAPPING_IMAGE = "spec.moduleLoader.container.kernelMappings[0].containerImage"
CONTAINER_IMAGE = "spec.moduleLoader.container.containerImage"
K_CUSTOM = "6.12.0-1.Custom.x86_64"  # upper case: fine in a tag, never in a repository


def with_mapping_image(image: str) -> dict:
    raw = module()
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["containerImage"] = image
    return raw


@pytest.mark.parametrize("image, problem", [
    ("quay.io/Org/Driver:tag", "repository name must be lowercase"),
    ("quay.io/org/dri ver:tag", "not an image reference"),
    ("quay.io/org/driver@sha256:1234", "digest 'sha256:1234'"),
    ("quay.io/org//driver:v1", "repository path component '' is not valid"),
    ("quay.io:http/org/driver:v1", "registry 'quay.io:http' is not a valid host[:port]"),
])
def test_an_invalid_mapping_image_is_an_invalid_module_naming_the_field(image, problem):
    entries = plan_module(with_mapping_image(image), snapshot())
    assert [(e.kernel, e.action, e.reason_code) for e in entries] == [
        (K84, Action.ERROR, Reason.INVALID_MODULE), (K86, Action.ERROR, Reason.INVALID_MODULE)]
    for entry in entries:
        assert entry.reason.startswith(f"{MAPPING_IMAGE} renders to ")
        assert problem in entry.reason
        assert entry.hash is None and entry.image is None  # nothing for the registry to be asked about


def test_an_invalid_container_level_image_names_its_own_field():
    raw = module(containerImage="registry.example.com/Drivers/simple-kmod:${KERNEL_FULL_VERSION}")
    del raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["containerImage"]
    entries = plan_module(raw, snapshot())
    assert {e.reason_code for e in entries} == {Reason.INVALID_MODULE}
    assert entries[0].reason == (f"{CONTAINER_IMAGE} renders to 'registry.example.com/Drivers/simple-kmod:{K84}', "
                                 "which is not a valid image reference: repository name must be lowercase")


def test_an_invalid_image_without_a_build_section_is_refused_too():
    raw = with_mapping_image("quay.io/Org/driver:v1")
    del raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["build"]
    assert {(e.action, e.reason_code) for e in plan_module(raw, snapshot())} == {(Action.ERROR, Reason.INVALID_MODULE)}


def test_placeholders_are_substituted_before_the_image_is_validated():
    template = "registry.example.com/${MOD_NAMESPACE}/${MOD_NAME}-${KERNEL_X}:${KERNEL_FULL_VERSION}"
    with pytest.raises(ReferenceError):
        ImageRef.parse(template)  # not a reference as written ...
    entries = by_kernel(plan_module(with_mapping_image(template), snapshot()))
    assert entries[K84].action is Action.BUILD  # ... but what it renders to is
    assert entries[K84].image == f"registry.example.com/simple-kmod/simple-kmod-4:{K84}"


def test_an_image_valid_as_written_but_not_for_one_kernel_is_refused_for_that_kernel_only():
    nodes = [node("worker-0", K84, f"Red Hat Enterprise Linux CoreOS {R410} (Ootpa)"),
             node("worker-9", K_CUSTOM, "Red Hat Enterprise Linux CoreOS 9.6.20250701-0 (Plow)")]
    raw = with_mapping_image(TARGET + "-${KERNEL_FULL_VERSION}:v1")
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = ".*"
    plan_snapshot = snapshot_from_objects(nodes, design_stream(), [configmap()], DTK_REF)[0]
    entries = by_kernel(plan_module(raw, plan_snapshot))
    assert entries[K84].action is Action.BUILD
    assert entries[K_CUSTOM].reason_code is Reason.INVALID_MODULE
    assert entries[K_CUSTOM].reason == (f"{MAPPING_IMAGE} renders to '{TARGET}-{K_CUSTOM}:v1', which is not a "
                                        "valid image reference: repository name must be lowercase")


def test_render_image_keeps_valid_references_as_they_are():
    for image in ("quay.io/org/driver:v1", "Registry.Example.com:5000/a/b@sha256:" + "a" * 64, "ubi9",
                  "[::1]:5000/a/b"):
        assert render_image(image, {}, "p") == image
    with pytest.raises(ModuleError, match="^p renders to 'quay.io/Org/x', which is not a valid image reference"):
        render_image("quay.io/Org/x", {}, "p")
