"""``kmm-dtk dtk-image`` in-process against a real registry holding a synthetic release and DTK."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import pytest
import yaml

from kmm_dtk.cli import main
from tests.registry.test_release_registry import (
    KERNEL,
    RHCOS,
    RT_KERNEL,
    closed_host,
    image_references,
    push_dtk,
    push_release,
    release_json,
    unique,
)

pytestmark = pytest.mark.registry


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))


@pytest.fixture(scope="module")
def images(registry_tls):
    dtk = push_dtk(registry_tls, json_file=release_json(RT_KERNEL))
    release = push_release(registry_tls, image_references(dtk.pull_spec))
    no_dtk = push_release(registry_tls, image_references(None))
    return dtk, release, no_dtk


@pytest.fixture
def auth_file(registry_tls, tmp_path) -> Path:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(registry_tls.auth_json()))
    return path


def dtk_image(*args: str | Path) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["dtk-image", *map(str, args)], out=out)
    return code, out.getvalue()


def assert_one_line_error(capsys, code: int, expected_code: int, *fragments: str, secret: str | None = None) -> str:
    err = capsys.readouterr().err
    assert code == expected_code, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kmm-dtk dtk-image: ")
    for fragment in fragments:
        assert fragment in lines[0]
    if secret:
        assert secret not in err
    return lines[0]


def test_text(registry_tls, images, auth_file, capsys):
    dtk, release, _ = images
    code, out = dtk_image("--release", release.pull_spec, "--registry-config", auth_file,
                          "--ca-file", registry_tls.ca_file)
    assert (code, out) == (0, dtk.pull_spec + "\n")
    assert capsys.readouterr().err == ""


def test_text_with_kernel(registry_tls, images, auth_file):
    dtk, release, _ = images
    code, out = dtk_image("--release", release.tag_spec, "-a", auth_file, "--ca-file", registry_tls.ca_file,
                          "--kernel")
    assert code == 0
    assert out.splitlines() == [dtk.pull_spec, f"KERNEL_VERSION={KERNEL}", f"RT_KERNEL_VERSION={RT_KERNEL}"]


def test_json(registry_tls, images, auth_file):
    dtk, release, _ = images
    code, out = dtk_image("--release", release.pull_spec, "--registry-config", auth_file,
                          "--ca-file", registry_tls.ca_file, "-o", "json")
    assert code == 0
    assert json.loads(out) == {"release": release.pull_spec, "dtkImage": dtk.pull_spec, "rhcosVersion": RHCOS,
                               "version": "4.18.1", "kernel": None, "rtKernel": None}


def test_release_as_positional_argument_like_oc_adm_release_info(registry_tls, images, auth_file, capsys):
    dtk, release, _ = images
    code, out = dtk_image(release.pull_spec, "-a", auth_file, "--ca-file", registry_tls.ca_file)
    assert (code, out) == (0, dtk.pull_spec + "\n")
    assert capsys.readouterr().err == ""


def test_release_given_both_ways_alike_is_accepted(registry_tls, images, auth_file):
    dtk, release, _ = images
    code, out = dtk_image(release.pull_spec, "--release", release.pull_spec, "-a", auth_file,
                          "--ca-file", registry_tls.ca_file)
    assert (code, out) == (0, dtk.pull_spec + "\n")


def test_yaml(registry_tls, images, auth_file):
    dtk, release, _ = images
    code, out = dtk_image(release.pull_spec, "-a", auth_file, "--ca-file", registry_tls.ca_file, "-o", "yaml",
                          "--kernel")
    assert code == 0
    assert yaml.safe_load(out) == {"release": release.pull_spec, "dtkImage": dtk.pull_spec, "rhcosVersion": RHCOS,
                                   "version": "4.18.1", "kernel": KERNEL, "rtKernel": RT_KERNEL}


def test_json_with_kernel_and_skip_verify(images, auth_file):
    dtk, release, _ = images
    code, out = dtk_image("--release", release.pull_spec, "--registry-config", auth_file,
                          "--insecure-skip-tls-verify", "-o", "json", "--kernel")
    assert code == 0
    assert (json.loads(out)["kernel"], json.loads(out)["rtKernel"]) == (KERNEL, RT_KERNEL)


def test_registry_auth_file_default(registry_tls, images, auth_file, monkeypatch):
    dtk, release, _ = images
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    assert dtk_image("--release", release.pull_spec, "--ca-file", registry_tls.ca_file) == (0, dtk.pull_spec + "\n")


def test_xdg_runtime_dir_auth_json_default(registry_tls, images, auth_file, tmp_path):
    dtk, release, _ = images
    (tmp_path / "runtime" / "containers").mkdir(parents=True)
    auth_file.rename(tmp_path / "runtime" / "containers" / "auth.json")
    assert dtk_image("--release", release.pull_spec, "--ca-file", registry_tls.ca_file) == (0, dtk.pull_spec + "\n")


def test_insecure_plain_http(registry_plain):
    dtk = push_dtk(registry_plain, json_file=release_json())
    release = push_release(registry_plain, image_references(dtk.pull_spec))
    code, out = dtk_image("--release", release.pull_spec, "--insecure", "--kernel")
    assert code == 0
    assert out.splitlines() == [dtk.pull_spec, f"KERNEL_VERSION={KERNEL}", "RT_KERNEL_VERSION="]


def test_missing_driver_toolkit_tag(registry_tls, images, auth_file, capsys):
    _, _, no_dtk = images
    code, out = dtk_image("--release", no_dtk.pull_spec, "-a", auth_file, "--ca-file", registry_tls.ca_file)
    assert out == ""
    assert_one_line_error(capsys, code, 1, f"release {no_dtk.pull_spec}", 'no image tag "driver-toolkit"',
                          "release-manifests/image-references")


def test_release_not_found(registry_tls, auth_file, capsys):
    spec = f"{registry_tls.host}/{unique('ocp/release')}:4.99.0"
    code, _ = dtk_image("--release", spec, "-a", auth_file, "--ca-file", registry_tls.ca_file)
    assert_one_line_error(capsys, code, 1, f"release {spec}: not found")


def test_registry_unreachable(capsys):
    spec = f"{closed_host()}/ocp/release:4.18.1"
    code, out = dtk_image("--release", spec)
    assert out == ""
    assert_one_line_error(capsys, code, 1, f"release {spec}")


def test_untrusted_certificate(images, auth_file, registry_tls, capsys):
    _, release, _ = images
    code, _ = dtk_image("--release", release.pull_spec, "-a", auth_file)  # no --ca-file: not trusted
    assert_one_line_error(capsys, code, 1, f"release {release.pull_spec}", secret=registry_tls.password)


def test_wrong_credentials_never_printed(registry_tls, images, tmp_path, capsys):
    _, release, _ = images
    wrong = "not-the-pa55word-xyz"
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps({"auths": {registry_tls.host: {"username": registry_tls.username,
                                                               "password": wrong}}}))
    code, out = dtk_image("--release", release.pull_spec, "-a", path, "--ca-file", registry_tls.ca_file)
    assert out == ""
    line = assert_one_line_error(capsys, code, 1, "401", secret=wrong)
    assert registry_tls.password not in line


def test_credentials_never_printed_on_success(registry_tls, images, auth_file, capsys):
    _, release, _ = images
    code, out = dtk_image("--release", release.pull_spec, "-a", auth_file, "--ca-file", registry_tls.ca_file,
                          "-o", "json", "--kernel")
    captured = capsys.readouterr()
    assert code == 0
    for text in (out, captured.out, captured.err):
        assert registry_tls.password not in text
        assert registry_tls.auth_json()["auths"][registry_tls.host]["auth"] not in text


@pytest.mark.parametrize("content, problem", [
    ('{"auths": {"quay.io": {"auth": "c2VjcmV0LXRva2VuOnMzY3JldA=="', "not valid JSON"),
    ('{"auths": {"quay.io": {"auth": "s3cret pa55 not base64"}}}', "is not base64"),
    ("[]", "expected a JSON object"),
])
def test_malformed_registry_config(tmp_path, capsys, content, problem):
    path = tmp_path / "auth.json"
    path.write_text(content)
    code, out = dtk_image("--release", "quay.io/openshift-release-dev/ocp-release:4.18.1-x86_64",
                          "--registry-config", path)
    assert out == ""
    assert_one_line_error(capsys, code, 2, str(path), problem, secret="s3cret")
    assert "c2VjcmV0" not in capsys.readouterr().err


def test_malformed_registry_auth_file_from_env(tmp_path, monkeypatch, capsys):
    path = tmp_path / "env-auth.json"
    path.write_text("{")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(path))
    code, _ = dtk_image("--release", "quay.io/openshift-release-dev/ocp-release:4.18.1-x86_64")
    assert_one_line_error(capsys, code, 2, "$REGISTRY_AUTH_FILE", str(path), "not valid JSON")


def test_unreadable_registry_config(tmp_path, capsys):
    path = tmp_path / "absent.json"
    code, _ = dtk_image("--release", "quay.io/openshift-release-dev/ocp-release:4.18.1-x86_64", "-a", path)
    assert_one_line_error(capsys, code, 2, str(path), "cannot read")


@pytest.mark.parametrize("content", ["not a certificate",
                                     "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_bad_ca_file(tmp_path, capsys, content):
    path = tmp_path / "ca.pem"
    path.write_text(content)
    code, _ = dtk_image("--release", "quay.io/openshift-release-dev/ocp-release:4.18.1-x86_64", "--ca-file", path)
    assert_one_line_error(capsys, code, 2, "--ca-file", str(path))


def test_missing_ca_file(tmp_path, capsys):
    path = tmp_path / "absent.pem"
    code, _ = dtk_image("--release", "quay.io/openshift-release-dev/ocp-release:4.18.1-x86_64", "--ca-file", path)
    assert_one_line_error(capsys, code, 2, str(path), "cannot read")


@pytest.mark.parametrize("spec", ["Quay.io/Bad Name:tag", "quay.io/ocp/release@sha256:abc", "https://quay.io/x:1"])
def test_unparseable_release(capsys, spec):
    code, out = dtk_image("--release", spec)
    assert out == ""
    assert_one_line_error(capsys, code, 2, "--release", repr(spec))


@pytest.mark.parametrize("spec", ["Quay.io/Bad Name:tag", "quay.io/ocp/release@sha256:abc"])
def test_unparseable_positional_release_names_the_argument(capsys, spec):
    code, out = dtk_image(spec)
    assert out == ""
    assert_one_line_error(capsys, code, 2, "kmm-dtk dtk-image: RELEASE: ", repr(spec))


def _usage_error(capsys, *args: str) -> list[str]:
    with pytest.raises(SystemExit) as exited:
        dtk_image(*args)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert lines[0].startswith("usage: kmm-dtk dtk-image "), lines
    return lines


def test_release_given_both_ways_differently_is_a_usage_error(capsys):
    lines = _usage_error(capsys, "quay.io/ocp/release:4.18.1-x86_64", "--release", "quay.io/ocp/release:4.18.2-x86_64")
    assert lines[-1] == ("kmm-dtk dtk-image: error: RELEASE 'quay.io/ocp/release:4.18.1-x86_64' and --release "
                         "'quay.io/ocp/release:4.18.2-x86_64' differ: give the release image once")


def test_no_release_is_a_usage_error(capsys):
    lines = _usage_error(capsys, "--kernel")
    assert lines[-1] == "kmm-dtk dtk-image: error: the release image is required: kmm-dtk dtk-image RELEASE"


def test_use_oc_without_openshift_client(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "openshift_client", None)  # import fails, installed or not
    code, out = dtk_image("--release", "quay.io/openshift-release-dev/ocp-release:4.18.1-x86_64", "--use-oc")
    assert out == ""
    assert_one_line_error(capsys, code, 2, "--use-oc", "openshift-client", "kmm-dtk[oc]")


def test_use_oc_without_oc_binary(monkeypatch, capsys, tmp_path):
    fake = types.ModuleType("openshift_client")
    monkeypatch.setattr(fake, "invoke", lambda *a, **k: pytest.fail("oc must not be invoked without a binary"),
                        raising=False)
    monkeypatch.setitem(sys.modules, "openshift_client", fake)
    monkeypatch.setenv("PATH", str(tmp_path))
    code, out = dtk_image("--release", "quay.io/openshift-release-dev/ocp-release:4.18.1-x86_64", "--use-oc",
                          "--kernel")
    assert out == ""
    assert_one_line_error(capsys, code, 2, "--use-oc", "oc binary on PATH")


def test_use_oc_runs_oc_adm_release_info(monkeypatch, tmp_path, auth_file):
    """The command line handed to oc (no oc binary here: the binary check sees a stub on PATH)."""
    calls = []

    class Result:
        def status(self):
            return 0

        def out(self):
            return "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "d" * 64 + "\n"

        def err(self):
            return ""

    def invoke(verb, cmd_args=None, **kwargs):
        calls.append((verb, cmd_args, kwargs))
        return Result()

    fake = types.ModuleType("openshift_client")
    monkeypatch.setattr(fake, "invoke", invoke, raising=False)
    monkeypatch.setitem(sys.modules, "openshift_client", fake)
    stub = tmp_path / "bin" / "oc"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 99\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", str(stub.parent))
    release = "quay.io/openshift-release-dev/ocp-release:4.18.1-x86_64"
    code, out = dtk_image("--release", release, "--use-oc", "-a", auth_file, "-o", "json")
    assert code == 0
    assert json.loads(out)["dtkImage"] == "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "d" * 64
    assert calls == [("adm", ["release", "info", "--image-for=driver-toolkit", release, "-a", str(auth_file)],
                      {"no_namespace": True, "auto_raise": False})]


def test_use_oc_failure_is_one_line(monkeypatch, tmp_path, capsys):
    class Result:
        def status(self):
            return 1

        def out(self):
            return ""

        def err(self):
            return ('error: no image tag "driver-toolkit" exists in the release image '
                    "quay.io/openshift-release-dev/ocp-release:4.1.0-x86_64\n")

    fake = types.ModuleType("openshift_client")
    monkeypatch.setattr(fake, "invoke", lambda *a, **k: Result(), raising=False)
    monkeypatch.setitem(sys.modules, "openshift_client", fake)
    stub = tmp_path / "oc"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _ = dtk_image("--release", "quay.io/openshift-release-dev/ocp-release:4.1.0-x86_64", "--use-oc")
    assert_one_line_error(capsys, code, 1, "oc adm release info", 'no image tag "driver-toolkit"')
