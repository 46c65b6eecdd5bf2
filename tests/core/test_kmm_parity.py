"""Where KMM is right, kmm-dtk computes what KMM computes: image names from ``containerImage`` templates
and the Modules KMM's admission webhook refuses. Each test's docstring says what KMM does."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kmm_dtk.core.kernel import image_name_components, image_name_form
from kmm_dtk.core.module import (
    COMPONENT_VARIABLES,
    ModuleError,
    missing_components,
    parse_module,
    render_image,
    target_for,
    template_variables,
)
from kmm_dtk.core.plan import Action, PlanEntry, Reason, plan_module, snapshot_from_objects

DATA = Path(__file__).resolve().parents[1] / "data"
C = "spec.moduleLoader.container"

RT = "5.14.0-427.13.1.el9_4.x86_64+rt"
RT_IN_NAMES = "5.14.0-427.13.1.el9_4.x86_64_rt"
K64K = "5.14.0-570.73.1.el9_6.aarch64+64k"
K94 = "5.14.0-427.68.1.el9_4.x86_64"
R418 = "418.94.202410260038-0"
DTK_418 = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "1" * 64


def upgrade_cluster() -> dict[str, list[dict[str, Any]]]:
    """The objects of tests/data/upgrade-419-cluster.yaml by kind."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in yaml.safe_load_all((DATA / "upgrade-419-cluster.yaml").read_text()):
        if doc:
            by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def ice_module(**container_overrides: Any) -> dict[str, Any]:
    """The ice Module of the upgrade cluster (v1beta1), with its container section overridden."""
    [raw] = [m for m in upgrade_cluster()["Module"] if m["apiVersion"] == "kmm.sigs.x-k8s.io/v1beta1"]
    raw["spec"]["moduleLoader"]["container"].update(container_overrides)
    return raw


def worker(name: str, kernel: str, rhcos: str = R418) -> dict[str, Any]:
    return {"kind": "Node", "metadata": {"name": name, "labels": {"node-role.kubernetes.io/worker": ""}},
            "status": {"nodeInfo": {"kernelVersion": kernel, "osImage": f"Red Hat Enterprise Linux CoreOS {rhcos}"}}}


def plan(raw: dict[str, Any], *kernels: str) -> dict[str | None, PlanEntry]:
    """Plan one Module on one worker per kernel, all on the 4.18 RHCOS whose DTK tag exists."""
    cluster = upgrade_cluster()
    nodes = [worker(f"worker-{i}", kernel) for i, kernel in enumerate(kernels)]
    snapshot = snapshot_from_objects(nodes, cluster["ImageStream"][0], cluster["ConfigMap"],
                                     ("openshift", "driver-toolkit"))[0]
    return {e.kernel: e for e in plan_module(raw, snapshot)}


def module_wide_error(entries: dict[str | None, PlanEntry]) -> str:
    """The reason of a plan that is one InvalidModule entry for the whole Module (no kernel)."""
    assert list(entries) == [None]
    entry = entries[None]
    assert (entry.action, entry.reason_code) == (Action.ERROR, Reason.INVALID_MODULE)
    return entry.reason


# -- the kernel in image names ----------------------------------------------------------------------

@pytest.mark.parametrize("kernel, written", [
    (RT, RT_IN_NAMES),
    (K64K, "5.14.0-570.73.1.el9_6.aarch64_64k"),
    (K94, K94),
    ("4.18.0-305.49.1.rt7.121.el8_4.x86_64", "4.18.0-305.49.1.rt7.121.el8_4.x86_64"),
    ("6.1.85+", "6.1.85_"),
    ("6.1,2:3/4 5~ü", "6.1_2_3_4_5__"),
])
def test_the_kernel_in_image_names_is_kmms_normalised_form(kernel, written):
    """KMM writes a kernel into image names with every character other than A-Z, a-z, 0-9, '-', '.' and
    '_' replaced by '_', one for one: ``+rt`` becomes ``_rt``."""
    assert image_name_form(kernel) == written


@given(st.text(max_size=40))
def test_the_normalised_form_is_tag_safe_one_for_one_and_stable(kernel):
    """KMM's replacement changes each disallowed character into exactly one '_' and nothing else, so the
    result has the kernel's length, holds only tag characters, and normalising it again changes nothing."""
    written = image_name_form(kernel)
    assert len(written) == len(kernel)
    assert all(c.isascii() and (c.isalnum() or c in "-._") for c in written)
    assert image_name_form(written) == written
    assert all(w == k for w, k in zip(written, kernel, strict=True) if k.isascii() and (k.isalnum() or k in "-._"))


def test_components_are_split_from_the_normalised_kernel():
    """KMM splits the normalised kernel on '.', ',' and '-' for its component variables; normalising has
    already turned every ',' into '_', so only '.' and '-' still split."""
    assert image_name_components(RT) == ["5", "14", "0", "427", "13", "1", "el9_4", "x86_64_rt"]
    assert image_name_components("6,1,2") == ["6_1_2"]


def test_every_kernel_variable_comes_from_the_normalised_kernel():
    """KMM substitutes KERNEL_FULL_VERSION and KERNEL_VERSION with the whole normalised kernel and the
    component variables with its first three parts (KERNEL_XYZ joins them with '.')."""
    m = parse_module(ice_module())
    assert template_variables(m, RT) == {
        "KERNEL_FULL_VERSION": RT_IN_NAMES, "KERNEL_VERSION": RT_IN_NAMES,
        "KERNEL_XYZ": "5.14.0", "KERNEL_X": "5", "KERNEL_Y": "14", "KERNEL_Z": "0",
        "MOD_NAME": "ice-driver", "MOD_NAMESPACE": "ice",
    }


@pytest.mark.parametrize("kernel, tag", [(RT, RT_IN_NAMES), (K64K, "5.14.0-570.73.1.el9_6.aarch64_64k")])
def test_a_plus_kernel_gets_kmms_image_name_not_a_refusal(kernel, tag):
    """With ``containerImage: quay.io/acme/ice:${KERNEL_FULL_VERSION}`` KMM pushes and pulls
    ``quay.io/acme/ice:<normalised kernel>`` on a ``+rt`` or ``+64k`` node; refusing the Module would
    leave those nodes without the driver KMM expects."""
    m = parse_module(ice_module(kernelMappings=[{"regexp": ".*"}]))
    target = target_for(m, kernel)
    assert target is not None
    assert target.image == f"quay.io/acme/ice:{tag}"


def test_the_normalised_kernel_is_valid_in_a_repository_path_too():
    """KMM substitutes the same normalised kernel wherever the template names it, the repository included."""
    mapping = {"regexp": ".*", "containerImage": "quay.io/acme/ice-$KERNEL_VERSION:v1"}
    m = parse_module(ice_module(kernelMappings=[mapping]))
    target = target_for(m, K64K)
    assert target is not None
    assert target.image == "quay.io/acme/ice-5.14.0-570.73.1.el9_6.aarch64_64k:v1"


def test_an_rt_node_builds_kmms_image_with_the_real_kernel_everywhere_else():
    """KMM names the image after the normalised kernel but passes the real kernel to the build
    (KERNEL_VERSION, KERNEL_FULL_VERSION): the Dockerfile needs /lib/modules/<real kernel>. Everything
    else that is about the kernel (plan entry and status key, the DTK looked up through the node's
    RHCOS) keeps the kernel as the node reports it."""
    entries = plan(ice_module(kernelMappings=[{"regexp": r"\.x86_64(\+rt)?$"}]), RT, K94)
    rt = entries[RT]
    assert (rt.action, rt.reason_code) == (Action.BUILD, Reason.BUILD_NEEDED)
    assert rt.image == f"quay.io/acme/ice:{RT_IN_NAMES}"
    assert rt.build_args["KERNEL_VERSION"] == RT
    assert rt.build_args["KERNEL_FULL_VERSION"] == RT
    assert (rt.kernel, rt.rhcos, rt.dtk_image) == (RT, R418, DTK_418)
    assert f"for kernel {RT} " in rt.reason
    assert entries[K94].image == f"quay.io/acme/ice:{K94}"  # a plain kernel is untouched
    assert rt.hash != entries[K94].hash


def test_normalising_changes_nothing_for_kernels_without_such_characters():
    """For the kernels nearly every node runs, KMM's normalised form is the kernel itself: image names,
    and so plan hashes, are what they were before normalising."""
    entries = plan(ice_module(), K94)
    assert entries[K94].image == f"quay.io/acme/ice:{K94}"
    assert entries[K94].build_args["KERNEL_FULL_VERSION"] == K94


# -- images without a tag or digest ---------------------------------------------------------------

@pytest.mark.parametrize("image", [
    "quay.io/acme/ice",
    "quay.io/acme/${MOD_NAME}",
    "quay.io/acme/ice-${KERNEL_FULL_VERSION}",
    "registry.local:5000/acme/ice",
    "ice",
])
def test_a_container_image_without_tag_or_digest_is_an_invalid_module(image):
    """KMM's webhook refuses a Module whose image sets neither a tag nor a digest: every kernel would push
    to the same ``:latest``, each build overwriting the last. It is a fault of the Module, whatever the
    nodes run, so it is one Module-wide entry naming the field. (KMM lets any ':' count, a registry's
    port included; kmm-dtk does not, since a port is not a tag.)"""
    reason = module_wide_error(plan(ice_module(containerImage=image), K94))
    assert reason.startswith(f"invalid Module: {C}.containerImage '{image}' has neither a tag nor a digest")
    assert ("registry's port" in reason) == (":" in image)


def test_a_mapping_image_without_tag_or_digest_names_the_mapping():
    """KMM's webhook checks each mapping's own containerImage the same way."""
    raw = ice_module(kernelMappings=[{"regexp": r"\.x86_64$"},
                                     {"regexp": r"\+64k$", "containerImage": "quay.io/acme/ice-64k"}])
    reason = module_wide_error(plan(raw, K94))  # no node runs a +64k kernel: refused all the same
    assert f"{C}.kernelMappings[1].containerImage 'quay.io/acme/ice-64k' has neither a tag nor a digest" in reason


def test_the_container_image_is_checked_even_when_every_mapping_has_its_own():
    """KMM's webhook checks the container-level containerImage whenever it is set."""
    raw = ice_module(containerImage="quay.io/acme/ice",
                     kernelMappings=[{"regexp": ".*", "containerImage": "quay.io/acme/ice:${KERNEL_XYZ}"}])
    with pytest.raises(ModuleError, match=rf"^{C}\.containerImage 'quay.io/acme/ice' has neither"):
        parse_module(raw)


@pytest.mark.parametrize("image", [
    "quay.io/acme/ice:${KERNEL_FULL_VERSION}",
    "registry.local:5000/acme/ice:v1",
    "quay.io/acme/ice@sha256:" + "a" * 64,
    "ice:v1",
    "[::1]:5000/acme/ice:${KERNEL_XYZ}",
])
def test_a_tag_or_a_digest_is_enough(image):
    """KMM accepts an image with a tag or a digest."""
    assert parse_module(ice_module(containerImage=image)).container_image == image


# -- component variables on kernels of fewer than three components --------------------------------

@pytest.mark.parametrize("variable", COMPONENT_VARIABLES)
def test_a_component_variable_on_a_short_kernel_is_an_error_entry(variable):
    """KMM fails a kernel whose normalised form has fewer than three components ("expected at least
    three components") instead of tagging images with empty parts: ``:${KERNEL_X}.${KERNEL_Y}`` on
    kernel ``6.1`` would otherwise be ``:6.``, the same image for every ``6.*`` kernel. The error is
    that kernel's alone; the other kernels of the Module are planned."""
    raw = ice_module(kernelMappings=[{"regexp": ".*", "containerImage": f"quay.io/acme/ice:v-${{{variable}}}"}])
    entries = plan(raw, "6.1", K94)
    short = entries["6.1"]
    assert (short.action, short.reason_code) == (Action.ERROR, Reason.INVALID_MODULE)
    assert short.reason == (f"{C}.kernelMappings[0].containerImage 'quay.io/acme/ice:v-${{{variable}}}': "
                            f"${{{variable}}} has no value: kernel 6.1 has 2 components separated by '.' or '-', "
                            "expected at least three")
    assert entries[K94].action is Action.BUILD


def test_the_short_kernel_message_shows_the_normalised_form_when_it_differs():
    """The components are counted on KMM's normalised form, where a ',' no longer separates."""
    assert missing_components("6,1,2")["KERNEL_X"] == (
        "kernel 6,1,2 (written 6_1_2 in image names) has 1 component separated by '.' or '-', "
        "expected at least three")
    assert missing_components(K94) == {}


def test_a_short_kernel_without_component_variables_is_planned():
    """KMM fails a short kernel whatever the template; kmm-dtk only when the template needs a component
    that the kernel does not have, since ``${KERNEL_FULL_VERSION}`` names such a kernel unambiguously."""
    entries = plan(ice_module(kernelMappings=[{"regexp": ".*"}]), "6.1")
    assert entries["6.1"].action is Action.BUILD
    assert entries["6.1"].image == "quay.io/acme/ice:6.1"


def test_unknown_variables_stay_refused_and_component_variables_are_listed_as_known():
    """KMM substitutes an unknown variable with nothing; kmm-dtk refuses it (a typo would silently name
    another image). On a short kernel the component variables are still listed among the known ones."""
    m = parse_module(ice_module())
    variables = template_variables(m, "6.1")
    assert set(COMPONENT_VARIABLES).isdisjoint(variables)
    with pytest.raises(ModuleError, match=r"unknown variable \$\{ARCH\} \(known: .*\$\{KERNEL_XYZ\}"):
        render_image("quay.io/acme/ice:${ARCH}", variables, "p", missing_components("6.1"))


def test_a_tag_a_registry_would_refuse_is_still_refused():
    """Normalising keeps tag characters, but a tag can still begin with '-' or exceed 128 characters;
    KMM would push such a name and fail, kmm-dtk says so first."""
    m = parse_module(ice_module(containerImage="quay.io/acme/ice:-${KERNEL_XYZ}"))
    with pytest.raises(ModuleError, match=r"whose tag '-5\.14\.0' a registry would refuse"):
        target_for(m, K94)


# -- mappings with no containerImage anywhere ------------------------------------------------------

def test_a_mapping_with_no_container_image_anywhere_is_module_wide():
    """KMM's webhook refuses a Module with a mapping that has no containerImage when
    spec.moduleLoader.container has none either, before any node is involved: kmm-dtk reports it for the
    Module even when no node's kernel matches that mapping."""
    raw = ice_module(containerImage=None, kernelMappings=[
        {"regexp": r"\.x86_64$", "containerImage": "quay.io/acme/ice:${KERNEL_FULL_VERSION}"},
        {"regexp": r"\+64k$"},
    ])
    reason = module_wide_error(plan(raw, K94))
    assert reason == (f"invalid Module: {C}.kernelMappings[1] has no containerImage and {C}.containerImage is "
                      "not set either: set one of them")


def test_no_container_image_is_reported_when_no_node_is_selected():
    """The webhook's refusals do not depend on nodes, so neither does the entry: not 'no selected nodes'."""
    raw = ice_module(containerImage=None)
    assert "has no containerImage" in module_wide_error(plan(raw))


def test_an_empty_container_image_is_an_unset_one():
    """KMM reads ``containerImage: ""`` as unset: a mapping's empty one falls back to the container's, and
    empty everywhere is the missing-image refusal."""
    fallback = parse_module(ice_module(kernelMappings=[{"regexp": ".*", "containerImage": ""}]))
    target = target_for(fallback, K94)
    assert target is not None and target.image == f"quay.io/acme/ice:{K94}"
    with pytest.raises(ModuleError, match=r"kernelMappings\[0\] has no containerImage"):
        parse_module(ice_module(containerImage="", kernelMappings=[{"regexp": ".*", "containerImage": ""}]))


# -- the webhook's other refusals, already Module-wide -----------------------------------------------

@pytest.mark.parametrize("mapping, problem", [
    ({"literal": K94, "regexp": ".*"}, "set exactly one of literal or regexp"),
    ({"containerImage": "quay.io/acme/ice:v1"}, "set exactly one of literal or regexp"),
    ({"regexp": "(el9"}, f"{C}.kernelMappings[0].regexp '(el9'"),
])
def test_webhook_refusals_are_module_wide_entries(mapping, problem):
    """KMM's webhook refuses a mapping with both or neither of literal and regexp, and a regexp Go
    cannot compile; kmm-dtk gives one InvalidModule entry for the Module, not one per kernel."""
    reason = module_wide_error(plan(ice_module(kernelMappings=[mapping]), K94, RT))
    assert problem in reason


@pytest.mark.parametrize("mapping", [{"literal": "", "regexp": r"\.x86_64$"}, {"literal": K94, "regexp": ""}])
def test_an_empty_literal_or_regexp_is_an_unset_one(mapping):
    """KMM reads an empty literal or regexp as unset, so a mapping with one of them empty and the other
    set is a valid mapping of the other kind (both empty is still neither)."""
    m = parse_module(ice_module(kernelMappings=[mapping]))
    assert m.mapping_for(K94) is not None
    assert m.mapping_for(RT) is None
    with pytest.raises(ModuleError, match="set exactly one of literal or regexp"):
        parse_module(ice_module(kernelMappings=[{"literal": "", "regexp": ""}]))


def test_parsing_never_changes_the_input():
    raw = ice_module(containerImage="")
    before = copy.deepcopy(raw)
    with pytest.raises(ModuleError):
        parse_module(raw)
    assert raw == before
