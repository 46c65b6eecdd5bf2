"""Pure parts of the operator: Build objects and names, Module status, Events on transitions."""

from __future__ import annotations

import re

import pytest

from kmm_dtk.core.plan import Action, PlanEntry, Reason
from kmm_dtk.operator.builds import (
    ARCH_OVERRIDDEN_ANNOTATION,
    build_labels,
    build_name,
    build_object,
    build_owner_key,
    build_projection,
    from_images,
    module_label_value,
)
from kmm_dtk.operator.status import conditions, kernel_record, transition_events

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

MODULE = {"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module",
          "metadata": {"name": "simple-kmod", "namespace": "drivers", "uid": "1234"}}


def entry(kernel="5.14.0-427.68.1.el9_4.x86_64+rt", **kw) -> PlanEntry:
    values = dict(module="drivers/simple-kmod", kernel=kernel, action=Action.BUILD, reason_code=Reason.BUILD_NEEDED,
                  reason="build", rhcos="418.94.202410260038-0", dtk_image="quay.io/x/dtk@sha256:" + "a" * 64,
                  image="registry.example.com/drivers/kmod:5.14.0", build_args={"KERNEL_VERSION": kernel},
                  secrets=("sign",), dockerfile="FROM quay.io/x/dtk@sha256:" + "a" * 64, hash="0123456789abcdef0123",
                  image_repo_secret="push", build_selector={"node-role.kubernetes.io/worker": ""})
    values.update(kw)
    return PlanEntry(**values)


@pytest.mark.parametrize("module_name", ["simple-kmod", "a" * 253, "x.y-" + "z" * 60, "m"])
def test_build_names_are_short_valid_and_deterministic(module_name):
    name = build_name(module_name, "5.14.0-427.68.1.el9_4.x86_64+rt", "0123456789abcdef0123")
    assert len(name) <= 63 and DNS_LABEL.match(name)
    assert name == build_name(module_name, "5.14.0-427.68.1.el9_4.x86_64+rt", "0123456789abcdef0123")
    assert name != build_name(module_name, "5.14.0-427.68.1.el9_4.x86_64", "0123456789abcdef0123")
    assert name != build_name(module_name, "5.14.0-427.68.1.el9_4.x86_64+rt", "f123456789abcdef0123")


def test_labels_are_valid_label_values_even_for_plus_kernels_and_long_names():
    for value in build_labels("b" * 200, "5.14.0-570.73.1.el9_6.aarch64+64k", "0123456789abcdef0123").values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert module_label_value("simple-kmod") == "simple-kmod"


def test_build_object_carries_everything_the_build_needs():
    build = build_object(entry(), MODULE)
    assert build["spec"]["output"]["pushSecret"] == {"name": "push"}
    strategy = build["spec"]["strategy"]["dockerStrategy"]
    assert "pullSecret" not in strategy, "the DTK is pulled with the builder's and the node's credentials"
    assert strategy["mountTrustedCA"] is True
    assert build["metadata"]["annotations"]["kmm-dtk.io/kernel"] == "5.14.0-427.68.1.el9_4.x86_64+rt"
    assert build["metadata"]["ownerReferences"][0]["uid"] == "1234"
    assert build_owner_key(build) == "drivers/simple-kmod"
    labels = {label["name"]: label["value"] for label in build["spec"]["output"]["imageLabels"]}
    assert labels["kmm-dtk.io/hash"] == "0123456789abcdef0123"
    no_secret = build_object(entry(image_repo_secret=None, secrets=()), MODULE)
    assert "pushSecret" not in no_secret["spec"]["output"]
    assert "volumes" not in no_secret["spec"]["strategy"]["dockerStrategy"]


INTERNAL = "image-registry.openshift-image-registry.svc:5000"
RELEASE_DTK = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "b" * 64


def _strategy(**kw) -> dict:
    return build_object(entry(**kw), MODULE)["spec"]["strategy"]["dockerStrategy"]


def test_internal_registry_base_keeps_the_builder_service_accounts_token():
    """The KMM failure: imageRepoSecret set, a FROM on the internal registry. As the pullSecret it
    would replace the builder ServiceAccount's dockercfg secret, the only credential that registry
    takes; it stays the push secret only."""
    dockerfile = (f"FROM {RELEASE_DTK} AS builder\nRUN make\n"
                  f"FROM {INTERNAL}/drivers/base:9.4\nCOPY --from=builder /a /b\n")
    for image in (f"{INTERNAL}/drivers/kmod:5.14.0", "quay.io/acme/kmod:5.14.0"):
        build = build_object(entry(image=image, dockerfile=dockerfile, dtk_image=RELEASE_DTK), MODULE)
        assert "pullSecret" not in build["spec"]["strategy"]["dockerStrategy"], image
        assert build["spec"]["output"]["pushSecret"] == {"name": "push"}


def test_global_pull_secret_serves_the_dtk_without_the_modules_secret():
    """The DTK on quay.io/openshift-release-dev comes through the node's credentials (the global pull
    secret), also when the driver image goes to quay.io: the Module's secret for quay.io would
    override the node's for the DTK."""
    dockerfile = f"FROM {RELEASE_DTK}\nRUN make\n"
    assert "pullSecret" not in _strategy(dockerfile=dockerfile, dtk_image=RELEASE_DTK,
                                         image="registry.example.com/drivers/kmod:5.14.0")
    assert "pullSecret" not in _strategy(dockerfile=dockerfile, dtk_image=RELEASE_DTK,
                                         image="quay.io/acme/kmod:5.14.0")
    assert "pullSecret" not in _strategy(dockerfile=dockerfile, dtk_image=RELEASE_DTK, image_repo_secret=None)


def test_a_base_on_the_push_registry_is_pulled_with_image_repo_secret():
    dockerfile = (f"ARG BASE=registry.example.com/acme/ubi:9\nFROM {RELEASE_DTK} AS builder\n"
                  "FROM ${BASE}\nCOPY --from=builder /a /b\n")
    assert _strategy(dockerfile=dockerfile, dtk_image=RELEASE_DTK)["pullSecret"] == {"name": "push"}
    # A build arg overrides the ARG default: the base is elsewhere, nothing to pull with the secret.
    assert "pullSecret" not in _strategy(dockerfile=dockerfile, dtk_image=RELEASE_DTK,
                                         build_args={"BASE": "registry.redhat.io/ubi9/ubi-minimal"})


def test_from_images_leaves_out_stages_scratch_and_unresolved_args():
    dockerfile = ("# escape=`\nARG TAG=9.4\nFROM --platform=linux/amd64 quay.io/a/dtk@sha256:" + "c" * 64 + " AS b\n"
                  "RUN echo `\n  continued\nFROM b\nFROM scratch\nFROM $UNKNOWN\n"
                  "# FROM commented.example.com/x\nfrom registry.example.com/ubi:${TAG}\n")
    assert from_images(dockerfile, {}) == ["quay.io/a/dtk@sha256:" + "c" * 64, "registry.example.com/ubi:9.4"]


@pytest.mark.parametrize("kernel, arch", [
    ("5.14.0-427.68.1.el9_4.x86_64", "amd64"), ("5.14.0-427.68.1.el9_4.aarch64+64k", "arm64"),
    ("5.14.0-427.68.1.el9_4.ppc64le", "ppc64le"), ("5.14.0-427.68.1.el9_4.s390x", "s390x"),
    ("4.18.0-305.49.1.rt7.121.el8_4.x86_64", "amd64"),
])
def test_builds_are_pinned_to_the_kernels_architecture(kernel, arch):
    build = build_object(entry(kernel=kernel), MODULE)
    assert build["spec"]["nodeSelector"] == {"node-role.kubernetes.io/worker": "", "kubernetes.io/arch": arch}
    assert ARCH_OVERRIDDEN_ANNOTATION not in build["metadata"]["annotations"]


def test_the_kernels_architecture_wins_over_the_selectors_and_says_so():
    same = build_object(entry(kernel="5.14.0-1.el9.aarch64", build_selector={"kubernetes.io/arch": "arm64"}), MODULE)
    assert same["spec"]["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert ARCH_OVERRIDDEN_ANNOTATION not in same["metadata"]["annotations"]
    other = build_object(entry(kernel="5.14.0-1.el9.aarch64", build_selector={"kubernetes.io/arch": "amd64"}), MODULE)
    assert other["spec"]["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert other["metadata"]["annotations"][ARCH_OVERRIDDEN_ANNOTATION] == "amd64"
    # A kernel of no known architecture pins nothing rather than guess one.
    odd = build_object(entry(kernel="custom-kernel"), MODULE)
    assert odd["spec"]["nodeSelector"] == {"node-role.kubernetes.io/worker": ""}


def test_the_owner_is_any_object_while_names_follow_the_module():
    owner = {"apiVersion": "kmm-dtk.io/v1alpha1", "kind": "ModuleBuild",
             "metadata": {"name": "simple-kmod-build", "namespace": "drivers", "uid": "5678"}}
    build = build_object(entry(), owner)
    assert build["metadata"]["ownerReferences"] == [{
        "apiVersion": "kmm-dtk.io/v1alpha1", "kind": "ModuleBuild", "name": "simple-kmod-build", "uid": "5678",
        "controller": True, "blockOwnerDeletion": False}]
    assert build["metadata"]["namespace"] == "drivers"
    assert build["metadata"]["annotations"]["kmm-dtk.io/module"] == "simple-kmod"
    assert build["metadata"]["labels"]["kmm-dtk.io/module"] == "simple-kmod"
    # Named apart from the Module's own Builds (which may outlive a `kmm-dtk migrate`), by the same rule
    # the reconciler uses to find them.
    own = build_object(entry(), MODULE)["metadata"]["name"]
    assert build["metadata"]["name"] != own and build["metadata"]["name"].startswith("simple-kmod-")
    assert build["metadata"]["name"].rsplit("-", 1)[1] == own.rsplit("-", 1)[1]


def test_projection_keeps_the_times_garbage_collection_orders_by():
    build = build_object(entry(), MODULE)
    build["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    build["status"] = {"phase": "Complete", "startTimestamp": "2026-01-01T00:00:05Z",
                       "completionTimestamp": "2026-01-01T00:10:00Z", "duration": 595}
    projected = build_projection(build)
    assert projected["metadata"]["creationTimestamp"] == "2026-01-01T00:00:00Z"
    assert projected["status"] == {"phase": "Complete", "startTimestamp": "2026-01-01T00:00:05Z",
                                   "completionTimestamp": "2026-01-01T00:10:00Z"}
    assert "spec" not in projected


def test_record_keeps_its_transition_time_while_unchanged():
    first = kernel_record(entry(), "Pending", "Build b created", "b", None, now="2026-01-01T00:00:00Z")
    same = kernel_record(entry(), "Pending", "Build b created", "b", first, now="2026-01-02T00:00:00Z")
    moved = kernel_record(entry(), "Building", "Build b is Running", "b", first, now="2026-01-03T00:00:00Z")
    assert same["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert moved["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def test_conditions_from_records_and_errors():
    ok = kernel_record(entry(), "Succeeded", "done", "b")
    building = kernel_record(entry(kernel="k2"), "Building", "running", "c")
    ready, progressing, degraded = conditions([ok], [], 3, now="t")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("True", "AllImagesBuilt", 3)
    assert (progressing["status"], degraded["status"]) == ("False", "False")
    ready, progressing, _ = conditions([ok, building], [], 3, now="t")
    assert (ready["status"], ready["reason"], progressing["status"]) == ("False", "Building", "True")
    bad = PlanEntry("drivers/x", None, Action.ERROR, Reason.INVALID_MODULE, "invalid Module: spec.selector is required")
    ready, _, degraded = conditions([], [bad], 1, now="t")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidModule")
    assert "spec.selector" in degraded["message"] and ready["status"] == "False"


def test_events_fire_on_transitions_only():
    pending = kernel_record(entry(), "Pending", "m", "b")
    succeeded = kernel_record(entry(), "Succeeded", "m", "b")
    failed = kernel_record(entry(), "Failed", "Build b failed: exit 2; not retried until its inputs change or "
                           "spec.imageRebuildTriggerGeneration is bumped", "b")
    assert transition_events({}, [pending], [], []) == []
    [event] = transition_events({pending["kernel"]: pending}, [succeeded], [], [])
    assert (event.type, event.reason) == ("Normal", "BuildimageSucceeded")
    assert transition_events({succeeded["kernel"]: succeeded}, [succeeded], [], []) == []
    [event] = transition_events({pending["kernel"]: pending}, [failed], [], [])
    assert event.type == "Warning" and "imageRebuildTriggerGeneration" in event.message
    error = PlanEntry("drivers/x", "k", Action.ERROR, Reason.NO_DTK_TAG, "no tag 9.6.1-0")
    [event] = transition_events({}, [], [error], [])
    assert (event.reason, event.message) == ("MissingDTKTag", "kernel k: no tag 9.6.1-0")
    already = [{"type": "Degraded", "status": "True", "message": "kernel k: no tag 9.6.1-0"}]
    assert transition_events({}, [], [error], already) == []


def test_a_refused_build_degrades_the_module():
    refused = kernel_record(entry(), "Error", "Build b was refused by the API server (422 Invalid): x", "b")
    ready, _, degraded = conditions([refused], [], 1, now="t")
    assert (degraded["status"], degraded["reason"]) == ("True", "BuildRefused")
    assert ready["status"] == "False" and "422" in ready["message"]


def test_creation_events_of_one_reconcile_are_merged():
    from kmm_dtk.operator.module_reconciler import merge_events
    from kmm_dtk.operator.status import EventSpec

    events = [EventSpec("Normal", "BuildimageCreated", "Build a created for kernel k1"),
              EventSpec("Warning", "MissingDTKTag", "kernel k3: no tag"),
              EventSpec("Normal", "BuildimageCreated", "Build b created for kernel k2")]
    merged = merge_events(events)
    assert [e.reason for e in merged] == ["MissingDTKTag", "BuildimageCreated"]
    assert merged[1].message == "2 Builds: Build a created for kernel k1; Build b created for kernel k2"
    assert merge_events(events[:1]) == events[:1]


def test_an_unusable_pull_secret_degrades_without_unreadying_and_is_reported_once():
    problem = "Secret drivers/push: .dockerconfigjson: nesting deeper than 32 levels"
    ok = kernel_record(entry(), "Succeeded", "done", "b")
    ready, _, degraded = conditions([ok], [], 1, now="t", secret_problems=[problem])
    assert (ready["status"], ready["reason"]) == ("True", "AllImagesBuilt")
    assert (degraded["status"], degraded["reason"]) == ("True", "UnusablePullSecret")
    assert problem in degraded["message"] and "asked without it" in degraded["message"]

    bad = PlanEntry("drivers/x", "k", Action.ERROR, Reason.NO_DTK_TAG, "no tag 9.6.1-0")
    _, _, both = conditions([], [bad], 1, now="t", secret_problems=[problem])
    assert both["reason"] == "MissingDTKTag" and "no tag 9.6.1-0" in both["message"] and problem in both["message"]

    before = {ok["kernel"]: ok}
    [event] = transition_events(before, [ok], [], [], secret_problems=[problem])
    assert (event.type, event.reason) == ("Warning", "UnusablePullSecret") and problem in event.message
    assert transition_events(before, [ok], [], [degraded], secret_problems=[problem]) == []
    _, _, cleared = conditions([ok], [], 1, [degraded], now="t2")
    assert (cleared["status"], cleared["reason"]) == ("False", "AsExpected")


def test_a_module_build_never_takes_the_name_of_its_modules_own_builds():
    """After `kmm-dtk migrate`, the Module's old Builds may still exist: a ModuleBuild's get other names."""
    from kmm_dtk.operator.builds import build_name

    own = build_name("simple-kmod", "5.14.0-1.el9_4.x86_64", "a" * 20)
    split = build_name("simple-kmod", "5.14.0-1.el9_4.x86_64", "a" * 20, "ModuleBuild/simple-kmod")
    other = build_name("simple-kmod", "5.14.0-1.el9_4.x86_64", "a" * 20, "ModuleBuild/second")
    assert len({own, split, other}) == 3 and own.split("-")[-1] == split.split("-")[-1]
    assert max(len(own), len(split), len(other)) <= 63


def test_completion_events_of_one_reconcile_are_merged_per_reason():
    from kmm_dtk.operator.module_reconciler import merge_events
    from kmm_dtk.operator.status import EventSpec

    events = [EventSpec("Normal", "BuildimageSucceeded", f"Build b{i} succeeded") for i in range(3)] + [
        EventSpec("Warning", "BuildimageFailed", "Build f1 failed"),
        EventSpec("Warning", "BuildimageFailed", "Build f2 failed")]
    merged = merge_events(events)
    assert [(e.type, e.reason) for e in merged] == [("Normal", "BuildimageSucceeded"), ("Warning", "BuildimageFailed")]
    assert merged[0].message.startswith("3 Builds: Build b0 succeeded; ")
    assert merged[1].message == "2 Builds: Build f1 failed; Build f2 failed"
