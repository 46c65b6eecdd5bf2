"""What registries and Secrets send is read with bounds: auth files and pull Secrets, release files,
manifests, image configs, error bodies. Whatever the bytes, each reader raises only the error type its
callers handle, naming the source; hostile JSON gets one line saying what is wrong."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmm_dtk.registry.auth import AuthConfig, AuthConfigError
from kmm_dtk.registry.client import RegistryError, _error_code
from kmm_dtk.registry.image import _document
from kmm_dtk.registry.reference import ImageRef
from kmm_dtk.registry.release import ReleaseLookupError, parse_dtk_release_json, parse_image_references

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTILE = {
    "deep": ('{"auths": ' + "[" * 5000 + "]" * 5000 + "}", "nesting deeper than"),
    "unclosed": ("[" * 200_000, "nesting deeper than"),
    "digits": ('{"auths": {}, "n": ' + "4" * 5000 + "}", "integer of 5000 digits (at most 100)"),
    "nan": ('{"auths": {}, "n": NaN}', "NaN is not a JSON number"),
    "surrogate": ('{"auths": {"\\udfff": {}}}', "lone surrogate"),
}
json_bytes = st.one_of(
    st.binary(max_size=300),
    st.text(alphabet='[]{}",:0123456789-.eEtrufalsnNIiy \\u', max_size=300).map(str.encode),
    st.sampled_from([text.encode() for text, _ in HOSTILE.values()]),
)


def secret(data: bytes, type_: str = "kubernetes.io/dockerconfigjson", key: str = ".dockerconfigjson") -> dict:
    return {"type": type_, "metadata": {"namespace": "kmm", "name": "pull"},
            "data": {key: base64.b64encode(data).decode()}}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_auth_json_names_the_file_or_the_secret_field(name, tmp_path):
    text, problem = HOSTILE[name]
    path = tmp_path / "auth.json"
    path.write_text(text)
    with pytest.raises(AuthConfigError) as caught:
        AuthConfig.from_file(path)
    assert str(caught.value).startswith(f"{path}: ") and problem in str(caught.value)
    with pytest.raises(AuthConfigError) as caught:
        AuthConfig.from_secret(secret(text.encode()))
    assert str(caught.value).startswith("Secret kmm/pull: .dockerconfigjson: ") and problem in str(caught.value)
    with pytest.raises(AuthConfigError, match=r"^Secret kmm/pull: \.dockercfg: "):
        AuthConfig.from_secret(secret(text.encode(), "kubernetes.io/dockercfg", ".dockercfg"))


def test_an_auth_file_over_the_bound_is_refused_unread(tmp_path):
    path = tmp_path / "auth.json"
    path.write_text('{"auths": {}, "pad": "' + "x" * (4 << 20) + '"}')
    with pytest.raises(AuthConfigError, match=r"document larger than 4194304 bytes"):
        AuthConfig.from_file(path)


def test_unusable_sources_are_carried_as_problems_through_merges():
    bad = AuthConfig(problems=("Secret kmm/pull: .dockerconfigjson: nesting deeper than 32 levels",))
    good = AuthConfig.from_json({"auths": {"quay.io": {"auth": base64.b64encode(b"u:p").decode()}}}, "auth.json")
    merged = AuthConfig.EMPTY.merged(bad, good, bad)
    assert merged.problems == bad.problems
    assert merged.keys() == ["quay.io"] and merged == good  # problems never change what is looked up
    assert not AuthConfig.EMPTY.problems and not bad


@SETTINGS
@given(json_bytes)
def test_auth_readers_raise_only_auth_config_error(data):
    for read in (lambda: AuthConfig.from_json(data, "auth.json"), lambda: AuthConfig.from_secret(secret(data))):
        try:
            config = read()
        except AuthConfigError as err:
            assert "\n" not in str(err) and (str(err).startswith("auth.json: ") or str(err).startswith("Secret"))
        else:
            assert isinstance(config, AuthConfig)


@SETTINGS
@given(json_bytes)
def test_release_readers_raise_only_their_errors(data):
    try:
        parse_image_references(data, "quay.io/ocp/release:4.18")
    except ReleaseLookupError as err:
        assert str(err).startswith("release quay.io/ocp/release:4.18: ") and "\n" not in str(err)
    try:
        parse_dtk_release_json(data, "quay.io/ocp/dtk@sha256:" + "0" * 64)
    except ValueError as err:
        assert str(err).startswith("DTK image quay.io/ocp/dtk@") and "\n" not in str(err)


@SETTINGS
@given(json_bytes)
def test_manifest_and_error_body_readers_raise_only_registry_errors(data):
    ref = ImageRef.parse("quay.io/a/b:1")
    try:
        doc = _document(data, ref)
    except RegistryError as err:
        assert str(err).startswith("manifest of quay.io/a/b:1") and "\n" not in str(err)
    else:
        assert doc == json.loads(data) and isinstance(doc, dict)
    code = _error_code(data)
    assert code is None or (isinstance(code, str) and code.isupper())


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_release_files_and_manifests_name_the_problem(name):
    text, problem = HOSTILE[name]
    with pytest.raises(ReleaseLookupError, match="release-manifests/image-references") as caught:
        parse_image_references(text.encode(), "quay.io/ocp/release:4.18")
    assert problem in str(caught.value)
    with pytest.raises(RegistryError) as caught:
        _document(text.encode(), ImageRef.parse("quay.io/a/b:1"))
    assert problem in str(caught.value) and "quay.io/a/b:1" in str(caught.value)
    assert _error_code(text.encode()) is None
