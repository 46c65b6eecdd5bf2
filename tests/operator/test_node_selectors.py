"""Node events are matched once per distinct Module selector: Modules sharing a selector move
together, a Module with another selector only when its own nodes change."""

from __future__ import annotations

from collections import defaultdict

import pytest
from kubernetes import client

from tests.operator.conftest import DTK_411, K84, K86, module_body, os_image
from tests.support.controlplane import wait_for
from tests.support.objects import move_imagestream_tag, set_node_versions

pytestmark = pytest.mark.integration

NEW_KERNEL, NEW_RHCOS = "4.18.0-372.26.1.el8_6.x86_64", "411.86.202208031059-0"


def _kernels_by_module(scenario) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for build in scenario.builds():
        owner = build["metadata"]["ownerReferences"][0]["name"]
        found[owner].add(build["metadata"]["annotations"]["kmm-dtk.io/kernel"])
    return dict(found)


def _wait_kernels(scenario, expected: dict[str, set[str]], what: str) -> dict[str, set[str]]:
    return wait_for(lambda: (lambda k: k if k == expected else None)(_kernels_by_module(scenario)), 40, what)


def test_modules_sharing_a_selector_move_together_and_another_selector_only_with_its_nodes(scenario,
                                                                                           run_operator):
    ns = scenario.namespace
    pool = {"kmm-dtk-test/ns": ns, "kmm-dtk-test/pool": "gpu"}
    scenario.create_module(module_body(ns, "shared-a"))
    scenario.create_module(module_body(ns, "shared-b"))
    scenario.create_module(module_body(ns, "gpu-only", selector=pool))
    run_operator()
    _wait_kernels(scenario, {"shared-a": {K84, K86}, "shared-b": {K84, K86}}, "Builds of the shared selector")

    # One K86 node joins the gpu pool: the gpu Module gains K86, the others are unchanged.
    gpu_node = next(n for n, k in scenario.nodes.items() if k == K86)
    client.CoreV1Api(scenario.api).patch_node(gpu_node, {"metadata": {"labels": {"kmm-dtk-test/pool": "gpu"}}})
    _wait_kernels(scenario, {"shared-a": {K84, K86}, "shared-b": {K84, K86}, "gpu-only": {K86}},
                  "a Build for the gpu Module's only kernel")

    # That node reboots into a new kernel (its DTK tag imported first): every Module selecting it gains it.
    move_imagestream_tag(scenario.api, ns, "driver-toolkit", NEW_RHCOS, DTK_411.rsplit(":", 1)[0] + ":" + "c" * 64)
    set_node_versions(scenario.api, gpu_node, NEW_KERNEL, os_image(NEW_RHCOS))
    _wait_kernels(scenario, {"shared-a": {K84, K86, NEW_KERNEL}, "shared-b": {K84, K86, NEW_KERNEL},
                             "gpu-only": {K86, NEW_KERNEL}}, "Builds for the new kernel, once per Module")
    # K86 ran only there: it leaves every Module's status, while K84 (other nodes) stays.
    wait_for(lambda: set(scenario.kernel_status("gpu-only")) == {NEW_KERNEL}, 30, "the gpu Module's status")
    wait_for(lambda: set(scenario.kernel_status("shared-a")) == {K84, NEW_KERNEL}, 30, "a shared Module's status")
