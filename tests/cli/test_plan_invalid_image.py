"""``kmm-dtk plan`` on a Module whose image is not an image reference: an error entry naming the field,
not a question for a registry (with ``--check-registry`` it would otherwise wait forever)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.cli.test_plan_cli import DATA, kmm_dtk
from tests.support.design import K84, K86

FIELD = "spec.moduleLoader.container.kernelMappings[0].containerImage"


def design_with_image(tmp_path: Path, image: str) -> Path:
    docs = list(yaml.safe_load_all((DATA / "design-cluster.yaml").read_text()))
    [module] = [item for doc in docs if doc for item in (doc.get("items") or [doc]) if item.get("kind") == "Module"]
    module["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["containerImage"] = image
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def test_an_upper_case_repository_is_an_invalid_module_entry(tmp_path):
    cluster = design_with_image(tmp_path, "quay.io/Org/Driver:${KERNEL_FULL_VERSION}")
    result = kmm_dtk("plan", "-o", "json", "--strict", "-f", cluster)
    assert result.returncode == 1, result.stderr  # --strict: error entries fail the run
    builds = json.loads(result.stdout)["builds"]
    assert [(b["kernel"], b["action"], b["reasonCode"]) for b in builds] == [
        (K84, "error", "InvalidModule"), (K86, "error", "InvalidModule")]
    assert builds[0]["reason"] == (f"{FIELD} renders to 'quay.io/Org/Driver:{K84}', which is not a valid image "
                                   "reference: repository name must be lowercase")


def test_the_table_names_the_field_and_the_problem(tmp_path):
    cluster = design_with_image(tmp_path, "quay.io/Org/Driver:${KERNEL_FULL_VERSION}")
    result = kmm_dtk("plan", "-f", cluster)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("simple-kmod/simple-kmod")]
    assert len(rows) == 2
    assert all(" error " in row and FIELD in row and "repository name must be lowercase" in row for row in rows)
