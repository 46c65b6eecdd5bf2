"""The build plan (kmm_dtk.core.plan): what to build for each Module and kernel."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from kmm_dtk.core.plan import (
    Action,
    Reason,
    content_hash,
    plan_cluster,
    plan_module,
    snapshot_from_objects,
)
from tests.support.design import DTK_410 as IMAGE_410
from tests.support.design import DTK_411 as IMAGE_411
from tests.support.design import K84, K86, R410, R411

DATA = Path(__file__).resolve().parents[1] / "data"
DTK_REF = ("openshift", "driver-toolkit")

K96 = "5.14.0-570.27.1.el9_6.x86_64"
TARGET = "image-registry.openshift-image-registry.svc:5000/simple-kmod/simple-kmod"

DOCKERFILE = """\
ARG DTK-AUTO
FROM ${DTK-AUTO} AS builder
ARG KERNEL_VERSION
WORKDIR /build
RUN git clone https://github.com/rh-ecosystem-edge/kernel-module-management.git
WORKDIR /build/kernel-module-management/ci/kmm-kmod
RUN KERNEL_SRC_DIR=/lib/modules/${KERNEL_VERSION}/build make all

FROM registry.redhat.io/ubi9/ubi-minimal
ARG KERNEL_VERSION
RUN microdnf install -y kmod && microdnf clean all
COPY --from=builder /build/kernel-module-management/ci/kmm-kmod/kmm_ci_a.ko /opt/lib/modules/${KERNEL_VERSION}/
RUN depmod -b /opt ${KERNEL_VERSION}
"""

PLAIN_DOCKERFILE = """\
FROM quay.io/acme/driver-base:9.6
ARG KERNEL_VERSION
RUN make -C /lib/modules/${KERNEL_VERSION}/build M=/src modules
"""


def node(name, kernel, rhcos_text, role="worker"):
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, f"node-role.kubernetes.io/{role}": ""}},
        "status": {"nodeInfo": {"kernelVersion": kernel, "osImage": rhcos_text}},
    }


def design_nodes():
    """The design document's cluster mid-upgrade: two workers per RHCOS build, one kernel each."""
    return [
        node("worker-0", K84, f"Red Hat Enterprise Linux CoreOS {R410} (Ootpa)"),
        node("worker-1", K84, f"Red Hat Enterprise Linux CoreOS {R410} (Ootpa)"),
        node("worker-2", K86, f"Red Hat Enterprise Linux CoreOS {R411} (Ootpa)"),
        node("worker-3", K86, f"Red Hat Enterprise Linux CoreOS {R411} (Ootpa)"),
        node("master-0", K86, f"Red Hat Enterprise Linux CoreOS {R411} (Ootpa)", role="master"),
    ]


def design_stream():
    return yaml.safe_load((DATA / "design-imagestream.yaml").read_text())


def configmap(name="simple-kmod-dockerfile", namespace="simple-kmod", dockerfile=DOCKERFILE, data=None):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data if data is not None else {"dockerfile": dockerfile}}


def module(**container_overrides):
    container = {
        "modprobe": {"moduleName": "kmm_ci_a"},
        "kernelMappings": [{
            "regexp": r"^.+\.el8_\d+\.x86_64$",
            "containerImage": TARGET + ":${KERNEL_FULL_VERSION}",
            "build": {
                "dockerfileConfigMap": {"name": "simple-kmod-dockerfile"},
                "buildArgs": [{"name": "KMOD_VERSION", "value": "1.0.2"}],
            },
        }],
    }
    container.update(container_overrides)
    return {
        "apiVersion": "kmm.sigs.x-k8s.io/v1beta1",
        "kind": "Module",
        "metadata": {"name": "simple-kmod", "namespace": "simple-kmod"},
        "spec": {
            "selector": {"node-role.kubernetes.io/worker": ""},
            "imageRepoSecret": {"name": "registry-push"},
            "moduleLoader": {"container": container},
        },
    }


def snapshot(nodes=None, stream="design", configmaps=None):
    return snapshot_from_objects(
        design_nodes() if nodes is None else nodes,
        design_stream() if stream == "design" else stream,
        [configmap()] if configmaps is None else configmaps,
        DTK_REF,
    )[0]


def by_kernel(entries):
    return {e.kernel: e for e in entries}


# -- the design scenario ----------------------------------------------------------------------

def test_design_scenario_builds_each_kernel_on_its_status_digest():
    entries = plan_module(module(), snapshot())
    assert [e.kernel for e in entries] == [K84, K86]
    assert all(e.action is Action.BUILD and e.reason_code is Reason.BUILD_NEEDED for e in entries)
    e84, e86 = by_kernel(entries)[K84], by_kernel(entries)[K86]
    assert (e84.rhcos, e84.dtk_image) == (R410, IMAGE_410)
    assert (e86.rhcos, e86.dtk_image) == (R411, IMAGE_411)
    assert e84.dockerfile.splitlines()[:2] == ["ARG DTK_AUTO", f"FROM {IMAGE_410} AS builder"]
    assert e86.dockerfile.splitlines()[:2] == ["ARG DTK_AUTO", f"FROM {IMAGE_411} AS builder"]
    for e in entries:
        assert "FROM registry.redhat.io/ubi9/ubi-minimal" in e.dockerfile.splitlines()
        assert "DTK-AUTO" not in e.dockerfile
        assert e.image == f"{TARGET}:{e.kernel}"
        assert e.image_repo_secret == "registry-push"
        assert e.build_selector == {"node-role.kubernetes.io/worker": ""}
        assert e.module == "simple-kmod/simple-kmod"
        assert len(e.hash) == 20 and int(e.hash, 16) >= 0
    assert e84.hash != e86.hash


def test_design_scenario_build_args():
    e84 = by_kernel(plan_module(module(), snapshot()))[K84]
    assert dict(e84.build_args) == {
        "KMOD_VERSION": "1.0.2",
        "KERNEL_VERSION": K84,
        "KERNEL_FULL_VERSION": K84,
        "MOD_NAME": "simple-kmod",
        "MOD_NAMESPACE": "simple-kmod",
        "DTK_AUTO": IMAGE_410,
    }


def test_our_build_args_win_over_user_args_of_the_same_name():
    raw = module()
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["build"]["buildArgs"] = [
        {"name": "KERNEL_VERSION", "value": "4.18.0-0.el8.x86_64"},
        {"name": "KERNEL_FULL_VERSION", "value": "wrong"},
        {"name": "MOD_NAME", "value": "other"},
        {"name": "MOD_NAMESPACE", "value": "other-ns"},
        {"name": "DTK_AUTO", "value": "quay.io/acme/my-own-dtk:latest"},
        {"name": "KMOD_VERSION", "value": "1.0.2"},
    ]
    args = by_kernel(plan_module(raw, snapshot()))[K86].build_args
    assert args["KERNEL_VERSION"] == K86
    assert args["KERNEL_FULL_VERSION"] == K86
    assert args["MOD_NAME"] == "simple-kmod"
    assert args["MOD_NAMESPACE"] == "simple-kmod"
    assert args["DTK_AUTO"] == IMAGE_411
    assert args["KMOD_VERSION"] == "1.0.2"


def test_secrets_flow_into_the_entry():
    raw = module(build={"secrets": [{"name": "rh-subscription"}]})
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["build"]["secrets"] = [{"name": "git-token"}]
    entry = plan_module(raw, snapshot())[0]
    assert entry.secrets == ("rh-subscription", "git-token")


def test_to_json_shape():
    data = plan_module(module(), snapshot())[0].to_json()
    assert data["action"] == "build"
    assert data["reasonCode"] == "BuildNeeded"
    assert data["dtkImage"] == IMAGE_410
    assert data["rhcos"] == R410
    assert list(data["buildArgs"]) == sorted(data["buildArgs"])
    assert data["dockerfile"].splitlines()[1] == f"FROM {IMAGE_410} AS builder"


# -- the content hash -------------------------------------------------------------------------

def hashes(raw=None, **snap):
    return {e.kernel: e.hash for e in plan_module(raw or module(), snapshot(**snap))}


def test_hash_is_deterministic():
    assert hashes() == hashes()


def test_hash_changes_when_the_digest_behind_a_tag_moves():
    before = hashes()
    stream = design_stream()
    moved = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "f" * 64
    for tag in stream["status"]["tags"]:
        if tag["tag"] == R410:
            tag["items"].insert(0, {"created": "2022-08-03T10:00:00Z", "dockerImageReference": moved,
                                    "generation": 3, "image": "sha256:" + "f" * 64})
    after = hashes(stream=stream)
    assert after[K84] != before[K84]
    assert after[K86] == before[K86]
    assert by_kernel(plan_module(module(), snapshot(stream=stream)))[K84].dtk_image == moved


def test_hash_changes_when_the_dockerfile_changes():
    before = hashes()
    changed = DOCKERFILE.replace("make all", "make all V=1")
    after = hashes(configmaps=[configmap(dockerfile=changed)])
    assert after[K84] != before[K84] and after[K86] != before[K86]


def test_hash_changes_with_image_rebuild_trigger_generation():
    raw = module()
    h0 = hashes(raw)
    raw["spec"]["imageRebuildTriggerGeneration"] = 1
    h1 = hashes(raw)
    raw["spec"]["imageRebuildTriggerGeneration"] = 2
    h2 = hashes(raw)
    assert len({h0[K84], h1[K84], h2[K84]}) == 3


def test_hash_changes_with_user_build_args_and_target_image():
    raw = module()
    base = hashes(raw)
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["build"]["buildArgs"][0]["value"] = "1.0.3"
    assert hashes(raw)[K84] != base[K84]
    raw = module()
    mapping = raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]
    mapping["containerImage"] = "quay.io/acme/kmod:${KERNEL_FULL_VERSION}"
    assert hashes(raw)[K84] != base[K84]


def test_hash_stays_when_an_unrelated_node_is_added():
    before = hashes()
    nodes = design_nodes() + [
        node("worker-4", K84, f"Red Hat Enterprise Linux CoreOS {R410} (Ootpa)"),  # same kernel, same RHCOS
        node("infra-0", K96, "Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)", role="infra"),
        node("master-1", K86, f"Red Hat Enterprise Linux CoreOS {R411} (Ootpa)", role="master"),
    ]
    after = hashes(nodes=nodes)
    assert after == before


def test_hash_ignores_map_order_of_build_args_and_secrets():
    a = content_hash("FROM x", {"A": "1", "B": "2"}, ["s1", "s2"], "img:1", None)
    b = content_hash("FROM x", {"B": "2", "A": "1"}, ["s2", "s1"], "img:1", None)
    assert a == b
    assert content_hash("FROM x", {"A": "1"}, [], "img:1", None) != \
        content_hash("FROM x", {"A": "2"}, [], "img:1", None)


def test_dockerfile_without_placeholder_does_not_depend_on_the_dtk():
    cms = [configmap(dockerfile=PLAIN_DOCKERFILE)]
    entries = plan_module(module(), snapshot(configmaps=cms))
    assert [e.action for e in entries] == [Action.BUILD, Action.BUILD]
    for e in entries:
        assert e.dtk_image is None
        assert "DTK_AUTO" not in e.build_args
        assert e.dockerfile == PLAIN_DOCKERFILE
        assert e.to_json()["dtkImage"] is None
    before = hashes(configmaps=cms)
    stream = design_stream()
    for tag in stream["status"]["tags"]:
        tag["items"][0]["dockerImageReference"] = "quay.io/moved/dtk@sha256:" + "e" * 64
    assert hashes(configmaps=cms, stream=stream) == before
    # Not even the ImageStream is needed.
    assert hashes(configmaps=cms, stream=None) == before


# -- skips and errors, each with a reason -------------------------------------------------------

def test_no_kernel_mapping_is_a_skip():
    raw = module()
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = r"\.el8_4\."
    entries = by_kernel(plan_module(raw, snapshot()))
    assert entries[K84].action is Action.BUILD
    skip = entries[K86]
    assert skip.action is Action.SKIP and skip.reason_code is Reason.NO_KERNEL_MAPPING
    assert K86 in skip.reason
    assert skip.rhcos == R411
    assert skip.hash is None and skip.dockerfile is None


def test_no_build_section_is_a_skip():
    raw = module()
    del raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["build"]
    entries = plan_module(raw, snapshot())
    assert [(e.action, e.reason_code) for e in entries] == [(Action.SKIP, Reason.NO_BUILD)] * 2
    assert entries[0].image == f"{TARGET}:{K84}"
    assert "dockerfileConfigMap" in entries[0].reason


def test_missing_configmap_is_an_error():
    entries = plan_module(module(), snapshot(configmaps=[configmap(namespace="other-namespace")]))
    for e in entries:
        assert e.action is Action.ERROR and e.reason_code is Reason.MISSING_CONFIGMAP
        assert "simple-kmod/simple-kmod-dockerfile" in e.reason
        assert "kernelMappings[0].build.dockerfileConfigMap" in e.reason
        assert e.image == f"{TARGET}:{e.kernel}"


def test_missing_configmap_named_at_container_level():
    raw = module(build={"dockerfileConfigMap": {"name": "shared-dockerfile"}})
    del raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["build"]
    e = plan_module(raw, snapshot())[0]
    assert e.reason_code is Reason.MISSING_CONFIGMAP
    assert "simple-kmod/shared-dockerfile" in e.reason
    assert "spec.moduleLoader.container.build.dockerfileConfigMap" in e.reason


@pytest.mark.parametrize("data", [{"Dockerfile": DOCKERFILE}, {}, {"dockerfile": "   \n"}])
def test_missing_dockerfile_key_is_an_error(data):
    entries = plan_module(module(), snapshot(configmaps=[configmap(data=data)]))
    for e in entries:
        assert e.action is Action.ERROR and e.reason_code is Reason.MISSING_DOCKERFILE_KEY
        assert "'dockerfile'" in e.reason
    if "Dockerfile" in data:
        assert "Dockerfile" in entries[0].reason  # lists the keys that are there


def test_bad_regexp_is_one_invalid_module_entry():
    raw = module()
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = r"^.+(?<!rt)\.x86_64$"
    entries = plan_module(raw, snapshot())
    assert len(entries) == 1
    e = entries[0]
    assert (e.action, e.reason_code, e.kernel) == (Action.ERROR, Reason.INVALID_MODULE, None)
    assert e.module == "simple-kmod/simple-kmod"
    assert "kernelMappings[0].regexp" in e.reason


def test_unknown_template_variable_is_a_per_kernel_error():
    raw = module()
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["containerImage"] = TARGET + ":${KERNEL_RELEASE}"
    entries = plan_module(raw, snapshot())
    assert [(e.kernel, e.reason_code) for e in entries] == [(K84, Reason.INVALID_MODULE), (K86, Reason.INVALID_MODULE)]
    assert "${KERNEL_RELEASE}" in entries[0].reason


def test_missing_dtk_tag_is_an_error_naming_version_and_stream():
    nodes = design_nodes() + [node("worker-5", K96, "Red Hat Enterprise Linux CoreOS 9.6.20260616-0 (Plow)")]
    raw = module()
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = r"^.+\.el[89]_\d+\.x86_64$"
    e = by_kernel(plan_module(raw, snapshot(nodes=nodes)))[K96]
    assert e.action is Action.ERROR and e.reason_code is Reason.NO_DTK_TAG
    assert "9.6.20260616-0" in e.reason
    assert "openshift/driver-toolkit" in e.reason
    assert R410 in e.reason and R411 in e.reason
    assert e.rhcos == "9.6.20260616-0"
    assert e.hash is None


def test_missing_imagestream_is_an_error():
    entries = plan_module(module(), snapshot(stream=None))
    assert [(e.action, e.reason_code) for e in entries] == [(Action.ERROR, Reason.NO_DTK_IMAGESTREAM)] * 2
    assert "openshift/driver-toolkit" in entries[0].reason
    assert "not found" in entries[0].reason


def test_unparseable_os_image_on_the_only_node_of_a_kernel():
    nodes = design_nodes() + [node("worker-9", K96, "Red Hat Enterprise Linux CoreOS (Plow)")]
    raw = module()
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = r"x86_64$"
    entries = by_kernel(plan_module(raw, snapshot(nodes=nodes)))
    e = entries[K96]
    assert e.action is Action.ERROR and e.reason_code is Reason.UNKNOWN_RHCOS
    assert e.rhcos is None
    assert "worker-9" in e.reason and "osImage" in e.reason
    assert entries[K84].action is Action.BUILD and entries[K86].action is Action.BUILD


def test_unparseable_os_image_is_fine_when_another_node_of_the_kernel_reports_one():
    nodes = design_nodes() + [node("worker-9", K84, "Red Hat Enterprise Linux CoreOS (Ootpa)")]
    e = by_kernel(plan_module(module(), snapshot(nodes=nodes)))[K84]
    assert e.action is Action.BUILD and e.rhcos == R410


def test_unparseable_os_image_does_not_matter_without_placeholder():
    nodes = [node("worker-9", K84, "Red Hat Enterprise Linux CoreOS (Ootpa)")]
    e = plan_module(module(), snapshot(nodes=nodes, configmaps=[configmap(dockerfile=PLAIN_DOCKERFILE)]))[0]
    assert e.action is Action.BUILD and e.dtk_image is None


def test_module_selecting_no_node():
    raw = module()
    raw["spec"]["selector"] = {"node-role.kubernetes.io/gpu": ""}
    entries = plan_module(raw, snapshot())
    assert len(entries) == 1
    e = entries[0]
    assert (e.action, e.reason_code, e.kernel) == (Action.SKIP, Reason.NO_NODES, None)
    assert "node-role.kubernetes.io/gpu" in e.reason


def test_only_kernels_of_selected_nodes_are_planned():
    nodes = design_nodes() + [node("master-1", K96, "Red Hat Enterprise Linux CoreOS 9.6.20250715-0 (Plow)",
                                    role="master")]
    raw = module()
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = ".*"
    assert [e.kernel for e in plan_module(raw, snapshot(nodes=nodes))] == [K84, K86]


def test_arg_only_placeholder_passes_the_dtk_as_a_build_arg():
    # ARG DTK_AUTO with a DTK: renders fine, FROM untouched, DTK passed as a build arg.
    text = "ARG DTK_AUTO\nFROM quay.io/acme/base:1\n"
    e = plan_module(module(), snapshot(configmaps=[configmap(dockerfile=text)]))[0]
    assert e.action is Action.BUILD
    assert e.build_args["DTK_AUTO"] == IMAGE_410


def test_plan_module_does_not_mutate_its_input():
    raw = module()
    before = copy.deepcopy(raw)
    plan_module(raw, snapshot())
    assert raw == before


# -- whole cluster ------------------------------------------------------------------------------

def test_plan_cluster_sorts_modules_and_reports_kernels():
    second = module()
    second["metadata"] = {"name": "a-module", "namespace": "simple-kmod"}
    third = module()
    third["metadata"] = {"name": "broken", "namespace": "aaa"}
    del third["spec"]["selector"]
    nodes = design_nodes() + [{"metadata": {"name": "bad-node"}, "status": {"nodeInfo": {}}}]
    snap, problems = snapshot_from_objects(nodes, design_stream(), [configmap()], DTK_REF)
    plan = plan_cluster([module(), second, third], snap, problems)
    assert [e.module for e in plan.entries] == [
        "aaa/broken", "simple-kmod/a-module", "simple-kmod/a-module", "simple-kmod/simple-kmod",
        "simple-kmod/simple-kmod",
    ]
    assert plan.entries[0].reason_code is Reason.INVALID_MODULE
    assert "spec.selector is required" in plan.entries[0].reason
    assert plan.kernels == {K84: R410, K86: R411}
    assert len(plan.node_problems) == 1 and "bad-node" in plan.node_problems[0]
    data = plan.to_json()
    assert set(data) == {"kernels", "builds", "nodeProblems"}
    assert len(data["builds"]) == 5


def test_absurd_repeat_count_is_an_invalid_module_entry():
    raw = module()
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = "el8_{" + "9" * 5000 + "}"
    entries = plan_module(raw, snapshot())
    assert [(e.action, e.reason_code) for e in entries] == [(Action.ERROR, Reason.INVALID_MODULE)]


def test_an_older_rhcos_of_the_same_kernel_stands_in_for_a_missing_tag():
    # A z-stream moved worker-2 to an RHCOS whose DTK tag is not imported yet, same kernel.
    newer = "411.86.202208031059-0"
    nodes = design_nodes()
    nodes[2] = node("worker-2", K86, f"Red Hat Enterprise Linux CoreOS {newer} (Ootpa)")
    e = by_kernel(plan_module(module(), snapshot(nodes=nodes)))[K86]
    assert e.action is Action.BUILD
    assert e.rhcos == R411 and e.dtk_image == IMAGE_411
    assert f"RHCOS {newer} has no DTK tag yet; {R411} runs the same kernel" in e.reason
    assert f"FROM {IMAGE_411} AS builder" in e.dockerfile


def test_missing_tag_lists_present_tags_in_version_order():
    stream = design_stream()
    stream["status"]["tags"].append({"tag": "9.6.20250715-0", "items": [
        {"dockerImageReference": "quay.io/x/dtk@sha256:" + "9" * 64, "image": "sha256:" + "9" * 64}]})
    nodes = [node("worker-9", K96, "Red Hat Enterprise Linux CoreOS 10.2.20260328-0 (Coughlan)")]
    raw = module()
    raw["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["regexp"] = ".*"
    e = plan_module(raw, snapshot(nodes=nodes, stream=stream))[0]
    assert e.reason_code is Reason.NO_DTK_TAG
    assert f"{R410}, {R411}, 9.6.20250715-0" in e.reason


# -- kernels ahead of an upgrade ----------------------------------------------------------------

K88 = "4.18.0-477.10.1.el8_8.x86_64"
K88_RT = "4.18.0-477.10.1.rt7.274.el8_8.x86_64"
R413 = "413.86.202307250857-0"
DTK_413 = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "13" * 32
RELEASE = "quay.io/openshift-release-dev/ocp-release@sha256:" + "ab" * 32


def upcoming_snapshot(nodes=None, upcoming=None):
    from dataclasses import replace

    from kmm_dtk.core.plan import UpcomingKernel
    upcoming = upcoming if upcoming is not None else (
        UpcomingKernel(K88, R413, DTK_413, RELEASE),
        UpcomingKernel(K88_RT, R413, DTK_413, RELEASE),
    )
    return replace(snapshot(nodes), upcoming=tuple(upcoming))


def test_upcoming_kernel_is_planned_on_the_release_dtk_before_any_node_runs_it():
    entries = by_kernel(plan_module(module(), upcoming_snapshot()))
    assert sorted(entries) == [K84, K86, K88]  # no real-time node here: the RT kernel is not planned
    e88 = entries[K88]
    assert e88.action is Action.BUILD
    assert (e88.rhcos, e88.dtk_image, e88.release) == (R413, DTK_413, RELEASE)
    assert e88.dockerfile.splitlines()[1] == f"FROM {DTK_413} AS builder"
    assert f"ahead of the upgrade to {RELEASE}" in e88.reason
    assert e88.to_json()["release"] == RELEASE
    assert entries[K84].release is None and "release" not in entries[K84].to_json()


def test_upcoming_kernel_has_the_hash_it_will_have_once_nodes_run_it():
    """Once nodes boot into the kernel and the ImageStream has the release's DTK tag, the plan is the
    same Build: nothing is rebuilt after the upgrade."""
    ahead = by_kernel(plan_module(module(), upcoming_snapshot()))[K88]
    stream = design_stream()
    stream["spec"]["tags"].append({"name": R413, "from": {"kind": "DockerImage", "name": DTK_413}})
    stream["status"]["tags"].append(
        {"tag": R413, "items": [{"dockerImageReference": DTK_413, "image": "sha256:" + "13" * 32}]})
    after = by_kernel(plan_module(module(), snapshot(
        design_nodes() + [node("worker-9", K88, f"Red Hat Enterprise Linux CoreOS {R413} (Ootpa)")], stream)))[K88]
    assert after.release is None
    assert (after.hash, after.dtk_image) == (ahead.hash, ahead.dtk_image)


def test_realtime_nodes_move_to_the_release_rt_kernel():
    rt = node("worker-rt", "4.18.0-372.16.1.rt7.173.el8_6.x86_64", f"Red Hat Enterprise Linux CoreOS {R411} (Ootpa)")
    entries = by_kernel(plan_module(module(), upcoming_snapshot(design_nodes() + [rt])))
    assert K88 in entries and K88_RT in entries
    assert entries[K88_RT].dtk_image == DTK_413


def test_upcoming_kernel_not_planned_for_a_module_selecting_no_node():
    m = module()
    m["spec"]["selector"] = {"gpu": "true"}
    entries = plan_module(m, upcoming_snapshot())
    assert [e.reason_code for e in entries] == [Reason.NO_NODES]


def test_a_running_kernel_ignores_its_upcoming_entry():
    from kmm_dtk.core.plan import UpcomingKernel
    snap = upcoming_snapshot(upcoming=[UpcomingKernel(K86, R413, DTK_413, RELEASE)])
    e86 = by_kernel(plan_module(module(), snap))[K86]
    assert (e86.rhcos, e86.dtk_image, e86.release) == (R411, IMAGE_411, None)


def test_upcoming_kernels_follow_the_architecture_and_variant_of_the_selected_nodes():
    from kmm_dtk.core.plan import UpcomingKernel
    arm = "4.18.0-477.10.1.el8_8.aarch64"
    snap = upcoming_snapshot(upcoming=[UpcomingKernel(K88, R413, DTK_413, RELEASE),
                                       UpcomingKernel(arm, R413, DTK_413, RELEASE),
                                       UpcomingKernel(arm + "+64k", R413, DTK_413, RELEASE)])
    assert sorted(by_kernel(plan_module(module(), snap))) == [K84, K86, K88]  # x86_64 nodes only
    arm_node = node("worker-arm", "4.18.0-372.16.1.el8_6.aarch64+64k",
                    f"Red Hat Enterprise Linux CoreOS {R411} (Ootpa)")
    snap = replace_nodes(snap, design_nodes() + [arm_node])
    assert arm + "+64k" in by_kernel(plan_module(module(), snap))
    assert arm not in by_kernel(plan_module(module(), snap))  # no 4k-page arm node


def replace_nodes(snap, nodes):
    from dataclasses import replace
    return replace(snapshot(nodes), upcoming=snap.upcoming)


@pytest.mark.parametrize("data, fragment", [
    ({1: "x"}, "data key 1 is not a string (int"),
    ({"dockerfile": DOCKERFILE, True: "x"}, "data key True is not a string (bool"),
    ({"dockerfile": 12}, "data['dockerfile'] is not a string (int"),
    ({"dockerfile": DOCKERFILE, "other": ["a"]}, "data['other'] is not a string (list"),
    (["dockerfile"], "data is not a map of strings (list)"),
    ("FROM x", "data is not a map of strings (str)"),
])
def test_a_configmap_that_is_not_a_map_of_strings_is_an_error_naming_it(data, fragment):
    """What a hand-edited dump can hold (YAML ``data: {1: x}``): an error entry per kernel naming the
    ConfigMap and the key, never a crash while listing its keys."""
    entries = plan_module(module(), snapshot(configmaps=[configmap(data=data)]))
    assert entries
    for e in entries:
        assert e.action is Action.ERROR and e.reason_code is Reason.INVALID_CONFIGMAP
        assert "ConfigMap simple-kmod/simple-kmod-dockerfile named by" in e.reason and fragment in e.reason
