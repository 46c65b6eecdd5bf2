"""`kmm-dtk migrate`: a Module with build sections becomes the Module KMM loads and the ModuleBuild
kmm-dtk builds, printed ready for `oc apply -f -`; what cannot be split is said on stderr."""

from __future__ import annotations

import io
from pathlib import Path

import yaml

from kmm_dtk.cli import main

MODULES = """\
apiVersion: v1
kind: List
items:
- apiVersion: kmm.sigs.x-k8s.io/v1beta1
  kind: Module
  metadata: {name: simple-kmod, namespace: drivers, uid: 1b2c, resourceVersion: "41", generation: 3}
  spec:
    selector: {node-role.kubernetes.io/worker: ""}
    moduleLoader:
      container:
        modprobe: {moduleName: simple_kmod}
        build: {dockerfileConfigMap: {name: dockerfile}}
        kernelMappings:
        - {regexp: '^.+$', containerImage: 'quay.io/org/simple-kmod:${KERNEL_FULL_VERSION}'}
  status: {moduleLoader: {desiredNumber: 2}}
- apiVersion: kmm.sigs.x-k8s.io/v1beta1
  kind: Module
  metadata: {name: loaded-only, namespace: drivers}
  spec:
    selector: {a: b}
    moduleLoader: {container: {modprobe: {moduleName: x}, kernelMappings: [{literal: k, containerImage: 'q/x:1'}]}}
"""


def run(tmp_path: Path, text: str, *args: str) -> tuple[int, str]:
    path = tmp_path / "modules.yaml"
    path.write_text(text)
    out = io.StringIO()
    return main(["migrate", "-f", str(path), *args], out=out), out.getvalue()


def test_a_module_with_build_sections_is_split_and_the_rest_explained(tmp_path, capsys):
    status, out = run(tmp_path, MODULES)
    assert status == 1  # one Module could not be split
    module, module_build = list(yaml.safe_load_all(out))
    assert module["kind"] == "Module" and "build" not in module["spec"]["moduleLoader"]["container"]
    assert set(module["metadata"]) == {"name", "namespace"} and "status" not in module
    assert module_build == {"apiVersion": "kmm-dtk.io/v1alpha1", "kind": "ModuleBuild",
                            "metadata": {"name": "simple-kmod", "namespace": "drivers"},
                            "spec": {"moduleName": "simple-kmod",
                                     "build": {"dockerfileConfigMap": {"name": "dockerfile"}}}}
    assert capsys.readouterr().err.splitlines() == [
        "kmm-dtk migrate: Module drivers/loaded-only: Module loaded-only has no build section: KMM does not build "
        "it, nothing to move"]


def test_json_output_and_exit_0_when_all_split(tmp_path):
    only_first = MODULES.split("- apiVersion: kmm.sigs.x-k8s.io/v1beta1\n  kind: Module\n  metadata: {name: loaded")[0]
    status, out = run(tmp_path, only_first, "-o", "json")
    assert status == 0
    assert [d["kind"] for d in yaml.safe_load(out)["items"]] == ["Module", "ModuleBuild"]


def test_unreadable_input_is_one_line_and_exit_2(tmp_path, capsys):
    status, out = run(tmp_path, "a: [b\n")
    assert status == 2 and out == ""
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("kmm-dtk migrate: ") and "modules.yaml" in err[0]
