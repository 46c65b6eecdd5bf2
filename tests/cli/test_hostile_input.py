"""Hostile input files on the command line: every one answers with exactly one line on stderr naming the
file and the problem, exit status 2, no traceback; each run gets 10 seconds, so a hang fails. A cluster
dump with malformed objects is planned around (error entries), never a crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli.test_plan_cli import DATA

EXIT_USAGE = 2


def billion_laughs() -> str:
    lines = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    for n, name in enumerate("bcdefghij"):
        prev = "abcdefghij"[n]
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HOSTILE_DUMPS = {
    "deep.json": ("[" * 100_000 + "]" * 100_000, "nesting deeper than 128 levels"),
    "deep-unclosed.json": ('{"items": ' + "[" * 500_000, "nesting deeper than 128 levels"),
    "deep.yaml": ("items:\n" + "".join(" " * i + "- \n" for i in range(1, 200)), "nesting deeper than 128 levels"),
    "deep-flow.yaml": ("items: " + "[" * 100_000, "nesting deeper than 128 levels"),
    "recursive.yaml": ("a: &a [*a]\n", "recursive YAML alias"),
    "laughs.yaml": (billion_laughs(), "YAML aliases expand to more than 100000 nodes"),
    "digits.json": ('{"apiVersion": "v1", "kind": "Node", "n": ' + "7" * 5000 + "}", "integer of 5000 digits"),
    "digits.yaml": ("apiVersion: v1\nkind: Node\nn: " + "7" * 5000 + "\n", "integer of 5000 digits"),
    "nan.json": ('{"apiVersion": "v1", "kind": "Node", "n": NaN}', "NaN is not a JSON number"),
    "surrogate.json": ('{"apiVersion": "v1", "kind": "Node", "x": "\\ud800"}', "lone surrogate"),
    "documents.yaml": ("---\n" * 100_001, "more than 100000 YAML documents"),
    "constructor.yaml": ("apiVersion: !!bool maybe\n", "invalid YAML"),
}


def kmm_dtk(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The CLI as a process; more than 10 s is a hang and fails the test (TimeoutExpired)."""
    return subprocess.run([sys.executable, "-m", "kmm_dtk", *map(str, args)], capture_output=True, text=True,
                          timeout=10)


def assert_one_line(result: subprocess.CompletedProcess[str], prefix: str, *fragments: str) -> str:
    assert result.returncode == EXIT_USAGE, (result.returncode, result.stderr[-2000:])
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(prefix)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize("name", sorted(HOSTILE_DUMPS))
def test_hostile_plan_input_is_one_line_and_exit_2(tmp_path, name):
    content, problem = HOSTILE_DUMPS[name]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8", errors="surrogatepass")
    assert_one_line(kmm_dtk("plan", "-f", DATA / "design-cluster.yaml", "-f", path), "kmm-dtk plan: ",
                    f"{path}: ", problem)


def test_plan_refuses_a_file_over_the_size_bound(tmp_path, monkeypatch, capsys):
    import kmm_dtk.dump as dump
    from kmm_dtk.cli import main
    from kmm_dtk.core.untrusted import Limits

    monkeypatch.setattr(dump, "DUMP_LIMITS", Limits(max_bytes=1000))
    path = tmp_path / "big.yaml"
    path.write_text("apiVersion: v1\nkind: Node\n" + "# padding\n" * 200)
    assert main(["plan", "-f", str(path)]) == EXIT_USAGE
    assert capsys.readouterr().err == f"kmm-dtk plan: {path}: document larger than 1000 bytes\n"


HOSTILE_AUTH = {
    "deep": ('{"auths": ' + "[" * 10_000 + "]" * 10_000 + "}", "nesting deeper than 32 levels"),
    "digits": ('{"auths": {"quay.io": {"auth": "dTpw", "n": ' + "1" * 5000 + "}}}", "integer of 5000 digits"),
    "infinity": ('{"auths": {"quay.io": {"auth": "dTpw", "n": -Infinity}}}', "-Infinity is not a JSON number"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_AUTH))
def test_hostile_registry_config_is_one_line_and_exit_2_for_every_command(tmp_path, name, monkeypatch):
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))
    content, problem = HOSTILE_AUTH[name]
    path = tmp_path / "auth.json"
    path.write_text(content)
    kubeconfig = tmp_path / "absent-kubeconfig"
    for prefix, args in (
        ("kmm-dtk plan: ", ["plan", "-f", DATA / "design-cluster.yaml", "--check-registry", "--registry-config", path]),
        ("kmm-dtk dtk-image: ", ["dtk-image", "--release", "quay.io/ocp/release:4.18.1-x86_64", "-a", path]),
        ("kmm-dtk run: ", ["run", "--kubeconfig", kubeconfig, "--registry-config", path,
                           "--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0"]),
    ):
        line = assert_one_line(kmm_dtk(*args), prefix, "--registry-config", str(path), problem)
        assert "dTpw" not in line  # the file's content is never echoed


def test_registry_config_from_the_environment_names_the_variable(tmp_path, monkeypatch, capsys):
    from kmm_dtk.cli import main

    path = tmp_path / "env-auth.json"
    path.write_text("[" * 1000 + "]" * 1000)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(path))
    assert main(["dtk-image", "--release", "quay.io/ocp/release:4.18.1-x86_64"]) == EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "$REGISTRY_AUTH_FILE" in lines[0] and str(path) in lines[0]
    assert "nesting deeper than 32 levels" in lines[0]


MALFORMED_OBJECTS = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: simple-kmod-dockerfile, namespace: simple-kmod}
  data: {1: x, dockerfile: "FROM x"}
- apiVersion: v1
  kind: Node
  metadata: {name: [odd], labels: [a, b]}
  status: {nodeInfo: [kernelVersion]}
- apiVersion: v1
  kind: Node
  metadata: {name: 12, labels: {7: 8, k: [1]}}
  status: {nodeInfo: {kernelVersion: 4.18, osImage: {x: 1}}}
- apiVersion: image.openshift.io/v1
  kind: ImageStream
  metadata: {name: other, namespace: 2024-01-01}
  spec: {tags: {a: b}}
  status: [1, 2]
- apiVersion: kmm.sigs.x-k8s.io/v1beta1
  kind: Module
  metadata: {name: [m], namespace: {n: 1}}
  spec: [selector]
- apiVersion: kmm.sigs.x-k8s.io/v1beta1
  kind: Module
  metadata: {name: other, namespace: [simple-kmod]}
  spec: {selector: {1: 2}, moduleLoader: {container: {kernelMappings: {regexp: x}}}}
"""


def test_malformed_objects_are_planned_around_and_the_configmap_is_named(tmp_path):
    """The design cluster, but its Dockerfile ConfigMap (listed after it: the last one wins) has a
    non-string key, and odd Nodes, ImageStreams and Modules come along: error entries, not a crash."""
    path = tmp_path / "malformed.yaml"
    path.write_text(MALFORMED_OBJECTS)
    result = kmm_dtk("plan", "-o", "json", "--strict", "-f", DATA / "design-cluster.yaml", "-f", path)
    assert result.returncode == 1, result.stderr  # --strict: error entries
    assert "Traceback" not in result.stderr
    plan = json.loads(result.stdout)
    design = [b for b in plan["builds"] if b["module"] == "simple-kmod/simple-kmod"]
    assert design and all(b["action"] == "error" for b in design)
    assert {b["reasonCode"] for b in design} == {"InvalidDockerfileConfigMap"}
    assert "ConfigMap simple-kmod/simple-kmod-dockerfile" in design[0]["reason"]
    assert "data key 1 is not a string (int; quote it in YAML)" in design[0]["reason"]
    odd = [b for b in plan["builds"] if b["module"] != "simple-kmod/simple-kmod"]
    assert len(odd) == 2 and all(b["action"] == "error" and b["reasonCode"] == "InvalidModule" for b in odd)
    table = kmm_dtk("plan", "-f", DATA / "design-cluster.yaml", "-f", path)
    assert table.returncode == 0 and "Traceback" not in table.stderr
    assert "InvalidDockerfileConfigMap" not in table.stdout and "data key 1" in table.stdout


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=400),
                 st.text(alphabet="&*ab:[]{}-?!, \n\"'#|0123456789.e<kindapiVersoNL", max_size=400).map(str.encode),
                 st.sampled_from([content.encode("utf-8", "surrogatepass") for content, _ in HOSTILE_DUMPS.values()
                                  if len(content) < 10_000])))
def test_load_files_raises_only_dump_error(tmp_path, data):
    """Whatever a file holds, reading it as a dump gives objects or one DumpError line naming it."""
    from kmm_dtk.dump import ClusterObjects, DumpError, load_files

    path = tmp_path / "dump.yaml"
    path.write_bytes(data)
    try:
        objects = load_files([str(path)])
    except DumpError as err:
        assert str(err).startswith(str(path)) and "\n" not in str(err)
    else:
        assert isinstance(objects, ClusterObjects)
