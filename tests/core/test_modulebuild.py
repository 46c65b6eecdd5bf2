"""The split of a Module into the half KMM loads and the half kmm-dtk builds, and the merge back."""

from __future__ import annotations

import copy

import pytest

from kmm_dtk.core.modulebuild import ModuleBuildError, module_with_builds, split_module
from kmm_dtk.core.plan import Action, ClusterSnapshot, plan_module

BUILD = {"dockerfileConfigMap": {"name": "dockerfile"}, "buildArgs": [{"name": "A", "value": "1"}]}


def module(**container) -> dict:
    body = {"modprobe": {"moduleName": "m"},
            "kernelMappings": [{"regexp": r"^.+\.el9_4\.x86_64$",
                                "containerImage": "q.io/org/m:${KERNEL_FULL_VERSION}"},
                               {"literal": "5.14.0-1.el9_6.x86_64", "containerImage": "q.io/org/m:six"}]}
    body.update(container)
    return {"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module",
            "metadata": {"name": "m", "namespace": "drivers", "uid": "u1", "resourceVersion": "7"},
            "spec": {"selector": {"worker": ""}, "moduleLoader": {"container": body}},
            "status": {"moduleLoader": {"desiredNumber": 3}}}


def module_build(**spec) -> dict:
    return {"apiVersion": "kmm-dtk.io/v1alpha1", "kind": "ModuleBuild",
            "metadata": {"name": "m", "namespace": "drivers"}, "spec": {"moduleName": "m", **spec}}


def test_split_then_merge_gives_back_the_module_with_build_sections():
    original = module(build=BUILD)
    original["spec"]["moduleLoader"]["container"]["kernelMappings"][1]["build"] = {"buildArgs": [{"name": "B",
                                                                                                  "value": "2"}]}
    loaded, built = split_module(original)
    assert "build" not in loaded["spec"]["moduleLoader"]["container"]
    assert all("build" not in m for m in loaded["spec"]["moduleLoader"]["container"]["kernelMappings"])
    assert "status" not in loaded and "uid" not in loaded["metadata"] and "resourceVersion" not in loaded["metadata"]
    assert built["spec"] == {"moduleName": "m", "build": BUILD,
                             "kernelMappings": [{"literal": "5.14.0-1.el9_6.x86_64",
                                                 "build": {"buildArgs": [{"name": "B", "value": "2"}]}}]}
    assert built["metadata"] == {"name": "m", "namespace": "drivers"}
    merged = module_with_builds({**loaded, "metadata": original["metadata"]}, built)
    expected = copy.deepcopy(original)
    expected.pop("status")
    merged.pop("status", None)
    assert merged == expected


def test_the_merged_module_plans_like_the_module_with_its_own_build_sections():
    snapshot = ClusterSnapshot(nodes_by_kernel={}, kernels={}, dtk=None, dtk_ref=("openshift", "driver-toolkit"),
                               configmaps={})
    own = plan_module(module(build=BUILD), snapshot)
    merged = plan_module(module_with_builds(module(), module_build(build=BUILD)), snapshot)
    assert own == merged
    assert all(e.action is not Action.BUILD for e in own)  # no nodes: nothing to build, the same way


@pytest.mark.parametrize("spec, problem", [
    ({}, "spec.build or spec.kernelMappings[].build is required"),
    ({"kernelMappings": [{"build": BUILD}]}, "spec.kernelMappings[0]: needs the regexp or literal"),
    ({"kernelMappings": [{"regexp": "^nope$", "build": BUILD}]}, "spec.kernelMappings[0]: Module drivers/m has no "
                                                                  "kernel mapping with regexp '^nope$'"),
    ({"kernelMappings": [{"literal": "5.14.0-1.el9_6.x86_64"}]}, "spec.kernelMappings[0].build is required"),
])
def test_a_module_build_that_cannot_apply_names_the_field(spec, problem):
    with pytest.raises(ModuleBuildError) as refused:
        module_with_builds(module(), module_build(**spec))
    assert problem in str(refused.value)


def test_a_module_with_build_sections_of_its_own_is_kmms_to_build():
    with pytest.raises(ModuleBuildError, match="has build sections of its own, so KMM builds it"):
        module_with_builds(module(build=BUILD), module_build(build=BUILD))


def test_split_refuses_what_it_cannot_move():
    with pytest.raises(ModuleBuildError, match="no build section"):
        split_module(module())
    unmatched = module()
    unmatched["spec"]["moduleLoader"]["container"]["kernelMappings"].append({"containerImage": "q/x:1",
                                                                              "build": BUILD})
    with pytest.raises(ModuleBuildError, match=r"kernelMappings\[2\] has a build section but neither regexp"):
        split_module(unmatched)
