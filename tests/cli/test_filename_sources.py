"""`-f` read as kubectl reads it: stdin, directories (``-R``), repeated flags, JSON and YAML lists."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kmm_dtk.cmd.sources import SourceError, read_sources

DATA = Path(__file__).resolve().parents[1] / "data"
DESIGN = DATA / "design-cluster.yaml"


def kmm_dtk(*args: str | Path, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kmm_dtk", *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def plan(*args: str | Path, stdin: str | None = None) -> dict:
    result = kmm_dtk("plan", "-o", "json", *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def one_line_error(result: subprocess.CompletedProcess[str], command: str = "plan") -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"kmm-dtk {command}: ")
    return lines[0]


@pytest.fixture(scope="module")
def expected() -> dict:
    return plan("-f", DESIGN)


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return yaml.safe_load(DESIGN.read_text())["items"]


def _split(items: list[dict], root: Path) -> Path:
    """The design cluster spread over a directory in every form -f accepts, with a subdirectory and
    files that are not manifests."""
    nodes = [i for i in items if i["kind"] == "Node"]
    others = [i for i in items if i["kind"] != "Node"]
    root.mkdir()
    (root / "a-nodes.json").write_text(json.dumps(nodes))  # a bare JSON list
    (root / "b-first.yml").write_text(yaml.safe_dump_all(others[:1]))
    (root / "README.md").write_text("not a manifest: skipped")
    (root / "sub").mkdir()
    (root / "sub" / "c-rest.yaml").write_text(yaml.safe_dump(others[1:]))  # a bare YAML list
    return root


def test_stdin(expected):
    assert plan("-f", "-", stdin=DESIGN.read_text()) == expected


def test_stdin_beside_a_file(expected, items):
    nodes = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [i for i in items if i["kind"] == "Node"]})
    rest = yaml.safe_dump_all([i for i in items if i["kind"] != "Node"])
    assert plan("-f", "-", "-f", "/dev/null", stdin=nodes + "---\n" + rest) == expected


def test_directory_needs_recursive_for_its_subdirectories(tmp_path, items, expected):
    root = _split(items, tmp_path / "dump")
    assert plan("-R", "-f", root) == expected
    shallow = plan("-f", root)
    assert shallow["builds"] == []  # the Module is in sub/: not read without -R
    assert shallow["kernels"] == expected["kernels"]


def test_repeated_flags_merge_their_sources(tmp_path, items, expected):
    root = _split(items, tmp_path / "dump")
    assert plan("-f", root, "-f", root / "sub") == expected


def test_a_directory_error_names_the_file_and_the_document(tmp_path, items):
    root = _split(items, tmp_path / "dump")
    (root / "sub" / "d-broken.yaml").write_text("apiVersion: v1\nkind: Node\n---\nkind: Node\n")
    line = one_line_error(kmm_dtk("plan", "-R", "-f", root))
    assert line == f"kmm-dtk plan: {root / 'sub' / 'd-broken.yaml'}: document 2: document has no apiVersion"


def test_a_list_item_error_names_the_item(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"apiVersion": "v1", "kind": "Node"}, "scalar"]))
    line = one_line_error(kmm_dtk("plan", "-f", path))
    assert line == f"kmm-dtk plan: {path}: document 1, item 1: expected a Kubernetes object (a mapping), got str"


def test_an_error_on_stdin_names_it():
    line = one_line_error(kmm_dtk("plan", "-f", "-", stdin="apiVersion: v1\n---\n[unclosed\n"))
    assert line.startswith("kmm-dtk plan: <stdin>: ")


def test_stdin_twice_is_refused():
    line = one_line_error(kmm_dtk("plan", "-f", "-", "-f", "-", stdin=DESIGN.read_text()))
    assert line == "kmm-dtk plan: -f -: standard input can be read only once"


def test_a_url_is_refused_with_what_to_do():
    line = one_line_error(kmm_dtk("plan", "-f", "https://example.com/dump.yaml"))
    assert "https://example.com/dump.yaml: URLs are not fetched" in line and "-f -" in line


def test_migrate_reads_stdin_and_directories(tmp_path):
    module = {"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module",
              "metadata": {"name": "m", "namespace": "drivers"},
              "spec": {"selector": {"a": "b"}, "moduleLoader": {"container": {
                  "modprobe": {"moduleName": "m"}, "build": {"dockerfileConfigMap": {"name": "d"}},
                  "kernelMappings": [{"regexp": "^.+$", "containerImage": "quay.io/org/m:${KERNEL_FULL_VERSION}"}]}}}}
    (tmp_path / "m.json").write_text(json.dumps(module))
    from_dir = kmm_dtk("migrate", "-f", tmp_path)
    from_stdin = kmm_dtk("migrate", "-f", "-", stdin=json.dumps(module))
    assert from_dir.returncode == from_stdin.returncode == 0, (from_dir.stderr, from_stdin.stderr)
    assert from_dir.stdout == from_stdin.stdout
    assert [d["kind"] for d in yaml.safe_load_all(from_dir.stdout)] == ["Module", "ModuleBuild"]


# -- the reader itself ----------------------------------------------------------------------------

def _names(sources) -> list[str]:
    return [s.name for s in sources]


def test_lexical_order_with_subdirectories_in_place(tmp_path):
    for name in ("b.yaml", "a.json", "c/z.yml", "c/a.yaml", "d.yml", "c.txt", "c/deeper/x.json"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    got = _names(read_sources([str(tmp_path)], recursive=True, max_bytes=1000))
    assert got == [str(tmp_path / n) for n in ("a.json", "b.yaml", "c/a.yaml", "c/deeper/x.json", "c/z.yml", "d.yml")]
    assert _names(read_sources([str(tmp_path)], max_bytes=1000)) == [
        str(tmp_path / n) for n in ("a.json", "b.yaml", "d.yml")]


def test_a_symlinked_directory_loop_ends(tmp_path):
    (tmp_path / "a.yaml").write_text("{}")
    os.symlink(tmp_path, tmp_path / "loop")
    assert _names(read_sources([str(tmp_path)], recursive=True, max_bytes=1000)) == [str(tmp_path / "a.yaml")]


def test_a_fifo_in_a_directory_is_skipped(tmp_path):
    (tmp_path / "a.yaml").write_text("{}")
    os.mkfifo(tmp_path / "b.yaml")  # reading it would block
    assert _names(read_sources([str(tmp_path)], max_bytes=1000)) == [str(tmp_path / "a.yaml")]


def test_each_source_is_bounded(tmp_path):
    (tmp_path / "big.yaml").write_bytes(b"#" * 101)
    with pytest.raises(SourceError, match=r"big.yaml: document larger than 100 bytes$"):
        list(read_sources([str(tmp_path / "big.yaml")], max_bytes=100))


def test_all_sources_together_are_bounded(tmp_path):
    for name in ("a.yaml", "b.yaml", "c.yaml"):
        (tmp_path / name).write_bytes(b"#" * 40)
    with pytest.raises(SourceError, match=r"c.yaml: the input files together are larger than 100 bytes$"):
        list(read_sources([str(tmp_path)], max_bytes=100))


def test_stdin_is_bounded():
    with pytest.raises(SourceError, match=r"^<stdin>: document larger than 10 bytes$"):
        list(read_sources(["-"], stdin=io.BytesIO(b"x" * 11), max_bytes=10))


def test_the_number_of_files_is_bounded(tmp_path):
    for n in range(4):
        (tmp_path / f"{n}.yaml").write_text("{}")
    with pytest.raises(SourceError, match=r"3.yaml: more than 3 files in the input$"):
        list(read_sources([str(tmp_path)], max_bytes=1000, max_files=3))


def test_a_missing_source_is_named(tmp_path):
    with pytest.raises(SourceError, match=r"nope.yaml: cannot read: No such file or directory$"):
        list(read_sources([str(tmp_path / "nope.yaml")], max_bytes=1000))
