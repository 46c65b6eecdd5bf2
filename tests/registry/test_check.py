"""RegistryChecker against a real registry (TLS + htpasswd): the four answers, the cache, mirrors as
nodes use them, registries that do not answer, and the DTK kernel check."""

from __future__ import annotations

import json

import pytest

from kmm_dtk.core.module import RegistryTLS
from kmm_dtk.core.plan import IMAGE_HASH_LABEL, Action, PlanEntry, Reason
from kmm_dtk.core.verdicts import DtkState, ImageState
from kmm_dtk.registry.auth import AuthConfig
from kmm_dtk.registry.check import RegistryChecker
from kmm_dtk.registry.client import RegistryClient
from kmm_dtk.registry.mirrors import MirrorPolicy
from kmm_dtk.registry.tls import TrustStore
from tests.support.clock import FakeClock
from tests.support.loopback import CountingListener
from tests.support.objects import unique_name
from tests.support.registry import dtk_release_files, push_image

pytestmark = pytest.mark.registry

KERNEL = "5.14.0-570.27.1.el9_6.x86_64"
RT_KERNEL = "5.14.0-570.27.1.el9_6.x86_64+rt"
HASH = "1234567890abcdef1234"


def entry(image: str, dtk: str | None = None, kernel: str = KERNEL, **kw) -> PlanEntry:
    return PlanEntry("ns/m", kernel, Action.BUILD, Reason.BUILD_NEEDED, "build", image=image, hash=HASH,
                     dtk_image=dtk, rhcos="9.6.20250715-0", **kw)


def requests(server) -> int:
    return sum(1 for line in server.log_text().splitlines() if '"GET /v2/' in line or '"HEAD /v2/' in line)


@pytest.fixture
def repo() -> str:
    return unique_name("check")


@pytest.fixture
def client(registry_tls):
    with RegistryClient(TrustStore(ca_paths=(str(registry_tls.ca_file),)),
                        AuthConfig.from_json(registry_tls.auth_json(), "test"), attempts=2, backoff=0.01) as c:
        yield c


def policy(*objects) -> MirrorPolicy:
    found, problems = MirrorPolicy.from_objects(objects)
    assert problems == []
    return found


def mirror_set(kind: str, source: str, mirror: str, never_contact_source: bool = False) -> dict:
    field = {"ImageDigestMirrorSet": "imageDigestMirrors", "ImageTagMirrorSet": "imageTagMirrors"}[kind]
    rule = {"source": source, "mirrors": [mirror]}
    if never_contact_source:
        rule["mirrorSourcePolicy"] = "NeverContactSource"
    return {"apiVersion": "config.openshift.io/v1", "kind": kind, "metadata": {"name": "m"}, "spec": {field: [rule]}}


@pytest.mark.parametrize("labels, state, words", [
    ({IMAGE_HASH_LABEL: HASH}, ImageState.CURRENT, "is up to date"),
    ({IMAGE_HASH_LABEL: "0" * 20}, ImageState.OUTDATED, f"hash {'0' * 20}, plan {HASH}"),
    ({"vendor": "someone"}, ImageState.FOREIGN, "built elsewhere"),
    (None, ImageState.MISSING, "not found"),
], ids=["current", "outdated", "foreign", "missing"])
def test_the_four_answers(registry_tls, client, repo, labels, state, words):
    if labels is not None:
        push_image(registry_tls, repo, KERNEL, labels=labels, index=True)
    answer = RegistryChecker(client).check(entry(f"{registry_tls.host}/{repo}:{KERNEL}"))
    assert answer.state is state and words in answer.message
    assert answer.exists is (state in (ImageState.CURRENT, ImageState.FOREIGN))


def test_answers_are_cached_until_the_ttl_or_a_build_invalidates_them(registry_tls, client, repo):
    clock = FakeClock()
    checker = RegistryChecker(client, ttl=60, clock=clock)
    image = f"{registry_tls.host}/{repo}:{KERNEL}"
    assert checker.check(entry(image)).state is ImageState.MISSING
    push_image(registry_tls, repo, KERNEL, labels={IMAGE_HASH_LABEL: HASH})
    before = requests(registry_tls)
    assert checker.check(entry(image)).state is ImageState.MISSING  # cached: the registry is not asked
    assert requests(registry_tls) == before
    checker.invalidate(image)  # a Build pushed it
    assert checker.check(entry(image)).state is ImageState.CURRENT
    push_image(registry_tls, repo, KERNEL, labels={IMAGE_HASH_LABEL: "f" * 20})
    clock.now += 61
    assert checker.check(entry(image)).state is ImageState.OUTDATED


def test_wrong_credentials_are_unknown_never_missing_and_asked_again(registry_tls, repo):
    bad = AuthConfig.from_json({"auths": {registry_tls.host: {"username": registry_tls.username,
                                                              "password": "wrong-pass"}}}, "test")
    with RegistryClient(TrustStore(ca_paths=(str(registry_tls.ca_file),)), bad) as c:
        checker = RegistryChecker(c)
        image = f"{registry_tls.host}/{repo}:{KERNEL}"
        first = checker.check(entry(image))
        assert first.state is ImageState.UNKNOWN and "401" in first.message
        assert "wrong-pass" not in first.message
        before = requests(registry_tls)
        assert checker.check(entry(image)).state is ImageState.UNKNOWN
        assert requests(registry_tls) > before  # a refusal is not cached: fixing the Secret takes effect


def test_a_registry_that_does_not_answer_is_not_asked_again_for_a_while():
    clock = FakeClock()
    with CountingListener("hold") as dead, RegistryClient(timeout=0.3, attempts=2, backoff=0.01) as client:
        checker = RegistryChecker(client, unreachable_hold=30, clock=clock)
        first = checker.check(entry(f"{dead.host}/ns/a:{KERNEL}"))
        assert first.state is ImageState.UNKNOWN and "timed out" in first.message
        asked = dead.accepted
        assert asked == 2  # the client's attempts
        other = checker.check(entry(f"{dead.host}/ns/b:{KERNEL}"))
        assert other.state is ImageState.UNKNOWN and dead.accepted == asked
        clock.now += 31
        checker.check(entry(f"{dead.host}/ns/b:{KERNEL}"))
        assert dead.accepted > asked


def test_tag_mirror_answers_for_an_unreachable_source(registry_tls, client, repo):
    with CountingListener("drop") as source:
        push_image(registry_tls, f"mirror/{repo}", KERNEL, labels={IMAGE_HASH_LABEL: HASH})
        mirrors = policy(mirror_set("ImageTagMirrorSet", f"{source.host}/{repo}", f"{registry_tls.host}/mirror/{repo}"))
        checker = RegistryChecker(client, mirrors=lambda: mirrors)
        answer = checker.check(entry(f"{source.host}/{repo}:{KERNEL}"))
        assert answer.state is ImageState.CURRENT
        assert answer.via == f"{registry_tls.host}/mirror/{repo}"
        assert f"through mirror {registry_tls.host}/mirror/{repo}" in answer.message
        assert source.accepted == 0  # found on the mirror: the source is never asked


def test_missing_on_the_mirror_then_the_source_is_asked_as_a_node_would(registry_tls, client, repo):
    with CountingListener("drop") as source:
        allow = policy(mirror_set("ImageTagMirrorSet", f"{source.host}/{repo}", f"{registry_tls.host}/mirror/{repo}"))
        answer = RegistryChecker(client, mirrors=lambda: allow).check(entry(f"{source.host}/{repo}:{KERNEL}"))
        assert answer.state is ImageState.UNKNOWN and source.accepted > 0  # the source might have it
        never = policy(mirror_set("ImageTagMirrorSet", f"{source.host}/{repo}", f"{registry_tls.host}/mirror/{repo}",
                                  never_contact_source=True))
        asked = source.accepted
        answer = RegistryChecker(client, mirrors=lambda: never).check(entry(f"{source.host}/{repo}:{KERNEL}"))
        assert answer.state is ImageState.MISSING and source.accepted == asked


def test_registry_tls_insecure_applies_to_the_modules_registry(registry_plain, client, repo):
    push_image(registry_plain, repo, KERNEL, labels={IMAGE_HASH_LABEL: HASH})
    image = f"{registry_plain.host}/{repo}:{KERNEL}"
    assert RegistryChecker(client).check(entry(image)).state is ImageState.UNKNOWN  # HTTPS to a plain-HTTP registry
    answer = RegistryChecker(client).check(entry(image, registry_tls=RegistryTLS(insecure=True)))
    assert answer.state is ImageState.CURRENT


def dtk(registry, repo: str, kernel: str, rt_kernel: str | None = None) -> str:
    return push_image(registry, f"{repo}/dtk", "latest", files=dtk_release_files(kernel, rt_kernel)).pull_spec


def test_dtk_for_the_kernel_or_its_rt_kernel_matches(registry_tls, client, repo):
    image = dtk(registry_tls, repo, KERNEL, RT_KERNEL)
    checker = RegistryChecker(client)
    assert checker.check_dtk(entry("x/y:z", dtk=image)).state is DtkState.MATCHES
    assert checker.check_dtk(entry("x/y:z", dtk=image, kernel=RT_KERNEL)).state is DtkState.MATCHES


def test_dtk_for_another_kernel_is_a_mismatch_naming_both(registry_tls, client, repo):
    other = "5.14.0-427.40.1.el9_4.x86_64"
    image = dtk(registry_tls, repo, other)
    answer = RegistryChecker(client).check_dtk(entry("x/y:z", dtk=image))
    assert answer.state is DtkState.MISMATCH
    assert other in answer.message and KERNEL in answer.message and image in answer.message


def test_dtk_through_a_digest_mirror(registry_tls, client, repo):
    with CountingListener("drop") as source:
        pulled = dtk(registry_tls, f"mirror/{repo}", KERNEL)
        digest = pulled.rsplit("@", 1)[1]
        mirrors = policy(mirror_set("ImageDigestMirrorSet", f"{source.host}/{repo}",
                                    f"{registry_tls.host}/mirror/{repo}", never_contact_source=True))
        answer = RegistryChecker(client, mirrors=lambda: mirrors).check_dtk(
            entry("x/y:z", dtk=f"{source.host}/{repo}/dtk@{digest}"))
        assert answer.state is DtkState.MATCHES and source.accepted == 0


def test_unreadable_dtk_is_unknown(client):
    with CountingListener("drop") as dead:
        answer = RegistryChecker(client).check_dtk(entry("x/y:z", dtk=f"{dead.host}/dtk@sha256:{'a' * 64}"))
        assert answer.state is DtkState.UNKNOWN


@pytest.mark.parametrize("kernel, platform", [
    ("5.14.0-570.27.1.el9_6.x86_64", ("linux", "amd64")),
    ("5.14.0-570.27.1.el9_6.aarch64", ("linux", "arm64")),
    ("5.14.0-570.27.1.el9_6.aarch64+64k", ("linux", "arm64")),
    ("5.14.0-570.27.1.el9_6.x86_64+rt", ("linux", "amd64")),
    ("5.14.0-570.27.1.el9_6.s390x", ("linux", "s390x")),
    ("5.14.0-570.27.1.el9_6.ppc64le", ("linux", "ppc64le")),
    ("weird", ("linux", "amd64")),
])
def test_platform_for_kernel(kernel, platform):
    from kmm_dtk.registry.check import platform_for
    assert platform_for(kernel) == platform


def test_an_index_answers_for_the_kernels_architecture(registry_tls, client, repo):
    """push_image(index=True) adds a linux/arm64 image labelled differently: the arm64 kernel sees it."""
    from tests.support.registry import OTHER_PLATFORM
    assert OTHER_PLATFORM == ("linux", "arm64")
    push_image(registry_tls, repo, "k", labels={IMAGE_HASH_LABEL: HASH}, index=True)
    checker = RegistryChecker(client)
    image = f"{registry_tls.host}/{repo}:k"
    assert checker.check(entry(image, kernel="5.14.0-1.el9.x86_64")).state is ImageState.CURRENT
    assert checker.check(entry(image, kernel="5.14.0-1.el9.aarch64")).state is ImageState.CURRENT
    # no s390x image in the index: an s390x node would find nothing, so it is built
    assert checker.check(entry(image, kernel="5.14.0-1.el9.s390x")).state is ImageState.MISSING


def test_a_malformed_image_config_is_no_answer_not_a_crash(registry_tls, client, repo):
    from tests.support.registry import push_blob, push_manifest
    config = b'{"architecture": "amd64", "os": "linux", "config": ["not", "an", "object"]}'
    digest = push_blob(registry_tls, repo, config)
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                  "size": len(config), "digest": digest},
                       "layers": []}).encode()
    push_manifest(registry_tls, repo, KERNEL, body, "application/vnd.docker.distribution.manifest.v2+json")
    answer = RegistryChecker(client).check(entry(f"{registry_tls.host}/{repo}:{KERNEL}"))
    assert answer.state is ImageState.UNKNOWN
    assert repo in answer.message


def test_a_dtk_that_names_no_kernel_is_unverified_not_refused(registry_tls, client, repo):
    image = push_image(registry_tls, f"{repo}/dtk", "old", labels={"vendor": "Red Hat"}).pull_spec
    answer = RegistryChecker(client).check_dtk(entry("x/y:z", dtk=image))
    assert answer.state is DtkState.UNVERIFIED and "not verified" in answer.message


def test_a_64k_kernel_builds_on_its_base_kernels_dtk(registry_tls, client, repo):
    arm = "5.14.0-570.27.1.el9_6.aarch64"
    image = push_image(registry_tls, f"{repo}/dtk", "arm", files=dtk_release_files(arm)).pull_spec
    checker = RegistryChecker(client)
    assert checker.check_dtk(entry("x/y:z", dtk=image, kernel=arm + "+64k")).state is DtkState.MATCHES
    assert checker.check_dtk(entry("x/y:z", dtk=image, kernel=arm + "+rt")).state is DtkState.MISMATCH


@pytest.mark.parametrize("registry, listed, expected", [
    ("mirror.lab:5000", {"mirror.lab:5000"}, True),
    ("mirror.lab:5000", {"mirror.lab"}, False),
    ("reg.corp.example.com", {"*.example.com"}, True),
    ("reg.corp.example.com:5000", {"*.example.com"}, True),
    ("example.com", {"*.example.com"}, False),
    ("quay.io", set(), False),
])
def test_is_insecure(registry, listed, expected):
    from kmm_dtk.registry.check import is_insecure
    assert is_insecure(registry, listed) is expected


def test_a_registry_the_cluster_lists_as_insecure_is_asked_over_plain_http(registry_plain, client, repo):
    push_image(registry_plain, repo, KERNEL, labels={IMAGE_HASH_LABEL: HASH})
    image = entry(f"{registry_plain.host}/{repo}:{KERNEL}")
    assert RegistryChecker(client).check(image).state is ImageState.UNKNOWN
    listed = RegistryChecker(client, insecure_registries=lambda: {registry_plain.host})
    assert listed.check(image).state is ImageState.CURRENT


def test_dtk_through_a_plain_http_mirror_the_cluster_lists_as_insecure(registry_plain, client, repo):
    with CountingListener("drop") as source:
        digest = dtk(registry_plain, f"mirror/{repo}", KERNEL).rsplit("@", 1)[1]
        mirrors = policy(mirror_set("ImageDigestMirrorSet", f"{source.host}/{repo}",
                                    f"{registry_plain.host}/mirror/{repo}", never_contact_source=True))
        wanted = entry("x/y:z", dtk=f"{source.host}/{repo}/dtk@{digest}")
        assert RegistryChecker(client, mirrors=lambda: mirrors).check_dtk(wanted).state is DtkState.UNKNOWN
        listed = RegistryChecker(client, mirrors=lambda: mirrors, insecure_registries=lambda: {registry_plain.host})
        assert listed.check_dtk(wanted).state is DtkState.MATCHES


def test_a_dtk_registry_that_does_not_answer_is_held_with_the_same_words():
    clock = FakeClock()
    with CountingListener("hold") as dead, RegistryClient(timeout=0.3, attempts=2, backoff=0.01) as client:
        checker = RegistryChecker(client, unreachable_hold=30, clock=clock)
        wanted = entry("x/y:z", dtk=f"{dead.host}/dtk@sha256:{'a' * 64}")
        first = checker.check_dtk(wanted)
        asked = dead.accepted
        assert first.state is DtkState.UNKNOWN and asked == 2
        second = checker.check_dtk(wanted)
        assert second == first and dead.accepted == asked  # not asked again; no status churn
        assert checker.check(entry(f"{dead.host}/ns/a:{KERNEL}")).state is ImageState.UNKNOWN
        assert dead.accepted == asked  # the image check respects the same hold
