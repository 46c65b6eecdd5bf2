"""Pull credentials (kmm_dtk.registry.auth): the file and Secret shapes, lookup, and never leaking a secret."""

from __future__ import annotations

import base64
import json
import traceback

import pytest

from kmm_dtk.registry.auth import AuthConfig, AuthConfigError, Credential, normalize_key
from kmm_dtk.registry.reference import ImageRef

SECRET = "hunter2-top-secret"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def auths(entries: dict) -> dict:
    return {"auths": entries}


def secret(data: dict, *, type_: str | None = "kubernetes.io/dockerconfigjson", name: str = "pull") -> dict:
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"namespace": "kmm", "name": name},
           "data": {k: base64.b64encode(v if isinstance(v, bytes) else json.dumps(v).encode()).decode()
                    for k, v in data.items()}}
    if type_:
        obj["type"] = type_
    return obj


def user(config: AuthConfig, text: str) -> str | None:
    found = config.lookup(ImageRef.parse(text))
    return found.username if found else None


# -- shapes ------------------------------------------------------------------------------------------

def test_auth_json_with_auth_field():
    config = AuthConfig.from_json(json.dumps(auths({"quay.io": {"auth": b64(f"robot:{SECRET}")}})), "auth.json")
    assert config.lookup(ImageRef.parse("quay.io/ns/repo")) == Credential("robot", SECRET)


def test_username_and_password_fields_and_bytes_input():
    data = json.dumps(auths({"quay.io": {"username": "u", "password": "p:with:colons"}})).encode()
    assert AuthConfig.from_json(data, "x").lookup(ImageRef.parse("quay.io/a/b")) == Credential("u", "p:with:colons")


def test_password_may_contain_colons_in_auth_field():
    config = AuthConfig.from_json(auths({"quay.io": {"auth": b64("u:a:b:c")}}), "x")
    assert config.lookup(ImageRef.parse("quay.io/a/b")).password == "a:b:c"


def test_dockercfg_shape_is_the_map_itself():
    config = AuthConfig.from_json({"https://index.docker.io/v1/": {"auth": b64("hubuser:pw"), "email": "x@y"}},
                                  "legacy")
    assert user(config, "busybox") == "hubuser"


def test_entries_without_credentials_are_skipped():
    config = AuthConfig.from_json(auths({"quay.io": {}, "ghcr.io": {"identitytoken": "abc"},
                                         "reg.io": {"auth": ""}}), "x")
    assert not config
    assert config.lookup(ImageRef.parse("quay.io/a/b")) is None


def test_from_file(tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(auths({"reg.example.com:5000": {"auth": b64("u:p")}})))
    config = AuthConfig.from_file(path)
    assert user(config, "reg.example.com:5000/x/y:1") == "u"
    assert user(config, "reg.example.com/x/y:1") is None  # another port is another registry
    assert config.sources == (str(path),)


def test_from_secret_dockerconfigjson():
    config = AuthConfig.from_secret(secret({".dockerconfigjson": auths({"quay.io": {"auth": b64("r:p")}})}))
    assert user(config, "quay.io/a/b") == "r"
    assert config.sources == ("Secret kmm/pull",)


def test_from_secret_dockercfg():
    obj = secret({".dockercfg": {"quay.io": {"auth": b64("old:p")}}}, type_="kubernetes.io/dockercfg")
    assert user(AuthConfig.from_secret(obj), "quay.io/a/b") == "old"


def test_from_secret_without_type_finds_the_key():
    obj = secret({".dockerconfigjson": auths({"quay.io": {"auth": b64("r:p")}})}, type_=None)
    assert user(AuthConfig.from_secret(obj), "quay.io/a/b") == "r"


# -- lookup ------------------------------------------------------------------------------------------

def test_most_specific_key_wins():
    config = AuthConfig.from_json(auths({
        "quay.io": {"auth": b64("host:p")},
        "quay.io/org": {"auth": b64("org:p")},
        "quay.io/org/repo": {"auth": b64("repo:p")},
        "quay.io/org/repo/deeper": {"auth": b64("deeper:p")},
    }), "x")
    assert user(config, "quay.io/org/repo:v1") == "repo"
    assert user(config, "quay.io/org/repo/deeper/still:v1") == "deeper"
    assert user(config, "quay.io/org/other") == "org"
    assert user(config, "quay.io/orgx/repo") == "host"  # path components, not string prefixes
    assert user(config, "quay.io/other/repo") == "host"
    assert user(config, "quay.io.evil.com/org/repo") is None


@pytest.mark.parametrize("key", [
    "https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io", "docker.io",
    "https://registry-1.docker.io/v2/", "http://docker.io/",
])
def test_docker_hub_keys_normalise(key):
    config = AuthConfig.from_json(auths({key: {"auth": b64("hub:p")}}), "x")
    assert user(config, "busybox:latest") == "hub"
    assert user(config, "docker.io/someone/tool") == "hub"


@pytest.mark.parametrize("key, normalised", [
    ("https://quay.io", "quay.io"),
    ("https://quay.io/v2/", "quay.io"),
    ("quay.io/v1", "quay.io"),
    ("Quay.IO/org/", "quay.io/org"),
    ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
    ("https://index.docker.io/v1/", "docker.io"),
])
def test_normalize_key(key, normalised):
    assert normalize_key(key) == normalised


def test_plain_key_beats_legacy_spelling_whatever_the_order():
    for entries in ({"https://quay.io/v1/": {"auth": b64("legacy:p")}, "quay.io": {"auth": b64("plain:p")}},
                    {"quay.io": {"auth": b64("plain:p")}, "https://quay.io/v1/": {"auth": b64("legacy:p")}}):
        assert user(AuthConfig.from_json(auths(entries), "x"), "quay.io/a/b") == "plain"


def test_merged_first_wins_and_keeps_the_rest():
    module = AuthConfig.from_json(auths({"quay.io": {"auth": b64("module:p")}}), "Secret ns/module")
    builder = AuthConfig.from_json(auths({"quay.io": {"auth": b64("builder:p")},
                                          "registry.redhat.io": {"auth": b64("rh:p")}}), "Secret ns/builder")
    merged = module.merged(builder)
    assert user(merged, "quay.io/a/b") == "module"
    assert user(merged, "registry.redhat.io/a/b") == "rh"
    assert merged.sources == ("Secret ns/module", "Secret ns/builder")
    assert user(builder.merged(module), "quay.io/a/b") == "builder"
    assert user(AuthConfig.EMPTY.merged(module), "quay.io/a/b") == "module"


def test_empty_is_falsy_and_finds_nothing():
    assert not AuthConfig.EMPTY
    assert AuthConfig.EMPTY.lookup(ImageRef.parse("quay.io/a/b")) is None


# -- secrets stay secret -----------------------------------------------------------------------------

def test_repr_and_str_never_show_the_password():
    credential = Credential("robot", SECRET)
    config = AuthConfig.from_json(auths({"quay.io": {"auth": b64(f"robot:{SECRET}")}}), "auth.json")
    for text in (repr(credential), str(credential), repr(config), str(config), str([credential]),
                 repr(config.lookup(ImageRef.parse("quay.io/a/b")))):
        assert SECRET not in text
        assert b64(f"robot:{SECRET}") not in text
    assert "robot" in repr(credential)
    assert "quay.io" in repr(config)


@pytest.mark.parametrize("data, fragment", [
    ("{not json " + SECRET, "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"auths": ["quay.io"]}, "'auths' is not an object"),
    (auths({"quay.io": "u:" + SECRET}), "entry 'quay.io' is not an object"),
    (auths({"quay.io": {"auth": "%%%" + SECRET}}), "'auth' is not base64"),
    (auths({"quay.io": {"auth": b64("no-colon-" + SECRET)}}), "does not hold 'user:password'"),
    (auths({"quay.io": {"auth": 12}}), "'auth' is not a string"),
    (auths({"quay.io": {"username": "u"}}), "needs both 'username' and 'password'"),
    (auths({"quay.io": {"password": SECRET}}), "needs both 'username' and 'password'"),
    (auths({" ": {"auth": b64("u:" + SECRET)}}), "empty registry key"),
    ({"credsStore": SECRET}, "entry 'credsStore' is not an object"),
])
def test_errors_name_the_source_not_the_secret(data, fragment):
    with pytest.raises(AuthConfigError) as caught:
        AuthConfig.from_json(data, "/etc/kmm/auth.json")
    message = str(caught.value)
    assert message.startswith("/etc/kmm/auth.json: ")
    assert fragment in message
    assert SECRET not in message
    assert SECRET not in "".join(traceback.format_exception(caught.value))  # no chained error shows it


def test_secret_errors_name_the_secret_object():
    bad_base64 = secret({})
    bad_base64["data"] = {".dockerconfigjson": "!!!" + SECRET}
    with pytest.raises(AuthConfigError,
                       match=r"^Secret kmm/pull: key '.dockerconfigjson' is not valid base64") as caught:
        AuthConfig.from_secret(bad_base64)
    assert SECRET not in str(caught.value)

    with pytest.raises(AuthConfigError, match=r"^Secret kmm/other: no .dockerconfigjson key"):
        AuthConfig.from_secret(secret({"token": {"x": SECRET}}, name="other"))

    with pytest.raises(AuthConfigError, match=r"^Secret kmm/pull: entry 'quay.io': 'auth' is not base64") as caught:
        AuthConfig.from_secret(secret({".dockerconfigjson": auths({"quay.io": {"auth": "%" + SECRET}})}))
    assert SECRET not in str(caught.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(AuthConfigError, match=r"auth.json: cannot read"):
        AuthConfig.from_file(tmp_path / "auth.json")
