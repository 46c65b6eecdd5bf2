"""kubectl's habits: ``-o json|yaml|table|wide``, ``-n``/``-A``, and usage errors at the subcommand's level."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kmm_dtk.cli import _build_parser, main

DATA = Path(__file__).resolve().parents[1] / "data"
DESIGN = DATA / "design-cluster.yaml"


def kmm_dtk(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kmm_dtk", *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=60)


def run_main(*args: str | Path) -> tuple[int, str]:
    out = io.StringIO()
    code = main([str(a) for a in args], out=out)
    return code, out.getvalue()


# -- output formats ---------------------------------------------------------------------------------

def test_plan_yaml_is_the_json_data():
    code, as_json = run_main("plan", "-f", DESIGN, "-o", "json")
    assert code == 0
    code, as_yaml = run_main("plan", "-f", DESIGN, "-o", "yaml")
    assert code == 0
    assert yaml.safe_load(as_yaml) == json.loads(as_json)
    assert "  dockerfile: |\n" in as_yaml  # a Dockerfile reads as one, not as a line of \n escapes


def test_plan_wide_adds_the_dtk_image_and_the_reason_code():
    code, table = run_main("plan", "-f", DESIGN)
    assert code == 0
    code, wide = run_main("plan", "-f", DESIGN, "-o", "wide")
    assert code == 0
    data = json.loads(run_main("plan", "-f", DESIGN, "-o", "json")[1])
    header = wide.splitlines()[4].split()
    assert header == ["MODULE", "KERNEL", "ACTION", "RHCOS", "DTK", "IMAGE", "IMAGE", "REASON", "CODE", "REASON"]
    for build, line in zip(data["builds"], wide.splitlines()[5:], strict=True):
        cells = line.split()
        assert cells[:6] == [build["module"], build["kernel"], build["action"], build["rhcos"], build["dtkImage"],
                             build["image"]]
        assert cells[6] == build["reasonCode"]
        assert line.endswith(build["reason"])
    assert all(b["dtkImage"] not in table for b in data["builds"])  # the narrow table keeps to the RHCOS
    assert table.splitlines()[:3] == wide.splitlines()[:3]  # the kernels alike


def test_plan_refuses_an_unknown_output_format_at_its_level():
    result = kmm_dtk("plan", "-f", DESIGN, "-o", "name")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith("usage: kmm-dtk plan ")
    assert result.stderr.splitlines()[-1] == (
        "kmm-dtk plan: error: argument -o/--output: invalid choice: 'name' (choose from 'table', 'wide', 'json', "
        "'yaml')")


# -- namespaces --------------------------------------------------------------------------------------

def test_plan_namespace_keeps_only_its_modules():
    code, out = run_main("plan", "-f", DESIGN, "-n", "simple-kmod", "-o", "json")
    assert code == 0
    assert {b["module"] for b in json.loads(out)["builds"]} == {"simple-kmod/simple-kmod"}
    code, out = run_main("plan", "-f", DESIGN, "--namespace", "elsewhere", "-o", "json")
    assert code == 0
    assert json.loads(out)["builds"] == []
    code, out = run_main("plan", "-f", DESIGN, "-n", "elsewhere")
    assert code == 0
    assert "no Modules in namespace elsewhere in the input" in out


def test_plan_all_namespaces_is_the_default():
    assert run_main("plan", "-f", DESIGN, "-A", "-o", "json") == run_main("plan", "-f", DESIGN, "-o", "json")


def test_plan_namespace_places_objects_that_name_none(tmp_path):
    """As `kubectl apply -n`: a Module and its ConfigMap without a namespace are in NS."""
    documents = yaml.safe_load(DESIGN.read_text())["items"]
    for doc in documents:
        if doc["kind"] in ("Module", "ConfigMap"):
            doc["metadata"].pop("namespace", None)
    path = tmp_path / "no-namespaces.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    code, out = run_main("plan", "-f", path, "-n", "drivers", "-o", "json")
    assert code == 0
    builds = json.loads(out)["builds"]
    assert [(b["module"], b["action"]) for b in builds] == [("drivers/simple-kmod", "build")] * 2
    assert all(b["buildArgs"]["MOD_NAMESPACE"] == "drivers" for b in builds)


def test_namespace_and_all_namespaces_conflict_at_the_subcommand_level():
    for command in (["plan", "-f", str(DESIGN)], ["migrate", "-f", str(DESIGN)], ["run"]):
        result = kmm_dtk(*command, "-n", "a", "-A")
        assert result.returncode == 2
        lines = result.stderr.splitlines()
        assert lines[0].startswith(f"usage: kmm-dtk {command[0]} "), lines
        assert lines[-1] == (f"kmm-dtk {command[0]}: error: argument -A/--all-namespaces: not allowed with "
                             "argument -n/--namespace")


def test_run_namespace_flags():
    parser = _build_parser()
    assert parser.parse_args(["run", "-n", "a", "--namespace", "b"]).namespace == ["a", "b"]
    args = parser.parse_args(["run", "-A"])
    assert (args.namespace, args.all_namespaces) == ([], True)
    assert parser.parse_args(["run"]).api_wait_timeout == 60.0


def test_migrate_namespace_keeps_only_its_modules(tmp_path):
    module = {"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module", "metadata": {"name": "m"},
              "spec": {"selector": {"a": "b"}, "moduleLoader": {"container": {
                  "modprobe": {"moduleName": "m"}, "build": {"dockerfileConfigMap": {"name": "d"}},
                  "kernelMappings": [{"regexp": "^.+$", "containerImage": "quay.io/org/m:${KERNEL_FULL_VERSION}"}]}}}}
    other = {**module, "metadata": {"name": "other", "namespace": "elsewhere"}}
    stdin = yaml.safe_dump_all([module, other])
    result = kmm_dtk("migrate", "-f", "-", "-n", "drivers", stdin=stdin)
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    assert [(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in documents] == [
        ("Module", "drivers", "m"), ("ModuleBuild", "drivers", "m")]
    none = kmm_dtk("migrate", "-f", "-", "-n", "nowhere", stdin=yaml.safe_dump(other))
    assert none.returncode == 1
    assert none.stderr == "kmm-dtk migrate: no Module in namespace nowhere in the input\n"


# -- usage errors at the subcommand's level -----------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["plan", "-f", str(DESIGN)],
    ["migrate", "-f", str(DESIGN)],
    ["run"],
    ["dtk-image", "quay.io/ocp/release:4.18.1-x86_64"],
])
def test_an_unknown_flag_is_reported_by_its_subcommand(command):
    result = kmm_dtk(*command, "--foo", "bar")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"usage: kmm-dtk {command[0]} "), lines
    assert lines[-1] == f"kmm-dtk {command[0]}: error: unrecognized arguments: --foo bar"


def test_an_unknown_top_level_flag_is_still_the_top_level_error():
    result = kmm_dtk("--foo")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith("usage: kmm-dtk [-h]")
    assert "kmm-dtk: error: " in result.stderr.splitlines()[-1]


def test_python_dash_m_and_the_entry_point_agree():
    module = kmm_dtk("plan", "--help")
    assert module.returncode == 0
    assert module.stdout.startswith("usage: kmm-dtk plan ")
    for flag in ("-f FILE", "-R", "-n NS", "-A", "-o {table,wide,json,yaml}"):
        assert flag in module.stdout
    entry_point = Path(sys.executable).parent / "kmm-dtk"
    if not entry_point.exists():
        pytest.skip("the kmm-dtk console script is not installed beside this interpreter")
    script = subprocess.run([str(entry_point), "plan", "--help"], capture_output=True, text=True, timeout=60)
    assert (script.returncode, script.stdout) == (0, module.stdout)
