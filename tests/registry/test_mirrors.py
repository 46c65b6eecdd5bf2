"""MirrorPolicy: which places a node would pull an image from, given ICSP / IDMS / ITMS objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kmm_dtk.dump import load_files
from kmm_dtk.registry.mirrors import MirrorPolicy, PullSource
from kmm_dtk.registry.reference import ImageRef

DATA = Path(__file__).resolve().parents[1] / "data"
D = "sha256:" + "d" * 64


def rule(source: Any, *mirrors: Any, policy: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"source": source, "mirrors": list(mirrors)}
    if policy is not None:
        entry["mirrorSourcePolicy"] = policy
    return entry


def _obj(api_version: str, kind: str, field: str, name: str, entries: tuple[Any, ...]) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": {field: list(entries)}}


def icsp(name: str, *entries: Any) -> dict[str, Any]:
    return _obj("operator.openshift.io/v1alpha1", "ImageContentSourcePolicy", "repositoryDigestMirrors", name, entries)


def idms(name: str, *entries: Any) -> dict[str, Any]:
    return _obj("config.openshift.io/v1", "ImageDigestMirrorSet", "imageDigestMirrors", name, entries)


def itms(name: str, *entries: Any) -> dict[str, Any]:
    return _obj("config.openshift.io/v1", "ImageTagMirrorSet", "imageTagMirrors", name, entries)


def sources_for(objects: list[dict[str, Any]], ref: str) -> list[str]:
    policy, problems = MirrorPolicy.from_objects(objects)
    assert problems == []
    return [str(s.ref) for s in policy.pull_sources(ImageRef.parse(ref))]


NEVER = "NeverContactSource"
ALLOW = "AllowContactingSource"

CASES = [
    pytest.param([idms("a", rule("quay.io/ns/repo", "mirror.local/ns/repo"))], f"quay.io/ns/repo@{D}",
                 [f"mirror.local/ns/repo@{D}", f"quay.io/ns/repo@{D}"], id="exact-repo-source"),
    pytest.param([idms("a", rule("quay.io/ns", "mirror.local/mirrored"))], f"quay.io/ns/sub/repo@{D}",
                 [f"mirror.local/mirrored/sub/repo@{D}", f"quay.io/ns/sub/repo@{D}"], id="namespace-source"),
    pytest.param([idms("a", rule("quay.io", "mirror.local:5000"))], f"quay.io/ns/repo@{D}",
                 [f"mirror.local:5000/ns/repo@{D}", f"quay.io/ns/repo@{D}"], id="host-source"),
    pytest.param([idms("a", rule("example.com", "mirror.local"))], f"example.com:5000/x@{D}",
                 [f"example.com:5000/x@{D}"], id="host-does-not-match-host-port"),
    pytest.param([idms("a", rule("example.com:5000", "mirror.local"))], f"example.com:5000/x@{D}",
                 [f"mirror.local/x@{D}", f"example.com:5000/x@{D}"], id="host-port-source"),
    pytest.param([idms("a", rule("example.com:5000", "mirror.local"))], f"example.com/x@{D}",
                 [f"example.com/x@{D}"], id="host-port-does-not-match-host"),
    pytest.param([idms("a", rule("example.com/foo", "mirror.local/foo"))], f"example.com/foobar@{D}",
                 [f"example.com/foobar@{D}"], id="repo-prefix-is-not-a-path-prefix"),
    pytest.param([idms("a", rule("quay.io", "m1.local"), rule("quay.io/ns", "m2.local/ns"),
                       rule("quay.io/ns/repo", "m3.local/repo"))], f"quay.io/ns/repo@{D}",
                 [f"m3.local/repo@{D}", f"quay.io/ns/repo@{D}"], id="longest-source-wins-alone"),
    pytest.param([idms("a", rule("quay.io/ns/repo", "m3.local/repo"), rule("quay.io/ns", "m2.local/ns"),
                       rule("quay.io", "m1.local"))], f"quay.io/ns/other@{D}",
                 [f"m2.local/ns/other@{D}", f"quay.io/ns/other@{D}"], id="longest-matching-source-wins"),
    pytest.param([idms("a", rule("*.redhat.io", "mirror.local/redhat"))], f"registry.redhat.io/product/repo@{D}",
                 [f"mirror.local/redhat/product/repo@{D}", f"registry.redhat.io/product/repo@{D}"],
                 id="wildcard-host-replaced"),
    pytest.param([idms("a", rule("*.redhat.io", "mirror.local/redhat"))], f"a.b.redhat.io/repo@{D}",
                 [f"mirror.local/redhat/repo@{D}", f"a.b.redhat.io/repo@{D}"], id="wildcard-any-depth"),
    pytest.param([idms("a", rule("*.redhat.io", "mirror.local/redhat"))], f"redhat.io/product/repo@{D}",
                 [f"redhat.io/product/repo@{D}"], id="wildcard-not-the-bare-domain"),
    pytest.param([idms("a", rule("*.redhat.io", "mirror.local/redhat"))], f"reg.redhat.io:5000/repo@{D}",
                 [f"reg.redhat.io:5000/repo@{D}"], id="wildcard-not-with-port"),
    pytest.param([idms("a", rule("*.redhat.io", "mirror.local/redhat"))], f"quay.io/redhat.io/repo@{D}",
                 [f"quay.io/redhat.io/repo@{D}"], id="wildcard-only-in-host"),
    pytest.param([idms("a", rule("*.b.redhat.io", "wild.local"), rule("x.b.redhat.io", "exact.local"))],
                 f"x.b.redhat.io/ns/repo@{D}", [f"exact.local/ns/repo@{D}", f"x.b.redhat.io/ns/repo@{D}"],
                 id="exact-host-beats-wildcard-of-same-length"),
    pytest.param([idms("a", rule("*.redhat.io", "wide.local"), rule("*.b.redhat.io", "narrow.local"))],
                 f"x.b.redhat.io/repo@{D}", [f"narrow.local/repo@{D}", f"x.b.redhat.io/repo@{D}"],
                 id="longer-wildcard-wins"),
    pytest.param([idms("a", rule("quay.io", "mirror.local"))], "quay.io/ns/repo:v1",
                 ["quay.io/ns/repo:v1"], id="tag-ref-not-rewritten-by-idms"),
    pytest.param([icsp("a", rule("quay.io", "mirror.local"))], "quay.io/ns/repo",
                 ["quay.io/ns/repo"], id="implicit-latest-not-rewritten-by-icsp"),
    pytest.param([itms("a", rule("quay.io", "mirror.local"))], f"quay.io/ns/repo@{D}",
                 [f"quay.io/ns/repo@{D}"], id="digest-ref-not-rewritten-by-itms"),
    pytest.param([itms("a", rule("quay.io", "mirror.local"))], "quay.io/ns/repo:v1",
                 ["mirror.local/ns/repo:v1", "quay.io/ns/repo:v1"], id="tag-ref-rewritten-by-itms"),
    pytest.param([itms("a", rule("quay.io", "mirror.local"))], "quay.io/ns/repo",
                 ["mirror.local/ns/repo", "quay.io/ns/repo"], id="implicit-latest-is-a-tag-ref"),
    pytest.param([idms("d", rule("quay.io", "digest.local")), itms("t", rule("quay.io", "tag.local"))],
                 f"quay.io/ns/repo:v1@{D}", [f"digest.local/ns/repo@{D}", f"quay.io/ns/repo:v1@{D}"],
                 id="tag-and-digest-is-a-digest-ref"),
    pytest.param([idms("a", rule("quay.io/ns", "mirror.local/ns", policy=NEVER))], f"quay.io/ns/repo@{D}",
                 [f"mirror.local/ns/repo@{D}"], id="never-contact-source"),
    pytest.param([itms("a", rule("quay.io/ns", "mirror.local/ns", policy=NEVER))], "quay.io/ns/repo:v1",
                 ["mirror.local/ns/repo:v1"], id="never-contact-source-itms"),
    pytest.param([idms("a", rule("quay.io/ns", "mirror.local/ns", policy=ALLOW))], f"quay.io/ns/repo@{D}",
                 [f"mirror.local/ns/repo@{D}", f"quay.io/ns/repo@{D}"], id="allow-contacting-source"),
    pytest.param([idms("a", rule("quay.io/ns", "m1.local/ns", policy=ALLOW)),
                  idms("b", rule("quay.io/ns", "m2.local/ns", policy=NEVER))], f"quay.io/ns/repo@{D}",
                 [f"m1.local/ns/repo@{D}", f"m2.local/ns/repo@{D}"], id="never-contact-source-if-any-says-so"),
    pytest.param([idms("a", rule("quay.io/ns", "m1.local/ns", policy=NEVER))], "quay.io/ns/repo:v1",
                 ["quay.io/ns/repo:v1"], id="never-contact-source-only-for-its-reference-class"),
    pytest.param([icsp("a", rule("quay.io/ns", "m1.local/ns")), idms("b", rule("quay.io/ns", "m2.local/ns"))],
                 f"quay.io/ns/repo@{D}", [f"m1.local/ns/repo@{D}", f"m2.local/ns/repo@{D}", f"quay.io/ns/repo@{D}"],
                 id="icsp-and-idms-mixed"),
    pytest.param([idms("a", rule("quay.io", "m1.local", "m2.local")),
                  idms("b", rule("quay.io", "m2.local", "m3.local", "m1.local"))], f"quay.io/ns/repo@{D}",
                 [f"m1.local/ns/repo@{D}", f"m2.local/ns/repo@{D}", f"m3.local/ns/repo@{D}", f"quay.io/ns/repo@{D}"],
                 id="objects-merged-deduplicated-first-seen"),
    pytest.param([icsp("a", rule("quay.io/ns", "m1.local/ns", "quay.io/ns", "m2.local/ns"))], f"quay.io/ns/repo@{D}",
                 [f"m1.local/ns/repo@{D}", f"quay.io/ns/repo@{D}", f"m2.local/ns/repo@{D}"],
                 id="source-listed-as-mirror-keeps-its-place"),
    pytest.param([idms("a", rule("quay.io/ns/repo", "mirror.local", "m2.local/repo"))], f"quay.io/ns/repo@{D}",
                 [f"m2.local/repo@{D}", f"quay.io/ns/repo@{D}"], id="mirror-leaving-no-repository-skipped"),
    pytest.param([idms("a", rule("docker.io/library", "mirror.local/hub"))], f"busybox@{D}",
                 [f"mirror.local/hub/busybox@{D}", f"docker.io/library/busybox@{D}"], id="docker-hub-short-name"),
    pytest.param([idms("a", rule("quay.io", "mirror.local"))], f"registry.redhat.io/ns/repo@{D}",
                 [f"registry.redhat.io/ns/repo@{D}"], id="no-rule-only-the-source"),
    pytest.param([], "quay.io/ns/repo:v1", ["quay.io/ns/repo:v1"], id="no-objects-only-the-source"),
]


@pytest.mark.parametrize(("objects", "ref", "expected"), CASES)
def test_pull_sources(objects: list[dict[str, Any]], ref: str, expected: list[str]) -> None:
    assert sources_for(objects, ref) == expected


def test_pull_sources_name_mirror_and_origin() -> None:
    policy, _ = MirrorPolicy.from_objects([
        icsp("legacy", rule("quay.io/ns", "m1.local/ns")),
        idms("release", rule("quay.io/ns", "m2.local/ns", "m1.local/ns")),
    ])
    ref = ImageRef.parse(f"quay.io/ns/repo@{D}")
    assert policy.pull_sources(ref) == [
        PullSource(ImageRef.parse(f"m1.local/ns/repo@{D}"), "m1.local/ns", "ImageContentSourcePolicy/legacy"),
        PullSource(ImageRef.parse(f"m2.local/ns/repo@{D}"), "m2.local/ns", "ImageDigestMirrorSet/release"),
        PullSource(ref, None, None),
    ]


def test_empty_policy() -> None:
    assert not MirrorPolicy.EMPTY
    assert MirrorPolicy.from_objects([]) == (MirrorPolicy.EMPTY, [])
    ref = ImageRef.parse("quay.io/ns/repo:v1")
    assert MirrorPolicy.EMPTY.pull_sources(ref) == [PullSource(ref, None, None)]


def test_policy_with_only_tag_rules_is_true() -> None:
    policy, _ = MirrorPolicy.from_objects([itms("t", rule("quay.io", "mirror.local"))])
    assert policy


def test_describe() -> None:
    policy, _ = MirrorPolicy.from_objects([
        idms("r", rule("quay.io/ns", "m.local/ns", policy=NEVER)), itms("t", rule("*.redhat.io", "m.local/rh")),
    ])
    assert policy.describe() == [
        "digest: quay.io/ns -> m.local/ns (ImageDigestMirrorSet/r), never the source",
        "tag: *.redhat.io -> m.local/rh (ImageTagMirrorSet/t), then the source",
    ]
    sources = policy.pull_sources(ImageRef.parse("registry.redhat.io/a/b:1"))
    assert [s.describe() for s in sources] == [
        "m.local/rh/a/b:1 (mirror m.local/rh from ImageTagMirrorSet/t)", "registry.redhat.io/a/b:1 (source)",
    ]


def test_other_kinds_and_versions_ignored() -> None:
    objects: list[Any] = [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "spec": {"imageDigestMirrors": 3}},
        {**idms("old", rule("quay.io", "mirror.local")), "apiVersion": "config.openshift.io/v1alpha1"},
        "not an object",
        None,
    ]
    assert MirrorPolicy.from_objects(objects) == (MirrorPolicy.EMPTY, [])


def test_icsp_ignores_mirror_source_policy() -> None:
    """ICSP has no such field (the API server prunes it): the source is always tried last."""
    objects = [icsp("a", rule("quay.io", "mirror.local", policy=NEVER))]
    assert sources_for(objects, f"quay.io/ns/repo@{D}") == [f"mirror.local/ns/repo@{D}", f"quay.io/ns/repo@{D}"]


def test_entries_without_real_mirrors_do_not_shadow_shorter_sources() -> None:
    """As the MCO renders them: no mirror (or only the source itself) is not a mirror set."""
    objects = [idms("a", rule("quay.io", "mirror.local"), rule("quay.io/ns"),
                    rule("quay.io/ns/repo", "quay.io/ns/repo"))]
    assert sources_for(objects, f"quay.io/ns/repo@{D}") == [f"mirror.local/ns/repo@{D}", f"quay.io/ns/repo@{D}"]


IDMS_LABEL = "ImageDigestMirrorSet/mirrors"
ENTRY = "spec.imageDigestMirrors[1]"

PROBLEMS = [
    pytest.param(rule(""), f'{ENTRY}.source: "" is not a valid source', id="empty-source"),
    pytest.param({"mirrors": ["m.local"]}, f"{ENTRY}.source: is required", id="missing-source"),
    pytest.param(rule(7, "m.local"), f"{ENTRY}.source: 7 is not a valid source (expected a string, got int)",
                 id="source-not-a-string"),
    pytest.param(rule("quay.io/ns/repo:v1", "m.local"),
                 f'{ENTRY}.source: "quay.io/ns/repo:v1" is not a valid source (a tag or digest is not allowed)',
                 id="source-with-tag"),
    pytest.param(rule(f"quay.io/ns/repo@{D}", "m.local"),
                 f'{ENTRY}.source: "quay.io/ns/repo@{D}" is not a valid source (a tag or digest is not allowed)',
                 id="source-with-digest"),
    pytest.param(rule("https://quay.io", "m.local"),
                 f'{ENTRY}.source: "https://quay.io" is not a valid source (expected host[:port][/path], not a URL)',
                 id="source-url"),
    pytest.param(rule("*.example.com/foo", "m.local"),
                 f'{ENTRY}.source: "*.example.com/foo" is not a valid source '
                 "(a wildcard source must be *.host, without port or path)", id="wildcard-source-with-path"),
    pytest.param(rule("foo.*.com", "m.local"),
                 f'{ENTRY}.source: "foo.*.com" is not a valid source (a wildcard source must be *.host, '
                 "without port or path)", id="wildcard-not-first"),
    pytest.param(rule("quay.io/NS", "m.local"),
                 f'{ENTRY}.source: "quay.io/NS" is not a valid source (expected host[:port][/path] or *.host)',
                 id="source-uppercase-path"),
    pytest.param(rule("registry/ns", "m.local"),
                 f'{ENTRY}.source: "registry/ns" is not a valid source (the first component is no registry host '
                 "(it needs a '.', a ':port' or to be 'localhost'), so image names never start with it)",
                 id="source-without-registry-host"),
    pytest.param(rule("quay.io", "*.m.local"),
                 f'{ENTRY}.mirrors[0]: "*.m.local" is not a valid mirror (wildcards are allowed only in sources)',
                 id="wildcard-mirror"),
    pytest.param(rule("quay.io", "m.local/x:v1"),
                 f'{ENTRY}.mirrors[0]: "m.local/x:v1" is not a valid mirror (a tag or digest is not allowed)',
                 id="mirror-with-tag"),
    pytest.param({"source": "quay.io", "mirrors": "m.local"}, f"{ENTRY}.mirrors: expected a list, got str",
                 id="mirrors-not-a-list"),
    pytest.param(rule("quay.io", "m.local", policy="Sometimes"),
                 f'{ENTRY}.mirrorSourcePolicy: "Sometimes" is not one of AllowContactingSource, NeverContactSource',
                 id="bad-mirror-source-policy"),
    pytest.param(rule("quay.io", policy=NEVER),
                 f"{ENTRY}.mirrorSourcePolicy: NeverContactSource needs at least one valid mirror",
                 id="never-contact-source-without-mirrors"),
    pytest.param(["quay.io"], f"{ENTRY}: expected a mapping, got list", id="entry-not-a-mapping"),
]


@pytest.mark.parametrize(("entry", "problem"), PROBLEMS)
def test_malformed_entry_is_skipped_and_reported(entry: Any, problem: str) -> None:
    """The bad entry is reported with object and field; the valid one before it still applies."""
    policy, problems = MirrorPolicy.from_objects([
        idms("mirrors", rule("quay.io/good", "mirror.local/good"), entry),
    ])
    assert problems == [f"{IDMS_LABEL}: {problem}"]
    assert [str(s.ref) for s in policy.pull_sources(ImageRef.parse(f"quay.io/good/x@{D}"))] == [
        f"mirror.local/good/x@{D}", f"quay.io/good/x@{D}"]
    assert [str(s.ref) for s in policy.pull_sources(ImageRef.parse(f"quay.io/other/x@{D}"))] == [
        f"quay.io/other/x@{D}"]


def test_invalid_mirror_dropped_others_kept() -> None:
    policy, problems = MirrorPolicy.from_objects([
        itms("t", rule("quay.io", "bad mirror", "m.local", policy=NEVER)),
    ])
    assert problems == ['ImageTagMirrorSet/t: spec.imageTagMirrors[0].mirrors[0]: "bad mirror" is not a valid mirror '
                        "(expected host[:port][/path])"]
    assert [str(s.ref) for s in policy.pull_sources(ImageRef.parse("quay.io/a/b:1"))] == ["m.local/a/b:1"]


def test_icsp_sources_are_validated_too() -> None:
    """ICSP's CRD has no patterns, so the API server accepts anything there."""
    policy, problems = MirrorPolicy.from_objects([icsp("legacy", rule("quay.io/ns:v1", "m.local"))])
    assert problems == ['ImageContentSourcePolicy/legacy: spec.repositoryDigestMirrors[0].source: "quay.io/ns:v1" '
                        "is not a valid source (a tag or digest is not allowed)"]
    assert not policy


@pytest.mark.parametrize(("obj", "problem"), [
    pytest.param({**idms("x"), "spec": None}, "ImageDigestMirrorSet/x: spec: expected a mapping, got NoneType",
                 id="no-spec"),
    pytest.param({**itms("x"), "spec": {"imageTagMirrors": {"source": "quay.io"}}},
                 "ImageTagMirrorSet/x: spec.imageTagMirrors: expected a list, got dict", id="rules-not-a-list"),
    pytest.param({**icsp("x", rule("")), "metadata": {}},
                 'ImageContentSourcePolicy/<unnamed>: spec.repositoryDigestMirrors[0].source: "" is not a valid source',
                 id="unnamed-object"),
])
def test_malformed_object_reported(obj: dict[str, Any], problem: str) -> None:
    policy, problems = MirrorPolicy.from_objects([obj, idms("ok", rule("quay.io", "m.local"))])
    assert problems == [problem]
    assert policy.digest_rules and policy.digest_rules[0].source == "quay.io"


def test_rules_absent_is_no_problem() -> None:
    assert MirrorPolicy.from_objects([{**idms("x"), "spec": {}}]) == (MirrorPolicy.EMPTY, [])


def test_long_invalid_scope_is_rejected_quickly() -> None:
    """The CRD patterns have nested repeats; ours must not backtrack catastrophically in `re`."""
    source = "quay.io/" + "a" * 60 + "!"
    _, problems = MirrorPolicy.from_objects([idms("x", rule(source, "m.local"))])
    assert len(problems) == 1


def test_sample_file_through_load_files() -> None:
    """A disconnected cluster's dump, read as `kmm-dtk plan -f` reads it."""
    objects = load_files([str(DATA / "mirrors-disconnected.yaml")])
    assert [o["kind"] for o in objects.mirror_sets] == ["ImageDigestMirrorSet", "ImageTagMirrorSet"]
    assert objects.ignored == 0
    policy, problems = MirrorPolicy.from_objects(objects.mirror_sets)
    assert problems == []

    def where(ref: str) -> list[str]:
        return [str(s.ref) for s in policy.pull_sources(ImageRef.parse(ref))]

    assert where(f"quay.io/openshift-release-dev/ocp-release@{D}") == [
        f"mirror.local:5000/ocp4/openshift4@{D}", f"quay.io/openshift-release-dev/ocp-release@{D}"]
    assert where(f"quay.io/openshift-release-dev/ocp-v4.0-art-dev@{D}") == [f"mirror.local:5000/ocp4/openshift4@{D}"]
    assert where("registry.redhat.io/ubi9/ubi:latest") == [
        "mirror.local:5000/redhat/ubi9/ubi:latest", "registry.redhat.io/ubi9/ubi:latest"]
    assert where("quay.io/example/drivers/simple-kmod:5.14.0-284.el9.x86_64") == [
        "mirror.local:5000/drivers/simple-kmod:5.14.0-284.el9.x86_64"]
    assert where("quay.io/example/drivers:v1") == ["mirror.local:5000/drivers:v1"]


def test_load_files_collects_typed_mirror_lists(tmp_path: Path) -> None:
    dump = tmp_path / "icsp.yaml"
    dump.write_text(
        "apiVersion: operator.openshift.io/v1alpha1\nkind: ImageContentSourcePolicyList\nitems:\n"
        "- metadata: {name: legacy}\n  spec:\n    repositoryDigestMirrors:\n"
        "    - {source: quay.io/ns, mirrors: [mirror.local/ns]}\n",
        encoding="utf-8",
    )
    objects = load_files([str(dump)])
    assert [(o["kind"], o["metadata"]["name"]) for o in objects.mirror_sets] == [("ImageContentSourcePolicy", "legacy")]
    policy, problems = MirrorPolicy.from_objects(objects.mirror_sets)
    assert problems == [] and policy.digest_rules[0].source == "quay.io/ns"
