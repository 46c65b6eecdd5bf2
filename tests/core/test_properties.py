"""Property tests (hypothesis) for the decision core: total functions stay total, the kernel map
agrees with a model recomputed from scratch, and the placeholder never survives rendering."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kmm_dtk.core.dockerfile import DockerfileError, render, uses_placeholder
from kmm_dtk.core.dtk import DtkIndex, DtkResolutionError, dtk_index
from kmm_dtk.core.kernel_map import KernelMap
from kmm_dtk.core.plan import Action, PlanEntry, plan_module, snapshot_from_objects
from kmm_dtk.core.re2 import Re2Error, compile_re2
from kmm_dtk.core.versions import NFD_OSTREE_LABEL, NodeVersions, node_versions, parse_rhcos

DATA = Path(__file__).resolve().parents[1] / "data"

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RHCOS = [
    "410.84.202207140725-0", "410.84.202207262020-0", "411.86.202207260413-0", "413.92.202305041429-0",
    "416.94.202407251849-0", "418.94.202410260038-0", "9.6.20250715-0", "9.6.20250715-9", "9.6.20250715-10",
    "9.6.20260303-1", "10.2.20260328-0",
]
KERNELS = [
    "4.18.0-305.49.1.el8_4.x86_64", "4.18.0-372.16.1.el8_6.x86_64", "5.14.0-570.27.1.el9_6.x86_64",
    "5.14.0-427.68.1.el9_4.x86_64+rt", "5.14.0-570.73.1.el9_6.aarch64+64k", "6.12.0-211.4.el10nv.aarch64+64k",
]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
junk = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers()), children, max_size=4),
    ),
    max_leaves=20,
)


def maybe(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a realistic value, sometimes anything at all, sometimes absent (None)."""
    return st.one_of(valid, valid, junk, st.none())


# -- versions -------------------------------------------------------------------------------------

version_like = st.builds(
    lambda a, b, stamp, build, prefix, suffix: f"{prefix}{a}.{b}.{stamp}-{build}{suffix}",
    st.integers(0, 99999), st.integers(0, 99999),
    st.one_of(st.from_regex(r"\A[0-9]{8}\Z"), st.from_regex(r"\A[0-9]{12}\Z"), st.from_regex(r"\A[0-9]{1,14}\Z")),
    st.integers(0, 10**7),
    st.sampled_from(["", "Red Hat Enterprise Linux CoreOS ", "x", ".", "-", " "]),
    st.sampled_from(["", " (Plow)", " (Ootpa)", ".", "-1", "a", " 9.6.20250715-0"]),
)


@SETTINGS
@given(st.one_of(st.text(), version_like, st.text(alphabet="0123456789.- ()", max_size=40)))
def test_parse_rhcos_raises_only_value_error(text):
    try:
        version = parse_rhcos(text)
    except ValueError as err:
        assert str(err)
        return
    # Whatever it accepts is a version it can print back and parse again to the same thing.
    assert str(version) in text
    assert parse_rhcos(str(version)) == version


node_shaped = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": maybe(st.just("v1")),
        "kind": maybe(st.just("Node")),
        "metadata": maybe(st.fixed_dictionaries({}, optional={
            "name": maybe(st.sampled_from(["worker-0", "master-1", ""])),
            "labels": maybe(st.dictionaries(
                st.sampled_from([NFD_OSTREE_LABEL, "node-role.kubernetes.io/worker"]),
                maybe(st.sampled_from(RHCOS + ["", "garbage"])))),
        })),
        "status": maybe(st.fixed_dictionaries({}, optional={
            "nodeInfo": maybe(st.fixed_dictionaries({}, optional={
                "kernelVersion": maybe(st.sampled_from(KERNELS + ["", " ", "+", "6.1.85+"])),
                "osImage": maybe(st.one_of(version_like, st.sampled_from(
                    [f"Red Hat Enterprise Linux CoreOS {r} (Plow)" for r in RHCOS]))),
            })),
        })),
    },
)


@SETTINGS
@given(st.one_of(junk, node_shaped))
def test_node_versions_never_raises(node):
    nv = node_versions(node)
    assert isinstance(nv, NodeVersions)
    assert isinstance(nv.name, str) and nv.name
    if nv.kernel is None or nv.rhcos is None:
        assert isinstance(nv.reason, str) and nv.reason
    else:
        assert nv.reason is None


# -- dtk ------------------------------------------------------------------------------------------

tag_name = st.one_of(st.sampled_from(RHCOS + ["latest", "latest-rhel-10", ""]), junk)
pull_spec = st.one_of(st.sampled_from(["quay.io/a/dtk@sha256:" + c * 64 for c in "0123456789abcdef"]), junk)
spec_tag_st = st.fixed_dictionaries({}, optional={
    "name": tag_name,
    "from": maybe(st.fixed_dictionaries({}, optional={
        "kind": maybe(st.sampled_from(["DockerImage", "ImageStreamTag", "ImageStreamImage"])),
        "name": pull_spec,
    })),
})
status_tag_st = st.fixed_dictionaries({}, optional={
    "tag": tag_name,
    "items": maybe(st.lists(maybe(st.fixed_dictionaries({}, optional={"dockerImageReference": pull_spec})),
                            max_size=3)),
})
stream_shaped = st.fixed_dictionaries({}, optional={
    "metadata": maybe(st.fixed_dictionaries({}, optional={"name": junk, "namespace": junk})),
    "spec": maybe(st.fixed_dictionaries({}, optional={"tags": maybe(st.lists(maybe(spec_tag_st), max_size=5))})),
    "status": maybe(st.fixed_dictionaries({}, optional={"tags": maybe(st.lists(maybe(status_tag_st), max_size=5))})),
})


@SETTINGS
@given(st.one_of(stream_shaped, st.dictionaries(st.text(max_size=10), junk, max_size=5)), st.sampled_from(RHCOS))
def test_dtk_index_never_raises(stream, rhcos):
    index = dtk_index(stream)
    assert isinstance(index, DtkIndex)
    for tag, image in index.images.items():
        assert isinstance(tag, str) and tag and not tag.startswith("latest")
        assert isinstance(image.image, str) and image.image
        assert image.source in ("status", "spec")
    try:
        assert index.resolve(rhcos).tag == rhcos
    except DtkResolutionError as err:
        assert rhcos in str(err) and index.ref in str(err)


# -- kernel map against a model ---------------------------------------------------------------------

NODE_NAMES = [f"worker-{i}" for i in range(6)]
versions_st = st.builds(
    NodeVersions,
    st.sampled_from(NODE_NAMES),
    st.sampled_from(KERNELS[:4] + [None]),
    st.one_of(st.none(), st.sampled_from(RHCOS).map(parse_rhcos)),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), versions_st),
        st.tuples(st.just("remove"), st.sampled_from(NODE_NAMES)),
        st.tuples(st.just("replace_all"), st.lists(versions_st, max_size=6, unique_by=lambda n: n.name)),
    ),
    max_size=40,
)


def model_winners(nodes: dict[str, NodeVersions]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for nv in nodes.values():
        if nv.kernel is None:
            continue
        best = out.get(nv.kernel)
        if nv.rhcos is not None and (best is None or nv.rhcos > parse_rhcos(best)):
            out[nv.kernel] = str(nv.rhcos)
        else:
            out.setdefault(nv.kernel, best)
    return out


def model_candidates(nodes: dict[str, NodeVersions]) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for nv in nodes.values():
        if nv.kernel is not None:
            out.setdefault(nv.kernel, set()).update([str(nv.rhcos)] if nv.rhcos is not None else [])
    return {k: frozenset(v) for k, v in out.items()}


_ABSENT = object()


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in set(before) | set(after) if before.get(k, _ABSENT) != after.get(k, _ABSENT)}


@SETTINGS
@given(ops)
def test_kernel_map_matches_a_model_recomputed_from_scratch(operations):
    km = KernelMap()
    model: dict[str, NodeVersions] = {}
    for op, arg in operations:
        before, candidates_before = model_winners(model), model_candidates(model)
        if op == "upsert":
            if arg.kernel is None:
                model.pop(arg.name, None)
            else:
                model[arg.name] = arg
            result = km.upsert(arg)
        elif op == "remove":
            model.pop(arg, None)
            result = km.remove(arg)
        else:
            model = {n.name: n for n in arg if n.kernel is not None}
            result = km.replace_all(arg)
        after = model_winners(model)
        # a kernel changed: its winner, or its set of candidate RHCOS (the DTK fallbacks)
        assert result == changed(before, after) | changed(candidates_before, model_candidates(model)), (op, arg)
        snap = {k: (str(v) if v is not None else None) for k, v in km.snapshot().items()}
        assert snap == after
        assert len(km) == len(after)
        expected_nodes: dict[str, set[str]] = {}
        for nv in model.values():
            expected_nodes.setdefault(nv.kernel, set()).add(nv.name)
        assert {k: set(e.nodes) for k, e in km.entries().items()} == expected_nodes
        for name in NODE_NAMES:
            assert km.kernel_of(name) == (model[name].kernel if name in model else None)


# -- re2 ------------------------------------------------------------------------------------------

RE_ALPHABET = "^$.*+?{}[]()|\\:-<>=!,PpQEzZdDwWsSbB0123456789aeikmsxU_#&~"


@SETTINGS
@given(st.one_of(st.text(max_size=30), st.text(alphabet=RE_ALPHABET, max_size=30)))
def test_compile_re2_raises_only_re2_error(pattern):
    try:
        compiled = compile_re2(pattern)
    except Re2Error as err:
        assert str(err)
        return
    found = compiled.search("5.14.0-570.27.1.el9_6.x86_64")  # matching never raises either
    assert found is None or isinstance(found.group(0), str)


# -- dockerfile -----------------------------------------------------------------------------------

# Whole instructions (continuations included), so every generated Dockerfile is well formed.
DOCKERFILE_LINES = [
    "ARG DTK_AUTO", "ARG DTK-AUTO", "arg DTK-AUTO", "ARG DTK-AUTO=quay.io/x/dtk:old",
    "FROM ${DTK_AUTO}", "FROM ${DTK-AUTO}", "FROM $DTK_AUTO", "FROM $DTK-AUTO",
    "FROM ${DTK-AUTO} AS builder", "from $DTK-AUTO as builder", "FROM --platform=$BUILDPLATFORM ${DTK-AUTO} AS build",
    "FROM --platform=linux/arm64 $DTK-AUTO", "  FROM ${DTK-AUTO}", "FROM \\\n    ${DTK-AUTO} \\\n    AS builder",
    "FROM registry.redhat.io/ubi9/ubi-minimal", "FROM builder AS final",
    "ENV BASE=${DTK-AUTO}", "RUN echo $DTK-AUTO && make", "RUN echo ${DTK_AUTO}", "LABEL base=\"${DTK-AUTO}\"",
    "RUN make -C /lib/modules/${KERNEL_FULL_VERSION}/build M=$PWD \\\n    modules",
    "RUN echo ${DTK-AUTO} \\\n  && echo $DTK-AUTO",
    "COPY --from=builder /build/kmm_ci_a.ko /opt/lib/modules/${KERNEL_FULL_VERSION}/",
    "# a comment about DTK_AUTO", "", "   ", "WORKDIR /build", "RUN echo $DTK-AUTOMATIC",
]
IMAGES = [
    "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "84edddb4" * 8,
    "registry.ci.openshift.org/ocp/4.11-2022-07-27-013908@sha256:" + "484c9fe9" * 8,
    "mirror.local:5000/ocp/driver-toolkit:9.6.20250715-0",
]
UNRESOLVED = re.compile(r"\$\{DTK-AUTO\}|\$DTK-AUTO(?![A-Za-z0-9_])")


@SETTINGS
@given(st.lists(st.sampled_from(DOCKERFILE_LINES), max_size=14), st.sampled_from(IMAGES), st.booleans())
def test_render_never_leaves_the_dashed_placeholder(lines, image, trailing_newline):
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    out = render(text, image)
    if not uses_placeholder(text):
        assert out.text == text and not out.uses_dtk
        return
    assert out.uses_dtk
    for line in out.text.split("\n"):
        if line.lstrip().startswith("#"):
            continue
        assert not UNRESOLVED.search(line), (text, out.text)
        words = line.split()
        if words and words[0].upper() == "FROM":
            images = [w for w in words[1:] if not w.startswith("--")]
            assert not images or not re.fullmatch(r"\$\{?DTK[_-]AUTO\}?", images[0]), (text, out.text)
    # Rendering is stable: the output renders to itself.
    assert render(out.text, image).text == out.text


@SETTINGS
@given(st.text(max_size=200), st.one_of(st.none(), st.sampled_from(IMAGES)))
def test_render_on_arbitrary_text_raises_only_dockerfile_error(text, image):
    try:
        out = render(text, image)
    except DockerfileError:
        assert image is None and uses_placeholder(text)
        return
    if not uses_placeholder(text):
        assert out.text == text


# -- plan -----------------------------------------------------------------------------------------

def _snapshot():
    cluster = yaml.safe_load((DATA / "design-cluster.yaml").read_text())["items"]
    nodes = [o for o in cluster if o["kind"] == "Node"]
    nodes.append({"metadata": {"name": "worker-9", "labels": {"node-role.kubernetes.io/worker": ""}},
                  "status": {"nodeInfo": {"kernelVersion": "5.14.0-570.27.1.el9_6.x86_64",
                                          "osImage": "Red Hat Enterprise Linux CoreOS"}}})
    nodes.append({"metadata": {"name": "worker-10", "labels": {"node-role.kubernetes.io/worker": ""}},
                  "status": {"nodeInfo": {"kernelVersion": "5.14.0-570.73.1.el9_6.aarch64+64k",
                                          "osImage": "Red Hat Enterprise Linux CoreOS 9.6.20260616-0 (Plow)"}}})
    stream = next(o for o in cluster if o["kind"] == "ImageStream")
    cms = [o for o in cluster if o["kind"] == "ConfigMap"]
    cms.append({"metadata": {"name": "plain", "namespace": "simple-kmod"},
                "data": {"dockerfile": "FROM quay.io/acme/base:1\nRUN make\n"}})
    cms.append({"metadata": {"name": "nokey", "namespace": "simple-kmod"}, "data": {"Dockerfile": "FROM x"}})
    return snapshot_from_objects(nodes, stream, cms, ("openshift", "driver-toolkit"))[0]


SNAPSHOT = _snapshot()

REGEXPS = [r"^.+\.el8_\d+\.x86_64$", r".*", r"el9", r"(?i)X86_64$", r"^(?<maj>\d+)\.", r"\+64k\z",
           r"[[:digit:]]", r"(?=x)", r"(a)\1", r"\p{L}", r"a++", r"[a", "", r"a{1001}"]
IMAGE_TEMPLATES = ["quay.io/acme/kmod:${KERNEL_FULL_VERSION}", "quay.io/${MOD_NAMESPACE}/${MOD_NAME}:${KERNEL_XYZ}",
                   "quay.io/acme/kmod:$KERNEL_X.$KERNEL_Y.$KERNEL_Z", "quay.io/acme/kmod:${NOPE}", "", "a b"]


def mostly(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A realistic value nine times in ten, otherwise anything at all (or None)."""
    return st.integers(0, 9).flatmap(lambda n: st.one_of(st.none(), junk) if n == 7 else valid)


name_ref = mostly(st.fixed_dictionaries({"name": mostly(st.sampled_from(
    ["simple-kmod-dockerfile", "simple-kmod-dockerfile", "plain", "nokey", "missing", ""]))}))
build_st = st.fixed_dictionaries({"dockerfileConfigMap": name_ref}, optional={
    "buildArgs": mostly(st.lists(mostly(st.fixed_dictionaries({"name": mostly(st.sampled_from(
        ["KMOD_VERSION", "KERNEL_VERSION", "DTK_AUTO", ""])), "value": mostly(st.text(max_size=8))})), max_size=3)),
    "secrets": mostly(st.lists(name_ref, max_size=3)),
    "baseImageRegistryTLS": mostly(st.fixed_dictionaries({}, optional={"insecure": mostly(st.booleans())})),
    "selector": mostly(st.dictionaries(st.sampled_from(["kubernetes.io/arch"]), mostly(st.just("amd64")))),
})
match_st = st.one_of(
    st.fixed_dictionaries({"regexp": mostly(st.sampled_from(REGEXPS))}),
    st.fixed_dictionaries({"literal": mostly(st.sampled_from(KERNELS + [""]))}),
    st.fixed_dictionaries({}, optional={"regexp": st.sampled_from(REGEXPS), "literal": st.sampled_from(KERNELS)}),
)
mapping_st = st.tuples(match_st, st.fixed_dictionaries({}, optional={
    "containerImage": mostly(st.sampled_from(IMAGE_TEMPLATES)),
    "build": mostly(build_st),
    "registryTLS": mostly(st.fixed_dictionaries({}, optional={"insecureSkipTLSVerify": mostly(st.booleans())})),
})).map(lambda pair: {**pair[0], **pair[1]})
container_st = st.fixed_dictionaries(
    {"kernelMappings": mostly(st.lists(mostly(mapping_st), min_size=1, max_size=3)),
     "containerImage": mostly(st.sampled_from(IMAGE_TEMPLATES[:3] * 3 + IMAGE_TEMPLATES)),
     "build": mostly(build_st)},
    optional={
        "registryTLS": mostly(st.fixed_dictionaries({}, optional={"insecure": mostly(st.booleans())})),
    },
)
module_st = st.fixed_dictionaries({
    "apiVersion": st.just("kmm.sigs.x-k8s.io/v1beta1"),
    "kind": st.just("Module"),
    "metadata": mostly(st.fixed_dictionaries(
        {"name": mostly(st.sampled_from(["simple-kmod", "ice"])),
         "namespace": mostly(st.sampled_from(["simple-kmod", "simple-kmod", "other"]))},
        optional={"generation": mostly(st.integers(0, 5)), "uid": junk},
    )),
    "spec": mostly(st.fixed_dictionaries(
        {"selector": mostly(st.dictionaries(
            st.sampled_from(["node-role.kubernetes.io/worker", "node-role.kubernetes.io/master"]),
            mostly(st.just("")), max_size=2)),
         "moduleLoader": mostly(st.fixed_dictionaries({"container": mostly(container_st)}))},
        optional={"imageRepoSecret": name_ref, "imageRebuildTriggerGeneration": mostly(st.integers(0, 3))},
    )),
})


@SETTINGS
@given(st.one_of(module_st, module_st, module_st, st.dictionaries(st.text(max_size=10), junk, max_size=4)))
def test_plan_module_never_raises(raw):
    entries = plan_module(raw, SNAPSHOT)
    assert entries
    for e in entries:
        assert isinstance(e, PlanEntry)
        event(f"{e.action.value}: {e.reason_code.value}")  # see --hypothesis-show-statistics
        assert e.reason
        assert e.to_json()["action"] in ("build", "skip", "error")
        if e.action is Action.BUILD:
            assert e.hash and len(e.hash) == 20
            assert e.dockerfile is not None and not UNRESOLVED.search(e.dockerfile)
            assert e.build_args["KERNEL_FULL_VERSION"] == e.kernel
            if e.dtk_image is not None:
                assert e.build_args["DTK_AUTO"] == e.dtk_image
    assert plan_module(raw, SNAPSHOT) == entries  # deterministic


# -- whole cluster dumps, with what YAML can put anywhere ----------------------------------------

import datetime  # noqa: E402 - kept with the tests that use it

yaml_scalars = st.one_of(scalars, st.dates(), st.binary(max_size=4), st.just(datetime.datetime(2024, 1, 1)),
                         st.integers(-10**100, 10**100))
yaml_keys = st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.none(), st.dates())  # hashable ones
yaml_junk = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(yaml_keys, children, max_size=4)),
    max_leaves=20,
)


configmap_st = st.fixed_dictionaries({
    "metadata": mostly(st.fixed_dictionaries({
        "name": mostly(st.sampled_from(["simple-kmod-dockerfile", "plain"])),
        "namespace": mostly(st.just("simple-kmod"))})),
    "data": st.one_of(
        st.dictionaries(st.one_of(st.just("dockerfile"), yaml_keys),
                        mostly(st.just("FROM quay.io/acme/base:1\nRUN make\n")), min_size=1, max_size=3),
        yaml_junk, st.none()),
})
junk_objects = st.dictionaries(yaml_keys, yaml_junk, max_size=4)


@SETTINGS
@given(st.lists(st.one_of(node_shaped, junk_objects), max_size=4), st.one_of(st.none(), stream_shaped, junk_objects),
       st.lists(configmap_st, max_size=3), st.lists(st.one_of(module_st, module_st, junk_objects), max_size=3))
def test_planning_a_dump_never_raises_whatever_yaml_put_where(nodes, stream, configmaps, modules):
    """Lists where maps belong, numbers and dates where strings belong, keys that are not strings: the
    snapshot and the plan are made, every entry prints, and Modules using a malformed ConfigMap get an
    error entry naming it."""
    import io
    import json

    from kmm_dtk.cli import _print_table
    from kmm_dtk.core.plan import Reason, configmap_problem, plan_cluster

    design = yaml.safe_load((DATA / "design-cluster.yaml").read_text())["items"]
    nodes = nodes + [o for o in design if o["kind"] == "Node"]
    modules = modules + [o for o in design if o["kind"] == "Module"]  # one that reaches its ConfigMap
    snapshot, problems = snapshot_from_objects(nodes, stream, configmaps, ("openshift", "driver-toolkit"))
    result = plan_cluster(modules, snapshot, problems)
    json.dumps(result.to_json())
    _print_table(result, io.StringIO())
    for e in result.entries:
        event(e.reason_code.value)
        if e.reason_code is Reason.INVALID_CONFIGMAP:
            assert e.action is Action.ERROR and "ConfigMap simple-kmod/" in e.reason
            name = e.reason.split("ConfigMap simple-kmod/", 1)[1].split(" ", 1)[0]
            assert configmap_problem(snapshot.configmaps[("simple-kmod", name)]) in e.reason
        if e.action is Action.BUILD:
            assert isinstance(e.dockerfile, str) and e.hash
