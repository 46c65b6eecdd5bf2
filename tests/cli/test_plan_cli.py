"""``kmm-dtk plan`` end to end, run as a subprocess on cluster dumps under tests/data/."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.design import DTK_410 as IMAGE_410
from tests.support.design import DTK_411 as IMAGE_411
from tests.support.design import K84, K86, R410, R411

DATA = Path(__file__).resolve().parents[1] / "data"

MIRROR_410 = "mirror.local:5000/ocp/driver-toolkit@sha256:" + "a" * 64
MIRROR_411 = "mirror.local:5000/ocp/driver-toolkit@sha256:" + "b" * 64


def kmm_dtk(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmm_dtk", *map(str, args)],
        capture_output=True, text=True, timeout=60, cwd=cwd,
    )


def plan_json(*files: str | Path, extra: tuple[str, ...] = ()) -> dict:
    args: list[str | Path] = ["plan", "-o", "json", *extra]
    for f in files:
        args += ["-f", f]
    result = kmm_dtk(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def assert_design_plan(data: dict) -> None:
    assert data["kernels"] == {K84: R410, K86: R411}
    builds = data["builds"]
    assert [(b["module"], b["kernel"], b["action"]) for b in builds] == [
        ("simple-kmod/simple-kmod", K84, "build"),
        ("simple-kmod/simple-kmod", K86, "build"),
    ]
    assert builds[0]["dockerfile"].splitlines()[1] == f"FROM {IMAGE_410} AS builder"
    assert builds[1]["dockerfile"].splitlines()[1] == f"FROM {IMAGE_411} AS builder"
    assert [b["dtkImage"] for b in builds] == [IMAGE_410, IMAGE_411]
    assert [b["rhcos"] for b in builds] == [R410, R411]
    assert data["nodeProblems"] == []


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kmm-dtk plan: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.stderr


# -- the design cluster -------------------------------------------------------------------------

def test_design_cluster_json():
    assert_design_plan(plan_json(DATA / "design-cluster.yaml"))


def test_design_cluster_json_details():
    builds = plan_json(DATA / "design-cluster.yaml")["builds"]
    for b in builds:
        assert b["reasonCode"] == "BuildNeeded"
        assert b["image"] == f"image-registry.openshift-image-registry.svc:5000/simple-kmod/simple-kmod:{b['kernel']}"
        assert b["buildArgs"]["DTK_AUTO"] == b["dtkImage"]
        assert b["buildArgs"]["KMOD_VERSION"] == "1.0.2"
        assert b["buildArgs"]["KERNEL_FULL_VERSION"] == b["kernel"]
        assert b["imageRepoSecret"] == "registry-push"
        assert "DTK-AUTO" not in b["dockerfile"]
        assert len(b["hash"]) == 20
    assert builds[0]["hash"] != builds[1]["hash"]


def test_design_cluster_table_mentions_both_kernels():
    result = kmm_dtk("plan", "-f", DATA / "design-cluster.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("KERNEL")
    for kernel, rhcos in ((K84, R410), (K86, R411)):
        kernel_rows = [line for line in out.splitlines() if line.startswith(kernel)]
        assert kernel_rows and rhcos in kernel_rows[0]
        module_rows = [line for line in out.splitlines()
                       if line.startswith("simple-kmod/simple-kmod") and kernel in line]
        assert len(module_rows) == 1
        assert "build" in module_rows[0].split()
        assert rhcos in module_rows[0]
    assert "MODULE" in out and "ACTION" in out


def test_default_output_is_the_table():
    assert kmm_dtk("plan", "-f", DATA / "design-cluster.yaml").stdout == \
        kmm_dtk("plan", "-o", "table", "-f", DATA / "design-cluster.yaml").stdout


def test_json_output_is_deterministic():
    first = kmm_dtk("plan", "-o", "json", "-f", DATA / "design-cluster.yaml").stdout
    second = kmm_dtk("plan", "-o", "json", "-f", DATA / "design-cluster.yaml").stdout
    assert first == second


def test_strict_on_a_clean_plan_exits_0():
    result = kmm_dtk("plan", "--strict", "-f", DATA / "design-cluster.yaml")
    assert result.returncode == 0, result.stderr


# -- input formats --------------------------------------------------------------------------------

def test_json_kind_list():
    assert_design_plan(plan_json(DATA / "design-cluster-list.json"))


def test_typed_lists_with_items_lacking_kind():
    assert_design_plan(plan_json(DATA / "design-cluster-typed-lists.yaml"))


def test_objects_split_across_files(tmp_path):
    import yaml

    items = yaml.safe_load((DATA / "design-cluster.yaml").read_text())["items"]
    nodes = tmp_path / "nodes.yaml"
    rest = tmp_path / "rest.json"
    nodes.write_text(yaml.safe_dump_all([o for o in items if o["kind"] == "Node"]))
    rest.write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                "items": [o for o in items if o["kind"] != "Node"]}))
    assert_design_plan(plan_json(nodes, rest))


def test_multi_document_yaml_with_unknown_kinds():
    data = plan_json(DATA / "upgrade-419-cluster.yaml")
    assert data["kernels"] == {
        "5.14.0-427.68.1.el9_4.x86_64": "418.94.202410260038-0",
        "5.14.0-570.27.1.el9_6.x86_64": "9.6.20260303-1",  # the later of the two z-streams
        "5.14.0-570.73.1.el9_6.aarch64+64k": "9.6.20260616-0",
    }
    # Namespace, Deployment and a Module of another API version are ignored: one Module, three kernels.
    builds = data["builds"]
    assert {b["module"] for b in builds} == {"ice/ice-driver"}
    by_kernel = {b["kernel"]: b for b in builds}
    digest = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:"
    assert by_kernel["5.14.0-427.68.1.el9_4.x86_64"]["dtkImage"] == digest + "1" * 64
    assert by_kernel["5.14.0-570.27.1.el9_6.x86_64"]["dtkImage"] == digest + "3" * 64
    assert f"FROM {digest}{'3' * 64} AS builder" in by_kernel["5.14.0-570.27.1.el9_6.x86_64"]["dockerfile"]
    missing = by_kernel["5.14.0-570.73.1.el9_6.aarch64+64k"]
    assert (missing["action"], missing["reasonCode"]) == ("error", "MissingDTKTag")
    assert "9.6.20260616-0" in missing["reason"] and "openshift/driver-toolkit" in missing["reason"]
    assert missing["image"] == "quay.io/acme/ice-64k:5.14.0-14"


def test_unknown_kinds_only_gives_an_empty_plan(tmp_path):
    dump = tmp_path / "others.yaml"
    dump.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ice\n---\n"
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: ds\n  namespace: ice\n"
    )
    result = kmm_dtk("plan", "-f", dump)
    assert result.returncode == 0, result.stderr
    assert "no Modules in the input" in result.stdout
    data = plan_json(dump)
    assert data == {"kernels": {}, "builds": [], "nodeProblems": []}


# -- exit codes -----------------------------------------------------------------------------------

def test_error_entries_exit_0_and_1_with_strict():
    plain = kmm_dtk("plan", "-o", "json", "-f", DATA / "upgrade-419-cluster.yaml")
    assert plain.returncode == 0, plain.stderr
    assert any(b["action"] == "error" for b in json.loads(plain.stdout)["builds"])
    strict = kmm_dtk("plan", "-o", "json", "--strict", "-f", DATA / "upgrade-419-cluster.yaml")
    assert strict.returncode == 1
    assert json.loads(strict.stdout) == json.loads(plain.stdout)  # the plan is still printed


def test_strict_table_still_prints_the_reason():
    result = kmm_dtk("plan", "--strict", "-f", DATA / "upgrade-419-cluster.yaml")
    assert result.returncode == 1
    assert "no tag 9.6.20260616-0 in ImageStream openshift/driver-toolkit" in result.stdout


def test_missing_file_exits_2_naming_it(tmp_path):
    missing = tmp_path / "no-such-dump.yaml"
    assert_one_line_error(kmm_dtk("plan", "-f", missing), str(missing), "cannot read")


def test_empty_directory_exits_2_naming_it(tmp_path):
    (tmp_path / "notes.txt").write_text("not a manifest")
    assert_one_line_error(kmm_dtk("plan", "-f", tmp_path), str(tmp_path), "no .yaml, .yml or .json file")


def test_non_utf8_file_exits_2_naming_it(tmp_path):
    dump = tmp_path / "utf16.yaml"
    dump.write_bytes("apiVersion: v1\nkind: Node\n".encode("utf-16"))
    assert_one_line_error(kmm_dtk("plan", "-f", dump), str(dump), "cannot read")


def test_bad_file_after_good_one_is_still_fatal(tmp_path):
    missing = tmp_path / "second.yaml"
    assert_one_line_error(kmm_dtk("plan", "-f", DATA / "design-cluster.yaml", "-f", missing), str(missing))


def test_invalid_yaml_exits_2_with_file_and_line():
    path = DATA / "broken-invalid-yaml.yaml"
    assert_one_line_error(kmm_dtk("plan", "-f", path), str(path), "invalid YAML", "line 10")


def test_invalid_json_exits_2_naming_the_file(tmp_path):
    dump = tmp_path / "cut.json"
    dump.write_text((DATA / "design-cluster-list.json").read_text()[:500])
    assert_one_line_error(kmm_dtk("plan", "-f", dump), str(dump))


def test_document_without_kind_exits_2_with_file_and_document_number():
    path = DATA / "broken-no-kind.yaml"
    assert_one_line_error(kmm_dtk("plan", "-f", path), str(path), "document 2", "kind")


def test_list_item_without_api_version_exits_2_naming_document_and_item():
    path = DATA / "broken-list-item-no-apiversion.json"
    assert_one_line_error(kmm_dtk("plan", "-f", path), str(path), "document 1", "item 1", "apiVersion")


def test_document_that_is_not_an_object_exits_2(tmp_path):
    dump = tmp_path / "scalar.yaml"
    dump.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\njust a string\n")
    assert_one_line_error(kmm_dtk("plan", "-f", dump), str(dump), "document 2")


def test_relative_path_is_named_as_given(tmp_path):
    shutil.copy(DATA / "broken-no-kind.yaml", tmp_path / "dump.yaml")
    assert_one_line_error(kmm_dtk("plan", "-f", "dump.yaml", cwd=tmp_path), "dump.yaml: document 2")


@pytest.mark.parametrize("ref", ["driver-toolkit", "a/b/c", "/driver-toolkit", "openshift/"])
def test_malformed_dtk_imagestream_is_a_usage_error(ref):
    result = kmm_dtk("plan", "-f", DATA / "design-cluster.yaml", "--dtk-imagestream", ref)
    assert result.returncode == 2
    assert "--dtk-imagestream" in result.stderr
    assert result.stdout == ""


def test_missing_filename_is_a_usage_error():
    result = kmm_dtk("plan")
    assert result.returncode == 2
    assert "-f" in result.stderr


# -- choosing the DTK ImageStream -----------------------------------------------------------------

def test_dtk_imagestream_flag_picks_another_stream():
    data = plan_json(DATA / "design-cluster.yaml", DATA / "dtk-mirror-imagestream.yaml",
                     extra=("--dtk-imagestream", "dtk-mirror/driver-toolkit"))
    builds = data["builds"]
    assert [b["dtkImage"] for b in builds] == [MIRROR_410, MIRROR_411]
    assert builds[0]["dockerfile"].splitlines()[1] == f"FROM {MIRROR_410} AS builder"
    assert builds[1]["dockerfile"].splitlines()[1] == f"FROM {MIRROR_411} AS builder"


def test_default_stream_is_openshift_driver_toolkit_even_with_a_mirror_present():
    data = plan_json(DATA / "design-cluster.yaml", DATA / "dtk-mirror-imagestream.yaml")
    assert [b["dtkImage"] for b in data["builds"]] == [IMAGE_410, IMAGE_411]


def test_dtk_imagestream_flag_naming_a_missing_stream_gives_error_entries():
    result = kmm_dtk("plan", "-o", "json", "-f", DATA / "design-cluster.yaml",
                     "--dtk-imagestream", "dtk-mirror/driver-toolkit")
    assert result.returncode == 0, result.stderr
    builds = json.loads(result.stdout)["builds"]
    assert [b["reasonCode"] for b in builds] == ["MissingDTKImageStream"] * 2
    assert all("dtk-mirror/driver-toolkit" in b["reason"] for b in builds)
    strict = kmm_dtk("plan", "--strict", "-f", DATA / "design-cluster.yaml",
                     "--dtk-imagestream", "dtk-mirror/driver-toolkit")
    assert strict.returncode == 1


def test_node_problems_are_reported_as_warnings(tmp_path):
    import yaml

    items = yaml.safe_load((DATA / "design-cluster.yaml").read_text())["items"]
    items.append({"apiVersion": "v1", "kind": "Node",
                  "metadata": {"name": "worker-new", "labels": {"node-role.kubernetes.io/worker": ""}},
                  "status": {"nodeInfo": {"kernelVersion": "4.18.0-372.16.1.el8_6.x86_64",
                                          "osImage": "Red Hat Enterprise Linux CoreOS"}}})
    dump = tmp_path / "cluster.yaml"
    dump.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    table = kmm_dtk("plan", "-f", dump)
    assert table.returncode == 0
    assert any(line.startswith("warning: node worker-new") for line in table.stdout.splitlines())
    data = plan_json(dump)
    assert len(data["nodeProblems"]) == 1 and "worker-new" in data["nodeProblems"][0]
    # The kernel still has a known RHCOS from the other nodes running it.
    assert data["kernels"][K86] == R411


def test_imagestream_with_malformed_metadata_does_not_crash(tmp_path):
    dump = tmp_path / "cluster.yaml"
    dump.write_text("apiVersion: image.openshift.io/v1\nkind: ImageStream\nmetadata: driver-toolkit\n---\n"
                    + (DATA / "design-cluster.yaml").read_text())
    result = kmm_dtk("plan", "-o", "json", "-f", dump)
    assert "Traceback" not in result.stderr
    assert result.returncode in (0, 2)
